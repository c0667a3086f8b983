"""Several hosts: three network namespaces joined by veth pairs.

    front (10.201.1.1, 10.201.2.1)   web front (HTTPS, PB publishing over TLS)
                                     and the mail server
    personal (10.201.1.2)            a personal web server publishing to the
                                     front over TCP with TLS and a login
    smarthost (10.201.2.2)           the smarthost the mail server relays to

Everything must work across them; pulling a link (``ip link set down``)
must give gateway errors (502/504) for the personal site and queued mail,
and both recover when the link comes back.  Needs root and ``ip netns``
(CI is root); skipped elsewhere with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._tls import write_tls_files

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hosts-password-1"
pytestmark = pytest.mark.timeout(120)


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    name = f"pbprobe{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns add fails here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


_REASON = _netns_usable()
pytestmark = [pytestmark, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}"
        self.ns = {"front": f"pbfr{tag}", "personal": f"pbps{tag}", "smarthost": f"pbsm{tag}"}
        self.links = {"personal": f"pbvp{tag}", "smarthost": f"pbvs{tag}"}  # the front's ends
        self.procs: list[subprocess.Popen] = []
        self.files: list = []

    def up(self) -> None:
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for (peer, net) in (("personal", 1), ("smarthost", 2)):
            front_end, peer_end = self.links[peer], self.links[peer] + "b"
            _ip("link", "add", front_end, "netns", self.ns["front"], "type", "veth",
                "peer", "name", peer_end, "netns", self.ns[peer])
            _ip("-n", self.ns["front"], "addr", "add", f"10.201.{net}.1/24", "dev", front_end)
            _ip("-n", self.ns[peer], "addr", "add", f"10.201.{net}.2/24", "dev", peer_end)
            _ip("-n", self.ns["front"], "link", "set", front_end, "up")
            _ip("-n", self.ns[peer], "link", "set", peer_end, "up")

    def link(self, peer: str, state: str) -> None:
        _ip("-n", self.ns["front"], "link", "set", self.links[peer], state)

    def run(self, host: str, args: list[str], *, log: Path, env: dict | None = None) -> subprocess.Popen:
        out = open(log, "w")
        self.files.append(out)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[host], *args], cwd=ROOT,
                                env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def call(self, host: str, code: str, *args: str) -> str:
        result = subprocess.run(["ip", "netns", "exec", self.ns[host], sys.executable, "-c", code,
                                 *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for out in self.files:
            out.close()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


GET = """
import ssl, sys, urllib.request, urllib.error
context = ssl.create_default_context(cafile=sys.argv[2])
try:
    with urllib.request.urlopen(sys.argv[1], context=context, timeout=20) as r:
        print(r.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except (urllib.error.URLError, OSError) as exc:
    print(f"unreachable {exc}")
"""

SEND = """
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as client:
    client.login("alice@example.com", sys.argv[2])
    print(client.sendmail("alice@example.com", ["friend@elsewhere.test"],
                          f"Subject: {sys.argv[3]}\\r\\n\\r\\nacross hosts\\r\\n"))
"""

SMARTHOST = """
import sys, time, pathlib
from aiosmtpd.controller import Controller
out = pathlib.Path(sys.argv[1])
class Sink:
    async def handle_DATA(self, server, session, envelope):
        subject = [l for l in envelope.content.split(b"\\r\\n") if l.startswith(b"Subject: ")][0]
        (out / subject[9:].decode()).write_bytes(envelope.content)
        return "250 OK"
controller = Controller(Sink(), hostname="10.201.2.2", port=2525)
controller.start()
print("smarthost ready", flush=True)
while True:
    time.sleep(1)
"""


def _until(predicate, timeout: float, what: str):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        time.sleep(0.3)


def _pb(*args: str, input: str | None = None) -> None:
    result = subprocess.run([sys.executable, "-m", "clients._cli", *args], cwd=ROOT, input=input,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_front_personal_server_and_smarthost_on_three_hosts_survive_a_pulled_link(tmp_path):
    cert, key, ca = write_tls_files(tmp_path, extra_ips=("10.201.1.1",))
    front_data = tmp_path / "front"
    front_data.mkdir()
    db = front_data / "accounts.sqlite3"
    _pb("user", "add-service", "--db", str(db), "web-publish")
    _pb("user", "add", "--db", str(db), "--iterations", "4096", "-s", "web-publish", "alice",
        input=PASSWORD + "\n")
    (tmp_path / "homes").mkdir()
    (tmp_path / "received").mkdir()
    hosts = Hosts()
    try:
        hosts.up()
        pb = [sys.executable, "-m", "clients._cli", "run"]
        hosts.run("smarthost", [sys.executable, "-c", SMARTHOST, str(tmp_path / "received")],
                  log=tmp_path / "smarthost.log")
        hosts.run("front", [*pb, "--data-dir", str(front_data), "web", "--host", "127.0.0.1",
                            "--port", "8443", "--users", "--home-base", str(tmp_path / "homes"),
                            "--pb-host", "10.201.1.1", "--pb-port", "8788", "--tls-cert", str(cert),
                            "--tls-key", str(key), "--relay-timeout", "3"],
                  log=tmp_path / "front.log")
        hosts.run("front", [*pb, "--data-dir", str(tmp_path / "mail-data"), "mail",
                            "--domain", f"example.com={tmp_path / 'mail'}",
                            "--user", f"alice@example.com:{PASSWORD}", "--smtp-port", "2525",
                            "--pop3-port", "2110", "--allow-plain-auth",
                            "--smarthost", "10.201.2.2:2525", "--retry-base", "0.5",
                            "--retry-max", "1"],
                  log=tmp_path / "mail.log")
        time.sleep(1.0)
        hosts.run("personal", [*pb, "--data-dir", str(tmp_path / "alice"), "web", "--personal",
                               "--publish-to", "10.201.1.1:8788", "--user", "alice",
                               "--tls-ca", str(ca), "--resource", "tests.services.web.apps:site"],
                  log=tmp_path / "personal.log", env={"PB_PASSWORD": PASSWORD})
        url = "https://127.0.0.1:8443/alice.twistd/info"

        def status() -> str:
            return hosts.call("front", GET, url, str(ca))

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))

        try:
            _until(lambda: status() == "200", 40, "the personal site through the relay")
            assert hosts.call("front", SEND, "2525", PASSWORD, "first") == "{}"
            _until(lambda: (tmp_path / "received" / "first").exists(), 20, "mail at the smarthost")

            hosts.link("personal", "down")
            hosts.link("smarthost", "down")
            assert status() in ("502", "504")  # the relay's gateway errors, not a hang
            assert hosts.call("front", SEND, "2525", PASSWORD, "second") == "{}"
            queue = tmp_path / "mail-data" / "mail-queue" / "queue"
            _until(lambda: list(queue.iterdir()), 5, "the message in the relay queue")
            time.sleep(2.0)
            assert not (tmp_path / "received" / "second").exists()

            hosts.link("personal", "up")
            hosts.link("smarthost", "up")
            _until(lambda: status() == "200", 40, "the personal site after the link came back")
            _until(lambda: (tmp_path / "received" / "second").exists(), 30,
                   "queued mail after the link came back")
            _until(lambda: not list(queue.iterdir()), 10, "an empty queue")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
    finally:
        hosts.down()
