"""Benchmark jelly against raw msgpack, pickle and Twisted's jelly+banana.

Run: ``.venv/bin/python bench/bench_jelly.py`` (about 30-40 s).

Three messages:

(a) ``dicts``: ``[{"id": i, "name": f"user{i}", "score": i * 1.5} for i in range(1000)]``
(b) ``call``:  ``[1, 17, 0, "echo", ["hello"], {}, True]`` (a call-sized message)
(c) ``graph``: 100 registered Copyable nodes in a binary tree with parent
    links (cycles) and shared references

Every (message, library, direction) is timed in several windows of many
calls, interleaved so that machine noise hits all of them alike; the table
shows the median time per operation with the min-max over windows.  Raw
msgpack (``packb``/``unpackb`` with default options) is shown for plain data
only: it cannot carry the copy graph.  Twisted is skipped with a note when
it is not installed.
"""

from __future__ import annotations

import gc
import os
import pickle
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack  # noqa: E402

import jelly  # noqa: E402

try:
    from twisted.spread import banana as t_banana
    from twisted.spread import jelly as t_jelly
except ImportError:  # pragma: no cover - depends on the environment
    t_jelly = t_banana = None

WINDOWS = 7
WINDOW_SECONDS = 0.12


# --- the messages -------------------------------------------------------------

_registry = jelly.Registry()


