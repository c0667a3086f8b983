"""Delivery to a personal server over PB on a UNIX socket, with fallback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services import Application, plugin_parser
from services.mail import plugin

from ._proc import MailChild
from .conftest import in_thread, message, send, start_mail

pytestmark = pytest.mark.timeout(30)


async def _personal(tmp_path: Path, socket: Path, maildir: Path) -> Application:
    application = Application("personal", data_dir=tmp_path / "pdata")
    options = plugin_parser(plugin).parse_args(["--personal", "--socket", str(socket), "--maildir", str(maildir),
                                                "--mailbox", "alice@example.com"])
    application.add(plugin.build(options, application))
    await application.start()
    return application


def _count(maildir: Path) -> int:
    return sum(1 for sub in ("new", "cur") if (maildir / sub).is_dir() for _ in (maildir / sub).iterdir())


async def test_mail_goes_to_the_personal_server_and_falls_back_when_it_is_down(tmp_path):
    socket, personal_box = tmp_path / "p.sock", tmp_path / "home-maildir"
    personal = await _personal(tmp_path, socket, personal_box)
    env = await start_mail(tmp_path, "--personal-socket", f"alice@example.com={socket}")
    try:
        assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600
        await in_thread(send, env.smtp, "x@remote.test", ["alice@example.com", "bob@example.com"], message("p1"))
        assert _count(personal_box) == 1 and env.stored("alice@example.com") == []
        assert len(env.stored("bob@example.com")) == 1  # no personal server: the server's Maildir
        (stored,) = [p.read_bytes() for p in (personal_box / "new").iterdir()]
        assert stored.startswith(b"Return-Path: <x@remote.test>\nReceived: from client.test") and b"Subject: p1\n" in stored
        await personal.stop(grace=1)
        await in_thread(send, env.smtp, "x@remote.test", ["alice@example.com"], message("p2"))
        assert _count(personal_box) == 1 and len(env.stored("alice@example.com")) == 1
        assert env.service.personal.fallbacks == 1
        personal = await _personal(tmp_path, socket, personal_box)  # back: used again
        await in_thread(send, env.smtp, "x@remote.test", ["alice@example.com"], message("p3"))
        assert _count(personal_box) == 2
    finally:
        await env.application.stop(grace=2)
        await personal.stop(grace=1)


async def test_a_personal_server_takes_only_its_own_mailboxes(tmp_path):
    import broker

    socket = tmp_path / "p.sock"
    personal = await _personal(tmp_path, socket, tmp_path / "box")
    try:
        async with await broker.connect(path=str(socket)) as conn:
            root = await conn.root()
            with pytest.raises(broker.RemoteError, match="not 'bob@example.com'"):
                await root.call_remote("deliver", "bob@example.com", b"x\n")
            with pytest.raises(broker.RemoteError, match="deliver"):
                await root.call_remote("deliver", 1, 2)
            assert await root.call_remote("deliver", "alice@example.com", b"Subject: ok\n\nok\n")
    finally:
        await personal.stop(grace=1)


def test_pb_run_mail_personal_uses_the_home_socket_and_maildir(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    child = MailChild(tmp_path, "--personal", home=home)
    try:
        child.wait_for("stdout", r"mail \(personal\): pb\+unix://.*\.pb-mail\.sock into .*Maildir")
        assert (home / ".pb-mail.sock").exists() and (home / "Maildir" / "new").is_dir()
        second = MailChild(tmp_path, "--personal", home=home)
        code, _, stderr = second.finish()
        second.close()
        assert code != 0 and "in use by a running personal server" in stderr
    finally:
        code, _, stderr = child.stop()
        child.close()
    assert code == 0, stderr
