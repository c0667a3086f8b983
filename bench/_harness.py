"""Shared plumbing for the side-by-side benchmarks in ``bench/``.

Nothing here knows about a particular workload or peer.  It provides:

* window plans and timed loops (sync, asyncio) that count *units* (calls,
  bytes, logins, ...) over a wall-clock window;
* median / min / max summaries and ratio tables;
* child processes: start with a one-line handshake on stdout (a server
  prints its port), die with the parent (stdin EOF), always killed on exit;
* a JSON-lines command channel, so a client that must live in its own
  process (e.g. inside a Twisted reactor) can be driven window by window
  exactly like an in-process client;
* ``measure()``: warm every driver up, then run the windows round-robin
  across drivers so that all systems see the same machine drift.

A *driver* is anything with ``name`` and ``window(op, seconds) -> (units,
elapsed)``; it raises an exception when the op cannot run (the message is
reported in the table instead of a number).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)

# --------------------------------------------------------------------------
# plans and timed loops


@dataclass(frozen=True)
class Plan:
    """How long to measure: one warm-up window, then ``windows`` windows."""

    windows: int = 9
    seconds: float = 0.25
    warmup: float = 0.3

    @classmethod
    def default(cls, quick: bool) -> "Plan":
        return cls(windows=3, seconds=0.2, warmup=0.1) if quick else cls()


def time_sync(op: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Call ``op`` (which returns how many units it did) until ``seconds``
    have passed; at least once.  Returns ``(units, elapsed)``."""
    clock = time.perf_counter
    units = 0
    t0 = clock()
    while True:
        units += op()
        elapsed = clock() - t0
        if elapsed >= seconds:
            return units, elapsed


async def time_async(op: Callable[[], Awaitable[int]], seconds: float) -> tuple[int, float]:
    """Like :func:`time_sync` for a coroutine function."""
    clock = time.perf_counter
    units = 0
    t0 = clock()
    while True:
        units += await op()
        elapsed = clock() - t0
        if elapsed >= seconds:
            return units, elapsed


# --------------------------------------------------------------------------
# stats


@dataclass
class Result:
    """Per-window rates of one system for one op, or why there are none."""

    rates: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)

    def as_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"error": self.error or "no data"}
        return {"median": self.median, "min": self.low, "max": self.high, "rates": self.rates}


def best_ratio(result: Result | None, base: Result | None) -> float | None:
    """best window / base's best window: noise on a shared machine only ever
    slows a window down, so this is the second opinion on ``ratio``."""
    if result is None or base is None or not result.ok or not base.ok or base.high == 0:
        return None
    return result.high / base.high


def ratio(result: Result | None, base: Result | None) -> float | None:
    """median(result) / median(base), or None when either is missing."""
    if result is None or base is None or not result.ok or not base.ok or base.median == 0:
        return None
    return result.median / base.median


# --------------------------------------------------------------------------
# drivers and the round-robin measurement


@dataclass(frozen=True)
class System:
    """One system a benchmark compares: its row name, the peer module
    (``bench/peers``) that starts its driver, the options it is started
    with, and the event loop it runs on."""

    name: str
    module: Any
    options: dict
    loop: str = "asyncio"


class SyncDriver:
    """Driver for a blocking client living in this process."""

    def __init__(self, name: str, ops: dict[str, Callable[[], int]]):
        self.name = name
        self.ops = ops

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        return time_sync(self.ops[op], seconds)


class Runners:
    """One long-lived event loop per loop kind ("asyncio", "uvloop"), so that
    async clients keep their connections open between windows."""

    def __init__(self) -> None:
        self._runners: dict[str, asyncio.Runner] = {}

    def get(self, loop: str) -> asyncio.Runner:
        if loop not in self._runners:
            self._runners[loop] = asyncio.Runner(loop_factory=loop_factory(loop))
        return self._runners[loop]

    def close(self) -> None:
        for runner in self._runners.values():
            with contextlib.suppress(Exception):
                runner.close()
        self._runners.clear()


class AsyncDriver:
    """Driver for an asyncio client living in this process; ``ops`` are
    coroutine functions returning units, run on ``runner``'s loop."""

    def __init__(self, name: str, runner: asyncio.Runner, ops: dict[str, Callable[[], Awaitable[int]]],
                 timeout: float = 60.0):
        self.name = name
        self.runner = runner
        self.ops = ops
        self.timeout = timeout  # a window that overruns this much has hung

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        return self.runner.run(asyncio.wait_for(time_async(self.ops[op], seconds), seconds + self.timeout))


class ChildDriver:
    """Driver for a client running in a child process that speaks
    :func:`command_loop` (``{"op", "seconds"}`` -> ``{"units", "elapsed"}``)."""

    def __init__(self, name: str, child: "Child", timeout: float = 60.0):
        self.name = name
        self.child = child
        self.timeout = timeout

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        reply = self.child.request({"op": op, "seconds": seconds}, timeout=self.timeout + seconds)
        return reply["units"], reply["elapsed"]


