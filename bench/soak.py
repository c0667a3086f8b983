"""Soak: one server with the echo, words, web and mail services under a mixed
load, with abuse phases, watching latency, memory, descriptors, tasks and
the brokers' reference tables.

Processes (so that what is measured is the server's loop, not a client
sharing it):

* the server: ``pb run -c soak.toml``, in this file's ``--serve`` mode,
  which adds signal handlers writing the server's own figures (SIGUSR1:
  RSS, open descriptors, asyncio tasks; SIGUSR2 also counts the live
  brokers and their reference-table entries, which walks every object, so
  only before and after the load) and a stall watch (``StallWatch``);
* a personal web server publishing to the front over PB, so HTTP goes
  through the relay;
* two load processes (``--load pb`` and ``--load mixed``), which are also
  the canaries:

  * PB: ``--pb-clients`` (100) on echo, each ``--rate`` (5) calls a second;
  * ``--words-clients`` (10) on words hold the room's ``GroupView`` (a
    Cacheable) while one of them changes the topic every second;
  * IRC: ``--irc-clients`` (20) in one room, each saying a line a second
    and timing PING/PONG;
  * HTTP: GET through the relay to the personal server, 5 a second;
  * SMTP: a message a second (smtplib); POP3: every 2 s, retrieve and
    delete (poplib).  Every message acknowledged 250 must come back by POP3;
  * the Twisted dialect: echo calls, 5 a second, on a second echo listener
    speaking it (``soak-echo-twisted``, registered by the server child);
  * the manhole: an admin session running a short command every second.

* one abuse process per phase (``--abuse NAME``), started and imported
  before its phase begins: 500 idle unauthenticated sockets on every port;
  a slow reader on each protocol (the manhole included); a login guesser
  (echo, the manhole's admin, the Twisted dialect); object-bomb frames;
  100 MiB uploads through the relay, each checked (byte count and SHA-256
  as the personal server saw them), after one over the body limit that
  must get a 413;
* this process, the coordinator: it tells the others the phase (a line on
  their stdin), samples the server, and collects the children's reports
  (a JSON line on their stdout).  It opens no socket to the server.

Everything shares the machine's cores; the report ends with each process's
CPU seconds and the machine's load average, so a reader can tell a slow
server from a busy machine.  ``--spy`` adds py-spy's view of the server's
main thread in each phase.

Pass criteria (printed as PASS/FAIL, exit 1 on FAIL): PB p99 < 50 ms over
the calm part, every face's p99 < 100 ms in every abuse phase (a face
with fewer than 20 samples in a phase is listed, not judged), RSS growth
< 5% after warm-up (measured from the end of warm-up to the end of the calm
part), no mail lost, no check of an abuse failed, and no broker or
reference-table entry left once the clients have gone.

    python bench/soak.py --smoke              # 60 s
    python bench/soak.py --duration 1800      # the figures of docs/reliability.md
    python bench/soak.py --tiny               # 5 s, few clients: the test's mode
    python bench/soak.py --duration 40 --phases idle-sockets --phase-seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
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
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)]

PASSWORD = "soak-password-1"
ROOM = "soak"


# -- the server side ------------------------------------------------------------------


def _server_stats(census: bool) -> dict:
    """RSS, descriptors and tasks; with ``census``, also the live brokers and
    their table entries, which needs a full collection and a walk of every
    object: 20-150 ms of the server's loop, so only when no canary is timed."""
    loop = asyncio._get_running_loop()
    brokers: list = []
    tables = None
    if census:
        from broker._core import Broker

        gc.collect()
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
            "brokers": len(brokers) if census else None, "table_entries": tables,
            "at": time.time()}


class StallWatch:
    """Notices when the server's event loop stops turning, and whose fault
    it was.

    A callback on the loop notes the time and the main thread's CPU time
    every 10 ms; a thread checks the note every 10 ms and, while it is
    older than ``threshold``, samples the main thread's stack.  A stall is
    reported with its length, the CPU time the main thread used during it
    (about the length: the loop was busy with our own work; much less: the
    thread was waiting for a core, the machine's doing, or in a blocking
    call) and what the loop was doing."""

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self.beat = (time.monotonic(), 0.0)  # (monotonic, main thread CPU) at the last beat
        self.stalls: list[dict] = []  # since the last stats
        self._main = threading.main_thread().ident or 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        def beat() -> None:
            self.beat = (time.monotonic(), time.thread_time())
            loop.call_later(0.01, beat)

        loop.call_soon(beat)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        import collections
        import traceback

        stacks: collections.Counter | None = None
        started = (0.0, 0.0)
        while True:
            time.sleep(0.01)
            if time.monotonic() - self.beat[0] > self.threshold:
                if stacks is None:
                    stacks, started = collections.Counter(), self.beat
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    # The innermost frames of this project (and the one
                    # just below them) say what the loop is busy with.
                    lines = [f"{Path(f.filename).name}:{f.lineno} {f.name}"
                             for f in traceback.extract_stack(frame)[-12:]]
                    stacks[" < ".join(reversed(lines[-6:]))] += 1
            elif stacks is not None:
                ended = self.beat
                self.stalls.append({"ms": round((ended[0] - started[0]) * 1000),
                                    "cpu_ms": round((ended[1] - started[1]) * 1000),
                                    "at": time.time() - (time.monotonic() - started[0]),
                                    "stacks": stacks.most_common(2)})
                stacks = None

    def take(self) -> list[dict]:
        taken, self.stalls = self.stalls, []
        return taken


