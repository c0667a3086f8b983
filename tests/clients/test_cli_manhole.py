"""``pb manhole`` as a real subprocess: one-shot runs, scripts, failures,
and the interactive console on a pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

import cred
from clients._manhole_console import Target, parse_address
from services import Application, plugin_parser
from services.manhole import plugin as manhole_plugin
from tests.services.test_echo import PbChild, assert_no_leaks, pb, pb_command, pb_env


# -- one demo server for the module ------------------------------------------------------


class Server:
    def __init__(self, child: PbChild, data: Path) -> None:
        self.child = child
        self.data = data
        stdout = "\n".join(child.seen["stdout"])
        self.password = re.search(r"Admin password: +(\S+)", stdout)[1]
        self.address = re.search(r"Manhole: +(\S+)", stdout)[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("manhole-cli")
    child = PbChild("run", "demo", "--port", "0", "--manhole-port", "0", "--web-port", "0",
                    "--data-dir", str(root / "data"), cwd=root)
    try:
        child.wait_for("stdout", r"^Press Ctrl-C")
        yield Server(child, root / "data")
        code, _, err = child.stop()
        assert code == 0, err
        assert_no_leaks(err)
    finally:
        child.close()


def manhole(server: Server, *args: str, cwd: Path, input: str | None = None,
            password_stdin: bool = True, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    extra = ["--password-stdin"] if password_stdin else []
    if password_stdin:
        input = server.password + "\n" + (input or "")
    return pb("manhole", server.address, "--user", "admin", *extra, *args,
              cwd=cwd, input=input, env=env, timeout=timeout)


# -- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "target"), [
    (None, Target("127.0.0.1", 8788)),
    ("127.0.0.1:9000", Target("127.0.0.1", 9000)),
    ("example.org", Target("example.org", 8788)),
    (":9001", Target("127.0.0.1", 9001)),
    ("[::1]:9002", Target("::1", 9002)),
    ("[::1]", Target("::1", 8788)),
])
def test_addresses(text, target):
    assert parse_address(text) == target


@pytest.mark.parametrize("text", [
    "::1", "host:port", "host:0", "[::1", "[::1]9", "host:65536", "host:+1", "host: 1",
    "host:\u0668\u0660",          # Arabic-Indic digits are not a port
    "x" * 300 + ":1",             # a DNS label longer than 63 characters
    "a..b:1", "h\udcffst:1",      # an empty label; a non-UTF-8 command-line byte
])
def test_bad_addresses(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_a_target_prints_as_host_port():
    assert str(Target("::1", 1)) == "[::1]:1"
    assert str(Target(None, None, "/run/m.sock")) == "/run/m.sock"


# -- one-shot runs ----------------------------------------------------------------------------


def test_c_prints_output_and_the_final_value(server, tmp_path):
    result = manhole(server, "-c", "print('hi')\nsorted(services)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n['demo']\n"
    assert result.stderr == ""


def test_c_that_raises_exits_1_with_the_traceback_on_stderr(server, tmp_path):
    result = manhole(server, "-c", "def f():\n    return 1 / 0\nf()", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "    return 1 / 0\n" in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


def test_a_syntax_error_exits_1(server, tmp_path):
    result = manhole(server, "-c", "1 +* 2", cwd=tmp_path)
    assert result.returncode == 1
    assert "SyntaxError" in result.stderr


def test_incomplete_code_exits_1(server, tmp_path):
    result = manhole(server, "-c", "x = (1,", cwd=tmp_path)
    assert result.returncode == 1
    assert "incomplete" in result.stderr


def test_a_block_at_the_end_of_c_runs(server, tmp_path):
    result = manhole(server, "-c", "for i in range(2):\n    print(i)", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "0\n1\n"), result.stderr


def test_a_script_on_stdin_runs_as_one_block(server, tmp_path):
    script = ("total = 0\n"
              "for n in range(5):\n"
              "    total += n\n"
              "\n"
              "async def later():\n"
              "    await asyncio.sleep(0)\n"
              "    return total\n"
              "print(await later())\n")
    result = manhole(server, cwd=tmp_path, input=script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "10\n", "")


def test_a_script_that_raises_exits_1(server, tmp_path):
    result = manhole(server, cwd=tmp_path, input="print('first')\nraise RuntimeError('boom')\n")
    assert result.returncode == 1
    assert result.stdout == "first\n"
    assert result.stderr.endswith("RuntimeError: boom\n")


def test_the_password_may_come_from_the_environment(server, tmp_path):
    env = pb_env(PB_PASSWORD=server.password)
    result = manhole(server, "-c", "'env'", cwd=tmp_path, password_stdin=False, env=env)
    assert (result.returncode, result.stdout) == (0, "'env'\n"), result.stderr


def test_a_wrong_password_exits_1_with_the_login_failure(server, tmp_path):
    result = pb("manhole", server.address, "--user", "admin", "--password-stdin", "-c", "1",
                cwd=tmp_path, input="not-the-password\n")
    assert result.returncode == 1
    assert result.stderr.startswith("pb manhole: login failed")
    assert "pb user grant NAME manhole" in result.stderr


def test_an_account_without_the_manhole_grant_exits_1(server, tmp_path):
    with cred.AccountStore(server.data / "accounts.sqlite3") as store:
        if "echo-only" not in store.users():
            store.add_user("echo-only", "pw", keyring=[("pbecho", None)])
    result = pb("manhole", server.address, "--user", "echo-only", "--password-stdin",
                "-c", "1", cwd=tmp_path, input="pw\n")
    assert result.returncode == 1
    assert "login failed" in result.stderr


def test_an_unknown_host_is_reported_without_a_traceback(tmp_path):
    result = pb("manhole", "no-such-host.invalid:8788", "--user", "admin", "--password-stdin",
                "-c", "1", cwd=tmp_path, input="pw\n")
    assert result.returncode == 1
    assert result.stderr.startswith("pb manhole: cannot connect to no-such-host.invalid:8788: ")
    assert "Traceback" not in result.stderr and "Unknown error" not in result.stderr


def test_connection_refused_names_the_address(tmp_path):
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = pb("manhole", f"127.0.0.1:{port}", "--user", "admin", "--password-stdin",
                "-c", "1", cwd=tmp_path, input="pw\n")
    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_timeout_cancels_a_long_evaluation(server, tmp_path):
    started = time.monotonic()
    result = manhole(server, "--timeout", "0.5", "-c",
                     "try:\n    await asyncio.sleep(60)\n"
                     "finally:\n    application.timed_out = True\n", cwd=tmp_path)
    assert result.returncode == 1
    assert "--timeout" in result.stderr
    assert time.monotonic() - started < 20
    check = manhole(server, "-c", "getattr(application, 'timed_out', False)", cwd=tmp_path)
    assert check.stdout == "True\n", check.stderr


def test_code_stuck_in_a_blocking_call_is_interrupted_by_the_server(tmp_path):
    # The demo's manhole runs in `pb run`'s main thread with the default
    # 5 s block limit: time.sleep(60) is woken and interrupted.  A server of
    # its own: asyncio's debug mode (on in test children) rightly reports
    # the 5 s stall, which the shared server's leak check would take amiss.
    child = PbChild("run", "demo", "--port", "0", "--manhole-port", "0", "--web-port", "0",
                    "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    try:
        child.wait_for("stdout", r"^Press Ctrl-C")
        server = Server(child, tmp_path / "data")
        _check_blocking_call_is_interrupted(server, tmp_path)
        code, _, err = child.stop()
        assert code == 0, err
        assert "took 5" in err  # asyncio's own report of the stall, nothing worse
    finally:
        child.close()


def _check_blocking_call_is_interrupted(server: Server, tmp_path: Path) -> None:
    result = manhole(server, "-c", "import time\nprint('sleeping')\ntime.sleep(60)\n",
                     cwd=tmp_path, timeout=45)
    assert result.returncode == 1
    assert result.stdout == "sleeping\n"
    assert "EvaluationBlocked" in result.stderr and "block_limit" in result.stderr
    assert "time.sleep(60)" in result.stderr
    check = manhole(server, "-c", "6 * 7", cwd=tmp_path)
    assert check.stdout == "42\n", check.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--user", "admin", "--password", "x"), "passwords are not taken from the command line"),
    (("--user", "admin", "--passw", "x"), "unrecognized arguments: --passw"),
    (("127.0.0.1:1", "--socket", "m.sock", "--user", "a", "--password-stdin"), "not both"),
    (("host:port", "--user", "a", "--password-stdin"), "bad port"),
    (("--password-stdin",), "the following arguments are required: -u/--user"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    result = pb("manhole", *args, cwd=tmp_path, input="pw\n")
    assert result.returncode == 2
    assert message in result.stderr


def test_without_a_terminal_the_password_must_be_given(tmp_path):
    # No controlling terminal (a new session), no --password-stdin, no
    # $PB_PASSWORD: the script's first line must not be taken for it.
    result = subprocess.run(pb_command("manhole", "--user", "a"), cwd=tmp_path, env=pb_env(),
                            input="secret_looking_line\n", capture_output=True, text=True,
                            timeout=30, start_new_session=True)
    assert result.returncode == 2
    assert "no terminal to ask for the password on" in result.stderr


def test_an_empty_password_line_is_a_usage_error(tmp_path):
    result = pb("manhole", "--user", "a", "--password-stdin", "-c", "1", cwd=tmp_path,
                input="\n")
    assert result.returncode == 2
    assert "empty" in result.stderr


def manhole_main(monkeypatch, capsys, *args, stdin=b"", errors="strict"):
    """``pb manhole ARGS`` in this process, standard input a text layer over bytes."""
    import io
    import sys

    from clients._cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8",
                                                       errors=errors))
    args = [os.fsdecode(a) if isinstance(a, bytes) else a for a in args]
    code = main(["manhole", "127.0.0.1:1", "--user", "admin", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "stdin", "errors", "message"), [
    (["--password-stdin"], b"\xff\xfe\n1\n", "strict", "not UTF-8"),
    (["--password-stdin"], b"\xff\xfe\n1\n", "surrogateescape", "not UTF-8"),
    (["--password-stdin"], b"pw\nprint('\xff')\n", "strict", "the code is not UTF-8 text"),
    (["--password-stdin"], b"pw\nprint('\xff')\n", "surrogateescape", "the code is not UTF-8 text"),
    (["--password-stdin"], b"pw\n" + bytes(range(256)) * 10, "strict", "the code is not UTF-8 text"),
    (["--password-stdin", "-c", b"print('\xff')"], b"pw\n", "strict", "the code is not UTF-8 text"),
])
def test_garbage_on_standard_input_or_in_the_code_is_a_usage_error(monkeypatch, capsys, args,
                                                                   stdin, errors, message):
    # refused before connecting: 127.0.0.1:1 is never tried
    code, err = manhole_main(monkeypatch, capsys, *args, stdin=stdin, errors=errors)
    assert code == 2, err
    assert err.startswith("pb manhole: ") and message in err, err


def test_garbage_on_a_real_standard_input(tmp_path):
    result = subprocess.run(pb_command("manhole", "127.0.0.1:1", "--user", "admin",
                                       "--password-stdin"),
                            cwd=tmp_path, env=pb_env(PYTHONIOENCODING="utf-8"),
                            input=b"pw\n\x00\xff\xfe garbage\n", capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == b"pb manhole: the code is not UTF-8 text (standard input)\n"


def test_a_bad_host_on_a_real_command_line(tmp_path):
    result = pb("manhole", "x" * 300, "--user", "admin", "--password-stdin", "-c", "1",
                cwd=tmp_path, input="pw\n")
    assert result.returncode == 2
    assert "is not a valid host name" in result.stderr and "Traceback" not in result.stderr


async def test_over_a_unix_socket(tmp_path):
    from tests.services.test_echo import apb
    from tests.services.test_manhole import make_store

    make_store(tmp_path / "data", root=[("manhole", None)])
    path = tmp_path / "m.sock"
    options = plugin_parser(manhole_plugin).parse_args(["--socket", str(path)])
    application = Application("sock", data_dir=tmp_path / "data")
    application.add(manhole_plugin.build(options, application))
    await application.start()
    try:
        code, out, err = await apb("manhole", "--socket", str(path), "--user", "root",
                                   "--password-stdin", "-c", "application.name",
                                   cwd=tmp_path, input="pw\n")
        assert (code, out) == (0, "'sock'\n"), err
    finally:
        await application.stop(grace=5)


# -- the interactive console on a pseudo-terminal ---------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Terminal:
    """``pb manhole`` with a pseudo-terminal as its controlling terminal."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(pb_command(*args), stdin=slave, stdout=slave, stderr=slave,
                                     env=env, cwd=cwd, preexec_fn=controlling_terminal)
        os.close(slave)
        self.master = master
        self.raw = b""
        self.consumed = 0

    def read_until(self, expected: str, timeout: float = 15) -> str:
        """Read until the (escape-free) output after what earlier calls
        consumed contains *expected*; return it up to there."""
        deadline = time.monotonic() + timeout
        while True:
            clean = ANSI.sub("", self.raw.decode(errors="replace"))
            index = clean.find(expected, self.consumed)
            if index >= 0:
                start, self.consumed = self.consumed, index + len(expected)
                return clean[start:self.consumed]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {expected!r} within {timeout}s after "
                                     f"{clean[:self.consumed]!r}; then got "
                                     f"{clean[self.consumed:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.1))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {expected!r}; got {clean!r}")
                self.raw += chunk

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


