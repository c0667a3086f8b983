"""Soak: one server with the echo, words, web and mail services under a mixed
load, with abuse phases, watching latency, memory, descriptors, tasks and
the brokers' reference tables.

The server is ``pb run -c soak.toml`` in a child process (this file with
``--serve``, which adds a SIGUSR1 handler that writes the server's own
figures: RSS, open descriptors, asyncio tasks, live brokers and the sizes of
their reference tables).  A personal web server publishes to the front over
PB, so HTTP goes through the relay.  The load, from this process:

* PB: ``--pb-clients`` (100) on echo, each ``--rate`` (5) calls a second;
  ``--words-clients`` (10) on words hold the room's ``GroupView`` (a
  Cacheable) while one of them changes the topic every second;
* IRC: ``--irc-clients`` (20) in one room, each saying a line a second and
  timing PING/PONG;
* HTTP: GET through the relay to the personal server, 5 a second;
* SMTP: a message a second (smtplib); POP3: every 2 s, retrieve and delete
  (poplib).  Every message acknowledged 250 must come back by POP3.

Abuse phases run in turn while the load goes on (each ``--phase`` seconds):
500 idle unauthenticated sockets on every port; a slow reader on each
protocol; a login guesser; an object-bomb frame; a 100 MiB upload.  The
regular clients are the canaries: their p99 per phase is printed.

Pass criteria (printed as PASS/FAIL, exit 1 on FAIL): PB p99 < 50 ms over
the calm part, every face's p99 < 100 ms in every abuse phase, RSS growth
< 5% after warm-up (measured from the end of warm-up to the end of the calm
part), no mail lost, and no broker or reference-table entry left once the
clients have gone.

    python bench/soak.py --smoke              # 60 s
    python bench/soak.py --duration 1800      # the figures of docs/reliability.md
    python bench/soak.py --tiny               # 5 s, few clients: the test's mode
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import poplib
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)]

PASSWORD = "soak-password-1"
ROOM = "soak"


# -- the server side ------------------------------------------------------------------


def _server_stats() -> dict:
    gc.collect()
    loop = asyncio._get_running_loop()
    from broker._core import Broker

    brokers = [o for o in gc.get_objects() if type(o) is Broker]
    tables = 0
    for b in brokers:
        refs = b.refs
        tables += (len(refs.local) + len(refs.remote) + len(refs.caches_out) + len(refs.caches_in)
                   + len(b.running) + len(b.waiting))
    rss = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(os.listdir("/proc/self/fd")),
            "tasks": len(asyncio.all_tasks(loop)) if loop else -1,
            "brokers": len(brokers), "table_entries": tables, "at": time.time()}


def serve(stats_path: str, pb_args: list[str]) -> int:
    """The server child: pb run, plus figures on SIGUSR1."""
    def on_usr1(signum, frame):  # noqa: ANN001
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as file:
            json.dump(_server_stats(), file)
        os.replace(tmp, stats_path)

    signal.signal(signal.SIGUSR1, on_usr1)
    from clients._cli import main
    return main(pb_args)


class Server:
    def __init__(self, work: Path, ports: dict[str, int]) -> None:
        self.work = work
        self.ports = ports
        self.stats_path = work / "stats.json"
        data = work / "data"
        data.mkdir()
        db = data / "accounts.sqlite3"
        env = {**os.environ, "PB_PASSWORD": PASSWORD}
        # Accounts made here with the minimum KDF cost: 130 clients logging
        # in at once must not measure PBKDF2 (the clients derive the key).
        from cred import scram
        from cred.store import AccountStore

        with AccountStore(db, create=True, iterations=scram.MIN_ITERATIONS) as store:
            for service in ("web-publish", "pbecho", "words"):
                store.add_service(service)
            store.add_user("alice", PASSWORD, keyring=[("web-publish", None)])
            store.add_user("soak", PASSWORD, keyring=[("pbecho", None)])
            for n in range(200):
                store.add_user(f"w{n}", PASSWORD, keyring=[("words", None)])
        (work / "homes").mkdir()
        (work / "mail").mkdir()
        config = f"""
[application]
name = "soak"
data_dir = "{data}"
loop = "asyncio"
log_level = "warning"
log_file = "{work / 'server.log'}"

[[service]]
plugin = "echo"
port = {ports['echo']}

