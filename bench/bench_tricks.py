"""Each speed trick, switched off alone, against the tree as shipped.

Client and server run in this one process over a real loopback socket, and
the figure is **CPU time per operation** (``time.process_time``, both sides
together), so that other load on a shared machine costs wall time but
hardly moves it.  Each trick is switched off by a patch made here, for the
measurement only (nothing in the product reads a switch).  A and B windows
alternate, the order flipping every round; the result is the median of
B/A over the rounds.

    .venv/bin/python bench/bench_tricks.py                 # every trick
    .venv/bin/python bench/bench_tricks.py --only pools,depth --rounds 15

A ratio above 1 means switching the trick off costs that much more CPU per
operation: the trick earns its place if the ratio is at least 1.03.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgpack  # noqa: E402

import broker  # noqa: E402
import cred  # noqa: E402
import jelly  # noqa: E402
from jelly import _depth, _encode  # noqa: E402

from bench_jelly import GRAPH, _registry  # noqa: E402

DICTS = [{"id": i, "name": f"user{i}", "score": i * 1.5} for i in range(1000)]
MIB = b"x" * (1 << 20)


# --- the patches (each returns its undo) ----------------------------------------


def _set(obj: Any, name: str, value: Any) -> Callable[[], None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    return lambda: setattr(obj, name, old)


def no_pools() -> Callable[[], None]:
    undo = [_set(_encode, "_POOL_SIZE", 0), _set(_encode, "_LARGE_POOL_SIZE", 0)]
    saved = (_encode._pool[:], _encode._large_pool[:])
    _encode._pool.clear()
    _encode._large_pool.clear()

    def restore() -> None:
        for u in undo:
            u()
        _encode._pool[:], _encode._large_pool[:] = saved
    return restore


def no_tuple_new() -> Callable[[], None]:
    return _set(_encode, "_ext", msgpack.ExtType)


def no_depth_trick() -> Callable[[], None]:
    """Depth measured by looking at every child's type (no gc.is_tracked)."""
    walk = _depth._walk

    def typed_walk(lists: list, dicts: list, limit: int, recorded: dict, use_gc: bool,
                   exact: bool) -> tuple[int, int]:
        return walk(lists, dicts, limit, recorded, False, exact)
    return _set(_depth, "_walk", typed_walk)


def no_eager() -> Callable[[], None]:
    from broker import _eager

    def start(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
        return _eager.Started(loop.create_task(coro), False, first_step_ran=False)
    return _set(_eager, "start", start)


def no_fast_events() -> Callable[[], None]:
    """The per-call events made by their frozen dataclass __init__."""
    from broker import _core, _events
    undo = [_set(_core, "new_call_event", _events.CallEvent),
            _set(_core, "new_answer_event", _events.AnswerEvent)]
    return lambda: [u() for u in undo] and None


# --- the workloads -------------------------------------------------------------


class EchoRoot(broker.Root):
    def remote_echo(self, x: Any) -> Any:
        return x

    async def remote_aecho(self, x: Any) -> Any:
        return x


async def _setup() -> dict[str, Callable[[], Any]]:
    server = await broker.serve(EchoRoot(), "127.0.0.1", 0)
    conn = await broker.connect("127.0.0.1", server.port)
    root = await conn.root()

    class EchoPerspective(broker.Perspective):
        def perspective_echo(self, x: Any) -> Any:
            return x

    class EchoService(cred.Service):
        def create_perspective(self, name: str) -> Any:
            return EchoPerspective()

    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("pbecho", "alice")]})
    portal = cred.Portal(cred.ServiceRealm(EchoService("pbecho")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    login_server = await broker.serve(portal, "127.0.0.1", 0)

    async def sequential() -> int:
        for _ in range(200):
            await root.call_remote("echo", "hello")
        return 200

    async def async_sequential() -> int:
        for _ in range(200):
            await root.call_remote("aecho", "hello")
        return 200

    async def in_flight() -> int:
        await asyncio.gather(*[root.call_remote("echo", "hello") for _ in range(100)])
        return 100

    async def async_in_flight() -> int:
        await asyncio.gather(*[root.call_remote("aecho", "hello") for _ in range(100)])
        return 100

    async def dicts() -> int:
        for _ in range(5):
            await root.call_remote("echo", DICTS)
        return 5

    async def mib() -> int:
        for _ in range(5):
            await root.call_remote("echo", MIB)
        return 5

    async def login() -> int:
        for _ in range(5):
            p = await broker.login("127.0.0.1", login_server.port, "alice", "pw",
                                   service="pbecho")
            await p.call_remote("echo", "hi")
            await p.connection.close()
        return 5

    async def connect() -> int:
        for _ in range(5):
            c = await broker.connect("127.0.0.1", server.port)
            r = await c.root()
            await r.call_remote("echo", "hi")
            await c.close()
        return 5

    graph_data = jelly.dumps(GRAPH)
    dict_data = jelly.dumps(DICTS)

    async def jelly_graph() -> int:
        for _ in range(20):
            jelly.loads(jelly.dumps(GRAPH), registry=_registry)
        jelly.loads(graph_data, registry=_registry)
        return 20

    async def jelly_dicts() -> int:
        for _ in range(20):
            jelly.loads(jelly.dumps(DICTS))
        jelly.loads(dict_data)
        return 20

    return {"sequential": sequential, "async-sequential": async_sequential,
            "100-in-flight": in_flight, "async-100-in-flight": async_in_flight,
            "1000-dict": dicts, "1MiB": mib, "login": login, "connect": connect,
            "jelly-graph": jelly_graph, "jelly-dicts": jelly_dicts}


#: trick -> (patch, the rows it should move)
TRICKS: dict[str, tuple[Callable[[], Callable[[], None]], list[str]]] = {
    "pools": (no_pools, ["sequential", "1000-dict", "1MiB"]),
    "tuple-new": (no_tuple_new, ["jelly-graph"]),
    "depth": (no_depth_trick, ["1000-dict", "jelly-dicts"]),
    "eager": (no_eager, ["async-sequential", "async-100-in-flight"]),
    "events": (no_fast_events, ["sequential", "100-in-flight"]),
    # Dropped after measuring (bench/README.md): the server's HELLO held two
    # loop turns, and a COPY's headers written by hand; "login" and
    # "connect" stay as rows to try other tricks on.
}


async def _cpu_per_op(op: Callable[[], Any], seconds: float) -> float:
    cpu = 0.0
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.process_time()
        done += await op()
        cpu += time.process_time() - t0
    return cpu / done


async def _main(args: argparse.Namespace) -> None:
    ops = await _setup()
    for name in args.only.split(",") if args.only else TRICKS:
        patch, rows = TRICKS[name]
        for row in rows:
            op = ops[row]
            await op()
            ratios, base = [], []
            for rnd in range(args.rounds):
                pair = {}
                for variant in (("on", "off") if rnd % 2 == 0 else ("off", "on")):
                    undo = patch() if variant == "off" else None
                    try:
                        pair[variant] = await _cpu_per_op(op, args.seconds)
                    finally:
                        if undo is not None:
                            undo()
                ratios.append(pair["off"] / pair["on"])
                base.append(pair["on"])
            print(f"{name:10} {row:20} on {statistics.median(base) * 1e6:9.1f} us CPU/op  "
                  f"off/on median {statistics.median(ratios):.3f}  "
                  f"(quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}"
                  f"-{statistics.quantiles(ratios, n=4)[2]:.3f}, {args.rounds} rounds)",
                  flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated: " + ",".join(TRICKS))
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--seconds", type=float, default=0.3, help="per window")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
