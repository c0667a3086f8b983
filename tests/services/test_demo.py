"""The ``demo`` plug-in: echo + manhole + a generated admin, in process and
as ``pb run demo`` driven the way the banner tells a newcomer to."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import pytest

import broker
import cred
from services import Application, plugin_parser
from services.demo import DemoService
from services.demo import plugin as demo_plugin

from .test_echo import assert_no_leaks, pb, pb_env

BANNER = re.compile(
    r"Perspective Broker demo is running\.\n"
    r"  PB echo service:  (?P<echo_host>127\.0\.0\.1):(?P<echo_port>\d+)   \(service \"pbecho\"\)\n"
    r"  Manhole:          (?P<manhole_host>127\.0\.0\.1):(?P<manhole_port>\d+)\n"
    r"  Web front:        (?P<web_url>http://127\.0\.0\.1:(?P<web_port>\d+)/)\n"
    r"  Admin user:       admin\n"
    r"  Admin password:   (?P<password>[A-Za-z0-9_-]{16})\n"
    r"Try:  pb manhole (?P=manhole_host):(?P=manhole_port) --user admin\n"
    r"      pb call (?P=echo_host):(?P=echo_port) --user admin --service pbecho echo '\"hello\"'\n"
    r"      curl (?P=web_url)demo\.twistd/   \(a page relayed over PB\)\n"
    r"Press Ctrl-C to stop\.\Z"
)


def build_demo(application: Application, *argv: str) -> DemoService:
    options = plugin_parser(demo_plugin).parse_args(list(argv))
    service = demo_plugin.build(options, application)
    application.add(service)
    return service


async def test_the_demo_runs_echo_and_a_manhole_for_a_generated_admin(tmp_path):
    application = Application("pb", data_dir=tmp_path / "ignored")
    demo = build_demo(application, "--port", "0", "--manhole-port", "0", "--web-port", "0",
                      "--data-dir", str(tmp_path / "data"))
    assert application.data_dir == tmp_path / "data"
    await application.start()
    try:
        match = BANNER.match(demo.banner())
        assert match, demo.banner()
        assert match["password"] == demo.password
        assert int(match["echo_port"]) == demo["echo"].port
        assert int(match["manhole_port"]) == demo["manhole"].port
        assert int(match["web_port"]) == demo["web"].port
        # The web front relays /demo.twistd/ over PB to the demo's personal server.
        page = await asyncio.to_thread(
            lambda: urllib.request.urlopen(match["web_url"] + "demo.twistd/", timeout=10).read())
        assert b"Hello from the demo's personal server" in page
        # One banner: the children are quiet.
        assert [s.banner() for s in application.walk() if s.banner()] == [demo.banner()]

        echo = await broker.login("127.0.0.1", demo.echo.port, "admin", demo.password,
                                  service="pbecho")
        assert await echo.call_remote("echo", "hello") == "hello"
        manhole = await broker.login("127.0.0.1", demo.manhole.port, "admin", demo.password,
                                     service="manhole")
        result = await manhole.call_remote(
            "run", "sorted(s.name for s in services['demo'])")
        assert result["value"] == "['echo', 'manhole', 'personal', 'web']"
        # The web front's mounts, with their counters, from the manhole.
        result = await manhole.call_remote(
            "run", "[(m.name, m.requests) for m in services['demo']['web'].directory.mounts.values()]")
        assert result["value"] == "[('demo', 1)]"
        await echo.connection.close()
        await manhole.connection.close()
    finally:
        await application.stop(grace=5)
    with cred.AccountStore(tmp_path / "data" / "accounts.sqlite3") as store:
        assert store.keyring("admin") == {("pbecho", "admin"), ("manhole", "admin")}


async def test_each_start_gives_the_admin_a_new_password(tmp_path):
    passwords = []
    for _ in range(2):
        application = Application("pb", data_dir=tmp_path / "data")
        demo = build_demo(application, "--port", "0", "--manhole-port", "0", "--web-port", "0")
        await application.start()
        try:
            passwords.append(demo.password)
            if len(passwords) == 2:
                with pytest.raises(broker.Unauthorized):
                    await broker.login("127.0.0.1", demo.echo.port, "admin", passwords[0])
                echo = await broker.login("127.0.0.1", demo.echo.port, "admin", passwords[1])
                await echo.connection.close()
        finally:
            await application.stop(grace=5)
    assert passwords[0] != passwords[1]
    with cred.AccountStore(tmp_path / "data" / "accounts.sqlite3") as store:
        assert store.users() == ["admin"]


def test_the_data_dir_option_cannot_split_an_existing_portal(tmp_path):
    application = Application("pb", data_dir=tmp_path / "a")
    application.use_portal(lambda: cred.Portal(cred.ServiceRealm()))
    with pytest.raises(ValueError, match="pb run --data-dir DIR"):
        build_demo(application, "--data-dir", str(tmp_path / "b"))


def test_the_demo_ports_default_to_8787_and_8788():
    options = plugin_parser(demo_plugin).parse_args([])
    assert (options.port, options.manhole_port, options.data_dir) == (8787, 8788, None)
    assert options.web_port == 8080


# -- pb run demo, driven as the banner says --------------------------------------------


def test_pb_run_demo_end_to_end(tmp_path, pb_child):
    data = tmp_path / "data"
    child = pb_child("run", "demo", "--port", "0", "--manhole-port", "0", "--web-port", "0", "--data-dir", str(data))
    child.wait_for("stdout", r"^Press Ctrl-C to stop\.$")
    banner = "\n".join(child.seen["stdout"])
    match = BANNER.match(banner)
    assert match, banner
    password = match["password"]
    echo_port, manhole_port = int(match["echo_port"]), int(match["manhole_port"])
    manhole_at = f"127.0.0.1:{manhole_port}"

    # The manhole, through the command line.
    shown = pb("manhole", manhole_at, "--user", "admin", "--password-stdin",
               "-c", "print(len(application.services))", cwd=tmp_path, input=password + "\n")
    assert (shown.returncode, shown.stdout) == (0, "1\n"), shown.stderr

    async def echo_and_stats() -> dict:
        perspective = await broker.login("127.0.0.1", echo_port, "admin", password,
                                         service="pbecho")
        try:
            assert await perspective.call_remote("echo", "hello") == "hello"
            return await perspective.call_remote("stats")
        finally:
            await perspective.connection.close()

    # The echo service, through the Python API.
    assert asyncio.run(echo_and_stats())["echoes"] == 1

    # Change the server's state from the manhole; a PB client sees it.
    changed = pb("manhole", manhole_at, "--user", "admin", "--password-stdin", "-c",
                 "echo = services['demo']['echo']\necho.echoes = 1000\necho.echoes",
                 cwd=tmp_path, input=password + "\n")
    assert (changed.returncode, changed.stdout) == (0, "1000\n"), changed.stderr
    assert asyncio.run(echo_and_stats())["echoes"] == 1001

    # Code that raises: exit 1, the traceback on stderr.
    failed = pb("manhole", manhole_at, "--user", "admin", "--password-stdin",
                "-c", "print('partial')\n{}['missing']", cwd=tmp_path, input=password + "\n")
    assert failed.returncode == 1
    assert failed.stdout == "partial\n"
    assert failed.stderr.startswith("Traceback (most recent call last):\n")
    assert failed.stderr.endswith("KeyError: 'missing'\n")

    # A script on standard input, after the password line.
    script = ("import sys\n"
              "def greet(name):\n"
              "    return f'hello {name}'\n"
              "\n"
              "for name in ('a', 'b'):\n"
              "    print(greet(name))\n"
              "print('to stderr', file=sys.stderr)\n"
              "services['demo']['echo'].echoes\n")
    ran = pb("manhole", manhole_at, "--user", "admin", "--password-stdin",
             cwd=tmp_path, input=password + "\n" + script)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello a\nhello b\nto stderr\n1001\n"

    code, out, err = child.stop()
    assert code == 0, err
    assert out.count("Perspective Broker demo is running.") == 1
    assert "INFO pb.run: stopped" in err
    assert "evaluating admin=admin" in err  # every evaluation is logged
    assert password not in err  # the password is in the banner only
    assert_no_leaks(err)


def test_pb_run_demo_refuses_a_busy_port(tmp_path, pb_child):
    first = pb_child("run", "demo", "--port", "0", "--manhole-port", "0", "--web-port", "0",
                     "--data-dir", str(tmp_path / "one"))
    first.wait_for("stdout", r"^Press Ctrl-C")
    manhole_port = re.search(r"Manhole: +127\.0\.0\.1:(\d+)", "\n".join(first.seen["stdout"]))[1]
    second = pb("run", "demo", "--port", "0", "--manhole-port", manhole_port, "--web-port", "0",
                "--data-dir", str(tmp_path / "two"), cwd=tmp_path, env=pb_env())
    assert second.returncode == 1
    assert "service 'demo/manhole' failed to start" in second.stderr
    assert "Perspective Broker demo is running." not in second.stdout
    code, _, err = first.stop()
    assert code == 0, err


@pytest.fixture
def pb_child(tmp_path):
    from .test_echo import PbChild

    children: list[PbChild] = []

    def start(*args: str) -> PbChild:
        child = PbChild(*args, cwd=tmp_path)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def test_banner_matches_the_documented_example():
    # docs/manhole.md and the README quote this shape.
    text = Path(__file__).resolve().parents[2].joinpath("docs", "manhole.md")
    example = re.search(r"```text\n(Perspective Broker demo is running\..*?)```",
                        text.read_text(), re.S)
    assert example, "docs/manhole.md shows the demo banner"
    assert BANNER.match(example[1].rstrip("\n")), example[1]


def test_a_busy_port_changes_nothing_in_the_account_store(tmp_path):
    """Issue 16: pb run demo binds its ports before it touches the store."""
    import socket

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with cred.AccountStore(data / "accounts.sqlite3", create=True) as store:
        store.add_user("admin", "the-old-password")
    before = (data / "accounts.sqlite3").read_bytes()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = pb("run", "demo", "--port", str(busy), "--manhole-port", "0",
                    "--data-dir", str(data), cwd=tmp_path, env=pb_env())
    assert result.returncode == 1
    assert "failed to start" in result.stderr and "address already in use" in result.stderr
    # Not a byte of the store changed: the admin's password, the services.
    assert (data / "accounts.sqlite3").read_bytes() == before
