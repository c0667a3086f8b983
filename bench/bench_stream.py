"""Streaming benchmark: MB/s of a 100 MiB transfer through our broker's
streams, beside a raw-socket floor, in one run; and each process's memory.

    .venv/bin/python bench/bench_stream.py [--quick] [--only NAME,...]
                                           [--loop asyncio|uvloop|both] [--json PATH]

Ours: a remote method returns an async iterator of 256 KiB chunks (an async
generator, or ``broker.stream_bytes(data)``); the client iterates the
``RemoteStream`` with ``async for`` and drops each chunk.  The floor: an
asyncio server writing the same 100 MiB as 256 KiB ``transport.write`` calls
(flow-controlled, no framing) to a ``BufferedProtocol`` client.  Every server
and every client is its own process, so each process's peak RSS
(``ru_maxrss``) is its own; they are printed after the rates to show that
memory stays bounded while 100 MiB go through.  See bench/README.md.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _harness as h
from _harness import System
from peers import stream_floor, stream_pb
from peers.stream_common import CHUNK, TOTAL

MiB = 1024 * 1024
TARGET_GROWTH_MIB = 32  # "tens of MiB, not 100+": peak RSS above the process's RSS at start


NOTES = {
    "floor": "raw bytes, no framing; 256 KiB writes with pause/resume_writing",
    "pb": "async generator yielding one 256 KiB bytes object",
    "pb-stream_bytes": "broker.stream_bytes(data); the server holds the 100 MiB",
}


def all_systems(loop: str) -> list[System]:
    systems = []
    for kind in (["asyncio"] if loop == "asyncio" else ["uvloop"] if loop == "uvloop" else ["asyncio", "uvloop"]):
        suffix = "" if kind == "asyncio" else "-uvloop"
        systems += [
            System("floor" + suffix, stream_floor, {}, kind),
            System("pb" + suffix, stream_pb, {"source": "gen"}, kind),
            System("pb-stream_bytes" + suffix, stream_pb, {"source": "bytes"}, kind),
        ]
    return systems


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Tracked:
    """A driver plus its server and client usage: RSS at start, CPU per window."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.server = inner.server
        self.client = inner.child
        self.start = {"server": self.server.request({"op": "usage"}), "client": self.client.request({"op": "usage"})}
        self.cpu = {"server": 0.0, "client": 0.0}
        self.bytes = 0

    def usage(self) -> dict[str, dict]:
        return {"server": self.server.request({"op": "usage"}), "client": self.client.request({"op": "usage"})}

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        before = self.usage()
        units, elapsed = self.inner.window(op, seconds)
        after = self.usage()
        if op == "transfer":
            self.bytes += units
            for side in self.cpu:
                self.cpu[side] += after[side]["cpu"] - before[side]["cpu"]
        return units, elapsed


def start_drivers(systems: list[System], children: h.Children) -> list[Tracked]:
    drivers = []
    for s in systems:
        reason = s.module.unavailable()
        if s.loop == "uvloop":
            reason = reason or h.uvloop_missing()
        if reason:
            print(f"skipped: {s.name} ({reason})")
            continue
        try:
            drv = Tracked(s.module.driver(s.name, children, loop=s.loop, **s.options))
            drv.window("check", 0)  # one whole transfer, its size checked
        except Exception as exc:
            print(f"skipped: {s.name} (failed to start or check: {h.describe_error(exc)})")
            continue
        drivers.append(drv)
    return drivers


def mib(kib: int) -> str:
    return f"{kib / 1024:,.1f}"


