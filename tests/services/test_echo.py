"""The ``echo`` plug-in: in-process over real sockets, and as ``pb run echo``.

Also home of the small helpers the manhole and demo tests share for
running ``pb`` as a subprocess (:class:`PbChild`, :func:`pb_env`,
:func:`assert_no_leaks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests._child import OutputChild

import broker
import cred
from services import Application, plugin_parser
from services.echo import EchoPerspective, EchoService
from services.echo import plugin as echo_plugin

REPO = Path(__file__).resolve().parents[2]
LEAKS = ("ResourceWarning", "Task was destroyed", "never awaited", "Traceback",
         "Exception ignored", "unclosed", "Warning")


# -- subprocess helpers (shared with test_manhole, test_demo, test_cli_manhole) --


def pb_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONASYNCIODEBUG"] = "1"
    env.pop("PYTHONWARNINGS", None)
    env.pop("PB_PASSWORD", None)
    env.update(extra)
    return env


def pb_command(*args: str) -> list[str]:
    return [sys.executable, "-W", "error::ResourceWarning", "-m", "clients._cli", *args]


def pb(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``pb ARGS`` to completion."""
    return subprocess.run(pb_command(*args), cwd=cwd, env=env or pb_env(), input=input,
                          capture_output=True, text=True, timeout=timeout)