def test_the_interactive_console(server, tmp_path):
    history = tmp_path / "history"
    env = pb_env(PB_PASSWORD=server.password, PB_MANHOLE_HISTORY=str(history), TERM="dumb")
    term = Terminal(["manhole", server.address, "--user", "admin"], env, tmp_path)
    try:
        banner = term.read_until(">>> ")
        assert f"Manhole at {server.address} as admin" in banner

        term.send("x = 6 * 7\n")
        term.read_until(">>> ")
        term.send("def f():\n")
        term.read_until("... ")
        term.send("    return x\n")
        term.read_until("... ")
        term.send("\n")
        term.read_until(">>> ")
        term.send("f()\n")
        assert "42" in term.read_until(">>> ")

        term.send("appl\t")  # Tab completes through the server
        term.read_until("application")
        term.send(".name\n")
        assert "'pb'" in term.read_until(">>> ")

        term.send("services['demo']['echo'].stat\t")  # through subscripts, as the README shows
        term.read_until("services['demo']['echo'].stats()")
        term.send("['echoes']\n")
        assert "0" in term.read_until(">>> ")

        term.send("print('ok'); 1 / 0\n")
        out = term.read_until(">>> ")
        assert "ok" in out and "ZeroDivisionError: division by zero" in out

        term.send("await asyncio.sleep(100)\n")
        time.sleep(0.5)
        term.send("\x03")  # Ctrl-C interrupts the evaluation, the session goes on
        out = term.read_until(">>> ")
        assert "KeyboardInterrupt" in out and "in sleep\n" in out  # the server-side traceback

        # Ctrl-C at the prompt clears the line.  (Wait until readline echoed
        # the text: a SIGINT in the instant between readline showing the
        # prompt and its select() would wait for the next key, a CPython
        # readline race that a person's typing never hits.)
        term.send("half typed")
        term.read_until("half typed")
        time.sleep(0.2)
        term.send("\x03")
        assert "KeyboardInterrupt" in term.read_until(">>> ")
        term.send("'still', x\n")
        assert "('still', 42)" in term.read_until(">>> ")

        term.send("\x04")  # Ctrl-D leaves
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.send_signal(signal.SIGKILL)
            term.close()
    lines = history.read_text().splitlines()
    assert "x = 6 * 7" in lines and "    return x" in lines and "'still', x" in lines
    assert os.stat(history).st_mode & 0o077 == 0


def test_interactive_login_failure_exits_1(server, tmp_path):
    env = pb_env(PB_PASSWORD="wrong", PB_MANHOLE_HISTORY=str(tmp_path / "h"), TERM="dumb")
    term = Terminal(["manhole", server.address, "--user", "admin"], env, tmp_path)
    try:
        assert "login failed" in term.read_until("login failed")
    finally:
        assert term.close() == 1
