"""``pb run words`` as a subprocess: restarts keep the rooms, the config file
takes the options, and each PB listener offers only its own service."""

from __future__ import annotations

import asyncio
import re

import pytest

import broker
from clients._cli.chat import RemoteGroupView  # noqa: F401  (registers the view)
from tests.services.test_echo import assert_no_leaks, pb, pb_child  # noqa: F401

from .conftest import Mind, RawIRC

BANNER = r"^words: pb://127\.0\.0\.1:(\d+) irc://127\.0\.0\.1:(\d+)$"


def start_words(pb_child, data, *extra):  # noqa: F811
    child = pb_child("run", "--data-dir", str(data), "words", "--pb-port", "0",
                     "--irc-port", "0", "--user", "alice:pw", "--user", "bob:pw", *extra)
    match = child.wait_for("stdout", BANNER)
    return child, int(match[1]), int(match[2])


def test_a_restart_keeps_rooms_topics_memberships_and_scrollback(tmp_path, pb_child):  # noqa: F811
    data = tmp_path / "data"
    child, pb_port, irc_port = start_words(pb_child, data, "--scrollback", "3")

    async def first_life() -> None:
        alice = await RawIRC.connect(irc_port, "alice", password="pw")
        bob = await broker.login("127.0.0.1", pb_port, "bob", "pw", service="words", mind=Mind())
        try:
            alice.send("JOIN #keep")
            await alice.expect(r" 366 ")
            alice.send("TOPIC #keep :kept across restarts")
            await bob.call_remote("join", "keep")
            for n in range(5):
                alice.send(f"PRIVMSG #keep :message {n}")
            alice.send("PING done")
            await alice.expect("PONG")
        finally:
            await alice.close()
            await bob.connection.close()

    asyncio.run(first_life())
    code, out, err = child.stop()
    assert code == 0, err
    assert_no_leaks(err)
    assert (data / "words.sqlite3").stat().st_mode & 0o777 == 0o600

    child, pb_port, irc_port = start_words(pb_child, data, "--scrollback", "3")

    async def second_life() -> None:
        bob = await broker.login("127.0.0.1", pb_port, "bob", "pw", service="words", mind=Mind())
        try:
            assert await bob.call_remote("my_groups") == ["keep"]
            room = await bob.call_remote("join", "keep")
            view = await room.call_remote("view")
            assert view.topic == "kept across restarts" and view.topic_by == "alice"
            assert list(view.members) == ["alice", "bob"]
            lines = await room.call_remote("scrollback")
            assert [line[1] for line in lines] == ["message 2", "message 3", "message 4"]
            alice = await RawIRC.connect(irc_port, "alice", password="pw")
            try:
                await alice.expect(r"^:alice!alice@words JOIN #keep$")
                await alice.expect(r" 332 alice #keep :kept across restarts")
                await alice.expect(r"<alice> message 4$")
            finally:
                await alice.close()
        finally:
            await bob.connection.close()

    asyncio.run(second_life())
    code, out, err = child.stop()
    assert code == 0, err
    assert_no_leaks(err)


def test_a_config_file_runs_words_beside_echo_each_listener_offering_its_own(tmp_path, pb_child):  # noqa: F811
    config = tmp_path / "app.toml"
    config.write_text(
        '[application]\ndata_dir = "data"\n\n'
        '[[service]]\nplugin = "echo"\nport = 0\nuser = ["alice:pw"]\n\n'
        '[[service]]\nplugin = "words"\npb_port = 0\nirc_port = 0\nscrollback = 2\n'
        'max_message = 20\nuser = ["alice:pw"]\nmotd = ["from the config file"]\n')
    child = pb_child("run", "-c", str(config))
    echo_port = int(child.wait_for("stdout", r"^pbecho: pb://127\.0\.0\.1:(\d+)$")[1])
    match = child.wait_for("stdout", BANNER)
    pb_port, irc_port = int(match[1]), int(match[2])

    async def check() -> None:
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", echo_port, "alice", "pw", service="words")
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", pb_port, "alice", "pw", service="pbecho")
        words = await broker.login("127.0.0.1", pb_port, "alice", "pw", service="words")
        try:
            await words.call_remote("join", "short")
            with pytest.raises(broker.RemoteError, match="limit is 20"):
                await words.call_remote("send", "short", "x" * 21)
        finally:
            await words.connection.close()
        client = await RawIRC.connect(irc_port, "alice", password="pw")
        try:
            assert any("from the config file" in line for line in client.seen)
        finally:
            await client.close()

    asyncio.run(check())
    code, out, err = child.stop()
    assert code == 0, err
    assert_no_leaks(err)


@pytest.mark.parametrize("args, message", [
    (["--scrollback", "-1"], "expected a number >= 0"),
    (["--max-message", "zero"], "expected a whole number"),
    (["--flood-rate", "nan"], "positive number"),
    (["--user", "a b:pw"], "whitespace"),
    (["--user", "#chan:pw"], "starts with '#'"),
])
def test_bad_options_are_refused_with_the_reason(tmp_path, args, message):
    result = pb("run", "--data-dir", str(tmp_path / "data"), "words", "--pb-port", "0",
                "--irc-port", "0", *args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_key_without_a_certificate_is_refused_when_building(tmp_path):
    result = pb("run", "--data-dir", str(tmp_path / "data"), "words", "--pb-port", "0",
                "--irc-port", "0", "--tls-key", "k.pem", cwd=tmp_path)
    assert result.returncode == 1
    assert "--tls-key needs --tls-cert" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_certificate_stops_the_start_with_a_clear_error(tmp_path):
    result = pb("run", "--data-dir", str(tmp_path / "data"), "words", "--pb-port", "0",
                "--irc-port", "0", "--tls-cert", str(tmp_path / "missing.pem"), cwd=tmp_path)
    assert result.returncode != 0
    assert re.search(r"cannot load the IRC TLS certificate .*missing\.pem", result.stderr)


def test_words_and_web_from_a_config_file_mount_the_admin_pages(tmp_path, pb_child):  # noqa: F811
    config = tmp_path / "app.toml"
    config.write_text(
        '[application]\ndata_dir = "data"\n\n'
        '[web]\nport = 0\nstatic = "site"\n\n'
        '[words]\npb_port = 0\nirc_port = 0\nadmin_path = "/admin/chat/"\n'
        'admin = ["root:rootpw"]\n')
    (tmp_path / "site").mkdir()
    child = pb_child("run", "-c", str(config))
    match = child.wait_for("stdout", r"^words: .* (http://127\.0\.0\.1:(\d+)/admin/chat/)$")
    port = int(match[2])

    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/admin/chat/login")
    response = conn.getresponse()
    page = response.read().decode()
    conn.close()
    assert response.status == 200 and 'name="csrf"' in page
    assert "Path=/admin/chat/" in response.getheader("Set-Cookie")
    code, out, err = child.stop()
    assert code == 0, err
