"""POP3 out: the sans-IO machine in memory, then poplib over real sockets."""

from __future__ import annotations

import asyncio
import base64
import poplib
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.mail._pop3 import Close, Commit, Login, Pop3Machine, Pop3Message, Retrieve, StartTls, dot_stuff
from tests._tls import write_tls_files

from .conftest import PASSWORD, in_thread, message, send, start_mail
from .test_smtp import Raw

pytestmark = pytest.mark.timeout(30)

MESSAGES = [Pop3Message("k1", 10, "h1"), Pop3Message("k2", 20, "h2")]


def logged_in(**kwargs) -> Pop3Machine:
    machine = Pop3Machine(plain_allowed=True, **kwargs)
    machine.receive(b"USER alice\r\nPASS pw\r\n")
    assert machine.next_event() == Login("alice", "pw")
    machine.login_done("alice@example.com", MESSAGES)
    machine.data_to_send()
    return machine


def test_the_machine_logs_in_lists_and_deletes_only_at_quit():
    machine = logged_in()
    machine.receive(b"STAT\r\nLIST\r\nUIDL 2\r\nDELE 1\r\nLIST 1\r\nSTAT\r\nQUIT\r\n")
    event = machine.next_event()
    assert event == Commit((MESSAGES[0],), ())
    out = machine.data_to_send()
    assert out == (b"+OK 2 30\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n+OK 2 k2\r\n+OK message 1 deleted\r\n"
                   b"-ERR message 1 already deleted\r\n+OK 1 20\r\n")
    machine.committed()
    assert isinstance(machine.next_event(), Close)


def test_rset_undoes_deletions_and_a_dropped_connection_commits_nothing():
    machine = logged_in()
    machine.receive(b"DELE 1\r\nRSET\r\nDELE 2\r\n")
    assert machine.next_event() is None
    machine.receive(b"")
    assert isinstance(machine.next_event(), Close)  # no Commit: nothing deleted


def test_plain_login_is_refused_without_tls_unless_allowed():
    machine = Pop3Machine(plain_allowed=False, tls_available=True)
    machine.receive(b"CAPA\r\nUSER alice\r\nAUTH PLAIN AGFsaWNlAHB3\r\nSTLS\r\nUSER injected\r\n")
    assert isinstance(machine.next_event(), StartTls)
    out = machine.data_to_send()
    assert b"STLS\r\n" in out and b"\r\nUSER\r\n" not in out and b"SASL" not in out
    assert out.count(b"-ERR [AUTH] plain-text login needs TLS") == 2
    machine.tls_started()
    assert machine.next_event() is None  # the pipelined USER was thrown away
    machine.receive(b"CAPA\r\n")
    machine.next_event()
    capa = machine.data_to_send()
    assert b"\r\nUSER\r\n" in capa and b"SASL PLAIN" in capa and b"STLS" not in capa


def test_auth_plain_with_and_without_initial_response():
    blob = base64.b64encode(b"\0alice\0pw")
    machine = Pop3Machine(plain_allowed=True)
    machine.receive(b"AUTH PLAIN " + blob + b"\r\n")
    assert machine.next_event() == Login("alice", "pw")
    machine.login_done(None)
    machine.receive(b"AUTH PLAIN\r\n" + blob + b"\r\n")
    assert machine.next_event() == Login("alice", "pw")
    assert b"+ \r\n" in machine.data_to_send()


def test_retr_and_top_dot_stuff_and_cut():
    content = b"Subject: x\n\n.line one\nline two\nline three\n"
    assert dot_stuff(content) == b"Subject: x\r\n\r\n..line one\r\nline two\r\nline three\r\n.\r\n"
    assert dot_stuff(content, 1) == b"Subject: x\r\n\r\n..line one\r\n.\r\n"
    assert dot_stuff(content, 0) == b"Subject: x\r\n\r\n.\r\n"
    assert dot_stuff(b".only\nno newline") == b"..only\r\nno newline\r\n.\r\n"
    machine = logged_in()
    machine.receive(b"TOP 2 5\r\nRETR 1\r\n")
    assert machine.next_event() == Retrieve(MESSAGES[1], 5)
    assert machine.next_event() is None  # waits for the answer before reading on
    machine.send_message(content, 5)
    assert machine.next_event() == Retrieve(MESSAGES[0], None)


@pytest.mark.parametrize("junk", [b"\x00\xff\r\n", b"RETR\r\n", b"RETR x\r\n", b"RETR 99\r\n", b"TOP 1\r\n",
                                  b"TOP 1 -1\r\n", b"LIST 0\r\n", b"DELE +1\r\n", b"RETR 99999999999999999\r\n",
                                  b"PASS x\r\n", b"STLS\r\n", b"X" * 300 + b"\r\n", b"\r\n",
                                  # Found by the pop3 fuzz harness: "²".isdigit() but int("²") fails.
                                  "TOP 1 ²\r\n".encode(), "RETR ١\r\n".encode()])
