"""CI's short fuzz: each harness for 2,000 inputs under atheris, through the
runner in a subprocess (as a developer runs it); where atheris has no wheel,
the seed corpus and any crash files are replayed in plain Python instead."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import HARNESSES

ROOT = Path(__file__).resolve().parent.parent.parent
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.parametrize("name", list(HARNESSES))
def test_harness_keeps_its_contract_for_2000_inputs(name):
    if not HAVE_ATHERIS:
        pytest.skip("atheris is not importable here (no wheel for this platform); "
                    "see test_corpus_replays_without_atheris")
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", name, "--runs", "2000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{name}: inputs 2000," in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", list(HARNESSES))
def test_corpus_replays_without_atheris(name):
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", name, "--replay"],
                          cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failures 0" in proc.stdout


def test_runner_lists_every_harness():
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", "--list"],
                          cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == list(HARNESSES)
