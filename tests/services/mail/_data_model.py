"""The reference model for services.mail._data.DataReader: aiosmtpd's DATA
loop, one CRLF-ended line at a time.  Shared by the reader's tests and its
fuzz harness (tests/fuzz, ``smtp-data``), so both judge it by one model."""

from __future__ import annotations

from services.mail._data import NOMINAL, TOO_LONG, TOO_MUCH, DataReader


def line_by_line(data: bytes, *, line_limit: int, size_limit: int | None):
    """(state, content or None, leftover), or None while unfinished."""
    pos, lines, state, size = 0, [], NOMINAL, 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        line, pos = data[pos:end + 2], end + 2
        if line == b".\r\n":
            break
        size += len(line)
        if state == NOMINAL and len(line) > line_limit:
            state = TOO_LONG
        elif state == NOMINAL and size_limit and size > size_limit:
            state = TOO_MUCH
        lines.append(line[1:] if line.startswith(b".") else line)
    return state, b"".join(lines) if state == NOMINAL else None, data[pos:]


def by_blocks(data: bytes, cuts: list[int], *, line_limit: int, size_limit: int | None):
    """The same answer from DataReader, fed ``data`` cut at ``cuts``."""
    reader = DataReader(line_limit=line_limit, size_limit=size_limit)
    bounds = [0, *sorted(cuts), len(data)]
    for start, stop in zip(bounds, bounds[1:]):
        leftover = reader.feed(data[start:stop])
        if leftover is not None:
            rest = leftover + data[stop:]
            return reader.state, reader.content() if reader.state == NOMINAL else None, rest
    return None