def test_garbage_commands_get_an_error_and_the_session_goes_on(junk):
    machine = logged_in()
    machine.receive(junk + b"NOOP\r\n")
    assert machine.next_event() is None
    out = machine.data_to_send()
    assert out.startswith(b"-ERR") and out.endswith(b"+OK\r\n")


def test_an_endless_line_closes_the_session_before_memory_is_spent():
    machine = Pop3Machine()
    machine.data_to_send()
    machine.receive(b"A" * 2000)
    assert isinstance(machine.next_event(), Close)
    assert machine.data_to_send().startswith(b"-ERR line too long")
    machine = Pop3Machine()
    machine.receive(b"NOOP\r\n" * 20000)
    assert isinstance(machine.next_event(), Close)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300) | st.sampled_from(
    [b"USER a\r\n", b"PASS b\r\n", b"STAT\r\n", b"LIST 1\r\n", b"RETR 1\r\n", b"TOP 1 2\r\n", b"DELE 2\r\n",
     b"UIDL\r\n", b"AUTH PLAIN\r\n", b"QUIT\r\n", b"STLS\r\n", b"CAPA\r\n", b"\r\n"]), max_size=40))
def test_no_input_makes_the_machine_raise_or_hold_unbounded_state(chunks):
    machine = Pop3Machine(plain_allowed=True, tls_available=True)
    for chunk in chunks:
        machine.receive(chunk)
        while (event := machine.next_event()) is not None:
            if isinstance(event, Login):
                machine.login_done("a@b", MESSAGES)
            elif isinstance(event, Retrieve):
                machine.send_message(b"Subject: x\n\nbody\n", event.lines)
            elif isinstance(event, StartTls):
                machine.tls_started()
            elif isinstance(event, Commit):
                machine.committed()
        assert len(machine._in) <= Pop3Machine.max_pending
        machine.data_to_send()


def test_three_failed_logins_close_the_session():
    machine = Pop3Machine(plain_allowed=True)
    for _ in range(3):
        machine.receive(b"USER a\r\nPASS b\r\n")
        assert isinstance(machine.next_event(), Login)
        machine.login_done(None)
    assert isinstance(machine.next_event(), Close)


# -- over sockets --------------------------------------------------------------


async def _deliver(env, count: int, mailbox: str = "alice@example.com") -> None:
    for i in range(count):
        await in_thread(send, env.smtp, "x@remote.test", [mailbox], message(f"m{i}", body=f"body {i}\r\n.dot\r\n"))


def _pop(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=10)


async def test_poplib_lists_retrieves_tops_and_deletes_at_quit(mail):
    await _deliver(mail, 3)

    def session() -> tuple:
        client = _pop(mail.pop3)
        capa = client.capa()
        client.user("alice@example.com")
        client.pass_(PASSWORD)
        stat = client.stat()
        uidl = client.uidl()[1]
        _, lines, _ = client.retr(2)
        top = client.top(1, 0)[1]
        client.dele(1)
        client.quit()
        return capa, stat, uidl, lines, top
    capa, stat, uidl, lines, top = await in_thread(session)
    assert {"UIDL", "TOP", "USER", "SASL"} <= set(capa)
    assert stat[0] == 3
    assert len(uidl) == 3
    assert b"Subject: m1" in lines and b".dot" in lines and b"body 1" in lines
    assert lines[0] == b"Return-Path: <x@remote.test>" and lines[1].startswith(b"Received: from client.test")
    assert top[-1] == b"" and b"body 0" not in top
    assert len(mail.stored("alice@example.com")) == 2
    sizes = [int(x.split()[1]) for x in (await in_thread(_list_sizes, mail.pop3))]
    on_disk = sorted(len(m) + m.count(b"\n") for m in mail.stored("alice@example.com"))
    assert sorted(sizes) == on_disk


def _list_sizes(port: int) -> list[bytes]:
    client = _pop(port)
    client.user("alice@example.com")
    client.pass_(PASSWORD)
    listing = client.list()[1]
    client.quit()
    return listing


async def test_a_dropped_pop3_connection_deletes_nothing(mail):
    await _deliver(mail, 2)

    def session() -> None:
        client = _pop(mail.pop3)
        client.user("alice@example.com")
        client.pass_(PASSWORD)
        client.dele(1)
        client.dele(2)
        client.sock.close()
        client.file.close()
    await in_thread(session)
    await asyncio.sleep(0.2)
    assert len(mail.stored("alice@example.com")) == 2