class GcWatch:
    """Times the garbage collector's passes (gc.callbacks), per generation:
    a full pass walks every tracked object, so its length grows with the
    connections open.  Wall time and the collecting thread's CPU time: on a
    busy machine the first also counts the waits for a core."""

    def __init__(self) -> None:
        self._started = (0.0, 0.0)
        #: generation -> [(wall ms, CPU ms)], since the last stats
        self.passes: dict[int, list[tuple[float, float]]] = {}
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
        else:
            wall, cpu = self._started
            self.passes.setdefault(info["generation"], []).append(
                ((time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000))

    def take(self) -> dict:
        """Per generation: [passes, the longest's wall ms, its CPU ms]."""
        taken, self.passes = self.passes, {}
        return {str(gen): [len(ms), *(round(v, 1) for v in max(ms))]
                for gen, ms in sorted(taken.items())}


class _TwistedEchoPlugin:
    """``soak-echo-twisted``: the echo service again, on the Twisted dialect,
    under a cred service name of its own (one application's realm takes
    each name once, and the echo plug-in always says ``pbecho``)."""

    name = "soak-echo-twisted"
    description = "echo on the Twisted PB dialect, for the soak"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, required=True)

    def build(self, options: argparse.Namespace, application: Any) -> Any:
        from services import account_portal
        from services.echo import EchoService

        return EchoService("echo-twisted", portal=account_portal(application), port=options.port,
                           service_name=TWISTED_SERVICE, dialect="twisted")


TWISTED_SERVICE = "pbecho-twisted"


def serve(stats_path: str, pb_args: list[str]) -> int:
    """The server child: pb run, plus figures on SIGUSR1 and a stall watch."""
    import services
    import services._runner

    services.register_plugin(_TwistedEchoPlugin())
    watch = StallWatch()
    gc_watch = GcWatch()
    choose = services._runner.loop_factory

    def loop_factory(choice: str):  # noqa: ANN202
        name, factory = choose(choice)

        def watched() -> asyncio.AbstractEventLoop:
            loop = factory()
            watch.attach(loop)
            return loop

        return name, watched

    # pb run picks its loop through this module function; the wrapper only
    # adds the watch to the loop it makes.
    services._runner.loop_factory = loop_factory

    def on_signal(signum, frame):  # noqa: ANN001
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as file:
            # The passes before the census's own full collection.
            passes = gc_watch.take()
            json.dump({**_server_stats(census=signum == signal.SIGUSR2), "stalls": watch.take(),
                       "gc": passes}, file)
        os.replace(tmp, stats_path)

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)
    from clients._cli import main
    return main(pb_args)


PORT_NAMES = ["echo", "words", "irc", "http", "publish", "smtp", "pop3", "twisted", "manhole"]


def write_server_files(work: Path, ports: dict[str, int], loop: str = "auto",
                       max_body_mib: int = 128) -> None:
    """The server's account database and ``soak.toml`` under ``work``."""
    data = work / "data"
    data.mkdir()
    db = data / "accounts.sqlite3"
    # Accounts made here with the minimum KDF cost: 130 clients logging
    # in at once must not measure PBKDF2 (the clients derive the key).
    from cred import scram
    from cred.store import AccountStore

    with AccountStore(db, create=True, iterations=scram.MIN_ITERATIONS) as store:
        for service in ("web-publish", "pbecho", "words", TWISTED_SERVICE, "manhole"):
            store.add_service(service)
        store.add_user("alice", PASSWORD, keyring=[("web-publish", None)])
        store.add_user("soak", PASSWORD, keyring=[("pbecho", None)])
        # A Twisted client proves its password with Twisted's MD5
        # challenge, so its account keeps that secret too.
        store.add_user("tw", PASSWORD, keyring=[(TWISTED_SERVICE, None)])
        from cred.twisted_secret import set_twisted_secret

        set_twisted_secret(store, "tw", PASSWORD)
        store.add_user("admin", PASSWORD, keyring=[("manhole", None)])
        for n in range(200):
            store.add_user(f"w{n}", PASSWORD, keyring=[("words", None)])
    (work / "homes").mkdir()
    (work / "mail").mkdir()
    config = f"""
[application]
name = "soak"
data_dir = "{data}"
loop = "{loop}"
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
max_body = "{max_body_mib}M"

[[service]]
plugin = "mail"
domain = ["example.org={work / 'mail'}"]
user = ["alice@example.org:{PASSWORD}"]
smtp_port = {ports['smtp']}
pop3_port = {ports['pop3']}
allow_plain_auth = true
max_connections = 100000
max_connections_per_host = 100000

[[service]]
plugin = "soak-echo-twisted"
port = {ports['twisted']}

[[service]]
plugin = "manhole"
port = {ports['manhole']}
"""
    (work / "soak.toml").write_text(config)


