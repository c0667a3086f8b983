"""The fuzz runner.

    python -m tests.fuzz --list
    python -m tests.fuzz NAME --runs N      # atheris (libFuzzer) for N inputs
    python -m tests.fuzz all --runs N       # each harness in its own process
    python -m tests.fuzz NAME --replay      # corpus + crash files, plain Python

Each atheris run happens in a child process (``_child``) so that a crash,
an abort or libFuzzer's own exit cannot take the runner down, and its
output is parsed for the figures: inputs, cov, ft, time, crashes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import FOCUS, HARNESSES, INSTRUMENTED

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ROOT = HERE.parent.parent
#: Crash and timeout reproducers (git-ignored).
ARTIFACTS = ROOT / ".fuzz-artifacts"


def load(name: str):
    module, _, attr = HARNESSES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _child(name: str, runs: int, workdir: str, extra: list[str]) -> None:
    """Runs inside the fuzzing process: instrument, import, hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=list(FOCUS.get(name, INSTRUMENTED))):
        harness = load(name)
    atheris.instrument_func(harness.run)
    (ARTIFACTS / name).mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-runs={runs}", f"-artifact_prefix={ARTIFACTS / name}/",
            "-max_len=4096", "-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1",
            *extra, workdir, str(CORPUS / name)]
    atheris.Setup(args, harness.run)
    atheris.Fuzz()


_DONE = re.compile(r"^#(\d+)\s+(?:DONE|INITED|NEW|REDUCE|pulse)\s+cov: (\d+) ft: (\d+)", re.M)
_RUNS = re.compile(r"Done (\d+) runs in (\d+) second")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


def fuzz(name: str, runs: int, extra: list[str]) -> int:
    workdir = tempfile.mkdtemp(prefix=f"pb-fuzz-{name}-")  # new inputs go here, not in the seeds
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz", "_child", name, "--runs", str(runs),
             "--workdir", workdir, *(["--"] + extra if extra else [])],
            cwd=ROOT, capture_output=True, text=True, errors="replace",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    figures = _DONE.findall(output)
    inputs, cov, ft = (figures[-1] if figures else ("?", "?", "?"))
    done = _RUNS.search(output)
    if done:
        inputs = done.group(1)
    artifacts = _ARTIFACT.findall(output)
    crashed = proc.returncode != 0
    print(f"{name}: inputs {inputs}, cov {cov}, ft {ft}, time {elapsed:.1f}s, "
          f"crashes {len(artifacts) if artifacts else int(crashed)}", flush=True)
    if crashed:
        tail = "\n".join(output.splitlines()[-40:])
        print(f"--- {name} failed (exit {proc.returncode}); last output:\n{tail}", flush=True)
        for path in artifacts:
            print(f"reproducer: {path}  (replay: python -m tests.fuzz {name} --replay)", flush=True)
    return 1 if crashed else 0


def replay(name: str) -> int:
    """Every seed and every reproducer through the harness, without atheris."""
    harness = load(name)
    files = sorted((CORPUS / name).glob("*")) + sorted((ARTIFACTS / name).glob("*"))
    failures = 0
    start = time.monotonic()
    for path in files:
        try:
            harness.run(path.read_bytes())
        except Exception:
            failures += 1
            print(f"{name}: {path} broke the contract:", flush=True)
            traceback.print_exc()
    print(f"{name}: replayed {len(files)} inputs in {time.monotonic() - start:.2f}s, "
          f"failures {failures}", flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help=f"a harness ({', '.join(HARNESSES)}) or 'all'")
    parser.add_argument("--list", action="store_true", help="list the harnesses")
    parser.add_argument("--runs", type=int, default=10_000, help="inputs per harness (libFuzzer -runs)")
    parser.add_argument("--replay", action="store_true",
                        help="run the seed corpus and crash files through the harness, without atheris")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="after --: more libFuzzer flags")
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse cannot take "--" followed by more positionals after NAME: split it here.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.extra = [*args.extra, *extra]
    if args.list:
        for name in HARNESSES:
            print(f"{name}: {load(name).description}")
        return 0
    if args.name == "_child":
        _child(args.extra[0], args.runs, args.workdir, args.extra[1:])
        return 0
    if args.name is None:
        parser.error("name a harness, 'all', or --list")
    names = list(HARNESSES) if args.name == "all" else [args.name]
    for name in names:
        if name not in HARNESSES:
            parser.error(f"unknown harness {name!r}; --list shows them")
    status = 0
    for name in names:
        status |= replay(name) if args.replay else fuzz(name, args.runs, args.extra)
    return status


if __name__ == "__main__":
    sys.exit(main())
