"""The IRC machine without sockets: line cutting, parsing, formatting."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.words._core import Chat
from services.words._irc import (
    TOO_LONG,
    IRCConnection,
    IRCWorld,
    LineReader,
    TokenBucket,
    format_line,
    parse,
    text_lines,
)


def test_lines_split_across_reads_are_joined_and_utf8_survives_the_cut():
    reader = LineReader()
    data = "PRIVMSG #a :héllo wörld ✓\r\n".encode()
    cut = data.index("✓".encode()) + 1  # in the middle of a 3-byte character
    assert reader.feed(data[:cut]) == []
    assert reader.feed(data[cut:]) == [data[:-2]]
    assert parse(data[:-2]).params == ["#a", "héllo wörld ✓"]


def test_a_line_of_512_bytes_passes_and_513_is_refused_without_buffering():
    reader = LineReader()
    ok = b"P" * 510 + b"\r\n"
    assert reader.feed(ok) == [ok[:-2]]
    assert reader.feed(b"P" * 511 + b"\r\n") == [TOO_LONG]
    # Without a newline, the refusal comes as soon as the limit is passed,
    # and the rest of that line is skipped as it arrives.
    assert reader.feed(b"x" * 600) == [TOO_LONG]
    assert reader.pending == 0
    assert reader.feed(b"y" * 100_000) == []
    assert reader.pending == 0
    assert reader.feed(b"zz\nPING a\n") == [b"PING a"]


def test_bare_lf_empty_lines_and_garbage():
    reader = LineReader()
    assert reader.feed(b"\n\r\n   \r\nPING x\nPONG\r\n") == [b"PING x", b"PONG"]
    assert parse(b"\xff\xfe PRIVMSG") is not None
    assert parse(b":prefix-only") is None
    assert parse(b"   ") is None
    command = parse(b"\xffCMD a :b\xff c")
    assert command.command == "\ufffdCMD" and command.params == ["a", "b\ufffd c"]


def test_parse_prefix_trailing_and_too_many_params():
    command = parse(b":nick!u@h PRIVMSG  #room   :hello :there")
    assert command.prefix == "nick!u@h" and command.command == "PRIVMSG"
    assert command.params == ["#room", "hello :there"]
    many = parse(b"X " + b" ".join(str(n).encode() for n in range(30)))
    assert len(many.params) == 15


def test_format_never_writes_cr_lf_or_nul():
    line = format_line("s", "NOTICE", "bob", "a\r\nQUIT\x00 x")
    assert line.count(b"\r\n") == 1 and b"\x00" not in line
    assert format_line(None, "PING", "token") == b"PING token\r\n"
    assert format_line(None, "X", "") == b"X :\r\n"


@given(st.text(min_size=1, max_size=3000).filter(lambda t: not set(t) & set("\r\n\x00")))
def test_long_text_is_split_into_lines_of_at_most_512_bytes(text):
    lines = text_lines("alice!alice@words", "PRIVMSG", "#room", text)
    assert all(len(line) <= 512 for line in lines)
    pieces = [parse(line[:-2]).params[1] if parse(line[:-2]).params[1:] else ""
              for line in lines]
    assert "".join(pieces) == text.encode("utf-8", "replace").decode("utf-8", "replace")


def test_the_token_bucket_lets_a_burst_through_then_slows_down():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0


def _registered(chat, nick="alice"):
    world = IRCWorld(chat, server_name="test")
    connection = IRCConnection(world, "127.0.0.1")
    for line in [b"CAP LS 302", b"PASS pw", b"NICK " + nick.encode(), b"USER u 0 * :real"]:
        connection.receive_line(line)
    assert connection.login_request is None  # waits for CAP END
    connection.receive_line(b"CAP END")
    assert connection.login_request == (nick, "pw")
    connection.login_succeeded()
    return connection


def test_registration_waits_for_cap_end_and_answers_welcome_and_isupport():
    connection = _registered(Chat())
    out = connection.data_to_send().decode()
    assert ":test CAP * LS :\r\n" in out
    for code in ("001", "002", "003", "004", "005", "422"):
        assert f" {code} alice " in out
    assert "CASEMAPPING=ascii" in out and "CHANTYPES=#" in out and "NICKLEN=32" in out


def test_commands_before_login_are_refused_and_unknown_ones_counted():
    world = IRCWorld(Chat(), server_name="test", max_errors=3)
    connection = IRCConnection(world)
    connection.receive_line(b"JOIN #x")
    assert b" 451 " in connection.data_to_send()
    for _ in range(5):
        connection.receive_line(b"FROB")
    assert connection.closing and b"too many errors" in connection.data_to_send()