class Server:
    def __init__(self, work: Path, ports: dict[str, int], loop: str = "auto",
                 max_body_mib: int = 128) -> None:
        self.work = work
        self.ports = ports
        self.stats_path = work / "stats.json"
        write_server_files(work, ports, loop, max_body_mib)
        env = {**os.environ, "PB_PASSWORD": PASSWORD}
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
             "--resource", "tests.services.web.apps:site", "--max-body", f"{max_body_mib}M"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "personal.err", "w"))

    def stats(self, census: bool = False) -> dict:
        before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR2 if census else signal.SIGUSR1)
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
    """Per face, per phase: seconds; and the slowest few with the wall-clock
    time they ended, to line them up with the server's stalls and the
    phases' starts and ends."""

    WORST = 3

    def __init__(self) -> None:
        self.phase = "warm-up"
        self.data: dict[tuple[str, str], list[float]] = {}
        self.worst: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.errors: dict[str, int] = {}

    def add(self, face: str, seconds: float) -> None:
        key = (self.phase, face)
        self.data.setdefault(key, []).append(seconds)
        worst = self.worst.setdefault(key, [])
        if len(worst) < self.WORST or seconds > worst[0][0]:
            heapq.heappush(worst, (seconds, time.time()))
            if len(worst) > self.WORST:
                heapq.heappop(worst)

    def error(self, face: str) -> None:
        self.errors[face] = self.errors.get(face, 0) + 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the load ------------------------------------------------------------------------------


async def pb_echo_client(perspective, rate: float, lat: Latencies, stop: asyncio.Event,  # noqa: ANN001
                         face: str = "pb") -> None:
    try:
        payload = {"n": 0, "text": "soak" * 8}
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await perspective.call_remote("echo", payload)
                lat.add(face, time.perf_counter() - start)
            except Exception:
                lat.error(face)
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


async def twisted_dialect_client(port: int, lat: Latencies, stop: asyncio.Event) -> None:
    """Echo calls on the Twisted-dialect listener, 5 a second, with our
    client speaking that dialect (what a Twisted PB client sends)."""
    import broker

    perspective = await broker.login("127.0.0.1", port, "tw", PASSWORD, service=TWISTED_SERVICE,
                                     dialect="twisted")
    await pb_echo_client(perspective, 5.0, lat, stop, face="pb-twisted")


MANHOLE_COMMAND = "len(asyncio.all_tasks())"


async def manhole_client(port: int, lat: Latencies, stop: asyncio.Event) -> None:
    """An admin's manhole session running a short command every second."""
    import broker

    perspective = await broker.login("127.0.0.1", port, "admin", PASSWORD, service="manhole")
    try:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                result = await perspective.call_remote("run", MANHOLE_COMMAND)
                if result.get("error"):
                    lat.error("manhole")
                else:
                    lat.add("manhole", time.perf_counter() - start)
            except Exception:
                lat.error("manhole")
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - start)))
    finally:
        await perspective.connection.close()


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

# The abuse comes from another address than the load: the server's limits
# and its login throttle are per source address too, by design, so a
# guesser (or 500 idle sockets) on the canaries' own address would slow or
# refuse them on purpose, which is not what a canary is for.
ABUSER = ("127.0.0.2", 0)


async def idle_sockets(config: dict, stop: asyncio.Event, report: dict) -> None:
    socks = []
    for port in config["ports"].values():
        for _ in range(config["idle_per_port"]):
            with contextlib.suppress(OSError):
                socks.append(await asyncio.open_connection("127.0.0.1", port, local_addr=ABUSER))
    report["opened"] = len(socks)
    await stop.wait()
    for _, writer in socks:
        writer.close()