class Node(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "bench.Node"

    def __init__(self, ident: int) -> None:
        self.id = ident
        self.name = f"node{ident}"
        self.score = ident * 1.5
        self.parent = None
        self.children: list[Node] = []


_registry.register(Node)


_JellyBase = (t_jelly.Jellyable, t_jelly.Unjellyable) if t_jelly is not None else ()


class TNode(*_JellyBase):
    """The same node for Twisted (Jellyable/Unjellyable, Twisted's copy pair)
    and pickle."""

    def __init__(self, ident: int) -> None:
        self.id = ident
        self.name = f"node{ident}"
        self.score = ident * 1.5
        self.parent = None
        self.children: list[TNode] = []


def make_graph(cls: type, count: int = 100) -> list:
    nodes = [cls(i) for i in range(count)]
    for i, node in enumerate(nodes):
        if i:
            node.parent = nodes[(i - 1) // 2]
            node.parent.children.append(node)
    return nodes


DICTS = [{"id": i, "name": f"user{i}", "score": i * 1.5} for i in range(1000)]
CALL = [1, 17, 0, "echo", ["hello"], {}, True]
GRAPH = make_graph(Node)
TGRAPH = make_graph(TNode)


# --- the libraries -------------------------------------------------------------


def jelly_codec(value):
    data = jelly.dumps(value)
    return (lambda: jelly.dumps(value)), (lambda: jelly.loads(data, registry=_registry))


def msgpack_codec(value):
    data = msgpack.packb(value)
    return (lambda: msgpack.packb(value)), (lambda: msgpack.unpackb(data))


def pickle_codec(value):
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return (
        lambda: pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
        lambda: pickle.loads(data),
    )


def twisted_codec(value):
    taster = t_jelly.SecurityOptions()
    taster.allowInstancesOf(TNode)
    t_jelly.setUnjellyableForClass(TNode, TNode)  # what pb.setUnjellyableForClass does
    data = t_banana.encode(t_jelly.jelly(value, taster))
    return (
        lambda: t_banana.encode(t_jelly.jelly(value, taster)),
        lambda: t_jelly.unjelly(t_banana.decode(data), taster),
    )


def check_round_trips() -> None:
    assert jelly.loads(jelly.dumps(DICTS)) == DICTS
    assert jelly.loads(jelly.dumps(CALL)) == CALL
    nodes = jelly.loads(jelly.dumps(GRAPH), registry=_registry)
    assert [n.id for n in nodes] == list(range(100))
    assert all(n.parent is nodes[(n.id - 1) // 2] for n in nodes[1:])
    assert all(c.parent is n for n in nodes for c in n.children)
    if t_jelly is not None:
        _, decode = twisted_codec(TGRAPH)
        tnodes = decode()
        assert all(n.parent is tnodes[(n.id - 1) // 2] for n in tnodes[1:])


# --- timing -------------------------------------------------------------------------


def calibrate(fn) -> int:
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= WINDOW_SECONDS / 4:
            return max(1, int(number * WINDOW_SECONDS / elapsed))
        number *= 4


def run(cases):
    """Time every function in `cases` (name -> fn) in interleaved windows."""
    numbers = {name: calibrate(fn) for name, fn in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(WINDOWS):
        for name, fn in cases.items():
            number = numbers[name]
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return samples


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.2f} us"
    return f"{seconds * 1e3:8.2f} ms"


def fmt_ops(times: list[float]) -> str:
    med = statistics.median(times)
    return f"{1 / med:>11,.0f}/s ({1 / max(times):,.0f}-{1 / min(times):,.0f})"


def main() -> None:
    check_round_trips()
    libraries = {
        "dicts": [("jelly", DICTS, jelly_codec), ("msgpack", DICTS, msgpack_codec),
                  ("pickle", DICTS, pickle_codec)],
        "call": [("jelly", CALL, jelly_codec), ("msgpack", CALL, msgpack_codec),
                 ("pickle", CALL, pickle_codec)],
        "graph": [("jelly", GRAPH, jelly_codec), ("pickle", TGRAPH, pickle_codec)],
    }
    if t_jelly is not None:
        libraries["dicts"].append(("twisted", DICTS, twisted_codec))
        libraries["call"].append(("twisted", CALL, twisted_codec))
        libraries["graph"].append(("twisted", TGRAPH, twisted_codec))
    else:
        print("note: twisted is not installed; skipping Twisted jelly+banana")

    print(f"Python {sys.version.split()[0]}, msgpack {'.'.join(map(str, msgpack.version))}; "
          f"median of {WINDOWS} windows (min-max in parentheses)\n")
    header = f"{'message':8} {'library':8} {'encode ops/s':>36} {'decode ops/s':>36} {'enc+dec':>11}"
    print(header)
    print("-" * len(header))
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    bests: dict[tuple[str, str], tuple[float, float]] = {}
    for message, entries in libraries.items():
        cases = {}
        for lib, value, codec in entries:
            encode, decode = codec(value)
            cases[(lib, "enc")] = encode
            cases[(lib, "dec")] = decode
        samples = run(cases)
        for lib, _, _ in entries:
            enc, dec = samples[(lib, "enc")], samples[(lib, "dec")]
            medians[(message, lib)] = (statistics.median(enc), statistics.median(dec))
            bests[(message, lib)] = (min(enc), min(dec))
            total = statistics.median(enc) + statistics.median(dec)
            print(f"{message:8} {lib:8} {fmt_ops(enc):>36} {fmt_ops(dec):>36} {fmt_time(total):>11}")
    print()
    print("ratios of medians (time; lower is better for jelly); [best window ratio]:")
    for message in ("dicts", "call"):
        je, jd = medians[(message, "jelly")]
        me, md = medians[(message, "msgpack")]
        be, bd = bests[(message, "jelly")]
        ce, cd = bests[(message, "msgpack")]
        print(f"  {message:6} jelly/msgpack  encode {je / me:5.2f}x [{be / ce:4.2f}]   "
              f"decode {jd / md:5.2f}x [{bd / cd:4.2f}]   "
              f"enc+dec {(je + jd) / (me + md):5.2f}x [{(be + bd) / (ce + cd):4.2f}]   "
              "(target <= 1.30x)")
    if t_jelly is not None:
        for message in libraries:
            je, jd = medians[(message, "jelly")]
            te, td = medians[(message, "twisted")]
            print(f"  {message:6} jelly is {(te + td) / (je + jd):7.1f}x faster than Twisted "
                  f"jelly+banana end to end" + ("   (target >= 100x)" if message == "dicts" else ""))
    for message in ("graph",):
        je, jd = medians[(message, "jelly")]
        pe, pd = medians[(message, "pickle")]
        print(f"  {message:6} jelly/pickle   enc+dec {(je + jd) / (pe + pd):5.2f}x")


if __name__ == "__main__":
    main()