async def test_a_second_session_on_a_locked_maildrop_is_refused(mail):
    await _deliver(mail, 1)

    def sessions() -> str:
        first = _pop(mail.pop3)
        first.user("alice@example.com")
        first.pass_(PASSWORD)
        second = _pop(mail.pop3)
        second.user("alice@example.com")
        with pytest.raises(poplib.error_proto) as caught:
            second.pass_(PASSWORD)
        second.quit()
        first.quit()
        third = _pop(mail.pop3)  # the lock went with the first session
        third.user("alice@example.com")
        third.pass_(PASSWORD)
        third.quit()
        return str(caught.value)
    assert "IN-USE" in await in_thread(sessions)


async def test_wrong_password_and_unknown_user_get_the_same_answer(mail):
    def attempt(user: str, password: str) -> str:
        client = _pop(mail.pop3)
        client.user(user)
        try:
            client.pass_(password)
        except poplib.error_proto as exc:
            return str(exc)
        finally:
            client.quit()
        return "ok"
    wrong = await in_thread(attempt, "alice@example.com", "nope")
    unknown = await in_thread(attempt, "nobody@example.com", "nope")
    assert wrong == unknown and "AUTH" in wrong


async def test_logins_are_throttled_by_the_portal(tmp_path):
    import cred

    env = await start_mail(tmp_path, "--allow-plain-auth", throttle=cred.Throttle(base_delay=0.3))
    try:
        def two_failures() -> float:
            import time
            client = _pop(env.pop3)
            client.user("alice@example.com")
            start = time.monotonic()
            for _ in range(2):
                try:
                    client.pass_("wrong")
                except poplib.error_proto:
                    client.user("alice@example.com")
            client.quit()
            return time.monotonic() - start
        assert await in_thread(two_failures) >= 0.3
    finally:
        await env.application.stop(grace=2)


async def test_stls_then_plain_login_and_auth_plain(tmp_path):
    cert, key, ca = write_tls_files(tmp_path)
    env = await start_mail(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        await _deliver(env, 1)

        def session() -> int:
            client = _pop(env.pop3)
            with pytest.raises(poplib.error_proto):
                client.user("alice@example.com")
            client.stls(context=ssl.create_default_context(cafile=str(ca)))
            blob = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()).decode()
            assert client._shortcmd(f"AUTH PLAIN {blob}").startswith(b"+OK")
            count = client.stat()[0]
            client.quit()
            return count
        assert await in_thread(session) == 1

        def injected() -> bytes:
            with Raw(env.pop3) as raw:
                raw.line()
                raw.send(b"STLS\r\nUSER alice@example.com\r\nPASS " + PASSWORD.encode() + b"\r\n")
                assert raw.line().startswith(b"+OK")
                tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(raw.sock, server_hostname="localhost")
                tls.settimeout(10)
                raw.sock, raw.buffer = tls, b""
                raw.send(b"STAT\r\n")  # had the pipelined login counted, this would be "+OK 1 ..."
                answer = raw.line()
                tls.close()
                return answer
        assert (await in_thread(injected)).startswith(b"-ERR STAT needs a login first")
    finally:
        await env.application.stop(grace=2)


async def test_an_idle_session_is_logged_out_and_deletes_nothing(tmp_path):
    env = await start_mail(tmp_path, "--allow-plain-auth", autologout=0.3)
    try:
        await _deliver(env, 1)

        def session() -> bytes:
            with Raw(env.pop3) as raw:
                raw.line()
                for command in (b"USER alice@example.com", b"PASS " + PASSWORD.encode(), b"DELE 1"):
                    raw.send(command + b"\r\n")
                    raw.line()
                return raw.line()
        assert (await in_thread(session)).startswith(b"-ERR autologout")
        assert len(env.stored("alice@example.com")) == 1
    finally:
        await env.application.stop(grace=2)


async def test_garbage_and_oversize_pop3_input_leaves_the_server_up(mail):
    def junk() -> None:
        for data in (b"\x00\xff\xfe\r\n", b"A" * 5000, b"USER\r\n", b"AUTH PLAIN ====\r\n"):
            with Raw(mail.pop3) as raw:
                raw.line()
                raw.send(data)
                assert raw.line().startswith(b"-ERR")
        with Raw(mail.pop3) as raw:  # truncated: the server waits for the rest, the client leaves
            raw.line()
            raw.send(b"USER alice@exa")
    await in_thread(junk)
    assert len(await in_thread(_list_sizes, mail.pop3)) == 0