async def slow_readers(config: dict, stop: asyncio.Event, report: dict) -> None:
    """Ask for a lot and never read: IRC (a busy room), HTTP (pipelined
    requests), SMTP and POP3 (commands piling answers), PB in both dialects
    (echo calls of 64 KiB with the client's reading paused), the manhole
    (an admin running code with long answers, reading paused)."""
    import broker

    ports = config["ports"]
    writers = []
    r, w = await asyncio.open_connection("127.0.0.1", ports["irc"], local_addr=ABUSER)
    w.write(f"PASS {PASSWORD}\r\nNICK w199\r\nUSER w199 0 * :slow\r\nJOIN #{ROOM}\r\n".encode()
            + b"NAMES #soak\r\n" * 200)
    writers.append(w)
    r, w = await asyncio.open_connection("127.0.0.1", ports["http"], local_addr=ABUSER)
    w.write(b"GET /alice.twistd/zeros/10000000 HTTP/1.1\r\nHost: soak\r\n\r\n" * 4)
    writers.append(w)
    for name, junk in (("smtp", b"NOOP\r\n" * 2000), ("pop3", b"CAPA\r\n" * 2000)):
        r, w = await asyncio.open_connection("127.0.0.1", ports[name], local_addr=ABUSER)
        w.write(junk)
        writers.append(w)
    p = await broker.login("127.0.0.1", ports["echo"], "soak", PASSWORD, service="pbecho",
                           local_addr=ABUSER)
    tw = await broker.login("127.0.0.1", ports["twisted"], "tw", PASSWORD, service=TWISTED_SERVICE,
                            dialect="twisted", local_addr=ABUSER)
    admin = await broker.login("127.0.0.1", ports["manhole"], "admin", PASSWORD, service="manhole",
                               local_addr=ABUSER)
    transports = [who.connection._protocol.transport for who in (p, tw, admin)]  # type: ignore[attr-defined]
    for transport in transports:
        transport.pause_reading()
    calls = [asyncio.ensure_future(p.call_remote("echo", b"s" * 65536)) for _ in range(200)]
    calls += [asyncio.ensure_future(tw.call_remote("echo", b"t" * 65536)) for _ in range(200)]
    # Each answer holds a 60 kB repr; the session runs one at a time.
    calls += [asyncio.ensure_future(admin.call_remote("run", "'m' * 60000")) for _ in range(50)]
    await stop.wait()
    for w in writers:
        w.close()
    for call in calls:
        call.cancel()
    for transport in transports:
        transport.abort()


async def login_guesser(config: dict, stop: asyncio.Event, report: dict) -> None:
    import broker

    ports = config["ports"]
    # Each target in turn: the echo service, the manhole (an admin account:
    # the prize), and the Twisted dialect's MD5 challenge.
    targets = [("echo", dict(port=ports["echo"], username="soak", service="pbecho")),
               ("manhole", dict(port=ports["manhole"], username="admin", service="manhole")),
               ("twisted", dict(port=ports["twisted"], username="tw", service=TWISTED_SERVICE,
                                dialect="twisted"))]
    guesses = {name: 0 for name, _ in targets}
    n = 0
    while not stop.is_set():
        n += 1
        name, target = targets[n % len(targets)]
        guesses[name] += 1
        try:
            p = await asyncio.wait_for(broker.login("127.0.0.1", password=f"guess{n}",
                                                    local_addr=ABUSER, **target), 5)
        except Exception:
            pass
        else:
            await p.connection.close()
            report.setdefault("failures", []).append(f"the guess guess{n} logged in to {name}")
    report["guesses"] = guesses


async def object_bomb(config: dict, stop: asyncio.Event, report: dict) -> None:
    """Deeply nested and very wide frames at the echo port, after a real HELLO."""
    import msgpack  # type: ignore[import-untyped]

    from broker._core import _hello_frame

    sent = 0
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", config["ports"]["echo"],
                                                           local_addr=ABUSER)
            hello = _hello_frame(4 << 20, 100)
            writer.write(len(hello).to_bytes(4, "big") + hello)
            deep = b"\x91" * 100_000 + b"\xc0"
            wide = msgpack.packb([[0] * 1000] * 1000)
            for body in (deep, wide):
                writer.write(len(body).to_bytes(4, "big") + body)
            sent += 2
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await asyncio.sleep(0.5)
    report["bombs"] = sent


