"""The sans-IO HTTP/1.1 server machine: h11 plus our limits.

h11 parses and frames; this module adds what h11 leaves to its user:

* the request line, header block and header count limits, with distinct
  answers (414, 431) checked on the bytes h11 holds *before* a head is
  complete, so a client cannot make us buffer more than the limits;
* the body limit (413), on ``Content-Length`` before any body byte is
  read, and on the running count for a chunked body;
* ``Date`` and ``Server`` on every response, bodies dropped for HEAD, and a
  single ``error_response`` that works in any state where one may be sent.

Nothing here does I/O: the adapter in ``_server`` feeds bytes in and writes
the bytes that come out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h11

from ._core import HTTPError, error_page, http_date, reason_phrase

__all__ = ["HTTPLimits", "HTTPMachine", "RequestHead", "SERVER_NAME"]

SERVER_NAME = "perspective-broker-web"


@dataclass(frozen=True)
class HTTPLimits:
    """The HTTP server's limits; each is tested at its edge.

    Sizes are bytes, times seconds; ``max_body=None`` means no body limit.
    """

    max_request_line: int = 8190
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body: int | None = 64 * 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    body_timeout: float = 30.0
    max_connections: int = 1024
    #: Pipelined bytes held while a response is in progress before the
    #: adapter stops reading the socket.
    max_pipelined: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_bytes", "max_headers", "max_connections"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"HTTPLimits.{name} must be a positive int, not {value!r}")
        if self.max_body is not None and (type(self.max_body) is not int or self.max_body < 0):
            raise ValueError(f"HTTPLimits.max_body must be a non-negative int or None, "
                             f"not {self.max_body!r}")
        for name in ("header_timeout", "idle_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HTTPLimits.{name} must be a positive number of seconds")


@dataclass
class RequestHead:
    method: str
    target: str
    headers: list[tuple[str, str]]
    http_version: str
    expects_continue: bool


#: Events the machine reports besides a RequestHead and body bytes.
NEED_DATA = h11.NEED_DATA
PAUSED = h11.PAUSED


class BodyEnd:
    pass


class Closed:
    pass


BODY_END = BodyEnd()
CLOSED = Closed()


class _FileSpan:
    """Stands for ``count`` bytes of a file in h11's Data event, so h11
    frames a body it never holds (h11's documented sendfile support)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


class HTTPMachine:
    """One server-side HTTP connection, without I/O."""

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.limits = limits or HTTPLimits()
        # h11's own cap is a backstop just above ours: ours answers first,
        # with the more precise status.
        self.conn = h11.Connection(
            h11.SERVER,
            max_incomplete_event_size=self.limits.max_request_line
            + self.limits.max_header_bytes + 1024)
        self.head: RequestHead | None = None
        self.body_received = 0
        self._body_limit: int | None = None
        self.response_status: int | None = None

    # -- receiving ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        self.conn.receive_data(data)

    @property
    def waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    @property
    def buffered(self) -> int:
        """Bytes held but not parsed yet (pipelined requests)."""
        return len(self.conn.trailing_data[0])

    def _check_incomplete_head(self) -> None:
        """Before h11 has a whole head: refuse what is already too long."""
        data, _closed = self.conn.trailing_data
        if not data:
            return
        start = len(data) - len(data.lstrip(b"\r\n"))  # tolerated blank lines
        if data.find(b"\n\r\n", start) >= 0 or data.find(b"\n\n", start) >= 0:
            return  # a whole head is there: h11 parses it and _head checks it
        end = data.find(b"\n", start)
        limits = self.limits
        if end < 0:
            if len(data) - start > limits.max_request_line:
                raise HTTPError(414, f"the request line is longer than "
                                     f"{limits.max_request_line} bytes", close=True)
            return
        if end - start > limits.max_request_line + 1:  # +1: the CR before LF
            raise HTTPError(414, f"the request line is longer than "
                                 f"{limits.max_request_line} bytes", close=True)
        if len(data) - end - 1 > limits.max_header_bytes + 2:  # + the final CRLF
            raise HTTPError(431, f"the request headers are larger than "
                                 f"{limits.max_header_bytes} bytes", close=True)

    def next_event(self) -> Any:
        """The next of: RequestHead, bytes (body), BODY_END, CLOSED,
        NEED_DATA, PAUSED.  Raises HTTPError for what the client did wrong."""
        if self.conn.their_state is h11.IDLE:
            self._check_incomplete_head()
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431 and self.conn.their_state is h11.IDLE:
                self._check_incomplete_head()
            raise HTTPError(status if status in (400, 413, 414, 431) else 400,
                            f"malformed request: {exc}", close=True) from None
        if isinstance(event, h11.Request):
            return self._head(event)
        if isinstance(event, h11.Data):
            self.body_received += len(event.data)
            if self._body_limit is not None and self.body_received > self._body_limit:
                raise HTTPError(413, f"the request body is larger than {self._body_limit} bytes",
                                close=True)
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return BODY_END
        if isinstance(event, h11.ConnectionClosed):
            return CLOSED
        return event  # NEED_DATA or PAUSED

    def _head(self, event: h11.Request) -> RequestHead:
        limits = self.limits
        target = event.target
        if len(event.method) + len(target) + 10 > limits.max_request_line:
            raise HTTPError(414, f"the request line is longer than {limits.max_request_line} bytes",
                            close=True)
        if len(event.headers) > limits.max_headers:
            raise HTTPError(431, f"the request has more than {limits.max_headers} headers",
                            close=True)
        size = sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > limits.max_header_bytes:
            raise HTTPError(431, f"the request headers are larger than "
                                 f"{limits.max_header_bytes} bytes", close=True)
        if event.http_version not in (b"1.0", b"1.1"):
            raise HTTPError(505, f"HTTP/{event.http_version.decode()} is not supported; "
                                 f"use HTTP/1.1", close=True)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        method = event.method.decode("ascii", "replace")
        try:
            text_target = target.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(400, "the request target is not ASCII", close=True) from None
        self.head = RequestHead(method, text_target, headers, event.http_version.decode(),
                                self.conn.they_are_waiting_for_100_continue)
        self.body_received = 0
        self._body_limit = limits.max_body
        length = None
        for k, v in headers:
            if k == "content-length":
                length = int(v)  # h11 has checked it is a number
        if limits.max_body is not None and length is not None and length > limits.max_body:
            # Refused before one body byte is read (and without a 100 Continue).
            raise HTTPError(413, f"the request body ({length} bytes) is larger than "
                                 f"{limits.max_body} bytes", close=True)
        if not (text_target.startswith("/") or (method == "OPTIONS" and text_target == "*")):
            if text_target.startswith(("http://", "https://")):
                # absolute-form (proxies send it): keep the path.
                rest = text_target.split("//", 1)[1]
                slash = rest.find("/")
                self.head.target = rest[slash:] if slash >= 0 else "/"
            else:
                raise HTTPError(400, "the request target must start with /", close=True)
        return self.head

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return self.conn.they_are_waiting_for_100_continue

    @property
    def body_done(self) -> bool:
        return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    # -- sending --------------------------------------------------------------

    def continue_100(self) -> bytes:
        return self.conn.send(h11.InformationalResponse(
            status_code=100, headers=[], reason=b"Continue")) or b""

    @property
    def is_head_request(self) -> bool:
        return self.head is not None and self.head.method == "HEAD"

    def response(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        self.response_status = status
        out = [(b"date", http_date().encode()), (b"server", SERVER_NAME.encode())]
        for name, value in headers:
            lower = name.lower()
            if lower in ("date", "server"):
                out = [(k, v) for k, v in out if k != lower.encode()]
            out.append((name.encode("latin-1"), value.encode("latin-1")))
        return self.conn.send(h11.Response(status_code=status, headers=out,
                                           reason=reason_phrase(status).encode())) or b""

    def data(self, data: bytes) -> bytes:
        if self.is_head_request or not data:
            return b""
        return self.conn.send(h11.Data(data=data)) or b""

    def file_span(self, count: int) -> tuple[bytes, bytes]:
        """Framing around ``count`` file bytes sent outside h11: (before, after)."""
        parts = self.conn.send_with_data_passthrough(h11.Data(data=_FileSpan(count))) or []
        before, after, seen = [], [], False
        for part in parts:
            if isinstance(part, _FileSpan):
                seen = True
            elif seen:
                after.append(bytes(part))
            else:
                before.append(bytes(part))
        return b"".join(before), b"".join(after)

    def end(self) -> bytes:
        return self.conn.send(h11.EndOfMessage()) or b""

    def can_send_error(self) -> bool:
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def error_response(self, error: HTTPError, detail: str | None = None) -> bytes:
        """A whole error answer (page included), or b"" if one cannot be sent now."""
        if not self.can_send_error():
            return b""
        body = error_page(error.status, error.message, detail)
        headers = [("Content-Type", "text/html; charset=utf-8"),
                   ("Content-Length", str(len(body)))]
        headers.extend(error.headers)
        if error.close:
            headers.append(("Connection", "close"))
        try:
            out = self.response(error.status, headers)
            out += self.data(body)
            out += self.end()
        except h11.LocalProtocolError:
            return b""
        return out

    # -- the cycle ------------------------------------------------------------

    @property
    def response_done(self) -> bool:
        return self.conn.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    def start_next_cycle(self) -> bool:
        """After a complete exchange: ready for the next request (True), or
        the connection must close (False)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.head = None
            self.response_status = None
            return True
        return False
