"""Fan-out latency of the words chat: one message to the members of a room.

Three systems, side by side in one run:

``pb``           our words service, PB face: a sender's ``send`` reaches
                 each member's mind (``message(...)``, one-way)
``irc``          our words service, IRC face: ``PRIVMSG #bench`` reaches
                 each member's connection
``twisted-irc``  Twisted words' IRC server (``twisted.words.service``,
                 in-memory realm and checker; from the ``bench`` extra)

Each server runs in its own subprocess; the clients (one sender and
``--members`` receivers, 100 by default, all in the room) run in this
process on one event loop.  Messages go one at a time: the next is sent
when every member got the previous one (``--burst K``: K at once, then
wait for all K).  For each message and member, the
latency is the time from the sender's write to that member's receipt; the
table gives p50 and p99 over all of them, and p99 of the time until the
*last* member had it.  Systems take turns in rounds, so that all see the
same machine drift; the ratios (``p99 / twisted-irc p99``) are what to
compare, absolute times drift on shared machines.

Our IRC face runs with flood control opened up (``--flood-rate`` and
``--flood-burst`` huge): the sender sends faster than a person, and
Twisted's server has no flood control to compare with.

    .venv/bin/python bench/bench_words.py              # 100 members, 3 rounds x 200 messages
    .venv/bin/python bench/bench_words.py --quick      # a smoke run
    .venv/bin/python bench/bench_words.py --members 20 --messages 100 --rounds 5
    .venv/bin/python bench/bench_words.py --baseline /tmp/words-main   # A/B in one run
    .venv/bin/python bench/bench_words.py --burst 10   # 10 messages at once, a busy room

``--baseline DIR`` runs our server a second time from the source tree DIR
(say ``mkdir DIR && git archive main | tar -x -C DIR``), rows ``pb@base`` and
``irc@base``, interleaved with the others: a change and what it replaces,
on the same machine at the same moments.

Besides latency, the table gives CPU time per message: the server's (all
its threads, from ``/proc/PID/task/*/schedstat``, while that system had
the turn) and the clients' (this process).  CPU time is far less noisy
than latency on a shared machine, and says which side the time is on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [BENCH_DIR, os.path.dirname(BENCH_DIR)]

from _harness import Children, announce, exit_with_parent, run_loop, uvloop_missing  # noqa: E402

PASSWORD = "bench-password"
PB_ROOM = "benchpb"
IRC_ROOM = "benchirc"


# -- the servers (children) ------------------------------------------------------------------


def serve_ours(members: int, loop: str, code_from: str | None = None) -> None:
    """Our words service, PB and IRC, in this process; prints both ports.
    *code_from*: a source tree to import the service from (``--baseline``)."""
    if code_from:
        sys.path.insert(0, os.path.abspath(code_from))
    import cred
    from services import Application, plugin_parser
    from services.words import plugin

    # When the benchmark ends, 202 clients drop at once and the presence
    # fan-out meets transports whose close is already scheduled; asyncio
    # warns about each ("socket.send() raised exception.").  Not a result.
    logging.getLogger("asyncio").setLevel(logging.ERROR)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as data:
            args = ["--pb-port", "0", "--irc-port", "0", "--flood-rate", "1000000",
                    "--flood-burst", "1000000", "--max-queued", "100000",
                    "--max-irc-connections", "100000"]
            # Separate accounts and rooms for the two faces: a PB message must
            # not also fan out to the IRC clients' sessions, and back.
            for n in range(members + 1):
                args += ["--user", f"p{n}:{PASSWORD}", "--user", f"i{n}:{PASSWORD}"]
            options = plugin_parser(plugin).parse_args(args)
            application = Application("bench", data_dir=data)
            service = plugin.build(options, application)
            service.portal.throttle = cred.Throttle(base_delay=0)
            application.add(service)
            await application.start()
            announce(f"{service.pb_port} {service.irc_port}")
            profile_to = os.environ.get("BENCH_WORDS_PROFILE")
            if profile_to:
                # Profile the server's side of the fan-out (sorted by
                # tottime with pstats); saved every 2 s, the child is
                # killed when the run ends.
                import cProfile
                profiler = cProfile.Profile()
                profiler.enable()

                def save() -> None:
                    profiler.dump_stats(profile_to)  # stops it
                    profiler.enable()
                    asyncio.get_running_loop().call_later(2.0, save)

                asyncio.get_running_loop().call_later(2.0, save)
            try:
                await asyncio.Future()
            finally:
                await application.stop(grace=1)

    exit_with_parent()
    run_loop(main, loop)


def serve_twisted(members: int) -> None:
    """Twisted words' IRC server with an in-memory realm; prints its port."""
    from twisted.cred import checkers, credentials, error, portal
    from twisted.internet import defer, reactor
    from twisted.words import service
    from zope.interface import implementer

    users = {f"i{n}": PASSWORD for n in range(members + 1)}

    # Twisted's InMemoryUsernamePasswordDatabaseDontUse keys users by bytes,
    # while Twisted words' IRC face logs in with the nick as text: a checker
    # that takes either.
    @implementer(checkers.ICredentialsChecker)
    class Checker:
        credentialInterfaces = (credentials.IUsernamePassword,)

        def requestAvatarId(self, creds: Any) -> Any:
            name, password = creds.username, creds.password
            name = name.decode() if isinstance(name, bytes) else name
            password = password.decode() if isinstance(password, bytes) else password
            if users.get(name) == password:
                return defer.succeed(name)
            return defer.fail(error.UnauthorizedLogin())

    realm = service.InMemoryWordsRealm("bench")
    realm.createGroupOnRequest = True
    realm.createUserOnRequest = True
    checker = Checker()
    factory = service.IRCFactory(realm, portal.Portal(realm, [checker]))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    announce(port.getHost().port)
    exit_with_parent()
    reactor.run()