async def big_upload(config: dict, stop: asyncio.Event, report: dict) -> None:
    """POST ``upload_mib`` MiB through the relay; the personal server answers
    the byte count and SHA-256 it saw, which must be what was sent.  An
    upload over the front's body limit must get a 413 at once.  At least
    one upload is always completed, however short the phase."""
    import hashlib

    port, size = config["ports"]["http"], config["upload_mib"] << 20
    failures = report.setdefault("failures", [])
    chunk = b"u" * (1 << 20)
    digest = hashlib.sha256()
    for _ in range(size >> 20):
        digest.update(chunk)
    want = {"bytes": size, "sha256": digest.hexdigest()}

    # Over the limit: refused on the Content-Length, before any body byte.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=ABUSER)
    writer.write(f"POST /alice.twistd/info HTTP/1.1\r\nHost: soak\r\nContent-Length: "
                 f"{(config['max_body_mib'] + 1) << 20}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    if not answer.startswith(b"HTTP/1.1 413 "):
        failures.append(f"an upload over the limit got {answer[:60]!r}, not a 413")

    done = 0
    seconds: list[float] = []
    while done == 0 or not stop.is_set():
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=ABUSER)
        writer.write(f"POST /alice.twistd/info HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        for _ in range(size >> 20):
            writer.write(chunk)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 120)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        try:
            got = json.loads(body)
        except ValueError:
            got = None
        if not head.startswith(b"HTTP/1.1 200 ") or got != want:
            failures.append(f"upload {done + 1}: {head[:40]!r} {body[:200]!r}, expected {want}")
            break
        done += 1
        seconds.append(time.perf_counter() - start)
    report["uploads_checked"] = done
    if seconds:
        report["upload_s_median_max"] = [round(pct(seconds, .5), 2), round(max(seconds), 2)]


ABUSE = {
    "idle-sockets": idle_sockets,
    "slow-readers": slow_readers,
    "login-guesser": login_guesser,
    "object-bomb": object_bomb,
    "100MiB-upload": big_upload,
}


# -- the load processes --------------------------------------------------------------------


async def pb_load(config: dict, lat: Latencies, stop: asyncio.Event, report: dict) -> None:
    """The PB echo clients, in a process of their own."""
    import broker

    # One after another: the login throttle starts simultaneous attempts
    # on one account from one address one by one, with back-off (so that
    # concurrency buys a guesser nothing); 100 at once overran the 30 s
    # login timeout.
    perspectives = [await broker.login("127.0.0.1", config["ports"]["echo"], "soak", PASSWORD,
                                       service="pbecho") for _ in range(config["pb_clients"])]
    print("ready", flush=True)
    await asyncio.gather(*(pb_echo_client(p, config["rate"], lat, stop) for p in perspectives))


async def mixed_load(config: dict, lat: Latencies, stop: asyncio.Event, report: dict) -> None:
    """Words PB, the Twisted-dialect echo, the manhole, IRC, HTTP through
    the relay, SMTP and POP3."""
    ports = config["ports"]
    mail = Mail(ports, lat, asyncio.get_running_loop())
    clients = [asyncio.create_task(words_clients(ports["words"], config["words_clients"], lat, stop))]
    clients += [asyncio.create_task(irc_client(ports["irc"], n, lat, stop))
                for n in range(config["irc_clients"])]
    clients.append(asyncio.create_task(http_client(ports["http"], lat, stop)))
    clients.append(asyncio.create_task(twisted_dialect_client(ports["twisted"], lat, stop)))
    clients.append(asyncio.create_task(manhole_client(ports["manhole"], lat, stop)))
    mail.start()
    print("ready", flush=True)
    results = await asyncio.gather(*clients, return_exceptions=True)
    report["failures"] = [f"a load client failed: {r!r}" for r in results if isinstance(r, BaseException)]
    mail.stop.set()
    for thread in mail.threads:
        await asyncio.to_thread(thread.join, 20)
    await asyncio.to_thread(mail.retrieve)  # what is left in the mailbox
    report["mail_acked"] = sorted(mail.acked)
    report["mail_got"] = sorted(mail.got)


LOADS = {"pb": pb_load, "mixed": mixed_load}


