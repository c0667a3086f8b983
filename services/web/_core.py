"""The web service's pure core: requests, resources, errors, error pages.

Nothing here touches a socket.  A :class:`Request` talks to whatever carries
it through a *channel* (the HTTP adapter in ``_server``, or the relay in
``_relay`` when the request came over PB from a front server), so the same
resource tree serves both.

Traversal follows Twisted's model, with PEP 8 names: the site's root
resource is asked ``get_child(segment, request)`` for each path segment
(``request.postpath`` shrinks, ``request.prepath`` grows) until a resource
is a *leaf* (``is_leaf = True``) or the segments run out; then that
resource's ``render(request)`` runs the ``render_<METHOD>`` method.
"""

from __future__ import annotations

import email.utils
import html
import inspect
import os
import time
from collections.abc import AsyncIterator, Iterable
from http import HTTPStatus
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote

__all__ = [
    "HTTPError",
    "NoResource",
    "ResponseAborted",
    "Request",
    "Resource",
    "error_page",
    "http_date",
    "render_resource",
    "traverse",
]


class HTTPError(Exception):
    """An HTTP error answer: ``status``, a message for the page (escaped
    when shown), and extra response headers (``Allow`` for a 405)."""

    def __init__(self, status: int, message: str = "",
                 headers: Iterable[tuple[str, str]] = (), *, close: bool = False) -> None:
        super().__init__(f"{status} {message}".strip())
        self.status = int(status)
        self.message = message
        self.headers = list(headers)
        #: The connection cannot go on after this answer (a framing error).
        self.close = close


class ResponseAborted(Exception):
    """The response cannot be finished (a backend went away mid-body): the
    server cuts the connection, which is the only signal left to the
    client, and logs one line rather than a traceback."""


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_page(status: int, message: str = "", detail: str | None = None) -> bytes:
    """A small HTML page for an error; every piece of text is escaped.

    ``detail`` (a traceback) is only passed when debugging is switched on.
    """
    phrase = html.escape(reason_phrase(status))
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">",
        f"<title>{status} {phrase}</title></head>\n<body><h1>{status} {phrase}</h1>\n",
    ]
    if message:
        parts.append(f"<p>{html.escape(message)}</p>\n")
    if detail:
        parts.append(f"<pre>{html.escape(detail)}</pre>\n")
    parts.append("</body></html>\n")
    return "".join(parts).encode("utf-8")


#: Files (or ranges) up to this size are read and written with the response
#: head in one write; larger ones go out with sendfile.
SMALL_FILE = 64 * 1024


def read_span(file: BinaryIO | int, offset: int, count: int) -> bytes:
    """``count`` bytes of ``file`` (or file descriptor) from ``offset``, read
    at once: a small file, from the page cache."""
    fd = file if isinstance(file, int) else file.fileno()
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise OSError("the file became shorter while it was sent")
    return data


_date_cache: tuple[int, str] = (0, "")


def http_date(when: float | None = None) -> str:
    """An RFC 9110 date (``Sun, 06 Nov 1994 08:49:37 GMT``); the current
    second's text is cached, as every response carries one."""
    global _date_cache
    if when is not None:
        return email.utils.formatdate(when, usegmt=True)
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class Channel(Protocol):
    """What carries a request: the HTTP connection or the PB relay."""

    def body(self) -> AsyncIterator[bytes]: ...

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None: ...

    async def end_response(self) -> None: ...


