"""SMTP: no open relay, no smuggling, no STARTTLS injection, AUTH rules."""

from __future__ import annotations

import base64
import smtplib
import ssl
from pathlib import Path

import pytest

from tests._tls import write_tls_files

from .conftest import PASSWORD, in_thread, message, send, start_mail
from .test_smtp import Raw, raw_session

pytestmark = pytest.mark.timeout(30)

RELAY_PROBES = [
    "victim@elsewhere.test",
    "<victim@elsewhere.test>",
    "victim%elsewhere.test@example.com",
    "victim%elsewhere.test",
    "\"victim@elsewhere.test\"@example.com",
    "\"victim%elsewhere.test\"@example.com",
    "\"victim\"@elsewhere.test",
    "@example.com:victim@elsewhere.test",
    "<@example.com:victim@elsewhere.test>",
    "<@example.com,@relay.test:victim@elsewhere.test>",
    "victim@elsewhere.test@example.com",
    "alice@elsewhere.test@example.com",
    "elsewhere.test!victim@example.com",
    "elsewhere.test!victim",
    "victim@[192.0.2.1]",
    "victim@example.com.elsewhere.test",
    "victim@elsewhere.test.",
    "victim@example.com@",
    "victim@elsewhere.test (comment)@example.com",
    "victim\\@elsewhere.test@example.com",
]


def test_there_are_twenty_relay_probes():
    assert len(set(RELAY_PROBES)) == 20


@pytest.mark.parametrize("smarthost", [False, True], ids=["no-smarthost", "with-smarthost"])
async def test_twenty_relay_probes_from_a_stranger_are_all_refused(tmp_path, smarthost):
    extra = ["--smarthost", "127.0.0.1:9"] if smarthost else []
    env = await start_mail(tmp_path, *extra)
    try:
        def probe(rcpt: str) -> bytes:
            target = rcpt if rcpt.startswith("<") else f"<{rcpt}>"
            return raw_session(env.smtp, b"EHLO c", b"MAIL FROM:<spammer@remote.test>",
                               b"RCPT TO:" + target.encode())[-1]
        for rcpt in RELAY_PROBES:
            answer = await in_thread(probe, rcpt)
            assert answer[:1] == b"5", (rcpt, answer)
        assert not (tmp_path / "data" / "mail-queue" / "queue").exists() or not any(
            (tmp_path / "data" / "mail-queue" / "queue").iterdir())
        for box in ("alice@example.com", "bob@example.com", "carol@example.org"):
            assert env.stored(box) == []
    finally:
        await env.application.stop(grace=2)


SMUGGLED = [
    b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@remote.test>\r\n",
    b"Subject: a\r\n\r\nbody\r.\r\nMAIL FROM:<evil@remote.test>\r\n",
    b"Subject: a\r\n\r\nbody\r\n.\nMAIL FROM:<evil@remote.test>\r\n",
    b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<evil@remote.test>\r\n",
    b"Subject: a\r\n\r\nbody\r.\nRCPT TO:<bob@example.com>\r\n",
    b"Subject: a\r\n\r\nbody\n\r.\r\nx\r\n",
    b"Subject: a\nX-Other: b\r\n\r\nbody\r\n",
]


@pytest.mark.parametrize("payload", SMUGGLED, ids=range(len(SMUGGLED)))
async def test_smuggling_variants_do_not_end_data_and_are_refused(mail, payload):
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"MAIL FROM:<x@remote.test>",
                              b"RCPT TO:<alice@example.com>", b"DATA", payload + b".",
                              b"NOOP")
    # One answer for the whole DATA: the bare-newline dot did not end it.
    assert answers[-2].startswith(b"550 5.5.2"), answers
    assert answers[-1].startswith(b"250")
    assert mail.stored("alice@example.com") == []


async def test_a_dot_on_its_own_crlf_line_inside_a_message_is_stuffed_and_kept(mail):
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"MAIL FROM:<x@remote.test>",
                              b"RCPT TO:<alice@example.com>", b"DATA",
                              b"Subject: dots\r\n\r\n..\r\n..leading\r\n.")
    assert answers[-1].startswith(b"250")
    (stored,) = mail.stored("alice@example.com")
    assert stored.endswith(b"\n\n.\n.leading\n")


@pytest.fixture
def tls_files(tmp_path: Path):
    return write_tls_files(tmp_path)


def _client_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    return context


async def test_commands_pipelined_with_starttls_are_discarded(tmp_path, tls_files):
    cert, key, ca = tls_files
    env = await start_mail(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        def inject() -> list[bytes]:
            with Raw(env.smtp) as raw:
                raw.reply()
                raw.cmd(b"EHLO c")
                raw.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.com>\r\n")
                first = raw.reply()
                tls = _client_context(ca).wrap_socket(raw.sock, server_hostname="localhost")
                tls.settimeout(10)
                raw.sock = tls
                raw.buffer = b""
                # Had the injected MAIL counted, this would be "503 nested MAIL".
                answers = [first, raw.cmd(b"EHLO c"), raw.cmd(b"MAIL FROM:<x@remote.test>"),
                           raw.cmd(b"RCPT TO:<alice@example.com>")]
                tls.close()
                return answers
        answers = await in_thread(inject)
        assert answers[0].startswith(b"220")
        assert answers[2].startswith(b"250") and answers[3].startswith(b"250")
    finally:
        await env.application.stop(grace=2)


async def test_auth_is_not_offered_without_tls_off_loopback_rules(tmp_path):
    env = await start_mail(tmp_path)  # no --allow-plain-auth, no TLS
    try:
        answers = await in_thread(raw_session, env.smtp, b"EHLO c",
                                  b"AUTH PLAIN " + base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()))
        assert b"AUTH" not in answers[1]
        assert answers[2].startswith(b"538")
    finally:
        await env.application.stop(grace=2)