def child(mode: str, name: str, config_json: str) -> int:
    """A load (``--load``) or abuse (``--abuse``) process.  Its stdin takes
    ``phase NAME`` and ``stop``; its last stdout line is a JSON report."""
    with contextlib.suppress(ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    config = json.loads(config_json)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lat, stop = Latencies(), asyncio.Event()
        report: dict[str, Any] = {}
        commands_go: list[asyncio.Event] = []

        def commands() -> None:
            for line in sys.stdin:
                word, _, arg = line.strip().partition(" ")
                if word == "phase":
                    loop.call_soon_threadsafe(setattr, lat, "phase", arg)
                elif word == "go":
                    loop.call_soon_threadsafe(commands_go[0].set)
                elif word == "stop":
                    break
            # Also on EOF (the coordinator has gone); an abuse told to stop
            # before it was told to go goes straight to its report.
            for event in (*commands_go, stop):
                loop.call_soon_threadsafe(event.set)

        threading.Thread(target=commands, daemon=True).start()
        try:
            if mode == "--load":
                await LOADS[name](config, lat, stop, report)
            else:
                import broker  # noqa: F401  (imported before "ready": not timed in the phase)
                import msgpack  # noqa: F401

                go = asyncio.Event()
                commands_go.append(go)
                print("ready", flush=True)
                await go.wait()
                await ABUSE[name](config, stop, report)
        except Exception as exc:  # reported, so that the coordinator's FAIL says why
            report.setdefault("failures", []).append(f"the {name} process failed: {exc!r}")
        # Microseconds, as integers: the 30-minute run has a million samples.
        report["latencies"] = [[phase, face, [round(v * 1e6) for v in values], lat.worst[phase, face]]
                               for (phase, face), values in lat.data.items()]
        report["errors"] = lat.errors
        print(json.dumps(report), flush=True)

    asyncio.run(main())
    return 0


class Child:
    """The coordinator's handle on a child process of this script."""

    def __init__(self, mode: str, name: str, config: dict) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "soak.py"), mode, name, json.dumps(config)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != "ready":
            raise SystemExit(f"the {self.name} process did not start: {line!r}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    async def finish(self, timeout: float) -> dict:
        self.send("stop")
        try:
            out, _ = await asyncio.to_thread(self.proc.communicate, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"failures": [f"the {self.name} process did not stop within {timeout:.0f} s"]}
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"failures": [f"the {self.name} process gave no report (exit {self.proc.returncode})"]}


# -- the run ---------------------------------------------------------------------------------


