"""The block-at-a-time DATA reader: the same outcome as reading line by line,
however the bytes are cut, and the bytes after the text go back to the
command reader (over real sockets)."""

from __future__ import annotations

import random
import time

import pytest

from services.mail._data import TOO_LONG, TOO_MUCH, DataReader

from .conftest import in_thread
from ._data_model import by_blocks, line_by_line
from .test_smtp import Raw

pytestmark = pytest.mark.timeout(60)

LINE_LIMIT = 1001  # aiosmtpd's: 999 octets and the CRLF


PIECES = [b"Subject: x\r\n", b"\r\n", b"..\r\n", b".dot\r\n", b"body line\r\n", b"\n.\n", b"\r.\n",
          b"\r.\r\n", b".\n", b"x" * 999 + b"\r\n", b"y" * 1000 + b"\r\n", b"z" * 1500 + b"\r\n",
          b"\r", b"\n", b"\r\n.\r", b"w" * 60]


def _case(rng: random.Random) -> bytes:
    body = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 12)))
    tail = rng.choice([b".\r\n", b".\r\nNOOP\r\n", b".\r\nQUIT\r\nMAIL FROM:<a@b>\r\n", b""])
    # The text may end right after a line, or after an unfinished one.
    return body + (b"\r\n" if body and not body.endswith(b"\r\n") and rng.random() < 0.7 else b"") + tail


def test_random_texts_cut_anywhere_read_as_line_by_line():
    rng = random.Random(18)
    for _ in range(3000):
        data = _case(rng)
        size_limit = rng.choice([None, 0, 10, 200, 1000, 2500])
        expected = line_by_line(data, line_limit=LINE_LIMIT, size_limit=size_limit)
        for _ in range(3):
            cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 6))]
            got = by_blocks(data, cuts, line_limit=LINE_LIMIT, size_limit=size_limit)
            assert got == expected, (data, cuts, size_limit)


@pytest.mark.parametrize("data", [
    b".\r\n",                                  # an empty message
    b".\r\nRSET\r\n",
    b"..\r\n.\r\n",                            # a lone stuffed dot
    b"a\r\n.\r\n",
    b"a\r\n..\r\n...\r\n.\r\n",
    b"line\n.\nmore\r\n.\r\n",                 # a bare-LF dot is text
    b"line\r.\rmore\r\n.\r\n",
    b"x" * 999 + b"\r\n.\r\n",                 # the longest line allowed
    b"x" * 1000 + b"\r\n.\r\n",                # one octet more
    b"x" * 5000,                               # unfinished and too long already
])
def test_every_single_byte_cut_gives_the_same_outcome(data):
    for size_limit in (None, 3, 1001):
        expected = line_by_line(data, line_limit=LINE_LIMIT, size_limit=size_limit)
        assert by_blocks(data, [], line_limit=LINE_LIMIT, size_limit=size_limit) == expected
        assert by_blocks(data, list(range(1, len(data))), line_limit=LINE_LIMIT,
                         size_limit=size_limit) == expected


def test_the_first_limit_broken_is_the_one_answered():
    big = b"a" * 500 + b"\r\n"
    # Over the size on the third line, a too-long line after it: 552.
    data = big * 3 + b"b" * 2000 + b"\r\n.\r\n"
    assert by_blocks(data, [], line_limit=LINE_LIMIT, size_limit=1200)[0] == TOO_MUCH
    # A too-long line first: 500, even though the size is over later.
    data = b"b" * 2000 + b"\r\n" + big * 3 + b".\r\n"
    assert by_blocks(data, [], line_limit=LINE_LIMIT, size_limit=1200)[0] == TOO_LONG


def test_a_refused_text_is_not_kept_while_it_is_read():
    reader = DataReader(line_limit=LINE_LIMIT, size_limit=1000)
    for _ in range(1000):
        assert reader.feed(b"q" * 78 + b"\r\n") is None
    assert reader.state == TOO_MUCH
    assert len(reader._buffer) < 10
    assert reader.feed(b".\r\nNOOP\r\n") == b"NOOP\r\n"
    with pytest.raises(RuntimeError):
        reader.content()


# -- over a socket -------------------------------------------------------------------------


