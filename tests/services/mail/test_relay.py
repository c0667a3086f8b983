"""Smarthost relay through the durable queue, against a local aiosmtpd sink."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from .conftest import PASSWORD, in_thread, message, start_mail

pytestmark = pytest.mark.timeout(40)


class Sink:
    """What the smarthost received; refuses recipients whose name starts with 'reject'."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("reject"):
            return "550 5.1.1 no such user at the smarthost"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _send_authenticated(port: int, recipients: list[str], body: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("c")
        client.login("alice@example.com", PASSWORD)
        return client.sendmail("alice@example.com", recipients, body)


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_relayed_mail_reaches_the_smarthost(tmp_path: Path):
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = await start_mail(tmp_path, "--allow-plain-auth", "--smarthost", f"127.0.0.1:{port}",
                           "--retry-base", "0.2")
    try:
        body = message("relayed", body="line\r\n.leading dot\r\n")
        assert await in_thread(_send_authenticated, env.smtp, ["friend@elsewhere.test"], body) == {}
        await _until(lambda: sink.received)
        ((sender, rcpts, content),) = sink.received
        assert (sender, rcpts) == ("alice@example.com", ["friend@elsewhere.test"])
        assert b"Subject: relayed\r\n" in content and b"\r\n.leading dot\r\n" in content
        assert content.startswith(b"Received: from c ([127.0.0.1])\r\n\tby mx.test with ESMTPA")
        await _until(lambda: not list((tmp_path / "data" / "mail-queue" / "queue").iterdir()))
    finally:
        await env.application.stop(grace=2)
        controller.stop()


async def test_a_queued_message_survives_a_restart_and_goes_once_the_sink_is_back(tmp_path: Path):
    port = _free_port()
    args = ("--allow-plain-auth", "--smarthost", f"127.0.0.1:{port}", "--retry-base", "0.2",
            "--retry-max", "0.5")
    env = await start_mail(tmp_path, *args)
    try:
        assert await in_thread(_send_authenticated, env.smtp, ["friend@elsewhere.test"],
                               message("queued")) == {}
        await _until(lambda: env.service.queue is not None and list(
            (tmp_path / "data" / "mail-queue" / "state").glob("*.json")))  # a failed attempt was noted
    finally:
        await env.application.stop(grace=2)
    queued = list((tmp_path / "data" / "mail-queue" / "queue").iterdir())
    assert len(queued) == 1
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = await start_mail(tmp_path, *args)
    try:
        await _until(lambda: sink.received)
        await asyncio.sleep(0.8)  # time for a wrong second delivery to happen
        assert len(sink.received) == 1 and b"Subject: queued" in sink.received[0][2]
        assert not list((tmp_path / "data" / "mail-queue" / "queue").iterdir())
    finally:
        await env.application.stop(grace=2)
        controller.stop()


async def test_a_permanent_refusal_bounces_to_the_local_sender(tmp_path: Path):
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = await start_mail(tmp_path, "--allow-plain-auth", "--smarthost", f"127.0.0.1:{port}",
                           "--retry-base", "0.2")
    try:
        await in_thread(_send_authenticated, env.smtp, ["friend@elsewhere.test", "reject-me@elsewhere.test"],
                        message("half"))
        await _until(lambda: env.stored("alice@example.com"))
        (bounce,) = env.stored("alice@example.com")
        assert b"Subject: Undelivered Mail Returned to Sender" in bounce
        assert b"Final-Recipient: rfc822; reject-me@elsewhere.test" in bounce
        assert b"Content-Type: message/delivery-status" in bounce
        assert [r for _, r, _ in sink.received] == [["friend@elsewhere.test"]]
    finally:
        await env.application.stop(grace=2)
        controller.stop()


async def test_after_the_give_up_time_the_sender_gets_a_bounce(tmp_path: Path):
    port = _free_port()  # nothing listens there
    env = await start_mail(tmp_path, "--allow-plain-auth", "--smarthost", f"127.0.0.1:{port}",
                           "--retry-base", "0.2", "--retry-max", "0.3", give_up_override=1.0)
    try:
        await in_thread(_send_authenticated, env.smtp, ["friend@elsewhere.test"], message("late"))
        await _until(lambda: env.stored("alice@example.com"), timeout=15)
        (bounce,) = env.stored("alice@example.com")
        assert b"Status: 4.4.7" in bounce and b"friend@elsewhere.test" in bounce
        await _until(lambda: not list((tmp_path / "data" / "mail-queue" / "queue").iterdir()))
    finally:
        await env.application.stop(grace=2)


async def test_the_smarthost_gets_starttls_and_a_login_and_a_wrong_one_keeps_the_mail(tmp_path: Path):
    from aiosmtpd.smtp import AuthResult

    from tests._tls import write_tls_files

    cert, key, ca = write_tls_files(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, data):
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"relay-secret", handled=False)

    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=server_tls,
                            require_starttls=True, auth_required=True, authenticator=authenticator)
    controller.start()
    password_file = tmp_path / "relay.pw"
    password_file.write_text("wrong-secret\n")
    args = ("--allow-plain-auth", "--smarthost", f"127.0.0.1:{port}", "--smarthost-tls",
            "--smarthost-ca", str(ca), "--smarthost-user", "relay",
            "--smarthost-password-file", str(password_file), "--retry-base", "0.2", "--retry-max", "0.3")
    env = await start_mail(tmp_path, *args)
    try:
        await in_thread(_send_authenticated, env.smtp, ["friend@elsewhere.test"], message("tls"))
        await _until(lambda: len(logins) >= 2)  # refused, retried, never bounced
        assert sink.received == [] and env.stored("alice@example.com") == []
    finally:
        await env.application.stop(grace=2)
    password_file.write_text("relay-secret\n")
    env = await start_mail(tmp_path, *args)
    try:
        await _until(lambda: sink.received)
        assert logins[-1] == (b"relay", b"relay-secret")
        assert b"Subject: tls" in sink.received[0][2]
    finally:
        await env.application.stop(grace=2)
        controller.stop()


