"""IRC on the wire, without I/O: cutting bytes into lines, parsing a line,
writing one, splitting long text, and the flood-control bucket.

A line is at most 512 bytes with its CR-LF (RFC 1459 section 2.3).
:class:`LineReader` refuses a longer one without buffering more than that
(the rest of it is skipped as it arrives), and keeps bytes until the line
ends, so that a UTF-8 character split across reads is whole when the line is
decoded; undecodable bytes become U+FFFD.  Written lines never carry CR, LF
or NUL inside a parameter, and :func:`text_lines` cuts text that would not
fit into several lines, between UTF-8 characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_LINE", "MAX_PARAMS", "TOO_LONG", "Command", "LineReader", "TokenBucket",
           "format_line", "parse", "text_lines"]

MAX_LINE = 512
MAX_PARAMS = 15


class _TooLong:
    def __repr__(self) -> str:
        return "TOO_LONG"


#: What :meth:`LineReader.feed` yields in place of a line longer than 512 bytes.
TOO_LONG = _TooLong()


class LineReader:
    """Bytes to lines (without their CR-LF); never holds more than *limit*."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | _TooLong]:
        lines: list[bytes | _TooLong] = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            if newline < 0:
                if not self._skipping:
                    if len(self._buffer) + end - start >= self.limit:
                        # Already too long without its LF: refuse it now and
                        # skip the rest of it as it comes.
                        self._buffer.clear()
                        self._skipping = True
                        lines.append(TOO_LONG)
                    else:
                        self._buffer += data[start:]
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buffer) + newline - start + 1 > self.limit:
                self._buffer.clear()
                lines.append(TOO_LONG)
            else:
                self._buffer += data[start:newline]
                line = bytes(self._buffer)
                self._buffer.clear()
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line.strip(b" "):
                    lines.append(line)
            start = newline + 1
        return lines

    @property
    def pending(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True, slots=True)
class Command:
    prefix: str | None
    command: str
    params: list[str]


def parse(line: bytes) -> Command | None:
    """One line (without CR-LF) to a Command; None if there is no command."""
    text = line.decode("utf-8", "replace")
    prefix = None
    if text.startswith(":"):
        prefix, _, text = text[1:].partition(" ")
    text = text.lstrip(" ")
    trailing = None
    if " :" in text:
        text, trailing = text.split(" :", 1)
    elif text.startswith(":"):
        text, trailing = "", text[1:]
    # Spaces only: other whitespace (tabs, IRC's \x1f underline) is text.
    params = [word for word in text.split(" ") if word]
    if trailing is not None:
        params.append(trailing)
    if not params:
        return None
    command = params.pop(0).upper()
    if len(params) > MAX_PARAMS:
        params = params[:MAX_PARAMS - 1] + [" ".join(params[MAX_PARAMS - 1:])]
    return Command(prefix, command, params)


def _clean(param: str) -> str:
    # Whatever the chat let through, a line written here carries no CR, LF
    # or NUL: they would end it and start another in the client.
    if "\r" in param or "\n" in param or "\x00" in param:
        param = param.replace("\r", " ").replace("\n", " ").replace("\x00", "")
    return param


def format_line(prefix: str | None, command: str, *params: str, trailing: bool = False) -> bytes:
    """One line with its CR-LF; the last parameter is a trailing one if it
    must be (empty, has a space, starts with ':') or *trailing* says so
    (free text: clients such as ii read only a trailing parameter as text).
    May exceed 512 bytes: callers that send free text use :func:`text_lines`."""
    parts = [f":{prefix}"] if prefix else []
    parts.append(command)
    clean = [_clean(p) for p in params]
    for param in clean[:-1]:
        parts.append(param)
    if clean:
        last = clean[-1]
        needs = trailing or not last or " " in last or last.startswith(":")
        parts.append(f":{last}" if needs else last)
    return (" ".join(parts)).encode("utf-8", "replace") + b"\r\n"


def _split_utf8(text: str, room: int) -> list[str]:
    """*text* cut into pieces of at most *room* UTF-8 bytes, between characters."""
    data = text.encode("utf-8", "replace")
    if len(data) <= room:
        return [text]
    pieces = []
    while data:
        cut = min(room, len(data))
        # Back off to a character boundary: continuation bytes are 10xxxxxx.
        while cut < len(data) and cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        pieces.append(data[:cut].decode("utf-8", "replace"))
        data = data[cut:]
    return pieces


def text_lines(prefix: str | None, command: str, target: str, text: str) -> list[bytes]:
    """PRIVMSG/NOTICE/TOPIC-style lines for *text*, split to fit 512 bytes."""
    head = len(format_line(prefix, command, target, "x y")) - 3  # minus "x y"
    room = max(MAX_LINE - head, 16)
    return [format_line(prefix, command, target, piece, trailing=True)
            for piece in _split_utf8(text, room)]


class TokenBucket:
    """Flood control: *burst* lines at once, then *rate* lines a second.

    :meth:`take` answers how long to wait before the next line may be
    handled (0: now, and it is counted)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> float:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate
