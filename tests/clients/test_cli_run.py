"""``pb run`` as a real subprocess: options, TOML files, signals, exit codes.

The fixture plug-ins (tests/services/fixture_plugins.py) are loaded through
``PB_EXTRA_PLUGINS``; every child runs with ResourceWarning as an error and
asyncio debug mode, and its stderr is checked for leaks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._child import OutputChild

REPO = Path(__file__).resolve().parents[2]
FIXTURES = "tests.services.fixture_plugins"
LEAKS = ("ResourceWarning", "Task was destroyed", "never awaited", "Traceback",
         "Exception ignored", "unclosed")


def pb_env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PB_EXTRA_PLUGINS"] = FIXTURES
    env["PYTHONASYNCIODEBUG"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def pb_command(*args: str) -> list[str]:
    return [sys.executable, "-W", "error::ResourceWarning", "-m", "clients._cli", "run", *args]


def pb_run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 20):
    return subprocess.run(pb_command(*args), cwd=cwd, env=env or pb_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_no_leaks(stderr: str) -> None:
    for marker in LEAKS:
        assert marker not in stderr, stderr


class Running(OutputChild):
    """A ``pb run`` child whose output lines are collected as they come."""

    wait_timeout = 10.0

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(pb_command(*args), cwd=cwd, env=env or pb_env())


@pytest.fixture
def running(tmp_path):
    children: list[Running] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Running:
        child = Running(*args, cwd=tmp_path, env=env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(text)
    return path


# -- listing and usage ----------------------------------------------------


def test_pb_run_list_shows_plugins_and_marks_broken_ones(tmp_path):
    dist = tmp_path / "site" / "broken_pb_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pb-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[perspective_broker.services]\nbroken = pb_no_such_module_for_tests:plugin\n"
    )
    env = pb_env(tmp_path / "site")
    listed = pb_run("--list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "echo lines back over TCP" in lines["line-echo"]
    assert "count in a file" in lines["ticker"]
    assert "(broken) ModuleNotFoundError: No module named 'pb_no_such_module_for_tests'" in lines["broken"]

    asked = pb_run("broken", cwd=tmp_path, env=env)
    assert asked.returncode == 1
    assert "plugin 'broken' (entry point broken = 'pb_no_such_module_for_tests:plugin'" in asked.stderr
    assert "No module named 'pb_no_such_module_for_tests'" in asked.stderr


def test_pb_run_help_needs_no_plugin(tmp_path):
    env = pb_env()
    env["PB_EXTRA_PLUGINS"] = ""
    shown = pb_run("--help", cwd=tmp_path, env=env)
    assert shown.returncode == 0
    assert "usage: pb run" in shown.stdout and "PB_EXTRA_PLUGINS" in shown.stdout
    service_help = pb_run("line-echo", "--help", cwd=tmp_path)
    assert service_help.returncode == 0
    assert "usage: pb run line-echo" in service_help.stdout and "--slow-stop" in service_help.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bogus", "line-echo"), "unrecognized arguments: --bogus"),
        (("line-echo", "--bogus"), "unrecognized arguments: --bogus"),
        (("line-echo", "--port", "x"), "argument --port: invalid int value: 'x'"),
        ((), "give the SERVICE to run"),
        (("ehco",), "unknown plugin 'ehco'"),
    ],
)
def test_bad_command_lines_exit_2_with_argparse_message(tmp_path, args, message):
    result = pb_run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--grace", "nan", "line-echo"), "argument --grace: expected a non-negative number"),
    (("--grace=-inf", "line-echo"), "argument --grace: expected a non-negative number"),
    (("--grace", "soon", "line-echo"), "argument --grace: expected a number of seconds"),
    (("--log-level", "loud\x1b[31m", "line-echo"), "argument --log-level: invalid choice"),
    (("-c",), "argument -c/--config: expected one argument"),
    (("--plugin-module",), "expected one argument"),
])
def test_bad_run_options_exit_2_before_anything_runs(tmp_path, capsys, args, message):
    # argparse refuses these before any plug-in is loaded: no need for a subprocess
    from clients._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pb-data").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[service]]\nplugin = "line-echo"\nport = \n', "app.toml: malformed TOML"),
        ('[[service]]\nplugin = "line-echo"\nprot = 1\n', "app.toml: service[0].prot: unknown key"),
        ('[[service]]\nplugin = "ticker"\n[[service]]\nplugin = "line-echo"\nport = "x"\n',
         'app.toml: service[1].port: expected an integer, got a string ("x")'),
        ('[[service]]\nplugin = "ehco"\n', "app.toml: service[0].plugin: unknown plugin 'ehco'"),
        (None, "missing.toml: cannot read the file"),
        ("a = " + "[" * 100_000, "app.toml: malformed TOML: arrays or tables nested too deeply"),
    ],
)
def test_an_invalid_config_exits_2_naming_the_file_and_the_key(tmp_path, text, expected):
    path = write_config(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    result = pb_run("-c", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert str(path) in result.stderr
    assert not (tmp_path / "pb-data").exists()


# -- running ----------------------------------------------------------------


def test_two_services_from_a_toml_file_serve_and_stop_on_sigterm(tmp_path, running):
    config = write_config(tmp_path, """
[application]
name = "myapp"
data_dir = "state"
log_level = "debug"

[[service]]
plugin = "line-echo"
name = "first"

[[service]]
plugin = "line-echo"
name = "second"
""")
    child = running("-c", str(config))
    first = int(child.wait_for("stdout", r"line-echo first listening on 127.0.0.1:(\d+)")[1])
    second = int(child.wait_for("stdout", r"line-echo second listening on 127.0.0.1:(\d+)")[1])
    child.wait_for("stderr", r"INFO pb.run: started services=first,second$")
    for port in (first, second):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"ping\n")
            assert client.recv(100) == b"ping\n"
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    child.signal(signal.SIGTERM)
    code, _, stderr = child.finish()
    assert code == 0, stderr
    assert_no_leaks(stderr)
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO pb.run: stopping reason=SIGTERM",
                     stderr, re.M)
    assert port_is_free(first) and port_is_free(second)


def test_sigterm_with_a_client_connected_exits_0_within_the_grace_period(tmp_path, running):
    child = running("--grace", "5", "line-echo")
    port = int(child.wait_for("stdout", r"listening on 127.0.0.1:(\d+)")[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"hello\n")
        assert client.recv(100) == b"hello\n"
        began = time.monotonic()
        child.signal(signal.SIGTERM)
        received = b""
        while chunk := client.recv(100):
            received += chunk
        assert received == b"bye\n"
        code, _, stderr = child.finish()
    assert code == 0, stderr
    assert time.monotonic() - began < 5
    assert_no_leaks(stderr)


def test_a_service_slower_than_the_grace_period_is_cut_off(tmp_path, running):
    child = running("--grace", "0.5", "line-echo", "--slow-stop", "30")
    child.wait_for("stdout", r"listening on")
    began = time.monotonic()
    child.signal(signal.SIGTERM)
    code, _, stderr = child.finish()
    assert code == 0, stderr
    assert time.monotonic() - began < 5
    assert "did not stop within the grace period" in stderr
    assert_no_leaks(stderr)


def test_a_second_sigint_exits_at_once_with_130(tmp_path, running):
    child = running("--grace", "30", "--pidfile", "pb.pid", "line-echo", "--slow-stop", "30")
    child.wait_for("stdout", r"listening on")
    child.signal(signal.SIGINT)
    child.wait_for("stderr", r"pb.run: stopping reason=SIGINT")
    began = time.monotonic()
    child.signal(signal.SIGINT)
    code, _, stderr = child.finish(timeout=5)
    assert code == 130, stderr
    assert time.monotonic() - began < 3
    assert "second interrupt" in stderr
    assert not (tmp_path / "pb.pid").exists()


def test_a_port_in_use_fails_clearly_with_1_and_leaves_nothing_listening(tmp_path, running):
    first_port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        config = write_config(tmp_path, f"""
[[service]]
plugin = "line-echo"
name = "first"
port = {first_port}

[[service]]
plugin = "line-echo"
name = "second"
port = {busy_port}
""")
        result = pb_run("-c", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert re.search(
        r"ERROR pb.run: service 'second' failed to start: OSError: .*"
        rf"{busy_port}.*address already in use", result.stderr,
    ), result.stderr
    assert "started" not in result.stderr
    assert result.stdout == ""
    assert_no_leaks(result.stderr)
    assert port_is_free(first_port)


def test_the_pidfile_is_written_after_start_and_removed_on_exit(tmp_path, running):
    pidfile = tmp_path / "run" / "pb.pid"
    pidfile.parent.mkdir()
    child = running("--pidfile", str(pidfile), "line-echo")
    child.wait_for("stdout", r"listening on")
    assert pidfile.read_text() == f"{child.proc.pid}\n"

    refused = pb_run("--pidfile", str(pidfile), "line-echo", cwd=tmp_path)
    assert refused.returncode == 1
    assert f"names a running process (pid {child.proc.pid})" in refused.stderr

    child.signal(signal.SIGTERM)
    code, _, stderr = child.finish()
    assert code == 0, stderr
    assert not pidfile.exists()


def test_a_pidfile_in_a_missing_directory_is_refused_before_anything_starts(tmp_path):
    result = pb_run("--pidfile", "no-such-dir/pb.pid", "line-echo", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot write the pidfile 'no-such-dir/pb.pid': 'no-such-dir' does not exist" in result.stderr
    assert result.stdout == ""  # no banner: nothing started
    assert_no_leaks(result.stderr)


def test_log_file_and_run_options_override_the_file(tmp_path, running):
    config = write_config(tmp_path, """