# -- measuring ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of process *pid* so far, in seconds (the
    scheduler's nanoseconds where readable, else clock ticks)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return total / 1e9
    except OSError:
        times = os.times() if pid == os.getpid() else None
        return times.user + times.system if times else float("nan")


class Fanout:
    """Send times and arrivals of the messages of one system."""

    def __init__(self, members: int, server_pid: int | None = None) -> None:
        self.members = members
        self.server_pid = server_pid
        self.server_cpu = 0.0
        self.client_cpu = 0.0
        self.messages = 0
        self.sent: dict[int, float] = {}
        self.count: dict[int, int] = {}
        self.done: dict[int, asyncio.Future[None]] = {}
        self.latencies: list[float] = []
        self.last: list[float] = []

    def start(self, seq: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.done[seq] = future
        self.count[seq] = 0
        self.sent[seq] = time.perf_counter()
        return future

    def arrived(self, seq: int) -> None:
        now = time.perf_counter()
        sent = self.sent.get(seq)
        if sent is None:
            return
        self.latencies.append(now - sent)
        self.count[seq] += 1
        if self.count[seq] == self.members:
            self.last.append(now - sent)
            future = self.done.pop(seq)
            if not future.done():
                future.set_result(None)


class IRCMember(asyncio.Protocol):
    """A minimal IRC client: registers, joins, reports PRIVMSG arrivals."""

    def __init__(self, fanout: Fanout | None) -> None:
        self.fanout = fanout
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.joined = asyncio.get_running_loop().create_future()
        self.marker = f" PRIVMSG #{IRC_ROOM} :m".encode()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for line in lines:
            at = line.find(self.marker)
            if at >= 0 and self.fanout is not None:
                self.fanout.arrived(int(line[at + len(self.marker):].split(b" ", 1)[0]))
            elif line.startswith(b"PING "):
                self.transport.write(b"PONG " + line[5:] + b"\r\n")
            elif b" 001 " in line:
                # Twisted's server drops a JOIN that comes before the login is done.
                self.transport.write(f"JOIN #{IRC_ROOM}\r\n".encode())
            elif b" 366 " in line and not self.joined.done():
                self.joined.set_result(None)
            elif (b" 464 " in line or line.startswith(b"ERROR")) and not self.joined.done():
                self.joined.set_exception(RuntimeError(line.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError("connection closed while joining"))


async def irc_room(port: int, members: int, fanout: Fanout) -> tuple[Any, list[Any]]:
    loop = asyncio.get_running_loop()
    transports = []
    protocols = []
    for n in range(members + 1):
        transport, protocol = await loop.create_connection(
            lambda n=n: IRCMember(fanout if n else None), "127.0.0.1", port)
        transport.write(f"PASS {PASSWORD}\r\nNICK i{n}\r\nUSER i{n} 0 * :i{n}\r\n".encode())
        transports.append(transport)
        protocols.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(p.joined for p in protocols)), 60)
    sender = transports[0]

    def send(seqs: range) -> None:
        # A burst is one write, as a client that pastes several lines.
        sender.write("".join(f"PRIVMSG #{IRC_ROOM} :m{seq} hello everybody\r\n"
                             for seq in seqs).encode())

    return send, transports