def test_a_smarthost_password_is_never_sent_without_tls(tmp_path: Path):
    from services import plugin_parser
    from services.mail import plugin

    (tmp_path / "pw").write_text("x\n")
    options = plugin_parser(plugin).parse_args([
        "--domain", f"example.com={tmp_path}", "--smarthost", "relay.example.net:25",
        "--smarthost-user", "u", "--smarthost-password-file", str(tmp_path / "pw")])
    from services import Application
    with pytest.raises(ValueError, match="add --smarthost-tls"):
        plugin.build(options, Application("t", data_dir=tmp_path / "d"))


async def test_a_full_relay_queue_answers_452_and_keeps_local_mail_flowing(tmp_path: Path):
    # Port 9 (discard) is closed here: everything relayed stays queued.
    env = await start_mail(tmp_path, "--allow-plain-auth", "--smarthost", "127.0.0.1:9",
                           "--retry-base", "3600", "--queue-max-bytes", "3000")
    try:
        def run() -> list:
            results = []
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                client.login("alice@example.com", PASSWORD)
                # 1: fits.  2: does not fit what is left (refused after DATA).
                results.append(client.sendmail("alice@example.com", ["a@elsewhere.test"],
                                               message("one", body=("x" * 70 + "\r\n") * 21)))
                try:
                    client.sendmail("alice@example.com", ["b@elsewhere.test"],
                                    message("two", body=("y" * 70 + "\r\n") * 21))
                except smtplib.SMTPDataError as exc:
                    results.append((exc.smtp_code, exc.smtp_error))
                # 3: local mail is not held up by the relay queue.
                results.append(client.sendmail("alice@example.com", ["bob@example.com"], message("three")))
            return results
        first, second, third = await in_thread(run)
        assert first == {} and third == {}
        assert second[0] == 452 and second[1].startswith(b"4.3.1")
        queue = tmp_path / "data" / "mail-queue" / "queue"
        assert len(list(queue.iterdir())) == 1
        assert env.service.queue is not None and env.service.queue.bytes == sum(
            p.stat().st_size for p in queue.iterdir())
        # Now full to the brim: the next relayed recipient is turned away at RCPT.
        env.service.queue.max_bytes = env.service.queue.bytes

        def rcpt() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                client.login("alice@example.com", PASSWORD)
                client.mail("alice@example.com")
                return client.rcpt("c@elsewhere.test")
        code, text = await in_thread(rcpt)
        assert code == 452 and text.startswith(b"4.3.1")
    finally:
        await env.application.stop(grace=2)


async def test_the_queue_size_is_counted_again_after_a_restart(tmp_path: Path):
    from services.mail._queue import QueueFull, RelayQueue

    queue = RelayQueue(tmp_path / "q", max_bytes=500)
    queue.enqueue("a@x.test", ["b@y.test"], b"z" * 300)
    again = RelayQueue(tmp_path / "q", max_bytes=500)
    assert again.bytes == queue.bytes > 300
    with pytest.raises(QueueFull):
        again.enqueue("a@x.test", ["b@y.test"], b"z" * 300)
    assert len(again.ids()) == 1 and not any((tmp_path / "q" / "tmp").iterdir())
    again.remove(again.ids()[0])
    assert again.bytes == 0