async def test_auth_after_starttls_lets_a_user_relay_and_a_wrong_password_does_not(tmp_path, tls_files):
    cert, key, ca = tls_files
    env = await start_mail(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                           "--smarthost", "127.0.0.1:9", "--retry-base", "3600")
    try:
        def run() -> None:
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                assert "auth" not in client.esmtp_features
                client.starttls(context=_client_context(ca))
                client.ehlo("c")
                assert "PLAIN" in client.esmtp_features["auth"]
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login("alice@example.com", "wrong")
                client.login("alice@example.com", PASSWORD)
                assert client.sendmail("alice@example.com", ["friend@elsewhere.test"], message()) == {}
        await in_thread(run)
        queued = list((tmp_path / "data" / "mail-queue" / "queue").iterdir())
        assert len(queued) == 1
        assert b'"to": ["friend@elsewhere.test"]' in queued[0].read_bytes()
    finally:
        await env.application.stop(grace=2)


async def test_plain_auth_on_loopback_needs_the_flag_and_login_mechanism_works(mail):
    def run() -> None:
        with smtplib.SMTP("127.0.0.1", mail.smtp, timeout=10) as client:
            client.ehlo("c")
            assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            client.user, client.password = "bob@example.com", PASSWORD
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
    await in_thread(run)


async def test_an_authenticated_user_without_smarthost_still_cannot_relay(mail):
    def run() -> smtplib.SMTPRecipientsRefused:
        with smtplib.SMTP("127.0.0.1", mail.smtp, timeout=10) as client:
            client.ehlo("c")
            client.login("alice@example.com", PASSWORD)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
                client.sendmail("alice@example.com", ["friend@elsewhere.test"], message())
            return caught.value
    refused = await in_thread(run)
    assert refused.recipients["friend@elsewhere.test"][0] == 550


async def test_garbage_auth_data_is_refused_without_a_traceback(mail):
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"AUTH PLAIN %%%notbase64",
                              b"AUTH PLAIN " + base64.b64encode(b"no-nuls-here"),
                              b"AUTH CRAM-MD5", b"AUTH LOGIN " + base64.b64encode(b"\xff\xfe"),
                              b"*", b"NOOP")
    assert answers[2][:1] == b"5" and answers[3][:1] == b"5" and answers[4].startswith(b"504")
    assert b"Traceback" not in b"".join(answers) and b"Error: (" not in b"".join(answers)
    assert answers[-1].startswith(b"250")


async def test_auth_attempts_per_connection_are_capped(mail):
    bad = b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0wrong")
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", *[bad] * 11)
    assert all(a.startswith(b"535") for a in answers[2:12])
    assert answers[12].startswith(b"421")


async def test_an_authenticated_user_may_only_send_as_their_own_address(tmp_path):
    env = await start_mail(tmp_path, "--allow-plain-auth", "--smarthost", "127.0.0.1:9",
                           "--retry-base", "3600")
    try:
        def run() -> list[tuple[int, bytes]]:
            answers = []
            with smtplib.SMTP("127.0.0.1", env.smtp, timeout=10) as client:
                client.ehlo("c")
                client.login("alice@example.com", PASSWORD)
                for sender in ("bob@example.com", "alice@elsewhere.test", "ceo@elsewhere.test",
                               "Alice@Example.COM", ""):
                    answers.append(client.mail(sender))
                    client.rset()
            return answers
        answers = await in_thread(run)
        for code, text in answers[:3]:
            assert code == 553 and text.startswith(b"5.7.1") and b"alice@example.com" in text
        assert answers[3][0] == 250  # the same mailbox, however the letters are cased
        assert answers[4][0] == 250  # the null sender names nobody
        assert not any((tmp_path / "data" / "mail-queue" / "queue").iterdir())
    finally:
        await env.application.stop(grace=2)


async def test_a_stranger_may_still_give_any_sender_for_local_mail(mail):
    # Unauthenticated mail from outside is ordinary inbound mail; only local delivery.
    assert await in_thread(send, mail.smtp, "bob@example.com", ["alice@example.com"], message()) == {}


async def test_auth_inside_a_transaction_is_refused(mail):
    plain = b"AUTH PLAIN " + base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode())
    answers = await in_thread(raw_session, mail.smtp, b"EHLO c", b"MAIL FROM:<ceo@elsewhere.test>",
                              plain, b"RCPT TO:<friend@elsewhere.test>")
    assert answers[3].startswith(b"503 5.5.1")
    assert answers[4][:1] == b"5"  # still a stranger: no relay