async def apb(*args: str, cwd: Path, input: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``pb ARGS`` to completion without blocking the event loop (for a
    server running in the test's own loop)."""
    proc = await asyncio.create_subprocess_exec(
        *pb_command(*args), cwd=cwd, env=env or pb_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else b""), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


def assert_no_leaks(stderr: str) -> None:
    for marker in LEAKS:
        assert marker not in stderr, stderr


class PbChild(OutputChild):
    """A long-running ``pb`` child whose output lines are collected."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(pb_command(*args), cwd=cwd, env=env or pb_env(),
                         stdin=subprocess.DEVNULL)


@pytest.fixture
def pb_child(tmp_path):
    children: list[PbChild] = []

    def start(*args: str, env: dict[str, str] | None = None) -> PbChild:
        child = PbChild(*args, cwd=tmp_path, env=env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


# -- in-process helpers -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_echo(data_dir: Path, *argv: str) -> AsyncIterator[EchoService]:
    options = plugin_parser(echo_plugin).parse_args(list(argv))
    application = Application("test", data_dir=data_dir)
    service = echo_plugin.build(options, application)
    application.add(service)
    await application.start()
    try:
        yield service
    finally:
        await application.stop(grace=5)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- in process -------------------------------------------------------------------------


async def test_echo_serves_pbecho_to_a_user_given_on_the_command_line(tmp_path):
    data = tmp_path / "data"
    async with running_echo(data, "--port", "0", "--user", "alice:secret") as service:
        assert re.fullmatch(r"pbecho: pb://127\.0\.0\.1:(\d+)", service.banner())
        assert service.banner() == f"pbecho: pb://127.0.0.1:{service.port}"
        perspective = await broker.login("127.0.0.1", service.port, "alice", "secret",
                                         service="pbecho")
        try:
            assert await perspective.call_remote("echo", "hello") == "hello"
            value = {"a": [1, 2.5, None, b"\x00"], "t": (1, "x")}
            assert await perspective.call_remote("echo", value) == value
            assert await perspective.call_remote("whoami") == "alice"
            stats = await perspective.call_remote("stats")
            assert stats["echoes"] == 2 and stats["logins"] == 1 and stats["sessions"] == 1
        finally:
            await perspective.connection.close()
        await wait_until(lambda: service.sessions == 0)
    assert service.server is None


async def test_the_account_store_is_created_under_the_data_dir_with_the_grant(tmp_path):
    data = tmp_path / "data"
    async with running_echo(data, "--port", "0", "--user", "alice:pw", "--user", "bob:pw2"):
        pass
    path = data / "accounts.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with cred.AccountStore(path) as store:
        assert "pbecho" in store.services()
        assert store.keyring("alice") == {("pbecho", "alice")}
        assert store.keyring("bob") == {("pbecho", "bob")}


async def test_user_option_resets_the_password_of_an_existing_account(tmp_path):
    data = tmp_path / "data"
    async with running_echo(data, "--port", "0", "--user", "alice:first"):
        pass
    async with running_echo(data, "--port", "0", "--user", "alice:second") as service:
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", service.port, "alice", "first", service="pbecho")
        perspective = await broker.login("127.0.0.1", service.port, "alice", "second",
                                         service="pbecho")
        assert await perspective.call_remote("whoami") == "alice"
        await perspective.connection.close()


async def test_an_account_without_pbecho_on_its_keyring_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with cred.AccountStore(data / "accounts.sqlite3", create=True) as store:
        store.add_user("carol", "pw")
    async with running_echo(data, "--port", "0") as service:
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", service.port, "carol", "pw", service="pbecho")


async def test_accounts_added_with_pb_user_can_log_in_without_the_user_option(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with cred.AccountStore(data / "accounts.sqlite3", create=True) as store:
        store.add_service("pbecho")
        store.add_user("dave", "pw", keyring=[("pbecho", None)])
    async with running_echo(data, "--port", "0") as service:
        perspective = await broker.login("127.0.0.1", service.port, "dave", "pw")
        assert await perspective.call_remote("echo", "via the default service") == \
            "via the default service"
        await perspective.connection.close()


async def test_echo_on_a_unix_socket(tmp_path):
    path = tmp_path / "echo.sock"
    async with running_echo(tmp_path / "data", "--socket", str(path),
                            "--user", "alice:pw") as service:
        assert service.banner() == f"pbecho: pb+unix://{path}"
        perspective = await broker.login(path=str(path), username="alice", password="pw",
                                         service="pbecho")
        assert await perspective.call_remote("echo", "over unix") == "over unix"
        await perspective.connection.close()
    assert not path.exists()


async def test_stopping_lets_a_call_in_progress_finish(tmp_path, monkeypatch):
    release = asyncio.Event()

    async def slow_echo(self, text):
        await release.wait()
        return text

    monkeypatch.setattr(EchoPerspective, "perspective_echo", slow_echo)
    monkeypatch.setitem(EchoPerspective._pb_methods, "echo", slow_echo)
    async with running_echo(tmp_path / "data", "--port", "0", "--user", "a:pw") as service:
        perspective = await broker.login("127.0.0.1", service.port, "a", "pw")
        call = asyncio.ensure_future(perspective.call_remote("echo", "late"))
        await wait_until(lambda: service.server.connections[0].calls_in_progress == 1)
        stopping = asyncio.ensure_future(service.stop(grace=5))
        await asyncio.sleep(0.05)
        assert not stopping.done()
        release.set()
        assert await call == "late"
        await stopping
        await perspective.connection.wait_closed()


def test_malformed_user_options_are_usage_errors(capsys):
    parser = plugin_parser(echo_plugin)
    for bad in ("alice", "alice:", ":pw", "al ice:pw"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--user", bad])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "NAME:PASSWORD" in err
    assert "pw" not in err.replace("NAME:PASSWORD", "")  # the password is not echoed


@pytest.mark.parametrize("value", ["nan", "-1", "x", "", "1e999999x"])
def test_a_grace_that_is_not_a_number_of_seconds_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        plugin_parser(echo_plugin).parse_args(["--grace", value])
    assert exit_info.value.code == 2
    assert "--grace" in capsys.readouterr().err


def test_socket_and_port_together_are_refused(tmp_path):
    options = plugin_parser(echo_plugin).parse_args(["--socket", "x.sock", "--port", "1"])
    with pytest.raises(ValueError, match="--socket PATH or --host/--port"):
        echo_plugin.build(options, Application("t", data_dir=tmp_path))


# -- pb run echo ---------------------------------------------------------------------------


def test_pb_run_echo_as_a_subprocess(tmp_path, pb_child):
    child = pb_child("run", "--data-dir", str(tmp_path / "data"), "echo", "--port", "0",
                     "--user", "alice:pw")
    port = int(child.wait_for("stdout", r"^pbecho: pb://127\.0\.0\.1:(\d+)$")[1])

    async def talk() -> None:
        perspective = await broker.login("127.0.0.1", port, "alice", "pw", service="pbecho")
        assert await perspective.call_remote("echo", "from a test") == "from a test"
        assert await perspective.call_remote("whoami") == "alice"
        await perspective.connection.close()

    asyncio.run(talk())
    code, out, err = child.stop()
    assert code == 0, err
    assert "INFO pb.run: stopped" in err
    assert_no_leaks(err)


def test_pb_run_echo_listed_with_its_description(tmp_path):
    listed = pb("run", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "pbecho" in names["echo"]
    assert "manhole" in names and "demo" in names