[application]
data_dir = "from-file"
log_level = "error"

[[service]]
plugin = "ticker"
""")
    child = running("-c", str(config), "--data-dir", "from-cli", "--log-level", "info",
                    "--log-file", "pb.log")
    child.wait_for("stdout", r"ticker ticker writing from-cli/ticker.ticks")
    child.signal(signal.SIGTERM)
    code, _, stderr = child.finish()
    assert code == 0, stderr
    assert stderr == ""
    log = (tmp_path / "pb.log").read_text()
    assert "INFO pb.run: started services=ticker" in log
    assert (tmp_path / "from-cli" / "ticker.ticks").exists()
    assert not (tmp_path / "from-file").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit as on Linux")
def test_pb_run_raises_its_open_file_limit_to_the_hard_limit_and_logs_it(tmp_path):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"the hard limit here is only {hard}")
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    command = " ".join(f"'{part}'" for part in pb_command("--grace", "1", "line-echo"))
    child = OutputChild(["sh", "-c", f"ulimit -S -n 256 && ulimit -H -n {hard} && exec {command}"],
                        cwd=tmp_path, env=pb_env())
    try:
        child.wait_for("stderr", rf"INFO pb.run: open file limit soft={hard} hard={hard}$")
        child.wait_for("stderr", r"INFO pb.run: started")
        code, _, stderr = child.stop()
    finally:
        child.close()
    assert code == 0, stderr


# -- the event loop ---------------------------------------------------------------------


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("args, expected", [
    (("--loop", "asyncio"), "asyncio"),
    ((), "uvloop" if _uvloop_installed() else "asyncio"),
    (("--loop", "auto"), "uvloop" if _uvloop_installed() else "asyncio"),
])
def test_pb_run_logs_the_event_loop_it_runs_on(tmp_path, running, args, expected):
    child = running(*args, "--grace", "1", "line-echo")
    child.wait_for("stderr", rf"INFO pb.run: event loop loop={expected}$")
    port = int(child.wait_for("stdout", r"line-echo listening on 127.0.0.1:(\d+)")[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"ping\n")
        assert client.recv(100) == b"ping\n"
    code, _, stderr = child.stop()
    assert code == 0, stderr


def test_the_loop_from_a_toml_file_and_a_bad_one(tmp_path, running):
    config = write_config(tmp_path, '[application]\nloop = "asyncio"\n\n'
                                    '[[service]]\nplugin = "line-echo"\n')
    child = running("-c", str(config))
    child.wait_for("stderr", r"INFO pb.run: event loop loop=asyncio$")
    child.wait_for("stderr", r"INFO pb.run: started")
    code, _, stderr = child.stop()
    assert code == 0, stderr
    bad = write_config(tmp_path, '[application]\nloop = "uvlop"\n')
    result = pb_run("-c", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert ('app.toml: application.loop: expected one of auto, asyncio, uvloop, '
            'got a string ("uvlop")') in result.stderr


def test_loop_uvloop_without_uvloop_fails_clearly(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "uvloop.py").write_text("raise ImportError('uvloop is hidden by the test')\n")
    env = pb_env(hide)
    env["PYTHONPATH"] = os.pathsep.join([str(hide), env["PYTHONPATH"]])
    result = pb_run("--loop", "uvloop", "line-echo", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "uvloop is not installed" in result.stderr and "--loop asyncio" in result.stderr
    auto = pb_run("--grace", "0", "--loop", "bogus", "line-echo", cwd=tmp_path, env=env)
    assert auto.returncode == 2 and "invalid choice: 'bogus'" in auto.stderr


def test_the_data_directory_comes_from_the_flag_then_the_file_then_pb_data_dir(tmp_path, running):
    """One precedence for pb run and pb user: --data-dir (--db), then
    [application] data_dir, then $PB_DATA_DIR, then ./pb-data."""
    env = pb_env()
    env["PB_DATA_DIR"] = str(tmp_path / "from-env")
    child = running("--grace", "1", "line-echo", env=env)
    child.wait_for("stderr", r"INFO pb.run: started")
    assert child.stop()[0] == 0
    assert (tmp_path / "from-env").is_dir() and not (tmp_path / "pb-data").exists()

    config = write_config(tmp_path, '[application]\ndata_dir = "from-file"\n\n'
                                    '[[service]]\nplugin = "line-echo"\n')
    child = running("--grace", "1", "-c", str(config), env=env)
    child.wait_for("stderr", r"INFO pb.run: started")
    assert child.stop()[0] == 0
    assert (tmp_path / "from-file").is_dir()

    child = running("--grace", "1", "--data-dir", "from-flag", "-c", str(config), env=env)
    child.wait_for("stderr", r"INFO pb.run: started")
    assert child.stop()[0] == 0
    assert (tmp_path / "from-flag").is_dir()
