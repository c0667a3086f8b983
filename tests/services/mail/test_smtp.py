"""SMTP in, over real sockets with smtplib and raw sockets."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time

import pytest

from .conftest import in_thread, message, send, start_mail

pytestmark = pytest.mark.timeout(30)


class Raw:
    """A line-oriented SMTP/POP3 client on a plain socket, for what smtplib will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffer {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def reply(self) -> bytes:
        """One SMTP reply (all its lines)."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return b"".join(lines)

    def cmd(self, text: bytes) -> bytes:
        self.send(text + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, socket.timeout):
            return True


def raw_session(port: int, *commands: bytes) -> list[bytes]:
    with Raw(port) as raw:
        answers = [raw.reply()]
        for command in commands:
            answers.append(raw.cmd(command))
        return answers


async def test_mail_for_two_domains_lands_in_each_maildir(mail):
    refused = await in_thread(send, mail.smtp, "x@remote.test",
                              ["alice@example.com", "carol@example.org"], message("two"))
    assert refused == {}
    for box in ("alice@example.com", "carol@example.org"):
        (stored,) = mail.stored(box)
        assert stored.startswith(b"Return-Path: <x@remote.test>\nReceived: from client.test ([127.0.0.1])\n\tby mx.test with ESMTP id ")
        assert b"Subject: two\nMessage-ID: <two@remote.test>\n\nHi there.\n" in stored
        assert b"\r" not in stored
    assert mail.stored("bob@example.com") == []


async def test_each_stored_file_is_named_as_maildir_wants_and_tmp_is_empty(mail):
    await in_thread(send, mail.smtp, "x@remote.test", ["alice@example.com"], message())
    box = mail.maildir("alice@example.com")
    (name,) = [p.name for p in (box / "new").iterdir()]
    stamp, unique, rest = name.split(".", 2)
    assert stamp.isdigit() and unique.startswith("M") and "P" in unique and "Q" in unique
    assert ",S=" in rest and ",W=" in rest
    assert list((box / "tmp").iterdir()) == []


async def test_unknown_user_is_refused_at_rcpt_with_550(mail):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        await in_thread(send, mail.smtp, "x@remote.test", ["nobody@example.com"], message())
    assert caught.value.recipients["nobody@example.com"][0] == 550


async def test_recipients_are_matched_without_regard_to_case(mail):
    await in_thread(send, mail.smtp, "x@remote.test", ["Alice@EXAMPLE.com"], message())
    assert len(mail.stored("alice@example.com")) == 1


async def test_a_catch_all_takes_mail_for_unknown_names(tmp_path):
    env = await start_mail(tmp_path, "--catch-all", "example.org=carol")
    try:
        await in_thread(send, env.smtp, "x@remote.test", ["whoever@example.org"], message())
        assert len(env.stored("carol@example.org")) == 1
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await in_thread(send, env.smtp, "x@remote.test", ["whoever@example.com"], message())
    finally:
        await env.application.stop(grace=2)


async def test_a_mailbox_granted_after_start_receives_mail(mail):
    store = mail.service.store
    await asyncio.to_thread(store.add_user, "dave", "pw-dave-1")
    await asyncio.to_thread(store.grant, "dave", "mail", "dave@example.com")
    mail.service._last_refresh = 0.0
    await in_thread(send, mail.smtp, "x@remote.test", ["dave@example.com"], message())
    assert len(mail.stored("dave@example.com")) == 1


async def test_size_is_advertised_and_a_larger_message_is_refused(tmp_path):
    env = await start_mail(tmp_path, "--max-message-size", "20000")
    try:
        def declared() -> None:
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                assert client.esmtp_features["size"] == "20000"
                assert "8bitmime" in client.esmtp_features
                assert "smtputf8" in client.esmtp_features
                with pytest.raises(smtplib.SMTPSenderRefused) as caught:
                    client.sendmail("x@remote.test", ["alice@example.com"], message(body="x" * 30000))
                assert caught.value.smtp_code == 552
        await in_thread(declared)
        # A client that does not declare SIZE is stopped while it sends.
        answers = await in_thread(raw_session, env.smtp, b"EHLO c", b"MAIL FROM:<x@remote.test>",
                              b"RCPT TO:<alice@example.com>", b"DATA",
                              (b"y" * 900 + b"\r\n") * 30 + b".")
        assert answers[-1].startswith(b"552")
        assert env.stored("alice@example.com") == []
    finally:
        await env.application.stop(grace=2)


async def test_recipients_per_message_are_capped(tmp_path):
    env = await start_mail(tmp_path, "--max-recipients", "3")
    try:
        commands = [b"EHLO c", b"MAIL FROM:<x@remote.test>"] + [b"RCPT TO:<alice@example.com>"] * 4
        answers = await in_thread(raw_session, env.smtp, *commands)
        assert [a[:3] for a in answers[3:]] == [b"250", b"250", b"250", b"452"]
    finally:
        await env.application.stop(grace=2)


async def test_overlong_command_and_text_lines_are_refused_and_the_server_stays_up(mail):
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"NOOP " + b"a" * 5000, b"MAIL FROM:<" + b"b" * 600 + b"@x.test>",
                          b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.com>", b"DATA",
                          b"Subject: long\r\n\r\n" + b"z" * 2000 + b"\r\n.")
    assert answers[2].startswith(b"500") and answers[3].startswith(b"500")
    assert answers[-1].startswith(b"500")  # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets
    assert mail.stored("alice@example.com") == []
    assert (await in_thread(send, mail.smtp, "x@remote.test", ["alice@example.com"], message())) == {}


async def test_garbage_and_truncated_input_leave_the_server_up(mail):
    await in_thread(_garbage, mail.smtp)
    await asyncio.sleep(0.1)
    assert mail.stored("alice@example.com") == []
    assert (await in_thread(send, mail.smtp, "x@remote.test", ["alice@example.com"], message())) == {}


def _garbage(port: int) -> None:
    for junk in (b"\x00\xff\xfe garbage\r\n", b"\r\n\r\n\r\n", b"HELO\r\n", b"MAIL FROM:<<<>>>\r\n",
                 b"RCPT TO:\r\n", b"DATA\r\n", b"AUTH PLAIN !!!\r\n", b"\xc3\x28\r\n", b"EHLO " + b"\x80" * 50 + b"\r\n"):
        with Raw(port) as raw:
            raw.reply()
            raw.send(junk)
            raw.reply()
    with Raw(port) as raw:  # cut off in the middle of DATA
        raw.reply()
        for command in (b"EHLO c", b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.com>", b"DATA"):
            raw.cmd(command)
        raw.send(b"Subject: cut\r\n\r\nhalf a mess")


async def test_a_client_that_sends_nothing_is_dropped_after_the_command_timeout(tmp_path):
    env = await start_mail(tmp_path, command_timeout=0.3)
    try:
        def idle() -> bool:
            with Raw(env.smtp) as raw:
                raw.reply()
                raw.sock.settimeout(5)
                return raw.closed()
        assert await in_thread(idle)
    finally:
        await env.application.stop(grace=2)


async def test_utf8_addresses_and_8bit_bodies_are_taken_with_smtputf8(tmp_path):
    env = await start_mail(tmp_path, "--user", "jörg@example.com:pw-jorg-1")
    try:
        body = "From: x@remote.test\r\nSubject: Grüße\r\n\r\nÄpfel und Birnen\r\n".encode()
        def utf8() -> None:
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                client.sendmail("jö@remote.test", ["jörg@example.com"], body,
                                mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        await in_thread(utf8)
        (stored,) = env.stored("jörg@example.com")
        assert "Äpfel".encode() in stored and b"with UTF8SMTP" in stored
    finally:
        await env.application.stop(grace=2)


async def test_the_null_sender_of_bounces_is_accepted(mail):
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"MAIL FROM:<>", b"RCPT TO:<bob@example.com>", b"DATA",
                          b"Subject: bounce\r\n\r\nsorry\r\n.")
    assert answers[2].startswith(b"250") and answers[-1].startswith(b"250")
    (stored,) = mail.stored("bob@example.com")
    assert stored.startswith(b"Return-Path: <>\n")


async def test_connections_per_host_are_capped_on_both_listeners(tmp_path):
    env = await start_mail(tmp_path, "--max-connections-per-host", "2")
    try:
        def crowd(port: int) -> bytes:
            first, second = Raw(port), Raw(port)
            try:
                first.line(), second.line()
                with Raw(port) as third:
                    refused = third.line()
                    assert third.closed()
                return refused
            finally:
                first.close()
                second.close()
        assert (await in_thread(crowd, env.smtp)).startswith(b"421 4.7.0")
        assert (await in_thread(crowd, env.pop3)).startswith(b"-ERR [SYS/TEMP]")
        await asyncio.sleep(0.1)  # the slots are free again
        assert (await in_thread(send, env.smtp, "x@remote.test", ["alice@example.com"], message())) == {}
    finally:
        await env.application.stop(grace=2)


async def test_the_data_timeout_is_per_read_a_slow_message_passes_a_stalled_one_is_cut(tmp_path):
    env = await start_mail(tmp_path, "--data-timeout", "1", "--command-timeout", "30")
    try:
        def slow() -> bytes:
            with Raw(env.smtp) as raw:
                raw.reply()
                for command in (b"EHLO c", b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.com>",
                                b"DATA"):
                    raw.cmd(command)
                for part in range(5):  # 2.5 s in all, never 1 s without a byte
                    raw.send(f"X-Part: {part}\r\n".encode())
                    time.sleep(0.5)
                return raw.cmd(b"\r\nslow\r\n.")

        def stalled() -> tuple[bytes, bytes]:
            with Raw(env.smtp) as raw:
                raw.reply()
                for command in (b"EHLO c", b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.com>",
                                b"DATA"):
                    raw.cmd(command)
                raw.send(b"Subject: half\r\n")
                answer = raw.reply()
                return answer, raw.sock.recv(100)

        assert (await in_thread(slow)).startswith(b"250")
        answer, after = await in_thread(stalled)
        assert answer.startswith(b"421 4.4.2") and after == b""
        (stored,) = env.stored("alice@example.com")
        assert b"X-Part: 4\n\nslow\n" in stored
    finally:
        await env.application.stop(grace=2)


async def test_an_address_the_stdlib_parser_chokes_on_is_a_syntax_error(mail):
    # Found by the smtp fuzz harness: "<@" made the email parser under
    # aiosmtpd raise IndexError, answered 451 with a logged traceback.
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"MAIL FROM:<@", b"MAIL FROM:<@>",
                              b"MAIL FROM:<x@remote.test>", b"RCPT TO:<@", b"RCPT TO:<a@[b.example>",
                              b"RCPT TO:<alice@example.com>")
    assert answers[2][:1] == b"5" and answers[3][:1] == b"5", answers
    assert answers[4].startswith(b"250") and answers[5][:1] == b"5" and answers[6][:1] == b"5", answers
    assert answers[7].startswith(b"250"), answers
