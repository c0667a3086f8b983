"""Twisted PB, cache fan-out: ``pb.Cacheable`` / ``pb.RemoteCache`` with one
observer per client connection, and ``push(n)`` calling
``observer.callRemote("append", i, pbanswer=False)`` on each.

``pbanswer=False`` makes the observer calls one-way, as ours always are;
with ``--answered`` the server leaves Twisted's default (every observer
call is answered and gets a Deferred) for a second row.

    python -m peers.cache_twisted serve [--answered]
    python -m peers.cache_twisted client --port N [--connections 5]
"""

from __future__ import annotations

import argparse
import threading
import time

from _harness import announce, command_loop
from peers.cache_common import CLIENT_PROCESSES, HOST, PER_CLIENT, WAIT_TIMEOUT, Expectation, FanoutDriver
from peers.login_common import serve_usage_requests, usage

try:
    from twisted.spread import pb
except ImportError:  # pragma: no cover - depends on the environment
    pb = None


def unavailable() -> str | None:
    return None if pb is not None else "twisted not installed (pip install -e '.[bench]')"


if pb is not None:
    # Module level, so that the class name jelly sends ("peers.cache_twisted.Log")
    # is the same in the server and the client processes.

    class Log(pb.Cacheable):
        def __init__(self) -> None:
            self.count = 0
            self.observers: list = []

        def getStateToCacheAndObserveFor(self, perspective, observer):
            self.observers.append(observer)
            return {"count": self.count}

        def stoppedObserving(self, perspective, observer):
            # Twisted hands over a new RemoteCacheObserver, and its __eq__ fails
            # on Python 3 (it orders Broker objects): match by connection.
            self.observers = [o for o in self.observers
                              if not (o.broker is observer.broker and o.perspective is observer.perspective)]

    class LogCopy(pb.RemoteCache):
        bench_expectation = None

        def setCopyableState(self, state):
            self.__dict__.update(state)

        def observe_append(self, i):
            if self.bench_expectation is not None:
                self.bench_expectation.append(i)


# --------------------------------------------------------------------------
# server process


def _serve(answered: bool) -> None:
    from twisted.internet import reactor

    from peers import cache_twisted as mod  # the importable names, not __main__'s

    class CacheRoot(pb.Root):
        def __init__(self) -> None:
            self.log = mod.Log()

        def remote_get_log(self):
            return self.log

        def remote_push(self, n):
            observers = list(self.log.observers)
            if answered:
                for i in range(n):
                    for observer in observers:
                        observer.callRemote("append", i)
            else:
                for i in range(n):
                    for observer in observers:
                        observer.callRemote("append", i, pbanswer=False)
            self.log.count += n
            return len(observers)

    port = reactor.listenTCP(0, pb.PBServerFactory(CacheRoot()), interface=HOST)
    announce(port.getHost().port)
    reactor.run()


# --------------------------------------------------------------------------
# client process


def _client(port: int, connections: int) -> None:
    from twisted.internet import defer, reactor, threads

    from peers import cache_twisted as mod

    pb.setUnjellyableForClass(mod.Log, mod.LogCopy)
    state: dict = {}

    @defer.inlineCallbacks
    def setup():
        roots, caches = [], []
        for _ in range(connections):
            factory = pb.PBClientFactory()
            reactor.connectTCP(HOST, port, factory)
            root = yield factory.getRootObject()
            roots.append(root)
            caches.append((yield root.callRemote("get_log")))
        state.update(roots=roots, caches=caches)

    def arm(n):
        waiters = []
        for cache in state["caches"]:
            d = defer.Deferred()
            waiters.append(d)
            cache.bench_expectation = Expectation(n, lambda d=d: d.called or d.callback(None))
        state["waiters"] = waiters
        return {}

    @defer.inlineCallbacks
    def wait():
        all_done = defer.gatherResults(state["waiters"])
        all_done.addTimeout(WAIT_TIMEOUT, reactor)
        yield all_done
        expectations = [cache.bench_expectation for cache in state["caches"]]
        errors = [e.error for e in expectations if e.error]
        if errors:
            raise AssertionError(errors[0])
        return {"t_done": max(e.done_at for e in expectations)}

    @defer.inlineCallbacks
    def push(n):
        t0 = time.perf_counter()
        observers = yield state["roots"][0].callRemote("push", n)
        if observers != CLIENT_PROCESSES * PER_CLIENT:
            raise AssertionError(f"the server has {observers} observers, expected "
                                 f"{CLIENT_PROCESSES * PER_CLIENT}")
        done = yield wait()
        return {"t0": t0, **done}

    def handle(cmd):
        op = cmd.get("op")
        if op == "usage":
            return usage()
        if op == "arm":
            return threads.blockingCallFromThread(reactor, arm, cmd["n"])
        if op == "push":
            return threads.blockingCallFromThread(reactor, push, cmd["n"])
        if op == "wait":
            return threads.blockingCallFromThread(reactor, wait)
        raise ValueError(f"unknown op {op!r}")

    def commands():
        try:
            command_loop(handle)
        finally:
            reactor.callFromThread(reactor.stop)

    def ready(_):
        announce("ready")
        threading.Thread(target=commands, name="commands", daemon=True).start()

    def failed(failure):
        announce(f"failed: {failure.getErrorMessage()}")
        reactor.stop()

    reactor.callWhenRunning(lambda: setup().addCallbacks(ready, failed))
    reactor.run(installSignalHandlers=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.cache_twisted")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--connections", type=int, default=PER_CLIENT)
    p.add_argument("--answered", action="store_true")
    args = p.parse_args(argv)
    if args.mode == "serve":
        serve_usage_requests()
        _serve(args.answered)
    else:
        _client(args.port, args.connections)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, n: int, answered: bool = False) -> FanoutDriver:
    server = children.start("peers.cache_twisted", "serve", *(["--answered"] if answered else []))
    clients = []
    for _ in range(CLIENT_PROCESSES):
        client = children.start("peers.cache_twisted", "client", "--port", str(server.port),
                                "--connections", str(PER_CLIENT))
        if client.handshake != "ready":
            raise RuntimeError(f"twisted cache client: {client.handshake}")
        clients.append(client)
    return FanoutDriver(name, server, clients, n)


if __name__ == "__main__":
    main()
