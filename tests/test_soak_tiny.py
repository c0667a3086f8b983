"""bench/soak.py in its tiny mode (5 s, a few clients, small abuse), so the
soak cannot rot: it must start its server and its load and abuse
processes, drive every face, run every abuse phase and pass its checks
(the uploads come back byte for byte, the guesser gets nowhere), lose no
mail and leave no broker, task or table entry behind; the Twisted-dialect
and manhole canaries must run too.  Its
latency criteria are not asserted here (no timing in tests); the soak's own
PASS/FAIL judges them on a quiet machine."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


def test_soak_tiny_mode_runs_every_face_and_phase_and_cleans_up():
    proc = subprocess.run([sys.executable, "bench/soak.py", "--tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=170)
    out = proc.stdout
    assert "phase" in out and ("PASS" in out or "FAIL" in out), out + proc.stderr[-3000:]
    for phase in ("calm", "idle-sockets", "slow-readers", "login-guesser", "object-bomb",
                  "100MiB-upload"):
        assert f"[{phase}]" in out, f"phase {phase} did not run:\n{out}"
    assert "lost none" in out, out
    assert "a load client failed" not in out, out
    assert "'uploads_checked': " in out and "'uploads_checked': 0" not in out, out
    for failure in ("not a 413", "upload 1:", "logged in", "process failed", "gave no report",
                    "did not stop"):
        assert failure not in out, out
    assert "after the clients left" not in out, out
    # What a reader needs to tell a slow server from a busy machine.
    assert "CPU seconds: " in out and "server loop stalls of" in out, out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("calm ")}
    assert "calm" in rows and rows["calm"].count("(") >= 4, out  # most faces answered
    # The Twisted dialect's and the manhole's canaries ran, without errors,
    # and the guesser tried the manhole's admin account too.
    header = next(line for line in out.splitlines() if line.startswith("phase "))
    assert "pb-twisted" in header and "manhole" in header, out
    errors = next(line for line in out.splitlines() if line.startswith("errors: "))
    assert "pb-twisted" not in errors and "manhole" not in errors, out
    assert "'manhole': " in out, out
