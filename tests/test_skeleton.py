import subprocess
import sys


def test_pb_console_script_prints_help():
    out = subprocess.run(
        [sys.executable, "-m", "clients._cli", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert "usage: pb" in out.stdout


def test_top_level_packages_import():
    import broker, clients, cred, jelly, services  # noqa: F401
