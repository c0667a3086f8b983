"""Mail benchmark: SMTP messages/s accepted and POP3 MB/s retrieved, ours
beside Twisted mail and a bare aiosmtpd floor, in one run.

    .venv/bin/python bench/bench_mail.py [--seconds S] [--windows N] [--only NAME,...]

Systems (each server is its own subprocess on 127.0.0.1, storing into its
own Maildir under a temporary directory, fsync on for all):

* ``pb``: ``pb run --loop asyncio mail`` (aiosmtpd + our policy, Maildir
  delivery in a worker thread: tmp → fsync → rename → fsync new/; POP3 is
  ours); ``pb-uvloop`` the same on uvloop (what ``pb run`` picks where
  uvloop is installed);
* ``floor``: aiosmtpd with a bare handler writing the same Maildir steps in
  a worker thread: no recipient checks, no Received: header, no POP3;
* ``twisted``: ``twisted.mail.smtp.ESMTP`` with an ``IMessageDelivery``
  writing tmp → fsync → rename → fsync new/ on the reactor (Twisted mail
  has no thread for this); Twisted answers 250 only when the Deferred of
  ``eomReceived`` fires, so only after both flushes; ``twisted-threads``
  does the same writes in the reactor's thread pool (``deferToThread``),
  as ours uses a pool: one flush no longer holds up every connection, which
  is what a Twisted user would write for a slow disk; POP3 is ``twisted.mail.pop3.POP3`` over
  ``twisted.mail.maildir.MaildirMailbox``.  Twisted leaves Nagle's
  algorithm on, which stalls each POP3 answer's last segment until the
  client's delayed ACK (about 40 ms on Linux); ``twisted-nodelay`` is the
  same server with ``TCP_NODELAY`` set (asyncio sets it by itself).
  Twisted's own Maildir delivery (``twisted.mail.maildir.MaildirMessage``)
  writes to ``tmp/`` and renames without any fsync, so a crash may lose mail
  it acknowledged; the ``twisted`` rows fsync as ours does, to compare like
  with like, and ``twisted-nofsync`` is Twisted as shipped (write, rename,
  no fsync), a reference for what durability costs, not a competitor.

SMTP: 10 client threads, each with one smtplib connection, send 10 KiB
messages for ``--seconds`` per window; messages/s answered 250.  POP3:
200 messages of 50 KiB preloaded into each Maildir; a raw-socket client
logs in, RETRs every message one at a time (reading to the terminating
``.``) and quits; MB/s of message data.  Windows alternate between systems
and the median is reported, with ratios against ``floor`` (SMTP) and
``twisted``, plus the server process's CPU time (user + system, all
threads) per message accepted, which a busy machine disturbs less than the
rate.  Ratios in one run are what to compare: absolute numbers drift.
``--base DIR`` adds ``pb-base``, the same server from another checkout, for
before/after comparisons in one run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-pw-1"
SENDERS = 10
MESSAGE_SIZE = 10 * 1024
POP_MESSAGES = 200
POP_SIZE = 50 * 1024


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _message(n: int) -> bytes:
    head = f"From: bench@remote.test\r\nTo: alice@example.com\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"x" * 78 + b"\r\n"
    body = line * ((MESSAGE_SIZE - len(head)) // len(line))
    return head + body


# -- servers (each runs as: bench_mail.py --serve KIND ROOT) ------------------------------


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_counter = itertools.count(1)  # next() is atomic: the writers may be threads


def _write_maildir(root: str, data: bytes, fsync: bool = True) -> None:
    name = f"{time.time():.6f}.P{os.getpid()}Q{next(_counter)}.bench"
    tmp = os.path.join(root, "tmp", name)
    with open(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.rename(tmp, os.path.join(root, "new", name))
    if fsync:
        _fsync_dir(os.path.join(root, "new"))


def serve_floor(root: str) -> None:
    import asyncio

    from aiosmtpd.smtp import SMTP

    box = os.path.join(root, "example.com", "alice")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            await asyncio.to_thread(_write_maildir, box, envelope.original_content.replace(b"\r\n", b"\n"))
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(Handler(), loop=loop), "127.0.0.1", 0)
        print(f"smtp={server.sockets[0].getsockname()[1]} pop3=0", flush=True)
        await asyncio.Future()

    asyncio.run(main())


def serve_twisted(root: str, nodelay: bool = False, fsync: bool = True, threads: bool = False) -> None:
    from twisted.cred import checkers, portal
    from twisted.internet import defer, protocol, reactor
    from twisted.internet.threads import deferToThread
    from twisted.mail import maildir, pop3, smtp
    from zope.interface import implementer

    box = os.path.join(root, "example.com", "alice")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)

    @implementer(smtp.IMessage)
    class Writer:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self):
            data = b"\n".join(self.lines) + b"\n"
            if threads:  # in the reactor's thread pool (10 threads), as ours uses a pool
                return deferToThread(_write_maildir, box, data, fsync)
            _write_maildir(box, data, fsync=fsync)
            return defer.succeed(None)

        def connectionLost(self) -> None:
            self.lines = []

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo, origin, recipients):
            return b"Received: from " + helo[0] + b" by bench (twisted)"

        def validateFrom(self, helo, origin):
            return origin

        def validateTo(self, user):
            return Writer

    class SMTPFactory(smtp.SMTPFactory):
        protocol = smtp.ESMTP

        def buildProtocol(self, addr):
            p = smtp.SMTPFactory.buildProtocol(self, addr)
            p.delivery = Delivery()
            return _nodelay(p) if nodelay else p

    class Mailbox(maildir.MaildirMailbox):
        # Twisted's getMessage opens the file in text mode, and POP3's
        # byte-level transform then fails on Python 3: open it as bytes.
        def getMessage(self, i):
            return open(self.list[i], "rb")

    @implementer(portal.IRealm)
    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return pop3.IMailbox, Mailbox(os.fsencode(box)), lambda: None

    users = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser(b"alice@example.com", PASSWORD.encode())
    pop_portal = portal.Portal(Realm(), [users])

    class POP3Factory(protocol.ServerFactory):
        def buildProtocol(self, addr):
            p = pop3.POP3()
            p.portal = pop_portal
            p.factory = self
            return _nodelay(p) if nodelay else p

    def _nodelay(p):
        made = p.connectionMade

        def connection_made():
            p.transport.setTcpNoDelay(True)
            made()
        p.connectionMade = connection_made
        return p

    smtp_port = reactor.listenTCP(0, SMTPFactory(), interface="127.0.0.1").getHost().port
    pop_port = reactor.listenTCP(0, POP3Factory(), interface="127.0.0.1").getHost().port
    print(f"smtp={smtp_port} pop3={pop_port}", flush=True)
    reactor.run()


# -- the driver ------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, root: Path, base: str | None = None) -> None:
        self.name = name
        self.root = root
        # pb-base: the same server from another checkout, for before/after runs.
        env = {**os.environ, "PYTHONPATH": str(base if name == "pb-base" else REPO)}
        env.pop("PYTHONASYNCIODEBUG", None)
        if name in ("pb", "pb-uvloop", "pb-base"):
            loop = "uvloop" if name == "pb-uvloop" else "asyncio"  # the floor runs on asyncio
            command = [sys.executable, "-m", "clients._cli", "run", "--loop", loop,
                       "--data-dir", str(root / "data"), "--log-level", "warning", "mail",
                       "--domain", f"example.com={root / 'example.com'}", "--user",
                       f"alice@example.com:{PASSWORD}", "--smtp-port", "0", "--pop3-port", "0",
                       "--allow-plain-auth", "--hostname", "bench.test"]
        else:
            command = [sys.executable, __file__, "--serve", name, str(root)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, cwd=root)
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("mail: smtp://"):
                parts = line.split()
                self.smtp = int(parts[1].rsplit(":", 1)[1])
                self.pop3 = int(parts[2].rsplit(":", 1)[1])
                break
            if line.startswith("smtp="):
                a, b = line.split()
                self.smtp, self.pop3 = int(a[5:]), int(b[5:])
                break
        else:
            raise RuntimeError(f"{name}: the server did not start")
        self.maildir = root / "example.com" / "alice"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def smtp_window(port: int, seconds: float) -> tuple[float, int]:
    """(messages/s answered 250, messages) for one window of SENDERS clients."""
    counts = [0] * SENDERS
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def sender(i: int) -> None:
        data = _message(i)
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("bench.client")
                while time.monotonic() < stop:
                    client.sendmail("bench@remote.test", ["alice@example.com"], data)
                    counts[i] += 1
        except BaseException as exc:  # reported after the window
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a sender failed: {errors[0]!r}")
    return sum(counts) / (time.monotonic() - started), sum(counts)


def preload(maildir: Path) -> None:
    for sub in ("new", "cur"):
        shutil.rmtree(maildir / sub, ignore_errors=True)
        (maildir / sub).mkdir(parents=True)
    line = b"y" * 78 + b"\n"
    for i in range(POP_MESSAGES):
        head = f"From: bench@remote.test\nSubject: pop {i}\n\n".encode()
        (maildir / "cur" / f"{1000000 + i}.pre{i}.bench:2,").write_bytes(head + line * (POP_SIZE // len(line)))


def pop3_window(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        buffer = b""

        def until(terminator: bytes) -> bytes:
            nonlocal buffer
            while terminator not in buffer:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("POP3 server closed the connection")
                buffer += chunk
            head, _, buffer = buffer.partition(terminator)
            return head

        until(b"\r\n")
        sock.sendall(f"USER alice@example.com\r\nPASS {PASSWORD}\r\n".encode())
        until(b"\r\n")
        if not until(b"\r\n").startswith(b"+OK"):
            raise RuntimeError("POP3 login failed")
        started = time.monotonic()
        total = 0
        for i in range(1, POP_MESSAGES + 1):
            sock.sendall(f"RETR {i}\r\n".encode())
            total += len(until(b"\r\n.\r\n"))
        elapsed = time.monotonic() - started
        sock.sendall(b"QUIT\r\n")
        until(b"\r\n")
    return total / elapsed / 1e6


def _ratios(name: str, value: float, medians: dict[str, float], bases: tuple[str, ...]) -> str:
    return "  ".join(f"{value / medians[base]:.2f}x {base}" for base in bases
                     if base in medians and base != name and medians[base] > 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one SMTP window")
    parser.add_argument("--windows", type=int, default=3, help="windows per system")
    parser.add_argument("--only", default="pb,pb-uvloop,floor,twisted,twisted-threads,twisted-nofsync,"
                                          "twisted-nodelay",
                        help="systems to run")
    parser.add_argument("--base", metavar="DIR",
                        help="another checkout of this project: adds the row pb-base, its "
                             "pb run mail on asyncio (e.g. `git worktree add DIR main`)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("root", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "floor":
        serve_floor(args.root)
        return 0
    if args.serve in ("twisted", "twisted-nodelay", "twisted-nofsync", "twisted-threads"):
        serve_twisted(args.root, nodelay=args.serve == "twisted-nodelay",
                      fsync=args.serve != "twisted-nofsync", threads=args.serve == "twisted-threads")
        return 0
    names = [n for n in args.only.split(",") if n]
    if args.base and "pb-base" not in names:
        names.insert(1 if names[:1] == ["pb"] else 0, "pb-base")
    if "pb-uvloop" in names:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            log("skipped: pb-uvloop, uvloop not installed (pip install -e '.[uvloop]')")
            names.remove("pb-uvloop")
    if any(n.startswith("twisted") for n in names):
        try:
            import twisted.mail  # noqa: F401
        except ImportError:
            log("skipped: twisted not installed (pip install -e '.[bench]')")
            names = [n for n in names if not n.startswith("twisted")]
    smtp: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    # twisted-threads differs from twisted in SMTP delivery only.
    pop: dict[str, list[float]] = {n: [] for n in names if n not in ("floor", "twisted-threads")}
    # A kill (e.g. ending a series of runs) goes through the finally below, so
    # that the server subprocesses and their Maildirs do not outlive the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-mail-") as tmp:
        servers = {}
        try:
            for name in names:
                root = Path(tmp) / name
                root.mkdir()
                servers[name] = Server(name, root, args.base)
            for window in range(args.windows):
                # Each window starts with another system: the first after a
                # pause and the last before one do not always fall to the same row.
                for name in names[window % len(names):] + names[:window % len(names)]:
                    before = cpu_seconds(servers[name].proc.pid)
                    rate, sent = smtp_window(servers[name].smtp, args.seconds)
                    used = (cpu_seconds(servers[name].proc.pid) - before) / max(sent, 1)
                    smtp[name].append(rate)
                    cpu[name].append(used * 1e6)
                    log(f"smtp window {window + 1} {name}: {rate:.0f} msg/s, "
                        f"server CPU {used * 1e6:.0f} us/msg")
            for name in pop:
                preload(servers[name].maildir)
            for window in range(args.windows):
                for name in pop:
                    rate = pop3_window(servers[name].pop3)
                    pop[name].append(rate)
                    log(f"pop3 window {window + 1} {name}: {rate:.1f} MB/s")
        finally:
            for server in servers.values():
                server.close()
    print(f"\nSMTP accept rate: {SENDERS} senders, {MESSAGE_SIZE // 1024} KiB messages, fsync on "
          f"({args.windows} x {args.seconds:g} s windows, median)")
    medians = {n: statistics.median(v) for n, v in smtp.items()}
    for name, value in medians.items():
        print(f"  {name:16} {value:8.0f} msg/s  {statistics.median(cpu[name]):6.0f} us CPU/msg  "
              f"{_ratios(name, value, medians, ('floor', 'twisted', 'twisted-threads'))}")
    if pop:
        print(f"\nPOP3 retrieval: {POP_MESSAGES} messages of {POP_SIZE // 1024} KiB, RETR one at a time (median)")
        pmed = {n: statistics.median(v) for n, v in pop.items()}
        for name, value in pmed.items():
            print(f"  {name:16} {value:8.1f} MB/s   "
                  f"{_ratios(name, value, pmed, ('twisted', 'twisted-nodelay'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