def measure(drivers: Sequence[Any], op: str, plan: Plan, *, progress: Callable[[str], None] | None = None) -> dict[str, Result]:
    """Warm each driver up once, then run ``plan.windows`` rounds; in each
    round every driver runs one window, starting from a rotating position.
    A driver that fails keeps its error and is left out of later rounds."""
    results = {d.name: Result() for d in drivers}

    def run(driver: Any, seconds: float) -> float | None:
        res = results[driver.name]
        if res.error is not None:
            return None
        try:
            units, elapsed = driver.window(op, seconds)
        except Exception as exc:  # reported, not fatal: the other systems go on
            res.error = describe_error(exc)
            if progress:
                progress(f"{driver.name}: {res.error}")
            return None
        return units / elapsed if elapsed > 0 else None

    for d in drivers:
        run(d, plan.warmup)
    n = len(drivers)
    for i in range(plan.windows):
        for j in range(n):
            d = drivers[(i + j) % n]
            rate = run(d, plan.seconds)
            if rate is not None:
                results[d.name].rates.append(rate)
    return results


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, RemoteOpError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RemoteOpError(Exception):
    """An op failed inside a child; the message is the child's."""


# --------------------------------------------------------------------------
# child processes


class Child:
    """A child Python process started with ``python -m module args``.

    It runs in its own session (Ctrl-C reaches only the benchmark, which then
    kills it), gets a pipe as stdin (EOF = parent gone) and must print one
    handshake line on stdout (a server: its port) within ``ready_timeout``.
    """

    def __init__(self, module: str, args: Sequence[str] = (), *, ready_timeout: float = 20.0, env: dict[str, str] | None = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH", ""), BENCH_DIR, REPO_ROOT) if p
        )
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self.argv = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # children's tracebacks show up in the benchmark's stderr
            start_new_session=True,
            env=full_env,
            cwd=BENCH_DIR,
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            self.handshake = self._readline(ready_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int:
        return int(self.handshake)

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        if not self._sel.select(timeout):
            raise TimeoutError(f"{' '.join(self.argv[2:])}: no answer within {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.poll()
            raise RuntimeError(f"{' '.join(self.argv[2:])}: exited (code {code}) without answering")
        return line.decode().strip()

    def request(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send one JSON line, read one JSON line back."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        reply = json.loads(self._readline(timeout))
        if "error" in reply:
            raise RemoteOpError(reply["error"])
        return reply

    def close(self) -> None:
        """Ask politely (stdin EOF), then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            for sig, wait in ((None, 0.5), (signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(Exception):
            self._sel.close()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()


class Children:
    """Keeps every child started through it; ``close()`` (or leaving the
    ``with`` block, also on Ctrl-C) kills them all."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, module: str, *args: str, **kw: Any) -> Child:
        child = Child(module, args, **kw)
        self._children.append(child)
        return child

    def close(self) -> None:
        while self._children:
            self._children.pop().close()

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks kill children."""

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


# ---- child side ----------------------------------------------------------


def announce(value: object) -> None:
    """Child side: print the handshake line (a server: its port)."""
    sys.stdout.write(f"{value}\n")
    sys.stdout.flush()


def exit_with_parent() -> None:
    """Child side: exit as soon as stdin reaches EOF (the parent closed it or
    died).  For servers, whose stdin is otherwise unused."""

    def watch() -> None:
        # raw fd reads: a daemon thread blocked inside sys.stdin's buffered
        # reader would trip the interpreter's shutdown check
        with contextlib.suppress(Exception):
            while os.read(0, 65536):
                pass
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def command_loop(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Child side: answer JSON-line requests from stdin until EOF.  An
    exception in ``handler`` becomes ``{"error": "<Type>: <message>"}``."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handler(json.loads(line))
        except Exception as exc:
            reply = {"error": describe_error(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------
# event loops


def uvloop_missing() -> str | None:
    try:
        import uvloop  # noqa: F401
    except Exception as exc:
        return f"uvloop not importable ({type(exc).__name__})"
    return None


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "asyncio":
        return None
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    raise ValueError(f"unknown loop {loop!r}")


def serve_main(prog: str, serve: Callable[[], Awaitable[Any]], argv: list[str] | None = None,
               *, watch_parent: Callable[[], None] = exit_with_parent) -> None:
    """Child side: the ``serve [--loop asyncio|uvloop]`` command line every
    asyncio server peer takes; ``watch_parent`` ends the process with its
    parent (the login peers also answer CPU-usage requests on stdin)."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("mode", choices=["serve"])
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args(argv)
    watch_parent()
    run_loop(serve, args.loop)


def run_loop(main: Callable[[], Awaitable[Any]], loop: str = "asyncio") -> Any:
    """Child side: run ``main()`` on the chosen event loop."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main())


# --------------------------------------------------------------------------
# malloc

# glibc's defaults (dynamic mmap threshold, 128 KiB trim threshold) make every
# process that allocates and frees ~1 MiB objects in a loop hand pages back to
# the kernel and fault them in again; which process happens to hit that depends
# on its allocation history, so MB/s figures swing several-fold from run to
# run.  Fixing both thresholds in *every* process of a run (the benchmark via
# mallopt, children via the environment) measures the protocols instead.
_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(64 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024),
}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def steady_malloc() -> str:
    """Apply the fixed thresholds to this process and to children started
    later; returns a one-line description for the report."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, int(_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))
              and libc.mallopt(_M_TRIM_THRESHOLD, int(_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"])))
    except (OSError, AttributeError):
        ok = False
    if not ok:
        return "malloc: platform default (no glibc mallopt here)"
    os.environ.update(_MALLOC_ENV)
    return "malloc: fixed mmap/trim thresholds in every process (--malloc-default to measure glibc's defaults)"


# --------------------------------------------------------------------------
# command line and output


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer, shorter windows (smoke run)")
    p.add_argument("--only", default="", help="comma-separated systems to run (the floor always runs)")
    p.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="asyncio",
                   help="event loop(s) for our broker (and an extra floor row on uvloop)")
    p.add_argument("--windows", type=int, help="override the number of windows")
    p.add_argument("--seconds", type=float, help="override the window length")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--malloc-default", action="store_true",
                   help="leave glibc's malloc thresholds alone (large-payload MB/s then swing between runs)")
    return p


def plan_from_args(args: argparse.Namespace) -> Plan:
    plan = Plan.default(args.quick)
    return Plan(
        windows=args.windows or plan.windows,
        seconds=args.seconds or plan.seconds,
        warmup=plan.warmup,
    )


def selected(args: argparse.Namespace, names: Iterable[str], always: Iterable[str] = ()) -> list[str]:
    """Systems chosen by ``--only`` (all when empty), keeping ``always``;
    a name also selects its ``-uvloop`` variant (present only with --loop)."""
    names = list(names)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = {w for w in wanted if not any(n == w or n.startswith(w + "-uvloop") for n in names)}
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    keep = set(always)

    def chosen(n: str) -> bool:
        base = n[: -len("-uvloop")] if n.endswith("-uvloop") else n
        return not wanted or n in wanted or base in wanted or base in keep

    return [n for n in names if chosen(n)]


def fmt_num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:,.1f}"
    return f"{x:,.2f}"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def print_table(title: str, unit: str, results: dict[str, Result], *, base: str | None = "floor",
                notes: dict[str, str] | None = None, out: Any = None) -> None:
    """One table: system, median, min–max, median ÷ base's median, best
    window ÷ base's best window, note.  A failed system shows its error."""
    out = out or sys.stdout
    notes = notes or {}
    head = ("system", f"median {unit}", "min–max", f"× {base}" if base else "", "best ×" if base else "", "note")
    rows = []
    for name, res in results.items():
        if res.ok:
            b = results.get(base) if base else None
            rows.append((name, fmt_num(res.median), f"{fmt_num(res.low)}–{fmt_num(res.high)}",
                         fmt_ratio(ratio(res, b)) if base else "",
                         fmt_ratio(best_ratio(res, b)) if base else "", notes.get(name, "")))
        else:
            rows.append((name, res.error or "no data", "", "", "", notes.get(name, "")))
    ok_rows = [r for r in rows if r[2]]
    widths = [max(len(r[i]) for r in (head, *ok_rows)) for i in range(5)]
    widths[0] = max(len(r[0]) for r in (head, *rows))
    print(f"\n{title}", file=out)
    print("-" * len(title), file=out)

    def line(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])]
        if r[2] or r is head:
            cells += [r[i].rjust(widths[i]) for i in range(1, 5)]
        else:  # an error message spills over instead of widening the columns
            cells += [r[1]]
        text = "  ".join(c for c in cells if c)
        return f"{text}  {r[5]}".rstrip() if r[5] else text

    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)
    out.flush()


def print_total(started: float) -> None:
    """The closing line: the run's wall time since ``started``
    (``time.perf_counter()``), and which figures to compare."""
    print(f"\n(total {time.perf_counter() - started:.0f}s; absolute figures drift on shared machines, "
          "ratios measured in the same run are what to compare)")


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def run_main(main: Callable[[], int]) -> None:
    """A benchmark's ``__main__``: exit with ``main()``'s code, or 130 on
    Ctrl-C (``main`` kills its children on the way out)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; children killed", file=sys.stderr)
        sys.exit(130)