def _envelope(raw: Raw) -> None:
    raw.reply()
    for command in (b"EHLO c", b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.com>"):
        assert raw.cmd(command).startswith(b"250")


async def test_text_sent_with_the_data_command_is_read_as_the_message(mail):
    def session() -> list[bytes]:
        with Raw(mail.smtp) as raw:
            _envelope(raw)
            # Not waiting for the 354 (a client may not, RFC 2920 notwithstanding).
            raw.send(b"DATA\r\nSubject: eager\r\n\r\n..stuffed\r\n.\r\nNOOP\r\n")
            return [raw.reply(), raw.reply(), raw.reply()]
    answers = await in_thread(session)
    assert [a[:3] for a in answers] == [b"354", b"250", b"250"]
    (stored,) = mail.stored("alice@example.com")
    assert stored.endswith(b"Subject: eager\n\n.stuffed\n")


async def test_commands_after_the_text_in_the_same_packet_are_answered_in_order(mail):
    def session() -> list[bytes]:
        with Raw(mail.smtp) as raw:
            _envelope(raw)
            assert raw.cmd(b"DATA").startswith(b"354")
            raw.send(b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<x@remote.test>\r\n"
                     b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
            answers = [raw.reply() for _ in range(4)]
            raw.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
            answers += [raw.reply(), raw.reply()]
            return answers
    answers = await in_thread(session)
    assert [a[:3] for a in answers] == [b"250", b"250", b"250", b"354", b"250", b"221"]
    stored = mail.stored("alice@example.com")
    assert sorted(text.rsplit(b"\n\n", 1)[1] for text in stored) == [b"first\n", b"second\n"]


async def test_a_message_trickled_a_byte_at_a_time_is_stored_whole(mail):
    text = b"Subject: slow\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(40)) + b".\r\n"

    def session() -> bytes:
        with Raw(mail.smtp) as raw:
            _envelope(raw)
            assert raw.cmd(b"DATA").startswith(b"354")
            for i in range(len(text)):
                raw.send(text[i:i + 1])
            return raw.reply()
    assert (await in_thread(session)).startswith(b"250")
    (stored,) = mail.stored("alice@example.com")
    assert stored.endswith(b"line 39\n")


# -- the fast path for addresses -----------------------------------------------------------


def test_simple_paths_parse_as_the_stdlib_parser_does():
    from aiosmtpd.smtp import SMTP

    from services.mail._smtp import _SIMPLE_PATH, MailSMTP

    server = MailSMTP.__new__(MailSMTP)
    server.local_part_limit = 64
    rng = random.Random(5321)
    atoms = ["alice", "a.b", "x+tag", "o'neil", "UPPER", "a" * 64, "a" * 65, "a..b", ".a", "a.",
             "we{ird}|~", "\"q\"", "\"a b\"", "é"]
    domains = ["example.com", "EXAMPLE.com", "a-b.c", "x", "[127.0.0.1]", "a..b", "a_b.c", "-x.y", "é.test"]
    suffixes = ["", " SIZE=100", "  BODY=8BITMIME SMTPUTF8", "\tSIZE=1", "x", " (comment) SIZE=1",
                "(c)", " ", ">", "<"]
    fast = 0
    for _ in range(3000):
        arg = (rng.choice(["", " "]) + "<" + rng.choice(atoms) + "@" + rng.choice(domains) + ">"
               + rng.choice(suffixes))
        try:
            expected = SMTP._getaddr(server, arg)
        except Exception:
            expected = (None, None)
        assert MailSMTP._getaddr(server, arg) == expected, arg
        fast += _SIMPLE_PATH.match(arg.lstrip()) is not None
    assert fast > 500  # the fast path was taken often enough to mean something


# -- the one timer of a connection ----------------------------------------------------------


async def test_after_a_message_the_short_data_timer_gives_way_to_the_command_timeout(tmp_path):
    from .conftest import start_mail

    env = await start_mail(tmp_path, data_timeout=0.4, command_timeout=4)
    try:
        def session() -> tuple[bytes, bytes, bool]:
            with Raw(env.smtp) as raw:
                _envelope(raw)
                raw.cmd(b"DATA")
                stored = raw.cmd(b"Subject: t\r\n\r\nbody\r\n.")
                # Idle well past the data timeout, inside the command timeout:
                # the timer armed for the text fires, finds the later
                # deadline and waits on.
                time.sleep(1.2)
                alive = raw.cmd(b"NOOP")
                raw.sock.settimeout(30)
                return stored, alive, raw.closed()  # then the command timeout ends it
        stored, alive, closed = await in_thread(session)
        assert stored.startswith(b"250") and alive.startswith(b"250") and closed
    finally:
        await env.application.stop(grace=2)
