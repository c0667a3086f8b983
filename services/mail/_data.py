"""The text of one SMTP ``DATA``, read in blocks (sans-IO).

aiosmtpd reads message text one line at a time, a coroutine step per line:
for the 10 KiB messages of bench/bench_mail.py (128 lines each) that was
about half of the server's CPU per message, and it capped the accept rate
below Twisted's.  :class:`DataReader` takes whatever bytes arrived and does
the same work on the whole block with C-speed byte methods: find the end
marker, check the line limit, count the size, undo the dot-stuffing.

The rules are aiosmtpd's, so that a client sees the same answers:

* the text ends only at ``<CRLF>.<CRLF>`` (or a first line that is just
  ``.``); a bare ``<LF>.<LF>`` or ``<CR>.<LF>`` is text, never the end;
* a line longer than ``line_limit`` octets with its CRLF, or an unfinished
  one already longer, makes the outcome :data:`TOO_LONG` (500);
* more than ``size_limit`` octets of lines (the final ``.`` line not
  counted) makes it :data:`TOO_MUCH` (552);
* after either, the rest of the text is read and thrown away, not kept,
  and the answer is for the first line that broke a limit (its length, if
  it broke both);
* a leading ``.`` is removed from every line (RFC 5321 4.5.2).
"""

from __future__ import annotations

__all__ = ["DataReader", "NOMINAL", "TOO_LONG", "TOO_MUCH"]

NOMINAL = "nominal"
TOO_LONG = "too long"
TOO_MUCH = "too much"

_END = b"\r\n.\r\n"
_CRLF = b"\r\n"
# Bytes kept when discarding: enough for an end marker split across blocks.
_KEEP = len(_END) - 1


class DataReader:
    """Feed it the bytes that follow the ``354``; :meth:`feed` returns the
    bytes after the end marker (the client's next commands) once the text is
    complete, None before.  Then :attr:`state` says whether it may be
    delivered and :meth:`content` gives it."""

    def __init__(self, *, line_limit: int, size_limit: int | None) -> None:
        self.line_limit = line_limit
        self.size_limit = size_limit
        self.state = NOMINAL
        # The text so far, after a CRLF that stands for the end of the DATA
        # command line: then every line, the first one too, starts after a
        # CRLF, and one search finds the end marker and the stuffed dots.
        self._buffer = bytearray(_CRLF)
        self._line_start = len(_CRLF)  # where the current unfinished line begins
        self._content: bytes | None = None

    def feed(self, data: bytes) -> bytes | None:
        buffer = self._buffer
        search_from = max(0, len(buffer) - _KEEP)
        buffer += data
        end = buffer.find(_END, search_from)
        if self.state == NOMINAL:
            stop = len(buffer) if end < 0 else end + len(_CRLF)
            self._check_lines(stop, finished=end >= 0)
        if end < 0:
            if self.state != NOMINAL:
                self._discard()
            return None
        leftover = bytes(buffer[end + len(_END):])
        if self.state == NOMINAL:
            # Undo the dot-stuffing of every line at once; the leading CRLF
            # that stood for the command's line end goes with it.
            self._content = bytes(buffer[:end + len(_CRLF)]).replace(b"\r\n.", _CRLF)[len(_CRLF):]
        self._buffer = bytearray()
        return leftover

    def content(self) -> bytes:
        """The message text (CRLF line ends, dots unstuffed); only when the
        text is complete and the state is :data:`NOMINAL`."""
        if self._content is None:
            raise RuntimeError("the message text is not complete, or was refused")
        return self._content

    def _check_lines(self, stop: int, *, finished: bool) -> None:
        """Check the lines in ``buffer[line_start:stop]`` against the limits."""
        region = self._buffer[self._line_start:stop]
        lines = region.split(_CRLF)
        # Every piece but the last ended in a CRLF; the last is unfinished
        # (empty when the region ends in a CRLF, as it does once finished).
        partial = lines.pop()
        before = self._line_start - len(_CRLF)  # octets of the lines already checked
        self._line_start = stop - len(partial)
        longest = max(map(len, lines), default=0) + len(_CRLF)
        partial_long = not finished and len(partial.rstrip(b"\r")) + len(_CRLF) > self.line_limit
        limit = self.size_limit  # None or 0: no limit, as in aiosmtpd
        over_size = limit is not None and 0 < limit < self._line_start - len(_CRLF)
        if longest > self.line_limit or partial_long or over_size:
            self.state = self._first_refusal(lines, before, partial_long)

    def _first_refusal(self, lines: list[bytearray], before: int, partial_long: bool) -> str:
        """Which limit the first offending line broke, as a line-at-a-time
        reader would have found it (a line breaking both: its length)."""
        size = before
        for line in lines:
            length = len(line) + len(_CRLF)
            size += length
            if length > self.line_limit:
                return TOO_LONG
            if self.size_limit and size > self.size_limit:
                return TOO_MUCH
        assert partial_long
        return TOO_LONG

    def _discard(self) -> None:
        """Once refused, keep only the tail an end marker could start in."""
        if len(self._buffer) > _KEEP:
            del self._buffer[:-_KEEP]