[[service]]
plugin = "words"
pb_port = {ports['words']}
irc_port = {ports['irc']}
flood_rate = 1000.0
flood_burst = 1000
max_irc_per_source = 100000
max_irc_connections = 100000

[[service]]
plugin = "web"
port = {ports['http']}
users = true
home_base = "{work / 'homes'}"
pb_port = {ports['publish']}

[[service]]
plugin = "mail"
domain = ["example.org={work / 'mail'}"]
user = ["alice@example.org:{PASSWORD}"]
smtp_port = {ports['smtp']}
pop3_port = {ports['pop3']}
allow_plain_auth = true
max_connections = 100000
max_connections_per_host = 100000
"""
        (work / "soak.toml").write_text(config)
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "soak.py"), "--serve", str(self.stats_path), "--",
             "run", "-c", str(work / "soak.toml")],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "server.err", "w"))
        for name, port in ports.items():
            if name != "publish":
                _wait_port(port, self.proc, work)
        _wait_port(ports["publish"], self.proc, work)
        self.personal = subprocess.Popen(
            [sys.executable, "-m", "clients._cli", "run", "--data-dir", str(work / "alice"), "web",
             "--personal", "--publish-to", f"127.0.0.1:{ports['publish']}", "--user", "alice",
             "--resource", "tests.services.web.apps:site"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "personal.err", "w"))

    def stats(self) -> dict:
        before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(200):
            if self.stats_path.exists() and self.stats_path.stat().st_mtime_ns != before:
                with contextlib.suppress(ValueError):
                    return json.loads(self.stats_path.read_text())
            time.sleep(0.02)
        return {}

    def close(self) -> None:
        for proc in (self.personal, self.proc):
            proc.send_signal(signal.SIGTERM)
        for proc in (self.personal, self.proc):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_port(port: int, proc: subprocess.Popen, work: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(work / 'server.err').read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"port {port} never opened")


def _free_ports(names: list[str]) -> dict[str, int]:
    socks = []
    for _ in names:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = {name: sock.getsockname()[1] for name, sock in zip(names, socks)}
    for sock in socks:
        sock.close()
    return ports


# -- measuring ---------------------------------------------------------------------------


class Latencies:
    """Per face, per phase: seconds."""

    def __init__(self) -> None:
        self.phase = "warm-up"
        self.data: dict[tuple[str, str], list[float]] = {}
        self.errors: dict[str, int] = {}

    def add(self, face: str, seconds: float) -> None:
        self.data.setdefault((self.phase, face), []).append(seconds)

    def error(self, face: str) -> None:
        self.errors[face] = self.errors.get(face, 0) + 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the load ------------------------------------------------------------------------------


async def pb_echo_client(perspective, rate: float, lat: Latencies, stop: asyncio.Event) -> None:  # noqa: ANN001
    try:
        payload = {"n": 0, "text": "soak" * 8}
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await perspective.call_remote("echo", payload)
                lat.add("pb", time.perf_counter() - start)
            except Exception:
                lat.error("pb")
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    finally:
        await perspective.connection.close()


async def words_clients(port: int, count: int, lat: Latencies, stop: asyncio.Event) -> None:
    import broker
    import clients._cli.chat  # noqa: F401  (registers the GroupView RemoteCache, as pb chat does)

    class Mind(broker.Referenceable):
        def remote_message(self, *args):  # noqa: ANN002
            pass

        def remote_private(self, *args):  # noqa: ANN002
            pass

        def remote_presence(self, *args):  # noqa: ANN002
            pass

        def remote_joined(self, *args):  # noqa: ANN002
            pass

        def remote_left(self, *args):  # noqa: ANN002
            pass

        def remote_topic(self, *args):  # noqa: ANN002
            pass

    perspectives, views, rooms = [], [], []
    for n in range(count):
        p = await broker.login("127.0.0.1", port, f"w{100 + n}", PASSWORD, service="words", mind=Mind())
        room = await p.call_remote("join", ROOM)
        views.append(await room.call_remote("view"))  # a Cacheable: topic changes update it
        perspectives.append(p)
        rooms.append(room)
    try:
        seq = 0
        while not stop.is_set():
            seq += 1
            start = time.perf_counter()
            try:
                await rooms[0].call_remote("set_topic", f"topic {seq}")
                lat.add("pb-words", time.perf_counter() - start)
            except Exception:
                lat.error("pb-words")
            await asyncio.sleep(1.0)
    finally:
        for p in perspectives:
            await p.connection.close()


async def irc_client(port: int, n: int, lat: Latencies, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PASS {PASSWORD}\r\nNICK w{n}\r\nUSER w{n} 0 * :soak\r\nJOIN #{ROOM}\r\n".encode())
    pings: dict[str, float] = {}

    async def read() -> None:
        while line := await reader.readline():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == b"PONG":
                token = parts[-1].lstrip(b":").decode()
                if token in pings:
                    lat.add("irc", time.perf_counter() - pings.pop(token))

    task = asyncio.create_task(read())
    seq = 0
    try:
        while not stop.is_set():
            seq += 1
            token = f"{n}-{seq}"
            pings[token] = time.perf_counter()
            writer.write(f"PRIVMSG #{ROOM} :line {seq} from {n}\r\nPING :{token}\r\n".encode())
            await asyncio.sleep(1.0)
    finally:
        with contextlib.suppress(Exception):
            writer.write(b"QUIT :bye\r\n")
            await writer.drain()
        writer.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def http_client(port: int, lat: Latencies, stop: asyncio.Event, rate: float = 5.0) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /alice.twistd/info HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            if data.startswith(b"HTTP/1.1 200"):
                lat.add("http", time.perf_counter() - start)
            else:
                lat.error("http")
        except OSError:
            lat.error("http")
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))


class Mail:
    """SMTP sender and POP3 reader threads; counts what was lost."""

    def __init__(self, ports: dict[str, int], lat: Latencies, loop: asyncio.AbstractEventLoop) -> None:
        self.ports, self.lat, self.loop = ports, lat, loop
        self.acked: set[int] = set()
        self.got: set[int] = set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _add(self, face: str, seconds: float) -> None:
        self.loop.call_soon_threadsafe(self.lat.add, face, seconds)

    def _send(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            start = time.perf_counter()
            try:
                with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as client:
                    client.sendmail("soak@remote.test", ["alice@example.org"],
                                    f"Subject: soak {n}\r\nX-Soak: {n}\r\n\r\nbody {n}\r\n")
                self.acked.add(n)
                self._add("smtp", time.perf_counter() - start)
            except (OSError, smtplib.SMTPException):
                self.loop.call_soon_threadsafe(self.lat.error, "smtp")
            self.stop.wait(1.0)

    def retrieve(self) -> None:
        start = time.perf_counter()
        client = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        try:
            client.user("alice@example.org")
            client.pass_(PASSWORD)
            count, _ = client.stat()
            for i in range(1, count + 1):
                _, lines, _ = client.retr(i)
                for line in lines:
                    if line.startswith(b"X-Soak: "):
                        self.got.add(int(line.split()[1]))
                client.dele(i)
        finally:
            client.quit()
        self._add("pop3", time.perf_counter() - start)

    def _read(self) -> None:
        while not self.stop.wait(2.0):
            try:
                self.retrieve()
            except (OSError, poplib.error_proto):
                self.loop.call_soon_threadsafe(self.lat.error, "pop3")


# -- abuse ---------------------------------------------------------------------------------


async def idle_sockets(ports: dict[str, int], per_port: int, stop: asyncio.Event) -> None:
    socks = []
    for port in ports.values():
        for _ in range(per_port):
            with contextlib.suppress(OSError):
                socks.append(await asyncio.open_connection("127.0.0.1", port))
    await stop.wait()
    for _, writer in socks:
        writer.close()


async def slow_readers(ports: dict[str, int], stop: asyncio.Event) -> None:
    """Ask for a lot and never read: IRC (a busy room), HTTP (pipelined
    requests), SMTP and POP3 (commands piling answers), PB (calls)."""
    writers = []
    r, w = await asyncio.open_connection("127.0.0.1", ports["irc"])
    w.write(f"PASS {PASSWORD}\r\nNICK w199\r\nUSER w199 0 * :slow\r\nJOIN #{ROOM}\r\n".encode()
            + b"NAMES #soak\r\n" * 200)
    writers.append(w)
    r, w = await asyncio.open_connection("127.0.0.1", ports["http"])
    w.write(b"GET /alice.twistd/zeros/10000000 HTTP/1.1\r\nHost: soak\r\n\r\n" * 4)
    writers.append(w)
    for name, junk in (("smtp", b"NOOP\r\n" * 2000), ("pop3", b"CAPA\r\n" * 2000)):
        r, w = await asyncio.open_connection("127.0.0.1", ports[name])
        w.write(junk)
        writers.append(w)
    await stop.wait()
    for w in writers:
        w.close()


async def login_guesser(port: int, stop: asyncio.Event) -> None:
    import broker

    n = 0
    while not stop.is_set():
        n += 1
        with contextlib.suppress(Exception):
            p = await asyncio.wait_for(broker.login("127.0.0.1", port, "soak", f"guess{n}",
                                                    service="pbecho"), 5)
            await p.connection.close()


async def object_bomb(port: int, stop: asyncio.Event) -> None:
    """Deeply nested and very wide frames at the echo port, after a real HELLO."""
    import msgpack

    from broker._core import _hello_frame

    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            hello = _hello_frame(4 << 20, 100)
            writer.write(len(hello).to_bytes(4, "big") + hello)
            deep = b"\x91" * 100_000 + b"\xc0"
            wide = msgpack.packb([[0] * 1000] * 1000)
            for body in (deep, wide):
                writer.write(len(body).to_bytes(4, "big") + body)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await asyncio.sleep(0.5)


async def big_upload(port: int, stop: asyncio.Event, size: int = 100 << 20) -> None:
    """POST 100 MiB through the relay (the personal server counts it)."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST /alice.twistd/info HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n"
                         f"Connection: close\r\n\r\n".encode())
            chunk = b"u" * (1 << 20)
            sent = 0
            while sent < size and not stop.is_set():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(), 30)
            writer.close()


