"""The sans-IO HTTP/1.1 server machine: httptools (llhttp) plus our limits.

httptools parses requests; this module adds what it leaves to its user:

* the request line, header block and header count limits, with distinct
  answers (414, 431), checked while a head is still arriving, so a client
  cannot make us buffer more than the limits (plus one read);
* the body limit (413), on ``Content-Length`` before any body byte is
  read, and on the running count for a chunked body;
* answers in order for pipelined requests: the parser runs ahead, its
  events wait in a queue, and a parse error is answered when its turn comes;
* the response's framing (``Content-Length``, chunked, or close-delimited
  for HTTP/1.0), ``Date`` and ``Server`` on every response, bodies dropped
  for HEAD, keep-alive decisions, and one ``error_response`` that works in
  any state where one may be sent.

Why httptools and not h11 (which this module used first): h11 costs about
90 us per keep-alive request (parse ~40 us, framing a response ~50 us) on
the benchmark machine, most of the 106 us a request may take to reach
issue 14's static-file target of twice Twisted's rate; see docs/web.md and
the ``ours-static`` row of bench/bench_web.py.

Nothing here does I/O: the adapter in ``_server`` feeds bytes in and writes
the bytes that come out.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

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
    #: Connections at once from one IPv4 address or IPv6 /64 (UNIX socket
    #: peers are not counted), so that one host cannot take every slot of
    #: ``max_connections``; behind a reverse proxy every client has the
    #: proxy's address: raise it to ``max_connections`` there.
    max_connections_per_source: int = 256
    #: Pipelined bytes held while a response is in progress before the
    #: adapter stops reading the socket.
    max_pipelined: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_bytes", "max_headers", "max_connections",
                     "max_connections_per_source"):
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
    #: The client lets the connection go on after this exchange.
    keep_alive: bool = True


class _Event:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Events the machine reports besides a RequestHead and body bytes.
NEED_DATA = _Event("NEED_DATA")
PAUSED = _Event("PAUSED")
BODY_END = _Event("BODY_END")
CLOSED = _Event("CLOSED")


class _Failed:
    """A parse error, queued so that it is answered after the requests
    pipelined before it."""

    def __init__(self, error: HTTPError) -> None:
        self.error = error


class ResponseFramingError(RuntimeError):
    """The response broke its own framing (more or fewer body bytes than
    its Content-Length, a header with a line break): a server bug, or a
    relayed backend that must not be trusted."""


_TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN = re.compile(_TOKEN_CHARS + r"\Z")
# Header names joined with ":", which no valid name contains.
_TOKENS = re.compile(rf"{_TOKEN_CHARS}(?::{_TOKEN_CHARS})*\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def headers_are_valid(headers: list[tuple[str, str]]) -> bool:
    """Every name a token, no value with a control character (a CR or LF
    would split the head): one match and one search for all the headers,
    as every response (and every relayed one) is checked."""
    if not headers:
        return True
    names = ":".join([name for name, _ in headers])
    # The count: a name with a ":" of its own must not pass as two names.
    return (names.count(":") == len(headers) - 1 and _TOKENS.match(names) is not None
            and _BAD_VALUE.search("".join([value for _, value in headers])) is None)


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        if len(_STATUS_LINES) < 1000:  # statuses are 3-digit: bounded anyway
            _STATUS_LINES[status] = line
    return line
_NO_BODY_STATUS = frozenset({204, 304})
#: Request headers the machine itself looks at.
_HEAD_SPECIAL = frozenset({"host", "content-length", "expect"})
#: Response headers that bear on the framing (the others are copied as they are).
_RESPONSE_SPECIAL = frozenset({"content-length", "transfer-encoding", "connection", "date",
                               "server"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HTTPMachine:
    """One server-side HTTP connection, without I/O."""

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.limits = limits or HTTPLimits()
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Any] = deque()
        self._queued = 0          # bytes waiting in _events (pipelined input)
        self._stopped = False     # a parse error or an upgrade: parse nothing more
        self._upgraded = False
        self._eof = False
        # the message being parsed (the parser runs ahead of the answers)
        self._in_head = False
        self._head_raw = bytearray()
        self._head_raw_exact = True
        self._head_count = 0
        self._completed_in_feed = False
        self._began_in_feed = False
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._parsed_body = 0
        self._parsed_limit: int | None = None
        # the exchange being answered
        self.head: RequestHead | None = None
        self.body_received = 0
        self._their_done = False
        self._continue_pending = False
        self.response_status: int | None = None
        self._our_state = "idle"  # idle -> body -> done
        self._framing = "length"  # length | chunked | close | none
        self._remaining = 0
        self._must_close = False

    # -- httptools callbacks (the parser runs them inside feed_data) --------------

    def on_message_begin(self) -> None:
        self._began_in_feed = True
        self._in_head = True
        self._head_raw_exact = not self._completed_in_feed
        self._head_raw = bytearray()
        self._head_count = 0
        self._url = []
        self._url_len = 0
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_len += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_raw = bytearray()
        if self._stopped:
            return
        try:
            head = self._make_head()
        except HTTPError as error:
            self._fail(error)
            return
        self._parsed_body = 0
        self._parsed_limit = self.limits.max_body
        self._events.append(head)
        self._queued += 1  # a head waiting: enough for buffered to say so

    def on_body(self, body: bytes) -> None:
        if self._stopped:
            return
        self._parsed_body += len(body)
        if self._parsed_limit is not None and self._parsed_body > self._parsed_limit:
            self._fail(HTTPError(413, f"the request body is larger than {self._parsed_limit} "
                                      f"bytes", close=True))
            return
        self._events.append(body)
        self._queued += len(body)

    def on_message_complete(self) -> None:
        self._completed_in_feed = True
        if not self._stopped:
            self._events.append(BODY_END)

    # -- receiving ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self._stopped or self._eof:
            return  # after an error or an upgrade: dropped unread
        self._completed_in_feed = False
        self._began_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, CONNECT) are not offered: this request is
            # answered like any other, then the connection closes.
            if not self._events or self._events[-1] is not BODY_END:
                self._events.append(BODY_END)
            self._stopped = True
            self._upgraded = True
            return
        except httptools.HttpParserError as exc:
            self._fail(self._parse_error(exc))
            return
        if self._in_head and not self._stopped:
            self._check_incomplete_head(data)

    def _fail(self, error: HTTPError) -> None:
        self._stopped = True
        self._in_head = False
        self._events.append(_Failed(error))

    @staticmethod
    def _parse_error(exc: Exception) -> HTTPError:
        message = str(exc) or type(exc).__name__
        if "HTTP version" in message:
            return HTTPError(505, "this HTTP version is not supported; use HTTP/1.1", close=True)
        return HTTPError(400, f"malformed request: {message}", close=True)

    @property
    def waiting_for_head(self) -> bool:
        return self.head is None and not self._in_head and not self._events

    @property
    def buffered(self) -> int:
        """Bytes held but not answered yet (pipelined requests)."""
        return self._queued + len(self._head_raw) + self._head_count

    def _check_incomplete_head(self, data: bytes) -> None:
        """A head is still arriving: refuse it once it is already too long."""
        limits = self.limits
        if not self._head_raw_exact:
            # It began after another message in the same read: its start is
            # not known, so count from the next read on (one read of slack).
            if not self._began_in_feed:
                self._head_count += len(data)
            if self._head_count > limits.max_request_line + limits.max_header_bytes + 4:
                self._fail(HTTPError(431, f"the request headers are larger than "
                                          f"{limits.max_header_bytes} bytes", close=True))
            return
        raw = self._head_raw
        raw += data
        start = len(raw) - len(raw.lstrip(b"\r\n"))  # tolerated blank lines
        end = raw.find(b"\n", start)
        if end < 0:
            # A read may end between the line's CR and its LF: the CR does
            # not count (as below, where the whole line is in).
            if len(raw) - start - raw.endswith(b"\r") > limits.max_request_line:
                self._fail(HTTPError(414, f"the request line is longer than "
                                          f"{limits.max_request_line} bytes", close=True))
            return
        if end - start > limits.max_request_line + 1:  # +1: the CR before LF
            self._fail(HTTPError(414, f"the request line is longer than "
                                      f"{limits.max_request_line} bytes", close=True))
        elif len(raw) - end - 1 > limits.max_header_bytes + 2:  # + the final CRLF
            self._fail(HTTPError(431, f"the request headers are larger than "
                                      f"{limits.max_header_bytes} bytes", close=True))

    def _make_head(self) -> RequestHead:
        limits = self.limits
        parser = self._parser
        method_bytes = parser.get_method()
        version = parser.get_http_version()
        target = b"".join(self._url) if len(self._url) != 1 else self._url[0]
        if len(method_bytes) + len(target) + 10 > limits.max_request_line:
            raise HTTPError(414, f"the request line is longer than {limits.max_request_line} bytes",
                            close=True)
        raw_headers = self._headers
        if len(raw_headers) > limits.max_headers:
            raise HTTPError(431, f"the request has more than {limits.max_headers} headers",
                            close=True)
        # Whole-list passes (comprehensions, one join for the size): this
        # runs for every request, and a loop with a branch per header cost
        # about twice as much.
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1").strip(" \t"))
                   for name, value in raw_headers]
        host = expect = False
        length = None
        for key, text in headers:
            if key in _HEAD_SPECIAL:
                if key == "host":
                    host = True
                elif key == "content-length":
                    length = int(text)  # the parser has checked it is a number
                elif text.lower() == "100-continue":  # expect
                    expect = True
        size = sum([len(name) + len(value) for name, value in raw_headers]) + 4 * len(raw_headers)
        if size > limits.max_header_bytes:
            raise HTTPError(431, f"the request headers are larger than "
                                 f"{limits.max_header_bytes} bytes", close=True)
        if version not in ("1.1", "1.0"):
            raise HTTPError(505, f"HTTP/{version} is not supported; use HTTP/1.1", close=True)
        if version == "1.1" and not host:
            raise HTTPError(400, "malformed request: an HTTP/1.1 request needs a Host header",
                            close=True)
        method = method_bytes.decode("ascii", "replace")
        try:
            text_target = target.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(400, "the request target is not ASCII", close=True) from None
        if limits.max_body is not None and length is not None and length > limits.max_body:
            # Refused before one body byte is read (and without a 100 Continue).
            raise HTTPError(413, f"the request body ({length} bytes) is larger than "
                                 f"{limits.max_body} bytes", close=True)
        if not (text_target.startswith("/") or (method == "OPTIONS" and text_target == "*")):
            if text_target.startswith(("http://", "https://")):
                # absolute-form (proxies send it): keep the path.
                rest = text_target.split("//", 1)[1]
                slash = rest.find("/")
                text_target = rest[slash:] if slash >= 0 else "/"
            else:
                raise HTTPError(400, "the request target must start with /", close=True)
        # Keep-alive with HTTP/1.1 only (an HTTP/1.0 client gets a close).
        keep_alive = version == "1.1" and parser.should_keep_alive()
        return RequestHead(method, text_target, headers, version,
                           expect and version == "1.1", keep_alive)

    def next_event(self) -> Any:
        """The next of: RequestHead, bytes (body), BODY_END, CLOSED,
        NEED_DATA, PAUSED.  Raises HTTPError for what the client did wrong."""
        if self._their_done:
            return PAUSED  # the next request waits for start_next_cycle()
        events = self._events
        if not events:
            return CLOSED if self._eof else NEED_DATA
        event = events[0]
        if isinstance(event, _Failed):
            raise event.error  # stays queued: the connection is over
        events.popleft()
        if event is BODY_END:
            self._their_done = True
            self._continue_pending = False
            return BODY_END
        if isinstance(event, RequestHead):
            self._queued -= 1
            self.head = event
            self.body_received = 0
            self._continue_pending = event.expects_continue
            return event
        self._queued -= len(event)
        self.body_received += len(event)
        self._continue_pending = False
        return event

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return self._continue_pending and self._our_state == "idle" and not self._their_done

    @property
    def body_done(self) -> bool:
        if not self._their_done and self._events and self._events[0] is BODY_END:
            self._events.popleft()  # a request without a body: no wait for it
            self._their_done = True
        return self._their_done

    # -- sending --------------------------------------------------------------

    def continue_100(self) -> bytes:
        self._continue_pending = False
        return _CONTINUE

    @property
    def is_head_request(self) -> bool:
        return self.head is not None and self.head.method == "HEAD"

    def response(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        """The status line and headers; the framing is chosen here."""
        if self._our_state != "idle":
            raise ResponseFramingError("a response was already started")
        head = self.head
        no_body = status in _NO_BODY_STATUS or 100 <= status < 200 or (
            head is not None and head.method == "HEAD")
        valid = headers_are_valid(headers)
        lines = [_status_line(status)]
        date = server = True
        length: int | None = None
        close = head is None or not head.keep_alive or self._upgraded
        connection_sent = False
        if not valid:
            for name, value in headers:
                if not isinstance(name, str) or not isinstance(value, str) or \
                        not _TOKEN.match(name) or _BAD_VALUE.search(value):
                    raise ResponseFramingError(f"response header {name!r} is not valid")
        for name, value in headers:
            lower = name.lower()
            if lower in _RESPONSE_SPECIAL:
                if lower == "content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        raise ResponseFramingError(
                            f"Content-Length {value!r} is not a number") from None
                    if length < 0:
                        raise ResponseFramingError(f"Content-Length {value!r} is negative")
                elif lower == "transfer-encoding":
                    continue  # the framing is ours to choose
                elif lower == "connection":
                    connection_sent = True
                    if "close" in value.lower():
                        close = True
                elif lower == "date":
                    date = False
                else:  # server
                    server = False
            lines.append(f"{name}: {value}\r\n")
        if server:
            lines.insert(1, f"server: {SERVER_NAME}\r\n")
        if date:
            lines.insert(1, f"date: {http_date()}\r\n")
        if no_body:
            self._framing = "none"
        elif length is not None:
            self._framing = "length"
            self._remaining = length
        elif head is not None and head.http_version == "1.1":
            self._framing = "chunked"
            lines.append("transfer-encoding: chunked\r\n")
        else:
            self._framing = "close"  # HTTP/1.0: the body ends with the connection
            close = True
        if close and not connection_sent:
            lines.append("connection: close\r\n")
        self._must_close = close
        lines.append("\r\n")
        self.response_status = status
        self._our_state = "body"
        self._continue_pending = False
        return "".join(lines).encode("latin-1")

    def data(self, data: bytes) -> bytes:
        if not data:
            return b""
        framing = self._framing
        if framing == "length":
            self._remaining -= len(data)
            if self._remaining < 0:
                raise ResponseFramingError("more body bytes than the Content-Length said")
            return data
        if framing == "chunked":
            return b"%x\r\n%b\r\n" % (len(data), data)
        if framing == "close":
            return data
        return b""  # HEAD, 204, 304

    def file_span(self, count: int) -> tuple[bytes, bytes]:
        """Framing around ``count`` file bytes sent outside the machine: (before, after)."""
        framing = self._framing
        if framing == "length":
            self._remaining -= count
            if self._remaining < 0:
                raise ResponseFramingError("more body bytes than the Content-Length said")
        elif framing == "chunked" and count:
            return b"%x\r\n" % count, b"\r\n"
        return b"", b""

    def end(self) -> bytes:
        if self._our_state != "body":
            raise ResponseFramingError("no response in progress")
        self._our_state = "done"
        if self._framing == "length" and self._remaining:
            self._must_close = True
            raise ResponseFramingError(f"the body ended {self._remaining} bytes short of "
                                       f"its Content-Length")
        if self._framing == "chunked":
            return b"0\r\n\r\n"
        return b""

    def can_send_error(self) -> bool:
        return self._our_state == "idle"

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
        except ResponseFramingError:
            return b""
        return out

    # -- the cycle ------------------------------------------------------------

    @property
    def response_done(self) -> bool:
        return self._our_state == "done"

    def start_next_cycle(self) -> bool:
        """After a complete exchange: ready for the next request (True), or
        the connection must close (False)."""
        if self._our_state == "done" and self._their_done and not self._must_close:
            self._our_state = "idle"
            self._their_done = False
            self.head = None
            self.response_status = None
            self._continue_pending = False
            return True
        return False
