"""Twisted's Perspective Broker (``twisted.spread.pb``), the way its users use it.

Both ends run in a Twisted reactor (the platform default), each in its own
process: the server (``serve``) and a client (``client --port N``) that the
benchmark drives window by window over a JSON-lines channel on stdin/stdout.
Calls are ``root.callRemote("echo", x)``; the burst is 100 callRemote
Deferreds joined with ``gatherResults``.  Banana's default size limit
(640 KiB per string) stays as shipped, so the 1 MiB echo is refused.

    python -m peers.twisted_pb serve
    python -m peers.twisted_pb client --port N
"""

from __future__ import annotations

import argparse
import threading
import time

from _harness import ChildDriver, announce, command_loop, exit_with_parent
from peers.common import BURST, DICTS, HALF, HELLO, HOST, MIB, bytes_units, verify, verify_len


def unavailable() -> str | None:
    try:
        import twisted.spread.pb  # noqa: F401
    except Exception:
        return "twisted-pb not installed (pip install -e '.[bench]')"
    return None


# --------------------------------------------------------------------------
# server process


def _serve() -> None:
    from twisted.internet import reactor
    from twisted.spread import pb

    class EchoRoot(pb.Root):
        def remote_echo(self, x):
            return x

    port = reactor.listenTCP(0, pb.PBServerFactory(EchoRoot()), interface=HOST)
    announce(port.getHost().port)
    reactor.run()


# --------------------------------------------------------------------------
# client process


def _client(port: int) -> None:
    from twisted.internet import defer, reactor, threads
    from twisted.spread import banana, pb

    def get_root():
        factory = pb.PBClientFactory()
        reactor.connectTCP(HOST, port, factory)
        d = factory.getRootObject()
        d.addCallback(lambda root: (factory, root))
        return d

    state: dict = {}

    def echo(value):
        return state["root"].callRemote("echo", value)

    @defer.inlineCallbacks
    def connect_once():
        factory, root = yield get_root()
        yield root.callRemote("echo", HELLO)
        factory.disconnect()

    @defer.inlineCallbacks
    def check():
        verify("hello", (yield echo(HELLO)), HELLO)
        verify("the 1,000-dict list", (yield echo(DICTS)), DICTS)
        verify("512 KiB", (yield echo(HALF)), HALF)
        got = yield defer.gatherResults([echo(HELLO) for _ in range(BURST)])
        verify("a burst", got, [HELLO] * BURST)
        yield connect_once()
        return 1

    def seq():
        return echo(HELLO).addCallback(lambda _: 1)

    def burst():
        return defer.gatherResults([echo(HELLO) for _ in range(BURST)]).addCallback(lambda _: BURST)

    def dicts():
        return echo(DICTS).addCallback(lambda _: 1)

    def mib():
        def done(got):
            verify_len("1 MiB", got, MIB)
            return bytes_units(MIB)

        return echo(MIB).addCallback(done)

    def half():
        return echo(HALF).addCallback(lambda _: bytes_units(HALF))

    def connect():
        return connect_once().addCallback(lambda _: 1)

    ops = {"check": check, "seq": seq, "burst": burst, "dicts": dicts, "mib": mib, "half": half, "connect": connect}

    @defer.inlineCallbacks
    def timed(op, seconds):
        clock = time.perf_counter
        units = 0
        t0 = clock()
        while True:
            units += yield defer.maybeDeferred(op)
            elapsed = clock() - t0
            if elapsed >= seconds:
                return units, elapsed

    def run_window(cmd):
        d = timed(ops[cmd["op"]], cmd["seconds"])

        def refused(failure):
            if failure.check(banana.BananaError):
                return {"error": f"refused ({failure.getErrorMessage()})"}
            return failure

        d.addCallback(lambda r: {"units": r[0], "elapsed": r[1]})
        d.addErrback(refused)
        return d

    def shutdown():
        # a call refused by banana's size check stays registered in
        # waitingForAnswers; don't let it be reported as unhandled on exit
        for d in list(state["root"].broker.waitingForAnswers.values()):
            d.addErrback(lambda f: None)
        reactor.stop()

    def on_connected(result):
        state["factory"], state["root"] = result
        announce("ready")

        def commands():
            try:
                command_loop(lambda cmd: threads.blockingCallFromThread(reactor, run_window, cmd))
            finally:
                reactor.callFromThread(shutdown)

        threading.Thread(target=commands, name="commands", daemon=True).start()

    def on_failed(failure):
        announce(f"failed: {failure.getErrorMessage()}")
        reactor.stop()

    reactor.callWhenRunning(lambda: get_root().addCallbacks(on_connected, on_failed))
    reactor.run(installSignalHandlers=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.twisted_pb")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    args = p.parse_args(argv)
    if args.mode == "serve":
        exit_with_parent()
        _serve()
    else:
        _client(args.port)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, runners, loop: str = "asyncio") -> ChildDriver:
    server = children.start("peers.twisted_pb", "serve")
    client = children.start("peers.twisted_pb", "client", "--port", str(server.port))
    if client.handshake != "ready":
        raise RuntimeError(f"twisted-pb client: {client.handshake}")
    return ChildDriver(name, client)


if __name__ == "__main__":
    main()
