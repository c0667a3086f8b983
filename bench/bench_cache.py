"""Cache fan-out benchmark: updates/s pushed from a Cacheable to 10
observers (10 client connections in 2 client processes), ours against
Twisted PB's pb.Cacheable / pb.RemoteCache, in one run.

    .venv/bin/python bench/bench_cache.py [--quick] [--only NAME,...]
                                          [--loop asyncio|uvloop|both] [--updates N] [--json PATH]

A round: every client is told to expect N updates; the first client calls
the server's ``push(N)``, which sends ``observer.call_remote("append", i)``
(Twisted: ``callRemote``) for i in 0..N-1 to each of the 10 observers; the
round's time runs from that call until the last observer has seen
``append(N-1)`` (clients timestamp with ``time.perf_counter``, one monotonic
clock for every process on the machine).  Rate = N / time, each update
reaching all 10 observers in order.  See bench/README.md.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _harness as h
from _harness import System
from peers import cache_pb, cache_twisted
from peers.cache_common import CLIENT_PROCESSES, OBSERVERS, PER_CLIENT


NOTES = {
    "pb": "observer.call_remote: one-way",
    "pb-uvloop": "as pb, on uvloop",
    "twisted-pb": "callRemote(..., pbanswer=False): one-way",
    "twisted-pb-answered": "callRemote default: each update answered",
}


def all_systems(loop: str) -> list[System]:
    systems = [System("twisted-pb", cache_twisted, {}),
               System("twisted-pb-answered", cache_twisted, {"answered": True})]
    if loop in ("asyncio", "both"):
        systems.append(System("pb", cache_pb, {}, "asyncio"))
    if loop in ("uvloop", "both"):
        systems.append(System("pb-uvloop", cache_pb, {"loop": "uvloop"}, "uvloop"))
    return systems


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Accounted:
    """A fan-out driver plus CPU accounting: server and clients, per window."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.updates = 0
        self.cpu = {"server": 0.0, "clients": 0.0}

    def _cpu(self) -> dict[str, float]:
        return {"server": self.inner.server.request({"op": "usage"})["cpu"],
                "clients": sum(c.request({"op": "usage"})["cpu"] for c in self.inner.clients)}

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        before = self._cpu()
        units, elapsed = self.inner.window(op, seconds)
        after = self._cpu()
        if op == "fanout":
            self.updates += units
            for side in self.cpu:
                self.cpu[side] += after[side] - before[side]
        return units, elapsed


def start_drivers(systems: list[System], children: h.Children, n: int) -> list[Accounted]:
    drivers = []
    for s in systems:
        reason = s.module.unavailable()
        if s.loop == "uvloop":
            reason = reason or h.uvloop_missing()
        if reason:
            print(f"skipped: {s.name} ({reason})")
            continue
        try:
            drv = Accounted(s.module.driver(s.name, children, n, **s.options))
            drv.window("check", 0)  # one round of 100 updates, order checked on every cache
        except Exception as exc:
            print(f"skipped: {s.name} (failed to start or check: {h.describe_error(exc)})")
            continue
        drivers.append(drv)
    return drivers


def print_cpu(drivers: list[Accounted], out=sys.stdout) -> dict:
    title = "CPU per delivered message (one update to one observer), all windows and the warm-up"
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)
    print(f"{'system':<22} {'server µs':>10} {'clients µs':>11}", file=out)
    report = {}
    for d in drivers:
        deliveries = d.updates * OBSERVERS
        if not deliveries:
            continue
        server, clients = (1e6 * d.cpu[s] / deliveries for s in ("server", "clients"))
        print(f"{d.name:<22} {server:>10.2f} {clients:>11.2f}", file=out)
        report[d.name] = {"server_us": server, "clients_us": clients}
    print(f"(clients: the sum over the {CLIENT_PROCESSES} client processes)", file=out)
    out.flush()
    return report


def print_summary(results: dict[str, h.Result], out=sys.stdout) -> None:
    title = "Summary: ours ÷ twisted-pb (ratio of medians; best window ÷ best in brackets)"
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)
    for name in ("pb", "pb-uvloop"):
        mine = results.get(name)
        if mine is None:
            continue
        parts = []
        for base in ("twisted-pb", "twisted-pb-answered"):
            other = results.get(base)
            r = h.ratio(mine, other)
            if r is not None:
                parts.append(f"{r:.2f}× {base} (best {h.fmt_ratio(h.best_ratio(mine, other))})")
        shown = "; ".join(parts) if mine.ok else f"failed: {mine.error}"
        print(f"{name:<10} {shown or 'no twisted-pb figure'}", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    p = h.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, help="updates per round (default 2000, --quick 500)")
    args = p.parse_args(argv)
    quick = args.quick
    n = args.updates or (500 if quick else 2000)
    plan = h.Plan(windows=args.windows or (3 if quick else 9),
                  seconds=args.seconds if args.seconds is not None else (0.0 if quick else 0.5),
                  warmup=0.0)  # a window is whole rounds: at least one, until `seconds` have passed
    h.install_sigterm_exit()
    systems = all_systems(args.loop)
    names = h.selected(args, [s.name for s in systems], always=["twisted-pb"])
    systems = [s for s in systems if s.name in names]
    started = time.perf_counter()
    print(f"bench_cache: {OBSERVERS} observers ({CLIENT_PROCESSES} client processes × {PER_CLIENT} connections), "
          f"{n} updates per round; one warm-up round, then {plan.windows} windows of whole rounds "
          f"(≥ {plan.seconds:.1f}s each, at least one), round-robin; Python {sys.version.split()[0]}")
    children = h.Children()
    try:
        log("starting servers and clients ...")
        drivers = start_drivers(systems, children, n)
        log("measuring ...")
        results = h.measure(drivers, "fanout", plan, progress=lambda m: log("  " + m))
        title = (f"(1) {n} updates pushed to {OBSERVERS} observers, until the last one has them all  "
                 f"[updates/s; × {OBSERVERS} = messages delivered/s]")
        h.print_table(title, "updates/s", results, base="twisted-pb",
                      notes={name: NOTES.get(name, "") for name in results})
        cpu = print_cpu(drivers)
        print_summary(results)
        h.print_total(started)
        if args.json:
            h.write_json(args.json, {
                "plan": vars(plan), "updates_per_round": n, "observers": OBSERVERS,
                "results": {name: r.as_json() for name, r in results.items()},
                "cpu_per_delivery": cpu,
            })
    finally:
        children.close()
    return 0


if __name__ == "__main__":
    h.run_main(main)