class Request:
    """One HTTP request and its response.

    Read the body with ``async for chunk in request.stream()`` or
    ``await request.read()``; answer by returning ``bytes``/``str`` from a
    ``render_*`` method, or by ``set_status``/``set_header`` and then
    ``await request.write(...)`` (which waits while the client is slow:
    that is the backpressure).
    """

    def __init__(self, channel: Channel, method: str, target: str,
                 headers: list[tuple[str, str]], *, client: tuple[str, int] | None = None,
                 scheme: str = "http", http_version: str = "1.1",
                 debug: bool = False, root_path: str = "") -> None:
        self.channel = channel
        self.method = method
        self.target = target
        #: Request headers as (lower-case name, value) text pairs, in order.
        self.headers = headers
        self.client = client
        self.scheme = scheme
        self.http_version = http_version
        self.debug = debug
        #: Where this request's site is mounted in a larger one (a personal
        #: server's requests arrive with the front's ``/alice.twistd``).
        self.root_path = root_path
        path, _, self.query = target.partition("?")
        self.path = path
        raw = path.split("/")[1:] if path.startswith("/") else [path]
        #: Segments not yet consumed by traversal (percent-decoded, each alone,
        #: so an encoded ``%2F`` stays inside its segment).
        self.postpath = ([unquote(s, errors="surrogateescape") for s in raw] if "%" in path
                         else list(raw))
        #: Segments consumed so far.
        self.prepath: list[str] = []
        #: Raw (still encoded) segments of postpath, for mounts that pass
        #: the rest of the path on unchanged (ASGI, relay).
        self.raw_postpath = list(raw)
        self.raw_prepath: list[str] = []
        self.code = 200
        self.response_headers: list[tuple[str, str]] = []
        self.started = False
        self.finished = False
        self.bytes_sent = 0
        self._stream_taken = False

    # -- request side ---------------------------------------------------------

    def get_header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def stream(self) -> AsyncIterator[bytes]:
        """The body as chunks, read as the client sends it (once only)."""
        if self._stream_taken:
            raise RuntimeError("the request body was already read")
        self._stream_taken = True
        return self.channel.body()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; 413 past ``limit`` bytes."""
        out = bytearray()
        async for chunk in self.stream():
            out += chunk
            if limit is not None and len(out) > limit:
                raise HTTPError(413, f"the body is larger than {limit} bytes")
        return bytes(out)

    @property
    def mount_path(self) -> str:
        """The consumed part of the path (after ``root_path``), as sent."""
        raw = self.raw_prepath
        return self.root_path + "/" + "/".join(raw) if raw else self.root_path

    # -- response side --------------------------------------------------------

    def set_status(self, code: int) -> None:
        self._not_started()
        self.code = int(code)

    def set_header(self, name: str, value: str) -> None:
        self._not_started()
        lower = name.lower()
        self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != lower]
        self.response_headers.append((name, str(value)))

    def add_header(self, name: str, value: str) -> None:
        self._not_started()
        self.response_headers.append((name, str(value)))

    def get_response_header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.response_headers:
            if key.lower() == lower:
                return value
        return None

    def _not_started(self) -> None:
        if self.started:
            raise RuntimeError("the response headers were already sent")

    async def start(self) -> None:
        """Send the status and headers (``write`` does it when first called)."""
        if not self.started:
            self.started = True
            await self.channel.start_response(self.code, self.response_headers)

    async def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        await self.start()
        if data:
            self.bytes_sent += len(data)
            await self.channel.write(data)

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` (sendfile where
        the transport allows it)."""
        await self.start()
        if count:
            self.bytes_sent += count
            await self.channel.send_file(file, offset, count)

    async def finish(self) -> None:
        if not self.finished:
            await self.start()
            self.finished = True
            await self.channel.end_response()

    async def respond(self, code: int, body: bytes, content_type: str = "text/html; charset=utf-8",
                      headers: Iterable[tuple[str, str]] = ()) -> None:
        """A whole response in one go."""
        self.set_status(code)
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.set_header(name, value)
        await self.write(body)
        await self.finish()

    async def respond_error(self, error: HTTPError, detail: str | None = None) -> None:
        headers = list(error.headers)
        if error.close:
            headers.append(("Connection", "close"))
        self.response_headers = []
        await self.respond(error.status, error_page(error.status, error.message, detail),
                           headers=headers)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r}>"


class Resource:
    """A node of the resource tree.

    Children put with :meth:`put_child` are found by ``get_child``; override
    ``get_child`` to make them on demand.  ``render_GET``/``render_POST``/…
    may be plain or ``async def``; they return ``bytes``/``str`` (the body),
    or ``None`` after writing the response themselves.
    """

    #: A leaf renders the whole rest of the path itself.
    is_leaf = False

    def __init__(self) -> None:
        self.children: dict[str, Resource] = {}

    def put_child(self, segment: str, child: Resource) -> None:
        self.children[segment] = child

    def get_child(self, segment: str, request: Request) -> Resource | None:
        """The child for ``segment``; None means 404."""
        return self.children.get(segment)

    def allowed_methods(self) -> list[str]:
        names = sorted(name[7:] for name in dir(self) if name.startswith("render_")
                       and name[7:].isupper() and callable(getattr(self, name)))
        if "GET" in names and "HEAD" not in names:
            names.append("HEAD")
        return names

    async def render(self, request: Request) -> Any:
        method = request.method
        handler = getattr(self, f"render_{method}", None) if method.isupper() else None
        if handler is None and method == "HEAD":
            handler = getattr(self, "render_GET", None)
        if handler is None:
            raise HTTPError(405, f"{method} is not allowed here",
                            [("Allow", ", ".join(self.allowed_methods()))])
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result


class NoResource(Resource):
    is_leaf = True

    def __init__(self, message: str = "nothing here") -> None:
        super().__init__()
        self.message = message

    async def render(self, request: Request) -> Any:
        raise HTTPError(404, self.message)


def traverse(root: Resource, request: Request) -> Resource:
    """Walk the tree for ``request.postpath``; 404 if a child is missing."""
    resource = root
    while request.postpath and not resource.is_leaf:
        segment = request.postpath[0]
        child = resource.get_child(segment, request)
        if child is None:
            raise HTTPError(404, f"no resource at {request.path}")
        request.prepath.append(request.postpath.pop(0))
        request.raw_prepath.append(request.raw_postpath.pop(0))
        resource = child
    return resource


async def render_resource(root: Resource, request: Request) -> None:
    """Find the resource for ``request`` and answer it; a plain return value
    becomes the body.  Errors propagate (the caller turns them into pages)."""
    resource = traverse(root, request)
    result = await resource.render(request)
    if request.finished:
        return
    if result is None:
        if not request.started and request.get_response_header("Content-Length") is None:
            request.set_header("Content-Length", "0")
        await request.finish()
        return
    if isinstance(result, str):
        result = result.encode("utf-8")
        if not request.started and request.get_response_header("Content-Type") is None:
            request.set_header("Content-Type", "text/html; charset=utf-8")
    if not isinstance(result, (bytes, bytearray, memoryview)):
        raise TypeError(f"{type(resource).__name__}.render_{request.method} returned "
                        f"{type(result).__name__}; return bytes, str or None")
    if not request.started:
        if request.get_response_header("Content-Type") is None:
            request.set_header("Content-Type", "text/html; charset=utf-8")
        request.set_header("Content-Length", str(len(result)))
    await request.write(bytes(result))
    await request.finish()