# A p99 of fewer samples is their maximum: the smoke run's abuse phases
# (12 s) see only a few mails and POP3 sessions; the 30-minute run judges
# every face.
CANARY_MIN_SAMPLES = 20
FACES = ["pb", "pb-words", "pb-twisted", "manhole", "irc", "http", "smtp", "pop3"]


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="pb-soak-"))
    ports = _free_ports(PORT_NAMES)
    server = await asyncio.to_thread(Server, work, ports, args.loop, args.upload_mib + 28)
    lat = Latencies()
    samples: list[tuple[str, dict]] = []
    failures: list[str] = []
    reports: list[dict] = []
    config = {"ports": ports, "pb_clients": args.pb_clients, "rate": args.rate,
              "words_clients": args.words_clients, "irc_clients": args.irc_clients,
              "idle_per_port": args.idle_per_port, "upload_mib": args.upload_mib,
              "max_body_mib": args.upload_mib + 28}
    spies: list[subprocess.Popen] = []
    starts: dict[str, float] = {}  # wall-clock time each phase began
    cpu: dict[str, float] = {}  # each process's CPU seconds: who had the cores
    stalls: list[dict] = []  # the server loop's, from StallWatch
    load_average = [os.getloadavg()]
    try:
        await _wait_relay(ports["http"])

        async def sample(label: str, census: bool = False) -> None:
            stats = await asyncio.to_thread(server.stats, census)
            samples.append((label, stats))
            gc_passes = stats.get("gc", {})
            print(f"  [{label}] rss {stats.get('rss_kib', 0) / 1024:.1f} MiB, fds {stats.get('fds')}, "
                  f"tasks {stats.get('tasks')}"
                  + (f", brokers {stats.get('brokers')}, table entries {stats.get('table_entries')}"
                     if census else "")
                  + (", gc passes (gen: count, longest ms wall/CPU) "
                     + " ".join(f"{gen}: {n}, {wall}/{cpu}" for gen, (n, wall, cpu) in gc_passes.items())
                     if gc_passes else ""), flush=True)
            for stall in stats.get("stalls", []):
                stalls.append(stall)
                if stall["ms"] >= 100 and stall["cpu_ms"] >= stall["ms"] / 2:
                    # The loop's own work: say what it was.
                    print(f"      server loop busy {stall['ms']} ms (CPU {stall['cpu_ms']} ms) at "
                          f"{_when(stall['at'], starts)}: "
                          + " | ".join(f"{n}x {stack}" for stack, n in stall["stacks"]), flush=True)

        def spy(phase: str, seconds: float) -> None:
            if args.spy:
                spies.append(subprocess.Popen(
                    [args.spy, "record", "--nonblocking", "-p", str(server.proc.pid), "-r", "100",
                     "-d", str(max(1, int(seconds))), "--format", "raw", "-o",
                     str(work / f"spy-{phase}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        # Before any client: the personal server's publishing connection is
        # there already, with its tables; "empty" means back to this.  The
        # request that found the relay ready may still hold an entry for a
        # moment, so the baseline is the first reading that repeats.
        for _ in range(10):
            await sample("baseline", census=True)
            if len(samples) > 1 and all(samples[-1][1].get(k) == samples[-2][1].get(k)
                                        for k in ("brokers", "table_entries", "tasks")):
                break
            await asyncio.sleep(0.5)
        loads = [Child("--load", name, config) for name in LOADS]
        for load in loads:
            await load.ready()
        starts["warm-up"] = time.time()

        warm = args.duration * 0.2
        calm = args.duration * 0.5
        print(f"soak: {args.duration:.0f} s, {args.pb_clients} PB x {args.rate}/s, "
              f"{args.words_clients} words PB, {args.irc_clients} IRC, HTTP via relay, SMTP+POP3; "
              f"loop {args.loop}; work dir {work}", flush=True)
        await asyncio.sleep(warm)
        await sample("warm-up end")
        starts["calm"] = time.time()
        for load in loads:
            load.send("phase calm")
        spy("calm", calm)
        steps = max(1, int(calm // 5))
        for _ in range(steps):
            await asyncio.sleep(calm / steps)
            await sample("calm")
        phase_time = args.phase_seconds or args.duration * 0.3 / len(ABUSE)
        for name in args.phases:
            abuse = Child("--abuse", name, config)
            await abuse.ready()  # its interpreter has started: not part of the phase
            starts[name] = time.time()
            for load in loads:
                load.send(f"phase {name}")
            spy(name, phase_time)
            abuse.send("go")
            await asyncio.sleep(phase_time)
            cpu[f"abuse {name}"] = _cpu_seconds(abuse.proc.pid)
            report = await abuse.finish(timeout=180)
            failures += report.get("failures", [])
            details = {k: v for k, v in report.items() if k not in ("failures", "latencies", "errors")}
            await sample(name)
            if details:
                print(f"      {name}: {details}", flush=True)
        for load in loads:
            load.send("phase end")
            cpu[f"load {load.name}"] = _cpu_seconds(load.proc.pid)
        for load in loads:
            reports.append(await load.finish(timeout=120))
        await asyncio.sleep(2.0)
        # Closing connections take a few loop turns each (and longer on a
        # busy machine): read again, for up to 10 s, until back to the
        # baseline; a leak stays and fails below.
        baseline = [stats for label, stats in samples if label == "baseline"][-1]
        for _ in range(20):
            await sample("clients gone", census=True)
            if all(samples[-1][1].get(k) == baseline.get(k)
                   for k in ("brokers", "table_entries", "tasks")):
                break
            await asyncio.sleep(0.5)
        cpu["server"] = _cpu_seconds(server.proc.pid)
        cpu["personal web server"] = _cpu_seconds(server.personal.pid)
        load_average.append(os.getloadavg())
    finally:
        for proc in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        await asyncio.to_thread(server.close)

    for report in reports:
        failures += report.get("failures", [])
        for phase, face, values, worst in report.get("latencies", []):
            lat.data.setdefault((phase, face), []).extend(v / 1e6 for v in values)
            lat.worst.setdefault((phase, face), []).extend(map(tuple, worst))
        for face, n in report.get("errors", {}).items():
            lat.errors[face] = lat.errors.get(face, 0) + n

    # -- the report --
    phases = ["warm-up", "calm", *args.phases]  # as run
    print(f"\n{'phase':<15}" + "".join(f"{f:>18}" for f in FACES))
    print(f"{'':<15}" + "".join(f"{'p50/p99 ms (n)':>18}" for _ in FACES))
    for phase in phases:
        row = f"{phase:<15}"
        for face in FACES:
            values = lat.data.get((phase, face), [])
            row += f"{pct(values, .5) * 1000:7.1f}/{pct(values, .99) * 1000:6.1f} ({len(values):>3})" \
                if values else f"{'-':>18}"
        print(row)
    print(f"errors: {lat.errors or 'none'}")
    print("CPU seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
          + f"; machine load average (1 min) {load_average[0][0]:.1f} at the start, "
          f"{load_average[-1][0]:.1f} at the end, on {os.cpu_count()} CPUs")
    print(f"server loop stalls of {StallWatch().threshold * 1000:.0f} ms or more (count, longest, "
          "and the share of the stalled time its main thread was on a CPU: low means it waited "
          "for a core):")
    for phase in phases:
        mine = [s for s in stalls if _phase_at(s["at"], starts) == phase]
        if mine:
            total = sum(s["ms"] for s in mine)
            print(f"  {phase:<15}{len(mine):>5}, longest {max(s['ms'] for s in mine):>5} ms, "
                  f"on CPU {sum(s['cpu_ms'] for s in mine) / total:4.0%}")
    print("slowest per phase (ms, and when: seconds from the phase's start):")
    for phase in phases[1:]:
        worst = sorted(((seconds, at, face) for face in FACES
                        for seconds, at in lat.worst.get((phase, face), [])), reverse=True)[:6]
        print(f"  {phase:<15}" + ", ".join(f"{face} {seconds * 1000:.0f} at {_when(at, starts)}"
                                             for seconds, at, face in worst))
    if args.spy:
        _print_spies(work, {"calm": args.duration * 0.5,
                            **{name: args.phase_seconds or args.duration * 0.3 / len(ABUSE)
                               for name in args.phases}})
    calm_pb = lat.data.get(("calm", "pb"), [])
    if not calm_pb or pct(calm_pb, .99) >= 0.050:
        failures.append(f"PB p99 in the calm phase is {pct(calm_pb, .99) * 1000:.1f} ms (limit 50)")
    unjudged: dict[str, list[str]] = {}
    for phase in phases[2:]:
        for face in FACES:
            values = lat.data.get((phase, face), [])
            if len(values) < CANARY_MIN_SAMPLES:
                unjudged.setdefault(face, []).append(phase)
            elif pct(values, .99) >= 0.100:
                failures.append(f"{face} canary p99 during {phase}: {pct(values, .99) * 1000:.1f} ms "
                                f"(limit 100)")
    if unjudged:
        print(f"too few samples for a p99 (< {CANARY_MIN_SAMPLES}), not judged: "
              + ", ".join(f"{face} in {len(phases)} phase(s)" for face, phases in unjudged.items()))
    by_label = {label: stats for label, stats in samples}
    calm_rss = [s.get("rss_kib", 0) for label, s in samples if label == "calm"]
    base = by_label.get("warm-up end", {}).get("rss_kib", 0)
    if base and calm_rss:
        growth = (calm_rss[-1] - base) / base
        print(f"RSS after warm-up {base / 1024:.1f} MiB, end of calm {calm_rss[-1] / 1024:.1f} MiB "
              f"({growth * 100:+.1f}%)")
        if growth >= 0.05:
            failures.append(f"RSS grew {growth * 100:.1f}% after warm-up (limit 5%)")
    acked = {n for report in reports for n in report.get("mail_acked", [])}
    got = {n for report in reports for n in report.get("mail_got", [])}
    lost = sorted(acked - got)
    print(f"mail: {len(acked)} acknowledged, {len(got)} retrieved, lost {lost[:10] or 'none'}")
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase_at(at: float, starts: dict[str, float]) -> str | None:
    began = [(start, phase) for phase, start in starts.items() if start <= at]
    return max(began)[1] if began else None


def _when(at: float, starts: dict[str, float]) -> str:
    """``at`` (wall clock) as "PHASE+S.Ss"."""
    phase = _phase_at(at, starts)
    return f"{phase}+{at - starts[phase]:.1f}s" if phase else "before the load"


def _print_spies(work: Path, phases: dict[str, float]) -> None:
    """py-spy's samples of the server's main thread per phase: how busy it
    was, and the functions of this project it was in most ("C" when no
    Python frame was above the loop's run: the loop's own I/O)."""
    import collections

    print("\nserver main thread (py-spy, 100 samples/s when busy):")
    for phase, seconds in phases.items():
        path = work / f"spy-{phase}.txt"
        if not path.exists():
            continue
        own: collections.Counter = collections.Counter()
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit() or "_bootstrap" in stack.split(";")[0]:  # another thread
                continue
            total += int(count)
            frames = stack.split(";")
            ours = [f for f in frames if any(d in f for d in ("broker/", "services/", "cred/", "jelly/"))]
            leaf = frames[-1] if frames[-1].startswith("Runner.run ") else (ours or frames)[-1]
            own[leaf.replace("Runner.run (asyncio/runners.py:118)", "C")] += int(count)
        print(f"  {phase}: busy {total / (seconds * 100):.0%}; "
              + "; ".join(f"{n} {frame}" for frame, n in own.most_common(5)))


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
    if argv[:1] in (["--load"], ["--abuse"]):
        return child(*argv[:3])
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
    parser.add_argument("--phases", default=",".join(ABUSE), metavar="NAME,...",
                        help="the abuse phases to run, in this order (default: all: "
                             f"{','.join(ABUSE)})")
    parser.add_argument("--phase-seconds", type=float, default=None, metavar="S",
                        help="length of each abuse phase (default: 30%% of --duration "
                             "shared among all five)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="the server's event loop (default auto, as pb run: uvloop if installed)")
    parser.add_argument("--spy", metavar="PY_SPY", nargs="?", const="py-spy",
                        help="profile the server with py-spy during each phase")
    args = parser.parse_args(argv)
    args.phases = [name for name in args.phases.split(",") if name]
    unknown = [name for name in args.phases if name not in ABUSE]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; expected some of {', '.join(ABUSE)}")
    if args.smoke:
        args.duration = 60.0
    if args.tiny:
        args.duration, args.pb_clients, args.words_clients, args.irc_clients = 5.0, 3, 2, 2
        args.idle_per_port, args.upload_mib = 5, 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
