"""Ours, cache fan-out: a ``broker.Cacheable`` with one observer per client
connection, and ``push(n)`` sending ``observer.call_remote("append", i)``
to each (one-way messages, as ``RemoteCacheObserver.call_remote`` always is).

Server::

    class Log(broker.Cacheable):
        cache_tag = "bench.Log"
        def get_state_to_cache_and_observe_for(self, perspective, observer):
            self.observers.append(observer); return {"count": self.count}

    class CacheRoot(broker.Root):
        def remote_get_log(self): return self.log
        def remote_push(self, n):
            for i in range(n):
                for observer in self.log.observers:
                    observer.call_remote("append", i)

Client: ``PER_CLIENT`` connections, each ``await root.call_remote("get_log")``
(a ``RemoteCache`` registered for "bench.Log" whose ``observe_append``
counts), kept for the whole run.

    python -m peers.cache_pb serve [--loop asyncio|uvloop]
    python -m peers.cache_pb client --port N [--connections 5] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from _harness import announce, command_loop, loop_factory, run_loop
from peers.cache_common import CLIENT_PROCESSES, HOST, PER_CLIENT, WAIT_TIMEOUT, Expectation, FanoutDriver
from peers.login_common import serve_usage_requests, usage


def unavailable() -> str | None:
    try:
        import broker
    except Exception as exc:  # pragma: no cover - depends on the tree
        return f"broker not importable ({type(exc).__name__}: {exc})"
    missing = [n for n in ("serve", "connect", "Root", "Cacheable", "RemoteCache", "register_cache")
               if not hasattr(broker, n)]
    return f"broker has no {', '.join(missing)} yet" if missing else None


# --------------------------------------------------------------------------
# server process


async def _serve() -> None:
    import broker

    class Log(broker.Cacheable):
        cache_tag = "bench.Log"

        def __init__(self) -> None:
            self.count = 0
            self.observers: list = []

        def get_state_to_cache_and_observe_for(self, perspective, observer):
            self.observers.append(observer)
            return {"count": self.count}

        def stopped_observing(self, perspective, observer):
            if observer in self.observers:
                self.observers.remove(observer)

    class CacheRoot(broker.Root):
        def __init__(self) -> None:
            self.log = Log()

        def remote_get_log(self):
            return self.log

        def remote_push(self, n: int) -> int:
            observers = self.log.observers
            for i in range(n):
                for observer in observers:
                    observer.call_remote("append", i)
            self.log.count += n
            return len(observers)

    server = await broker.serve(CacheRoot(), HOST, 0)
    announce(server.port)
    await server.serve_forever()


# --------------------------------------------------------------------------
# client process


def _client(port: int, connections: int, loop_kind: str) -> None:
    import broker

    @broker.register_cache("bench.Log")
    class LogCopy(broker.RemoteCache):
        def observe_append(self, i):
            expectation = self.__dict__.get("bench_expectation")
            if expectation is not None:
                expectation.append(i)

    loop = (loop_factory(loop_kind) or asyncio.new_event_loop)()
    asyncio.set_event_loop(loop)
    state: dict = {}

    async def setup():
        conns = [await broker.connect(HOST, port) for _ in range(connections)]
        roots = [await c.root() for c in conns]
        caches = [await r.call_remote("get_log") for r in roots]
        state.update(conns=conns, roots=roots, caches=caches)

    loop.run_until_complete(setup())

    async def arm(n: int) -> dict:
        futures = []
        for cache in state["caches"]:
            fut = loop.create_future()
            futures.append(fut)
            cache.bench_expectation = Expectation(
                n, lambda fut=fut: fut.done() or fut.set_result(None))
        state["futures"] = futures
        return {}

    async def wait() -> dict:
        await asyncio.wait_for(asyncio.gather(*state["futures"]), WAIT_TIMEOUT)
        expectations = [cache.bench_expectation for cache in state["caches"]]
        errors = [e.error for e in expectations if e.error]
        if errors:
            raise AssertionError(errors[0])
        return {"t_done": max(e.done_at for e in expectations)}

    async def push(n: int) -> dict:
        t0 = time.perf_counter()
        observers = await state["roots"][0].call_remote("push", n)
        if observers != CLIENT_PROCESSES * PER_CLIENT:
            raise AssertionError(f"the server has {observers} observers, expected "
                                 f"{CLIENT_PROCESSES * PER_CLIENT}")
        done = await wait()
        return {"t0": t0, **done}

    def handle(cmd: dict) -> dict:
        op = cmd.get("op")
        if op == "usage":
            return usage()
        if op == "arm":
            coro = arm(cmd["n"])
        elif op == "push":
            coro = push(cmd["n"])
        elif op == "wait":
            coro = wait()
        else:
            raise ValueError(f"unknown op {op!r}")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def commands() -> None:
        try:
            command_loop(handle)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    announce("ready")
    threading.Thread(target=commands, name="commands", daemon=True).start()
    loop.run_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.cache_pb")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--connections", type=int, default=PER_CLIENT)
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args(argv)
    if args.mode == "serve":
        serve_usage_requests()
        run_loop(_serve, args.loop)
    else:
        _client(args.port, args.connections, args.loop)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, n: int, loop: str = "asyncio") -> FanoutDriver:
    server = children.start("peers.cache_pb", "serve", "--loop", loop)
    clients = []
    for _ in range(CLIENT_PROCESSES):
        client = children.start("peers.cache_pb", "client", "--port", str(server.port),
                                "--connections", str(PER_CLIENT), "--loop", loop)
        if client.handshake != "ready":
            raise RuntimeError(f"pb cache client: {client.handshake}")
        clients.append(client)
    return FanoutDriver(name, server, clients, n)


if __name__ == "__main__":
    main()
