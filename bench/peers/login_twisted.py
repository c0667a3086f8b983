"""Twisted PB logging in: ``twisted.cred`` behind ``PBServerFactory``.

Server (default reactor)::

    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
    portal = Portal(Realm(), [checker])     # Realm gives (pb.IPerspective, EchoAvatar(), logout)
    reactor.listenTCP(0, pb.PBServerFactory(portal), interface="127.0.0.1")

Client (its own process, a reactor driven over JSON lines), one login::

    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    avatar = yield factory.login(UsernamePassword(b"alice", b"pw"))
    yield avatar.callRemote("echo", "hi")
    factory.disconnect()          # and wait until the connection is lost

Twisted PB's login is its own challenge/response (``pb.respond``: MD5 of
the password and a random challenge), two calls after fetching the root.

    python -m peers.login_twisted serve
    python -m peers.login_twisted client --port N
"""

from __future__ import annotations

import argparse
import threading
import time

from _harness import ChildDriver, announce, command_loop
from peers.login_common import CONCURRENCY, HI, HOST, PASSWORD, USER, serve_usage_requests, usage


def unavailable() -> str | None:
    try:
        import twisted.cred.portal  # noqa: F401
        import twisted.spread.pb  # noqa: F401
    except Exception:
        return "twisted not installed (pip install -e '.[bench]')"
    return None


# --------------------------------------------------------------------------
# server process


def _serve() -> None:
    from twisted.cred import checkers, portal
    from twisted.internet import reactor
    from twisted.spread import pb
    from zope.interface import implementer

    class EchoAvatar(pb.Avatar):
        def perspective_echo(self, x):
            return x

    @implementer(portal.IRealm)
    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            if pb.IPerspective not in interfaces:
                raise NotImplementedError("only pb.IPerspective")
            return pb.IPerspective, EchoAvatar(), lambda: None

    _quiet_refusals()
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(**{USER: PASSWORD.encode()})
    factory = pb.PBServerFactory(portal.Portal(Realm(), [checker]))
    port = reactor.listenTCP(0, factory, interface=HOST)
    announce(port.getHost().port)
    reactor.run()


def _quiet_refusals() -> None:
    """Twisted logs every refused login as an "Unhandled Error" (the check
    refuses a wrong password on purpose); show warnings and errors on stderr
    but those."""
    import sys

    from twisted.cred.error import UnauthorizedLogin
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                PredicateResult, globalLogBeginner, textFileLogObserver)

    def not_a_refusal(event):
        failure = event.get("log_failure") or event.get("failure")  # new or legacy event
        if failure is not None and failure.check(UnauthorizedLogin):
            return PredicateResult.no
        return PredicateResult.maybe

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(LogLevel.warn), not_a_refusal])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


# --------------------------------------------------------------------------
# client process


def _client(port: int) -> None:
    from twisted.cred import credentials, error
    from twisted.internet import defer, reactor, threads
    from twisted.spread import pb

    @defer.inlineCallbacks
    def login_once(password: str = PASSWORD):
        factory = pb.PBClientFactory()
        reactor.connectTCP(HOST, port, factory)
        try:
            avatar = yield factory.login(credentials.UsernamePassword(USER.encode(), password.encode()))
            got = yield avatar.callRemote("echo", HI)
        except BaseException:
            factory.disconnect()
            raise
        lost = defer.Deferred()
        avatar.broker.notifyOnDisconnect(lambda: lost.callback(None))
        factory.disconnect()
        yield lost
        return got

    @defer.inlineCallbacks
    def check():
        got = yield login_once()
        if got != HI:
            raise AssertionError(f"wrong echo after login: {got!r}")
        try:
            yield login_once("not the password")
        except (error.UnauthorizedLogin, pb.RemoteError) as exc:
            if b"UnauthorizedLogin" not in getattr(exc, "remoteType", b"UnauthorizedLogin"):
                raise
        else:
            raise AssertionError("a wrong password was accepted")
        yield defer.gatherResults([login_once() for _ in range(CONCURRENCY)], consumeErrors=True)
        return 1

    def login():
        return login_once().addCallback(lambda _: 1)

    def login8():
        d = defer.gatherResults([login_once() for _ in range(CONCURRENCY)], consumeErrors=True)
        return d.addCallback(lambda _: CONCURRENCY)

    ops = {"check": check, "login": login, "login8": login8}

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
        return d.addCallback(lambda r: {"units": r[0], "elapsed": r[1]})

    def handle(cmd):
        if cmd.get("op") == "usage":
            return usage()
        return threads.blockingCallFromThread(reactor, run_window, cmd)

    def commands():
        try:
            command_loop(handle)
        finally:
            reactor.callFromThread(reactor.stop)

    def start():
        announce("ready")
        threading.Thread(target=commands, name="commands", daemon=True).start()

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.login_twisted")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    args = p.parse_args(argv)
    if args.mode == "serve":
        serve_usage_requests()
        _serve()
    else:
        _client(args.port)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, runners, loop: str = "asyncio") -> ChildDriver:
    server = children.start("peers.login_twisted", "serve")
    client = children.start("peers.login_twisted", "client", "--port", str(server.port))
    if client.handshake != "ready":
        raise RuntimeError(f"twisted client: {client.handshake}")
    drv = ChildDriver(name, client)
    drv.server = server  # type: ignore[attr-defined]
    drv.client_usage = lambda: client.request({"op": "usage"})  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
