"""Argument types shared by plug-ins: ``--host`` values are checked before
anything starts, from the command line and from a config file alike."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from services import host_name

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", [
    "127.0.0.1", "0.0.0.0", "::1", "::", "fe80::1", "localhost", "example.org",
    "example.org.", "a-b.c1", "x" * 63 + ".com",
])
def test_addresses_and_host_names_are_accepted_as_given(text):
    assert host_name(text) == text


@pytest.mark.parametrize("text", [
    "", "bad host!", "a" * 300, "x" * 64 + ".com", "-lead.example", "trail-.example",
    "a..b", ".", "1.2.3.4:80", "http://x", "\x00", "ünïcode", "a b",
])
def test_garbage_is_refused_with_what_was_expected(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected an IP address or a host name"):
        host_name(text)


def pb(*args, cwd):
    return subprocess.run([sys.executable, "-m", "clients._cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("service", ["echo", "manhole"])
def test_pb_run_with_a_garbage_host_is_a_usage_error(tmp_path, service):
    result = pb("run", service, "--host", "bad host!", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "argument --host: expected an IP address or a host name, got 'bad host!'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pb-data").exists()


def test_a_garbage_host_in_a_config_file_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "app.toml"
    config.write_text('[[service]]\nplugin = "echo"\nhost = "' + "a" * 300 + '"\n')
    result = pb("run", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "service[0].host" in result.stderr and "expected an IP address or a host name" in result.stderr
    assert "Traceback" not in result.stderr