async def pb_room(port: int, members: int, fanout: Fanout) -> tuple[Any, list[Any]]:
    import broker

    class Mind(broker.Referenceable):
        def __init__(self, sink: Fanout | None) -> None:
            self.sink = sink

        def remote_message(self, group, sender, text, at, kind):  # noqa: ANN001
            if self.sink is not None and text.startswith("m"):
                self.sink.arrived(int(text[1:].split(" ", 1)[0]))

        def remote_joined(self, group, user):  # noqa: ANN001
            pass

        def remote_left(self, group, user, reason):  # noqa: ANN001
            pass

        def remote_topic(self, group, topic, by, at):  # noqa: ANN001
            pass

        def remote_private(self, sender, text, at, kind):  # noqa: ANN001
            pass

        def remote_presence(self, user, presence, away):  # noqa: ANN001
            pass

    perspectives = []
    rooms = []
    for n in range(members + 1):
        perspective = await broker.login("127.0.0.1", port, f"p{n}", PASSWORD, service="words",
                                         mind=Mind(fanout if n else None))
        rooms.append(await perspective.call_remote("join", PB_ROOM))
        perspectives.append(perspective)
    sender = rooms[0]

    def send(seqs: range) -> None:
        for seq in seqs:
            sender.call_remote_only("send", f"m{seq} hello everybody")

    return send, perspectives


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace, servers: list[tuple[str, int, int, int]],
              twisted: tuple[int, int] | None) -> None:
    """*servers*: ``(suffix, pid, pb port, irc port)`` of each of our servers;
    *twisted*: ``(pid, port)`` of Twisted's."""
    members = args.members
    systems: dict[str, tuple[Fanout, Any]] = {}
    closers: list[Any] = []
    # Held to the end: dropping a perspective's proxy logs that session out.
    perspectives: list[Any] = []
    for suffix, pid, pb_port, irc_port in servers:
        fan = Fanout(members, pid)
        send, logins = await pb_room(pb_port, members, fan)
        systems["pb" + suffix] = (fan, send)
        perspectives += logins
        closers += [p.connection.close for p in logins]
        fan = Fanout(members, pid)
        send, transports = await irc_room(irc_port, members, fan)
        systems["irc" + suffix] = (fan, send)
        closers += [t.close for t in transports]
    if twisted is not None:
        fan = Fanout(members, twisted[0])
        send, transports = await irc_room(twisted[1], members, fan)
        systems["twisted-irc"] = (fan, send)
        closers += [t.close for t in transports]
    names = list(systems)
    burst = args.burst
    seq = 0
    try:
        for round_ in range(args.rounds + 1):  # round 0 warms up and is discarded
            for offset in range(len(names)):
                name = names[(round_ + offset) % len(names)]
                fan, send = systems[name]
                count = args.messages if round_ else max(10, args.messages // 10)
                count -= count % burst
                server_before = cpu_seconds(fan.server_pid) if fan.server_pid else 0.0
                client_before = time.process_time()
                for _ in range(count // burst):
                    seqs = range(seq + 1, seq + burst + 1)
                    seq += burst
                    done = asyncio.gather(*(fan.start(n) for n in seqs))
                    send(seqs)
                    try:
                        await asyncio.wait_for(done, 30)
                    except TimeoutError:
                        raise TimeoutError(f"{name}: message {seq} did not reach every "
                                           f"member within 30 s") from None
                if round_:
                    fan.client_cpu += time.process_time() - client_before
                    if fan.server_pid:
                        fan.server_cpu += cpu_seconds(fan.server_pid) - server_before
                    fan.messages += count
            if round_ == 0:
                for fan, _ in systems.values():
                    fan.latencies.clear()
                    fan.last.clear()
            print(f"round {round_}/{args.rounds} done", file=sys.stderr)
    finally:
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result
    base = systems.get("twisted-irc")
    base_p99 = percentile(base[0].latencies, 0.99) if base else None
    print(f"\nfan-out of one message to {members} members of a room "
          f"({args.rounds} rounds x {args.messages} messages"
          f"{f', {args.burst} at a time' if args.burst > 1 else ''}; times in ms; "
          f"our server on {args.loop}, Twisted on its default reactor, "
          f"clients on {args.client_loop})\n")
    print(f"{'system':<12} {'p50':>8} {'p99':>8} {'last p50':>9} {'last p99':>9} "
          f"{'p99 / twisted':>14} {'server us/msg':>14} {'client us/msg':>14}")
    for name, (fan, _) in systems.items():
        p50 = percentile(fan.latencies, 0.5) * 1000
        p99 = percentile(fan.latencies, 0.99) * 1000
        last50 = statistics.median(fan.last) * 1000
        last99 = percentile(fan.last, 0.99) * 1000
        ratio = f"{p99 / (base_p99 * 1000):.2f}" if base_p99 else "-"
        server = fan.server_cpu / fan.messages * 1e6 if fan.messages else float("nan")
        client = fan.client_cpu / fan.messages * 1e6 if fan.messages else float("nan")
        print(f"{name:<12} {p50:8.2f} {p99:8.2f} {last50:9.2f} {last99:9.2f} {ratio:>14} "
              f"{server:14.0f} {client:14.0f}")
    print("\np50/p99: over every (message, member) delivery; last: the time until the last "
          "member had the message;\nus/msg: CPU time per message (server: all its threads; "
          "client: this process).\nTarget (issue 17): our p99 <= 0.5 x Twisted's.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round of 50 messages")
    parser.add_argument("--burst", type=int, default=1, metavar="K",
                        help="send K messages at once (IRC: in one write) and wait for all "
                             "of them: a busy room, where several messages reach a member "
                             "in one server loop turn (default 1: one at a time)")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="our server's event loop; auto: uvloop where installed, as "
                             "`pb run --loop auto` does")
    parser.add_argument("--client-loop", choices=["asyncio", "uvloop"], default=None,
                        help="the clients' event loop (default: uvloop where installed); "
                             "the clients' own time is in every system's figures, so the "
                             "faster it is, the more the figures show the servers")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run our server from the source tree DIR (rows pb@base, "
                             "irc@base), interleaved with the others")
    parser.add_argument("--serve", choices=["ours", "twisted"], help=argparse.SUPPRESS)
    parser.add_argument("--code-from", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop == "auto":
        args.loop = "asyncio" if uvloop_missing() else "uvloop"
    if args.client_loop is None:
        args.client_loop = "asyncio" if uvloop_missing() else "uvloop"
    if args.serve == "ours":
        serve_ours(args.members, args.loop, args.code_from)
        return 0
    if args.serve == "twisted":
        serve_twisted(args.members)
        return 0
    if args.burst < 1:
        parser.error("--burst must be at least 1")
    if args.quick:
        args.rounds, args.messages = 1, 50
    with Children() as children:
        servers = []
        trees = [("", None)] + ([("@base", args.baseline)] if args.baseline else [])
        for suffix, tree in trees:
            extra = ["--code-from", tree] if tree else []
            child = children.start("bench_words", "--serve", "ours", "--loop", args.loop,
                                   "--members", str(args.members), *extra, ready_timeout=60)
            pb_port, irc_port = (int(p) for p in child.handshake.split())
            servers.append((suffix, child.proc.pid, pb_port, irc_port))
        try:
            import twisted.words  # noqa: F401
        except ImportError:
            print("skipped: twisted-irc (pip install -e '.[bench]')", file=sys.stderr)
            twisted = None
        else:
            twisted_child = children.start("bench_words", "--serve", "twisted",
                                           "--members", str(args.members), ready_timeout=60)
            twisted = (twisted_child.proc.pid, int(twisted_child.handshake))
        run_loop(lambda: run(args, servers, twisted), args.client_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
