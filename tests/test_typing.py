"""A user program of the public API passes ``mypy --strict`` against the
installed package (issue 16): an editable install must not hide the
packages behind an import hook that type checkers cannot follow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "typing" / "user_program.py"


def test_a_user_program_passes_mypy_strict(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    # Outside the checkout, so that only the installed package can be found.
    program = tmp_path / "app.py"
    shutil.copy(PROGRAM, program)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(program)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