def print_memory(drivers: list[Tracked], out=sys.stdout) -> dict:
    title = ("Memory and CPU: RSS in MiB at start → peak (ru_maxrss), "
             "CPU ms per 100 MiB transferred, per process")
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)
    head = f"{'system':<24} {'server RSS':>18} {'client RSS':>18} {'server CPU':>11} {'client CPU':>11}"
    print(head, file=out)
    report = {}
    for d in drivers:
        end = d.usage()
        cells = []
        rep = {}
        for side in ("server", "client"):
            start_kib, peak_kib = d.start[side]["maxrss_kib"], end[side]["maxrss_kib"]
            cells.append(f"{mib(start_kib)} → {mib(peak_kib)}")
            rep[side] = {"start_kib": start_kib, "peak_kib": peak_kib,
                         "cpu_ms_per_100mib": 1e3 * d.cpu[side] * TOTAL / d.bytes if d.bytes else None}
        cpus = [f"{rep[s]['cpu_ms_per_100mib']:,.0f}" if rep[s]["cpu_ms_per_100mib"] is not None else "—"
                for s in ("server", "client")]
        print(f"{d.name:<24} {cells[0]:>18} {cells[1]:>18} {cpus[0]:>11} {cpus[1]:>11}", file=out)
        report[d.name] = rep
    print("(both are ru_maxrss, the high-water mark: \"start\" once the process was up and connected, "
          "before any transfer — pb-stream_bytes's server has made its 100 MiB source by then — and "
          "\"peak\" after every window)", file=out)
    out.flush()
    return report


def print_summary(results: dict[str, h.Result], memory: dict, out=sys.stdout) -> None:
    title = "Summary (ratio of medians; best window ÷ floor's best in brackets)"
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)
    for name, res in results.items():
        if not name.startswith("pb"):
            continue
        base = results.get("floor-uvloop" if name.endswith("-uvloop") else "floor")
        r = h.ratio(res, base)
        rate = f"{res.median:,.0f} MB/s = {r:.2f}× floor (best {h.fmt_ratio(h.best_ratio(res, base))})" \
            if res.ok and r is not None else (res.error or "no floor")
        mem = memory.get(name)
        if mem:
            growth = max((mem[s]["peak_kib"] - mem[s]["start_kib"]) / 1024 for s in ("server", "client"))
            peaks = "/".join(mib(mem[s]["peak_kib"]) for s in ("server", "client"))
            verdict = "bounded" if growth <= TARGET_GROWTH_MIB else "NOT bounded"
            mem_text = f"peak RSS server/client {peaks} MiB, growth ≤ {growth:.1f} MiB: {verdict}"
        else:
            mem_text = ""
        print(f"{name:<24} {rate:<44} {mem_text}", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    args = h.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    plan = h.Plan(windows=args.windows or (3 if quick else 9),
                  seconds=args.seconds if args.seconds is not None else (0.0 if quick else 1.0),
                  warmup=0.0)  # a window is whole transfers: at least one, until `seconds` have passed
    h.install_sigterm_exit()
    malloc = "malloc: glibc defaults (--malloc-default)" if args.malloc_default else h.steady_malloc()
    systems = all_systems(args.loop)
    names = h.selected(args, [s.name for s in systems], always=["floor"])
    systems = [s for s in systems if s.name in names]
    started = time.perf_counter()
    print(f"bench_stream: {TOTAL // MiB} MiB per transfer in {CHUNK // 1024} KiB chunks; one warm-up transfer, "
          f"then {plan.windows} windows of whole transfers (≥ {plan.seconds:.1f}s each, at least one), "
          f"round-robin; Python {sys.version.split()[0]}")
    print(malloc)
    children = h.Children()
    try:
        log("starting servers and clients ...")
        drivers = start_drivers(systems, children)
        log("measuring ...")
        results = h.measure(drivers, "transfer", plan, progress=lambda m: log("  " + m))
        for res in results.values():
            res.rates = [r * 1e-6 for r in res.rates]
        title = f"(1) {TOTAL // MiB} MiB streamed, chunks dropped on arrival  [MB/s, 10⁶ bytes/s]"
        h.print_table(title, "MB/s", results, notes={n: NOTES.get(n.replace("-uvloop", ""), "") for n in results})
        memory = print_memory(drivers)
        print_summary(results, memory)
        h.print_total(started)
        if args.json:
            h.write_json(args.json, {
                "plan": vars(plan), "total_bytes": TOTAL, "chunk": CHUNK,
                "results": {n: r.as_json() for n, r in results.items()},
                "memory": memory,
            })
    finally:
        children.close()
    return 0


if __name__ == "__main__":
    h.run_main(main)
