"""``pb run web`` as real subprocesses: the static site, HTTPS, the user
front with personal servers under ``--home-base``, kill -9, 100 MiB through
the relay with the front's memory measured, and publishing with TLS."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests._tls import write_tls_files
from tests.services.test_echo import LEAKS, PbChild, pb, pb_env

from ._helpers import raw_exchange, status_of

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def children(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[PbChild] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> PbChild:
        child = PbChild(*args, cwd=cwd or tmp_path, env=env)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


def web_port(child: PbChild) -> int:
    return int(child.wait_for("stdout", r"^web: https?://127\.0\.0\.1:(\d+)/").group(1))


def fetch(port: int, path: str, method: str = "GET", body: bytes | None = None,
          timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_clean_exit(child: PbChild) -> None:
    code, out, err = child.stop()
    assert code == 0, err
    for leak in LEAKS:
        assert leak not in err, err


async def test_pb_run_web_static_serves_a_directory_and_survives_garbage(
        tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>static</h1>")
    (tmp_path / "secret").write_text("TOPSECRET")
    child = children("run", "web", "--port", "0", "--static", str(site),
                     "--max-request-line", "100", "--header-timeout", "1")
    port = web_port(child)
    assert await asyncio.to_thread(fetch, port, "/") == (200, b"<h1>static</h1>")
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200),
                    b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
                    b"GET /../secret HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                    b"GET / HTTP/1.1\r\nHo"):
        out = await raw_exchange(port, garbage, read_timeout=3)
        assert status_of(out) in (400, 404, 408, 414, 431), out[:100]
        assert b"TOPSECRET" not in out
    assert await asyncio.to_thread(fetch, port, "/") == (200, b"<h1>static</h1>")
    if shutil.which("curl"):
        result = subprocess.run(["curl", "-s", "-i", f"http://127.0.0.1:{port}/index.html"],
                                capture_output=True, timeout=10)
        assert b"200 OK" in result.stdout and result.stdout.endswith(b"<h1>static</h1>")
    assert_clean_exit(child)
    code, out, err = child.finish()
    assert "GET / HTTP/1.1\" 200" in err  # the access log went through logging


async def test_pb_run_web_serves_https_with_tls_cert_and_key(tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    cert, key, ca = write_tls_files(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("over tls")
    child = children("run", "web", "--port", "0", "--static", str(site),
                     "--tls-cert", str(cert), "--tls-key", str(key))
    port = web_port(child)
    context = ssl.create_default_context(cafile=str(ca))

    def get() -> bytes:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=10) as r:
            return r.read()

    assert await asyncio.to_thread(get) == b"over tls"
    out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=2)
    assert b"over tls" not in out  # plain HTTP on the TLS port gets nothing
    assert_clean_exit(child)


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    result = pb("run", "web", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0 and "--static DIR, --users, or --personal" in result.stderr
    result = pb("run", "web", "--personal", "--asgi", "x:y", "--wsgi", "x:y", cwd=tmp_path)
    assert result.returncode != 0 and "publishes one thing" in result.stderr
    result = pb("run", "web", "--personal", "--asgi", "no_such_module_here:app", cwd=tmp_path)
    assert result.returncode != 0 and "cannot import 'no_such_module_here'" in result.stderr
    result = pb("run", "web", "--static", str(tmp_path), "--max-body", "lots", cwd=tmp_path)
    assert result.returncode != 0 and "expected a size" in result.stderr


def _front_and_alice(tmp_path: Path, children, *extra: str):  # type: ignore[no-untyped-def]
    base = tmp_path / "homes"
    alice = base / "alice"
    (alice / "public_html").mkdir(parents=True)
    (alice / "public_html" / "index.html").write_text("alice at home")
    front = children("run", "--data-dir", str(tmp_path / "front-data"), "web", "--port", "0",
                     "--users", "--home-base", str(base), *extra)
    return base, alice, front


def _start_alice(children, alice: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    # HOME is alice's home: the personal server's defaults (~/.pb-web.sock) apply.
    env = pb_env(HOME=str(alice))
    child = children("run", "--data-dir", str(tmp_path / "alice-data"), "web", "--personal",
                     "--resource", "tests.services.web.apps:site", env=env, cwd=REPO)
    child.wait_for("stdout", r"^web personal server: .*\.pb-web\.sock$")
    return child


async def test_front_and_personal_servers_as_processes_and_kill_9_mid_response(
        tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    base, alice, front = _front_and_alice(tmp_path, children)
    port = web_port(front)
    personal = _start_alice(children, alice, tmp_path)
    assert (alice / ".pb-web.sock").stat().st_mode & 0o777 == 0o600
    status, body = await asyncio.to_thread(fetch, port, "/alice.twistd/info")
    assert status == 200 and json.loads(body)["root_path"] == "/alice.twistd"
    assert await asyncio.to_thread(fetch, port, "/~alice/") == (200, b"alice at home")

    # A long download; kill -9 the personal server once it is flowing.
    def download() -> tuple[str, int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/alice.twistd/zeros/2000000000")
            response = conn.getresponse()
            if response.status != 200:
                return f"status {response.status}", 0
            got = 0
            try:
                while chunk := response.read(65536):
                    got += len(chunk)
                    if got >= 4 << 20 and personal.proc.poll() is None:
                        personal.proc.send_signal(signal.SIGKILL)
                        personal.proc.wait()
            except http.client.IncompleteRead as exc:
                return "truncated", got + len(exc.partial)
            # http.client's read(n) ends quietly at an early EOF
            return ("complete" if got == 2000000000 else "truncated"), got
        finally:
            conn.close()

    outcome, got = await asyncio.to_thread(download)
    assert outcome in ("truncated", "status 502"), outcome
    assert got < 2000000000
    # The front serves the next requests: a 502 within a second, others fine.
    started = time.monotonic()
    status, body = await asyncio.to_thread(fetch, port, "/alice.twistd/info")
    assert status == 502 and time.monotonic() - started < 1.0
    assert await asyncio.to_thread(fetch, port, "/~alice/") == (200, b"alice at home")
    # alice starts it again: the first request succeeds, the front was not restarted.
    personal = _start_alice(children, alice, tmp_path)
    assert (await asyncio.to_thread(fetch, port, "/alice.twistd/info"))[0] == 200
    if shutil.which("curl"):
        result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 f"http://127.0.0.1:{port}/alice.twistd/info"],
                                capture_output=True, text=True, timeout=10)
        assert result.stdout == "200"
    assert_clean_exit(personal)
    assert_clean_exit(front)


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read RSS")
async def test_100_mib_up_and_down_through_the_relay_in_bounded_front_memory(
        tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    base, alice, front = _front_and_alice(tmp_path, children, "--max-body", "200M")
    port = web_port(front)
    _start_alice(children, alice, tmp_path)
    assert (await asyncio.to_thread(fetch, port, "/alice.twistd/info"))[0] == 200
    baseline = _rss_kib(front.proc.pid, "VmRSS")
    size = 100 << 20

    def upload_and_download() -> tuple[dict, int]:
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        for _ in range(100):
            digest.update(block)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/alice.twistd/info", body=iter([block] * 100),
                         headers={"Content-Length": str(size)})
            answer = json.loads(conn.getresponse().read())
            assert answer["sha256"] == digest.hexdigest()
            conn.request("GET", f"/alice.twistd/zeros/{size}")
            response = conn.getresponse()
            got = 0
            while chunk := response.read(1 << 20):
                got += len(chunk)
            return answer, got
        finally:
            conn.close()

    answer, got = await asyncio.to_thread(upload_and_download)
    assert answer["bytes"] == size and got == size
    peak = _rss_kib(front.proc.pid, "VmHWM")
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 64, f"the front's RSS grew by {growth_mib:.1f} MiB"


async def test_publish_to_a_front_over_tls_as_processes(tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    cert, key, ca = write_tls_files(tmp_path)
    db = tmp_path / "front-data" / "accounts.sqlite3"
    db.parent.mkdir()
    for service in ("web-publish", "web"):
        result = pb("user", "add-service", "--db", str(db), service, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    for name, password, grant in (("alice", "alice-pw", "web-publish"), ("root", "root-pw", "web")):
        result = pb("user", "add", "--db", str(db), "--iterations", "4096", "-s", grant, name,
                    input=password + "\n", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    (tmp_path / "homes").mkdir()
    front = children("run", "--data-dir", str(tmp_path / "front-data"), "web", "--port", "0",
                     "--users", "--home-base", str(tmp_path / "homes"), "--pb-port", "0",
                     "--tls-cert", str(cert), "--tls-key", str(key))
    port = web_port(front)
    pb_port = int(front.wait_for("stdout", r"^web PB \(publish, admin\): pb://127\.0\.0\.1:(\d+)")
                  .group(1))
    personal = children("run", "--data-dir", str(tmp_path / "alice-data"), "web", "--personal",
                        "--publish-to", f"127.0.0.1:{pb_port}", "--user", "alice",
                        "--tls-ca", str(ca), "--resource", "tests.services.web.apps:site",
                        env=pb_env(PB_PASSWORD="alice-pw"), cwd=REPO)
    personal.wait_for("stderr", r"published .*path=/alice\.twistd/")
    context = ssl.create_default_context(cafile=str(ca))

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=context,
                                        timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = await asyncio.to_thread(get, "/alice.twistd/info")
    assert status == 200 and json.loads(body)["headers"]["x-forwarded-proto"] == "https"
    # The administrator sees it with pb call.
    result = pb("call", f"127.0.0.1:{pb_port}", "--tls-ca", str(ca), "--user", "root",
                "--service", "web", "mounts", env=pb_env(PB_PASSWORD="root-pw"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mounts = json.loads(result.stdout)
    assert mounts[0]["name"] == "alice" and mounts[0]["requests"] == 1
    # ... and unmounts it with pb call; the personal server logs in again
    # and is mounted again (a grant revoked would keep it out).
    result = pb("call", f"127.0.0.1:{pb_port}", "--tls-ca", str(ca), "--user", "root",
                "--service", "web", "unmount", '"alice"', env=pb_env(PB_PASSWORD="root-pw"),
                cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is True
    personal.wait_for("stderr", r"published .*path=/alice\.twistd/")
    for _ in range(100):
        status, _ = await asyncio.to_thread(get, "/alice.twistd/info")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    # kill -9: the mount disappears with the connection.
    personal.proc.kill()
    personal.proc.wait()
    for _ in range(100):
        status, _ = await asyncio.to_thread(get, "/alice.twistd/info")
        if status == 404:
            break
        await asyncio.sleep(0.05)
    assert status == 404
    assert_clean_exit(front)


async def test_a_toml_file_runs_a_front_and_a_personal_server_together(
        tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path / "homes"
    (base / "alice" / "public_html").mkdir(parents=True)
    (base / "alice" / "public_html" / "index.html").write_text("alice")
    (tmp_path / "app.toml").write_text(f'''
[[service]]
plugin = "web"
name = "alice"
personal = true
socket = "{base / 'alice' / '.pb-web.sock'}"
resource = "tests.services.web.apps:site"

[[service]]
plugin = "web"
name = "front"
port = 0
users = true
home_base = "{base}"
max_body = "1M"
relay_timeout = 5
''')
    child = children("run", "--data-dir", str(tmp_path / "data"), "-c", str(tmp_path / "app.toml"),
                     cwd=REPO)
    port = web_port(child)
    status, body = await asyncio.to_thread(fetch, port, "/alice.twistd/info")
    assert status == 200
    status, _ = await asyncio.to_thread(fetch, port, "/alice.twistd/info", "POST", b"x" * (2 << 20))
    assert status == 413
    assert_clean_exit(child)


async def test_a_web_table_in_a_toml_file_is_a_static_site(tmp_path: Path, children) -> None:  # type: ignore[no-untyped-def]
    """``[web]`` is the shorthand for a ``[[service]]`` table with plugin "web"."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("from the [web] table")
    (tmp_path / "app.toml").write_text(f'''
[web]
port = 0
static = "{tmp_path / 'site'}"
max_connections = 8
idle_timeout = 2.5
''')
    child = children("run", "--data-dir", str(tmp_path / "data"), "-c", str(tmp_path / "app.toml"))
    port = web_port(child)
    assert await asyncio.to_thread(fetch, port, "/") == (200, b"from the [web] table")
    assert_clean_exit(child)
    (tmp_path / "bad.toml").write_text("[web]\nport = 0\nstatic = 5\n")
    result = pb("run", "--data-dir", str(tmp_path / "data"), "-c", str(tmp_path / "bad.toml"),
                cwd=tmp_path)
    assert result.returncode != 0 and "web.static" in result.stderr