# -- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="pb-soak-"))
    ports = _free_ports(["echo", "words", "irc", "http", "publish", "smtp", "pop3"])
    server = await asyncio.to_thread(Server, work, ports)
    lat = Latencies()
    samples: list[tuple[str, dict]] = []
    failures: list[str] = []
    try:
        await _wait_relay(ports["http"])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def sample(label: str) -> None:
            stats = await asyncio.to_thread(server.stats)
            samples.append((label, stats))
            print(f"  [{label}] rss {stats.get('rss_kib', 0) / 1024:.1f} MiB, fds {stats.get('fds')}, "
                  f"tasks {stats.get('tasks')}, brokers {stats.get('brokers')}, "
                  f"table entries {stats.get('table_entries')}", flush=True)

        # Before any client: the personal server's publishing connection is
        # there already, with its tables; "empty" means back to this.
        await sample("baseline")
        # One after another: the login throttle starts simultaneous attempts
        # on one account from one address one by one, with back-off (so that
        # concurrency buys a guesser nothing); 100 at once overran the 30 s
        # login timeout.
        import broker

        perspectives = [await broker.login("127.0.0.1", ports["echo"], "soak", PASSWORD,
                                           service="pbecho") for _ in range(args.pb_clients)]
        clients = [asyncio.create_task(pb_echo_client(p, args.rate, lat, stop)) for p in perspectives]
        clients.append(asyncio.create_task(words_clients(ports["words"], args.words_clients, lat, stop)))
        clients += [asyncio.create_task(irc_client(ports["irc"], n, lat, stop))
                    for n in range(args.irc_clients)]
        clients.append(asyncio.create_task(http_client(ports["http"], lat, stop)))
        mail = Mail(ports, lat, loop)
        mail.start()

        warm = args.duration * 0.2
        calm = args.duration * 0.5
        print(f"soak: {args.duration:.0f} s, {args.pb_clients} PB x {args.rate}/s, "
              f"{args.words_clients} words PB, {args.irc_clients} IRC, HTTP via relay, SMTP+POP3; "
              f"work dir {work}", flush=True)
        await asyncio.sleep(warm)
        await sample("warm-up end")
        lat.phase = "calm"
        steps = max(1, int(calm // 5))
        for _ in range(steps):
            await asyncio.sleep(calm / steps)
            await sample("calm")
        abuse = {
            "idle-sockets": lambda s: idle_sockets(
                {k: v for k, v in ports.items() if k != "publish"} | {"publish": ports["publish"]},
                args.idle_per_port, s),
            "slow-readers": lambda s: slow_readers(ports, s),
            "login-guesser": lambda s: login_guesser(ports["echo"], s),
            "object-bomb": lambda s: object_bomb(ports["echo"], s),
            "100MiB-upload": lambda s: big_upload(ports["http"], s, args.upload_mib << 20),
        }
        phase_time = args.duration * 0.3 / len(abuse)
        for name, make in abuse.items():
            lat.phase = name
            phase_stop = asyncio.Event()
            task = asyncio.create_task(make(phase_stop))
            await asyncio.sleep(phase_time)
            phase_stop.set()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, 30)
            await sample(name)
        lat.phase = "end"
        stop.set()
        mail.stop.set()
        for result in await asyncio.gather(*clients, return_exceptions=True):
            if isinstance(result, BaseException):
                failures.append(f"a load client failed: {result!r}")
        for thread in mail.threads:
            await asyncio.to_thread(thread.join, 20)
        await asyncio.to_thread(mail.retrieve)  # what is left in the mailbox
        await asyncio.sleep(2.0)
        await sample("clients gone")
    finally:
        await asyncio.to_thread(server.close)

    # -- the report --
    faces = ["pb", "pb-words", "irc", "http", "smtp", "pop3"]
    phases = ["warm-up", "calm", "idle-sockets", "slow-readers", "login-guesser", "object-bomb",
              "100MiB-upload"]
    print(f"\n{'phase':<15}" + "".join(f"{f:>18}" for f in faces))
    print(f"{'':<15}" + "".join(f"{'p50/p99 ms (n)':>18}" for _ in faces))
    for phase in phases:
        row = f"{phase:<15}"
        for face in faces:
            values = lat.data.get((phase, face), [])
            row += f"{pct(values, .5) * 1000:7.1f}/{pct(values, .99) * 1000:6.1f} ({len(values):>3})" \
                if values else f"{'-':>18}"
        print(row)
    print(f"errors: {lat.errors or 'none'}")
    calm_pb = lat.data.get(("calm", "pb"), [])
    if not calm_pb or pct(calm_pb, .99) >= 0.050:
        failures.append(f"PB p99 in the calm phase is {pct(calm_pb, .99) * 1000:.1f} ms (limit 50)")
    for phase in phases[2:]:
        for face in ("pb", "irc", "http"):
            values = lat.data.get((phase, face), [])
            if values and pct(values, .99) >= 0.100:
                failures.append(f"{face} canary p99 during {phase}: {pct(values, .99) * 1000:.1f} ms "
                                f"(limit 100)")
    by_label = {label: stats for label, stats in samples}
    calm_rss = [s.get("rss_kib", 0) for label, s in samples if label == "calm"]
    base = by_label.get("warm-up end", {}).get("rss_kib", 0)
    if base and calm_rss:
        growth = (calm_rss[-1] - base) / base
        print(f"RSS after warm-up {base / 1024:.1f} MiB, end of calm {calm_rss[-1] / 1024:.1f} MiB "
              f"({growth * 100:+.1f}%)")
        if growth >= 0.05:
            failures.append(f"RSS grew {growth * 100:.1f}% after warm-up (limit 5%)")
    lost = sorted(mail.acked - mail.got)
    print(f"mail: {len(mail.acked)} acknowledged, {len(mail.got)} retrieved, lost {lost[:10] or 'none'}")
    if lost:
        failures.append(f"{len(lost)} acknowledged messages never came back by POP3")
    gone, base_stats = by_label.get("clients gone", {}), by_label.get("baseline", {})
    for key in ("brokers", "table_entries", "tasks"):
        if gone.get(key) != base_stats.get(key):
            failures.append(f"after the clients left: {key} {gone.get(key)}, "
                            f"before they came {base_stats.get(key)}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("PASS" if not failures else "FAIL", flush=True)
    return 1 if failures else 0


async def _wait_relay(port: int) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /alice.twistd/info HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            if data.startswith(b"HTTP/1.1 200"):
                return
        await asyncio.sleep(0.1)
    raise SystemExit("the personal server never appeared behind the relay")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--smoke", action="store_true", help="60 s")
    parser.add_argument("--tiny", action="store_true", help="5 s, few clients, small abuse")
    parser.add_argument("--pb-clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="calls a second per PB client")
    parser.add_argument("--words-clients", type=int, default=10)
    parser.add_argument("--irc-clients", type=int, default=20)
    parser.add_argument("--idle-per-port", type=int, default=500)
    parser.add_argument("--upload-mib", type=int, default=100)
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration = 60.0
    if args.tiny:
        args.duration, args.pb_clients, args.words_clients, args.irc_clients = 5.0, 3, 2, 2
        args.idle_per_port, args.upload_mib = 5, 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
