"""Bytes ⇄ frames.

A frame is a 4-byte big-endian length followed by that many bytes of body.
The reader checks each length against the limit as soon as the header is
complete, so an absurd header costs nothing.  The reader owns one buffer
that the transport writes into directly (``get_buffer``/``buffer_updated``)
and hands out memoryview slices of it; a slice is only valid until the next
call into the reader.  The buffer starts small and doubles only as bytes
actually arrive: a header announcing a large frame reserves nothing, so a
peer that trickles a big frame holds about twice what it sent, not
``max_frame``.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

__all__ = ["FrameReader", "FrameTooLarge", "encode_frame", "HEADER", "handshake_refusal", "peer_name"]

HEADER = Struct(">I")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack

# Allocated at the first read, not when the connection is made, so that a
# connection that never sends (an idle socket, a port scan) holds none; small, because zeroing it is paid per connection
# (256 KiB measured 50 µs); it doubles while big frames arrive.
_INITIAL_BUFFER = 16 * 1024
_MIN_READ = 4096
_NO_BUFFER = bytearray()


class FrameTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"frame of {size} bytes exceeds max_frame={limit}; "
            "send bulk data as a stream, or raise Limits.max_frame on both sides"
        )
        self.size = size
        self.limit = limit


def encode_frame(body: bytes) -> bytes:
    return _pack_header(len(body)) + body


def describe_foreign(head: bytes) -> str:
    """What a stream that does not start with a PB frame header seems to be,
    for the reason sent and logged when a peer opens with it."""
    if head[:1] == b"\x16" and head[1:2] == b"\x03":
        return ("this looks like a TLS handshake: the server does not use TLS on this port, "
                "or the client should connect without it")
    if head.startswith(b"HTTP/"):
        return "this looks like an HTTP server: point a PB client at a PB port"
    if head[:4] in (b"220 ", b"220-"):
        return "this looks like an SMTP server"
    if head.startswith(b"+OK"):
        return "this looks like a POP3 server"
    word = head.split(b" ", 1)[0]
    if word in _HTTP_METHODS or head.startswith(b"PRI * HTTP/2"):
        return "this looks like HTTP: point the HTTP client at a web port, not at a PB port"
    if head.startswith(b"SSH-"):
        return "this looks like SSH"
    return "is this client speaking PB (docs/protocol.md section 2)?"


_HTTP_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                           b"CONNECT", b"TRACE"})


class FrameReader:
    """Collects frames from a byte stream without copying bodies."""

    __slots__ = ("_buf", "_view", "_start", "_end", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = _NO_BUFFER  # shared and empty until bytes arrive
        self._view = memoryview(_NO_BUFFER)
        self._start = 0  # first unconsumed byte
        self._end = 0    # one past the last received byte

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Room for the transport to write into (compacting or growing)."""
        if len(self._buf) - self._end < _MIN_READ:
            live = self._end - self._start
            # Slide down while at most half the buffer is unconsumed; double
            # it otherwise, so memory follows what the peer actually sent.
            self._make_room(_MIN_READ if 2 * live <= len(self._buf) else max(sizehint, len(self._buf)))
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes

    def peek(self, n: int) -> bytes:
        """Up to ``n`` unconsumed bytes, left in place."""
        return bytes(self._view[self._start:min(self._start + n, self._end)])

    def clear(self) -> None:
        """Drop everything buffered."""
        self._start = self._end = 0

    def feed(self, data: bytes) -> None:
        """Copy ``data`` in (for callers without a buffered transport)."""
        n = len(data)
        if len(self._buf) - self._end < n:
            self._make_room(n)
        self._view[self._end:self._end + n] = data
        self._end += n

    def _make_room(self, wanted: int) -> None:
        live = self._end - self._start
        if len(self._buf) - live >= wanted:
            if self._start:
                # Move the unconsumed tail to the front; the buffer is reused.
                self._buf[:live] = self._view[self._start:self._end]
                self._start, self._end = 0, live
            return
        # A new buffer rather than a resize: frames handed out earlier may
        # still hold views of the old one.
        size = max(len(self._buf) * 2, live + wanted, _INITIAL_BUFFER)
        new = bytearray(size)
        new[:live] = self._view[self._start:self._end]
        self._buf, self._view = new, memoryview(new)
        self._start, self._end = 0, live

    def next_frame(self) -> memoryview | None:
        """The next complete frame body, or None.  Raises FrameTooLarge."""
        start, end = self._start, self._end
        if end - start < _HEADER_SIZE:
            if start == end:
                self._start = self._end = 0
            return None
        (size,) = _unpack_header(self._buf, start)
        if size > self.max_frame:
            raise FrameTooLarge(size, self.max_frame)
        stop = start + _HEADER_SIZE + size
        if stop > end:
            return None
        self._start = stop
        return self._view[start + _HEADER_SIZE:stop]


def peer_name(address: Any) -> str:
    """``host:port`` of a peer address, for messages."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{host}:{address[1]}"
    return str(address or "the server")


def handshake_refusal(exc: FrameTooLarge, reader: FrameReader, limit: int, who: str) -> str:
    """Why input before the peer's HELLO went past ``handshake_bytes`` (``limit``)."""
    if exc.limit != reader.max_frame:  # whole frames, none of them a HELLO
        return f"the peer sent more than handshake_bytes={limit} bytes before its HELLO"
    # The length header itself is out of range: most likely not PB at all
    # (an HTTP request's "GET " reads as a frame of 1.2 GB).
    head = reader.peek(16)
    return (f"the first bytes {who} sent ({head[:HEADER.size]!r}) are not a PB frame "
            f"header: they announce a frame of {exc.size} bytes, more than a HELLO may "
            f"take (handshake_bytes={limit}, header included); {describe_foreign(head)}")
