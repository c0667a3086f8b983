"""Side-by-side call benchmark: our broker against a minimal asyncio floor,
Twisted PB, Pyro5 (serpent and msgpack) and RPyC, in one run.

    .venv/bin/python bench/bench_calls.py [--quick] [--only NAME,...]
                                          [--loop asyncio|uvloop|both] [--json PATH]

Every system's server runs in its own subprocess on 127.0.0.1 (ephemeral
port); clients run the way their users run them (asyncio clients and the
blocking Pyro5/RPyC proxies in this process, the Twisted PB client in a
reactor in a subprocess).  Each workload runs a warm-up and then several
windows, round-robin across systems; tables show median, min–max and the
ratio to the floor measured in the same run.  See bench/README.md.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import _harness as h
from _harness import System
from peers import floor, pb, pb_twisted_dialect, pyro5_peer, rpyc_peer, twisted_pb


@dataclass(frozen=True)
class Workload:
    op: str
    title: str
    unit: str
    scale: float = 1.0  # rate units -> displayed units


WORKLOADS = [
    Workload("seq", '(1) sequential echo("hello")', "calls/s"),
    Workload("burst", "(2) bursts of 100 calls in flight", "calls/s"),
    Workload("dicts", "(3) echo of the 1,000-dict list, by value", "calls/s"),
    Workload("mib", "(4a) echo of 1 MiB bytes (payload counted each way)", "MB/s", 1e-6),
    Workload("half", "(4b) echo of 512 KiB bytes (payload counted each way)", "MB/s", 1e-6),
    Workload("connect", "(5) new connection + first call + close", "conn/s"),
]

FLOOR_NOTES = {"burst": "asyncio.gather over 100 futures"}
PB_NOTES = {"burst": "asyncio.gather over 100 call_remote"}
TWISTED_NOTES = {"burst": "100 callRemote + gatherResults", "mib": "banana SIZE_LIMIT 640 KiB (default)"}

TARGETS = [  # (label, op, minimum ratio to the floor's median of base_op, base_op)
    ("sequential", "seq", 0.75, "seq"),
    ("100 in flight", "burst", 0.5, "burst"),
    ("1,000-dict echo", "dicts", 0.75, "dicts"),
    ("1 MiB echo vs floor 512 KiB", "mib", 0.5, "half"),
]


def all_systems(loop: str) -> list[System]:
    systems = [System("floor", floor, {}, "asyncio")]
    if loop in ("uvloop", "both"):
        systems.append(System("floor-uvloop", floor, {}, "uvloop"))
    if loop in ("asyncio", "both"):
        systems.append(System("pb", pb, {}, "asyncio"))
    if loop in ("uvloop", "both"):
        systems.append(System("pb-uvloop", pb, {}, "uvloop"))
    systems += [
        System("twisted-pb", twisted_pb, {}),
        # Ours in the Twisted dialect: Twisted's client against our server
        # (compare with twisted-pb, same client), and our client against
        # Twisted's server (issue 19).
        System("twisted-client->pb", pb_twisted_dialect, {}, "asyncio"),
        System("pb->twisted-server", pb_twisted_dialect.ClientSide, {}, "asyncio"),
    ]
    if loop in ("uvloop", "both"):
        # What `pb run --dialect twisted` serves on with the production
        # install (the uvloop extra; `--loop auto` picks it).
        systems.append(System("twisted-client->pb-uvloop", pb_twisted_dialect, {}, "uvloop"))
    systems += [
        System("pyro5-serpent", pyro5_peer, {"serializer": "serpent"}),
        System("pyro5-msgpack", pyro5_peer, {"serializer": "msgpack"}),
        System("rpyc", rpyc_peer, {}),
    ]
    return systems


def skip_reason(system: System) -> str | None:
    if system.loop == "uvloop":
        missing = h.uvloop_missing()
        if missing:
            return f"skipped: {system.name} ({missing}; pip install -e '.[uvloop]')"
    reason = system.module.unavailable()
    if reason is None:
        return None
    if system.module is pb:
        log(f"  ({system.name}: {reason})")
        return f"skipped: {system.name} (broker not importable yet)"
    return f"skipped: {system.name} not installed (pip install -e '.[bench]')"


def notes_for(system: System, drv: Any) -> dict[str, str]:
    notes = dict(getattr(drv, "notes", {}))
    if system.module is floor:
        notes.update(FLOOR_NOTES)
    elif system.module is pb:
        notes.update(PB_NOTES)
    elif system.module in (twisted_pb, pb_twisted_dialect, pb_twisted_dialect.ClientSide):
        notes.update(TWISTED_NOTES)
    return notes


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_drivers(systems: list[System], children: h.Children, runners: h.Runners) -> tuple[list[Any], dict]:
    drivers, notes = [], {}
    for s in systems:
        try:
            drv = s.module.driver(s.name, children, runners, loop=s.loop, **s.options)
            drv.window("check", 0)  # one verified echo of each payload and a fresh connect
        except Exception as exc:
            print(f"skipped: {s.name} (failed to start or check: {h.describe_error(exc)})")
            continue
        drivers.append(drv)
        notes[s.name] = notes_for(s, drv)
    return drivers, notes


def print_summary(tables: dict[str, dict[str, h.Result]], ours: list[str], out=sys.stdout) -> None:
    title = "Summary: ours against the targets (ratio of medians; best window ÷ floor's best in brackets)"
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)
    floor_tables = {op: t.get("floor") for op, t in tables.items()}
    if not ours:
        print("pb not measured (left out by --only, or the broker is not importable): "
              "targets unchecked", file=out)
    for name in ours:
        for label, op, minimum, base_op in TARGETS:
            mine = tables.get(op, {}).get(name)
            if mine is None:
                continue
            r = h.ratio(mine, floor_tables.get(base_op))
            if not mine.ok:
                verdict, shown = "MISS", f"failed: {mine.error}"
            elif r is None:
                verdict, shown = "?", "no floor"
            else:
                best = h.best_ratio(mine, floor_tables.get(base_op))
                verdict = "ok" if r >= minimum else "MISS"
                shown = f"{r:.2f}× floor (best {h.fmt_ratio(best)})"
            print(f"{name:<10} {label:<28} {shown:<30} target ≥ {minimum:.2f}×  {verdict}", file=out)
        if name.endswith("-uvloop"):
            line = []
            for w in WORKLOADS:
                r = h.ratio(tables.get(w.op, {}).get(name), tables.get(w.op, {}).get("floor-uvloop"))
                line.append(f"{w.op} {h.fmt_ratio(r)}")
            print(f"{name:<10} vs floor-uvloop: " + ", ".join(line), file=out)
        line = []
        for w in WORKLOADS:
            twisted = tables.get(w.op, {}).get("twisted-pb")
            mine = tables.get(w.op, {}).get(name)
            if twisted is None:
                continue
            if not twisted.ok and mine is not None and mine.ok:
                line.append(f"{w.op} (twisted-pb {twisted.error.split(' (')[0] if twisted.error else 'failed'})")
            else:
                line.append(f"{w.op} {h.fmt_ratio(h.ratio(mine, twisted))}")
        if line:
            print(f"{name:<10} vs twisted-pb: " + ", ".join(line), file=out)
    out.flush()


#: Twisted's client against our Twisted-dialect server, against the same
#: client talking to Twisted's own server (issue 19: at least 1.5×).
DIALECT_TARGET = 1.5


def print_dialect_summary(tables: dict[str, dict[str, h.Result]], out=sys.stdout) -> None:
    for name, where in (("twisted-client->pb", "our server"),
                        ("twisted-client->pb-uvloop", "our server on uvloop")):
        line = []
        for w in WORKLOADS:
            ours = tables.get(w.op, {}).get(name)
            theirs = tables.get(w.op, {}).get("twisted-pb")
            if ours is None or theirs is None:
                continue
            r = h.ratio(ours, theirs)
            verdict = "" if r is None else (" ok" if r >= DIALECT_TARGET else " MISS")
            line.append(f"{w.op} {h.fmt_ratio(r)}{verdict if w.op in ('seq', 'burst', 'dicts') else ''}")
        if line:
            print(f"twisted client, {where} vs Twisted's (target ≥ {DIALECT_TARGET}× on "
                  "seq/burst/dicts): " + ", ".join(line), file=out)


def main(argv: list[str] | None = None) -> int:
    args = h.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    plan = h.plan_from_args(args)
    h.install_sigterm_exit()
    malloc = "malloc: glibc defaults (--malloc-default)" if args.malloc_default else h.steady_malloc()
    systems = all_systems(args.loop)
    names = h.selected(args, [s.name for s in systems], always=["floor"])
    systems = [s for s in systems if s.name in names]
    started = time.perf_counter()
    print(f"bench_calls: {plan.windows} windows × {plan.seconds:.2f}s after a {plan.warmup:.2f}s warm-up, "
          f"round-robin; Python {sys.version.split()[0]}")
    print(malloc)
    runnable = []
    for s in systems:
        reason = skip_reason(s)
        if reason:
            print(reason)
        else:
            runnable.append(s)

    tables: dict[str, dict[str, h.Result]] = {}
    children, runners = h.Children(), h.Runners()
    drivers: list[Any] = []
    clean = False
    try:
        log("starting servers and clients ...")
        drivers, notes = start_drivers(runnable, children, runners)
        if not any(d.name == "floor" for d in drivers):
            print("the floor did not start: no ratios", file=sys.stderr)
        for w in WORKLOADS:
            log(f"measuring {w.title} ...")
            results = h.measure(drivers, w.op, plan, progress=lambda m: log("  " + m))
            for res in results.values():
                res.rates = [r * w.scale for r in res.rates]
            tables[w.op] = results
            h.print_table(f"{w.title}  [{w.unit}]", w.unit, results,
                          notes={n: notes[n].get(w.op, "") for n in results})
        ours = [d.name for d in drivers if d.name in ("pb", "pb-uvloop")]
        print_summary(tables, ours)
        print_dialect_summary(tables)
        h.print_total(started)
        if args.json:
            h.write_json(args.json, {
                "plan": vars(plan),
                "workloads": {w.op: {"title": w.title, "unit": w.unit} for w in WORKLOADS},
                "results": {op: {n: r.as_json() for n, r in t.items()} for op, t in tables.items()},
                "notes": notes,
            })
        clean = True
    finally:
        if clean:  # polite close of client connections; skipped after Ctrl-C or a crash
            for d in drivers:
                close: Callable[[], Any] | None = getattr(d, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        pass
        runners.close()
        children.close()
    return 0


if __name__ == "__main__":
    h.run_main(main)
