"""The ``pb`` command itself: ``--version`` and help."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from tests.clients.test_cli_run import pb_env


def test_pb_version_prints_the_installed_version():
    result = subprocess.run([sys.executable, "-m", "clients._cli", "--version"],
                            capture_output=True, text=True, env=pb_env(), timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"pb {metadata.version('perspective-broker')}"


def test_pb_help_lists_the_subcommands_and_version():
    result = subprocess.run([sys.executable, "-m", "clients._cli", "--help"],
                            capture_output=True, text=True, env=pb_env(), timeout=30)
    assert result.returncode == 0
    for word in ("--version", "run", "user", "call", "manhole"):
        assert word in result.stdout
