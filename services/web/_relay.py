"""The relay: a front server hands a request to a personal server over PB.

On the wire, one request is one call::

    status, headers, first, rest = await publisher.call_remote(
        "handle", RelayedRequest(...), body)

* ``RelayedRequest`` is a registered copy (method, target, headers, client
  address, scheme, mount path); nothing else of the front travels.
* ``body`` is a :class:`BodySource` (None for a request without a body), a
  ``Referenceable`` with the same ``pull``/``close`` methods as a broker
  stream, so the personal server reads it with a plain
  ``broker.RemoteStream``: the body crosses as the client sends it, a
  window of pulls at a time, never whole.
* ``first`` is what the resource wrote by the time its head was ready (up
  to CHUNK): a small page's whole body, with ``rest`` None, in one round
  trip.  Otherwise ``rest.stream()`` is a broker stream of the other
  chunks.  The front pulls the next chunk only after writing the last one
  to the client (whose socket pushes back), and the resource's writes wait
  once ``_RelayChannel.WINDOW`` bytes are waiting: backpressure end to end.

A client that goes away makes the front close the stream, which closes the
generator in the personal server, which cancels the rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import broker
import jelly
from broker import _eager


from ._core import HTTPError, Request, Resource, ResponseAborted, render_resource
from ._http import headers_are_valid

__all__ = ["BodySource", "Mount", "Publisher", "RelayResource", "RelayedRequest",
           "SocketConnector"]

_log = logging.getLogger("pb.web.relay")

#: Response chunks are cut to this size: well under the broker's 4 MiB frame.
CHUNK = 256 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1) are the front's business, not the backend's.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "proxy-authenticate",
                         "proxy-authorization"})

_MAX_HEADERS = 256
_HOST = re.compile(r"[0-9A-Za-z.\-:\[\]]+")
_MAX_TEXT = 65536


@jelly.register_copy
class RelayedRequest(jelly.Copyable, jelly.RemoteCopy):
    """What a personal server learns about a request."""

    copy_tag = "pb.web.RelayedRequest"

    def __init__(self, method: str, target: str, headers: list[list[str]],
                 client: list[Any] | None, scheme: str, http_version: str, mount: str) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.client = client
        self.scheme = scheme
        self.http_version = http_version
        self.mount = mount

    def get_state_to_copy(self) -> Any:
        return {"method": self.method, "target": self.target, "headers": self.headers,
                "client": self.client, "scheme": self.scheme,
                "http_version": self.http_version, "mount": self.mount}

    def set_copyable_state(self, state: Any) -> None:
        # A copy comes from the network: check every field's type and size.
        if not isinstance(state, dict):
            raise TypeError("a RelayedRequest's state is a dict")
        for name in ("method", "target", "scheme", "http_version", "mount"):
            value = state.get(name)
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise TypeError(f"RelayedRequest.{name} must be a str of at most {_MAX_TEXT}")
        headers = state.get("headers")
        if type(headers) is not list or len(headers) > _MAX_HEADERS or not all(
                (type(h) is list or type(h) is tuple) and len(h) == 2
                and type(h[0]) is str and type(h[1]) is str for h in headers):
            raise TypeError("RelayedRequest.headers must be a list of [name, value] strs")
        client = state.get("client")
        if client is not None and not (isinstance(client, (list, tuple)) and len(client) == 2
                                       and isinstance(client[0], str)
                                       and isinstance(client[1], int)):
            raise TypeError("RelayedRequest.client must be [host, port] or None")
        if state["scheme"] not in ("http", "https"):
            raise TypeError("RelayedRequest.scheme must be http or https")
        if not state["target"].startswith("/"):
            raise TypeError("RelayedRequest.target must start with /")
        self.method = state["method"]
        self.target = state["target"]
        self.headers = headers
        self.client = list(client) if client is not None else None
        self.scheme = state["scheme"]
        self.http_version = state["http_version"]
        self.mount = state["mount"]


# -- the personal server's side ---------------------------------------------------


class _RelayChannel:
    """A request's channel inside a personal server: the body comes from
    the front; the response waits in a byte buffer that the answer (and
    then the rest stream) drains.

    The buffer is bounded: a write that leaves more than ``WINDOW`` bytes
    waiting makes the resource wait until the front has taken some, so a
    large or endless response never piles up here (backpressure)."""

    #: Bytes a resource may have written ahead of the front.
    WINDOW = 4 * CHUNK

    def __init__(self, body: Any, head_request: bool) -> None:
        self._body = body
        self.head_request = head_request
        self.head: list[Any] | None = None  # [status, [[name, value], ...]]
        self.ended = False
        self.buffered = 0
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into _chunks[0], taken already
        self._reader: asyncio.Future[None] | None = None  # waits for data or the end
        self._writer: asyncio.Future[None] | None = None  # waits for room

    def body(self) -> AsyncIterator[bytes]:
        return self._read_body()

    async def _read_body(self) -> AsyncIterator[bytes]:
        if self._body is None:
            return
        async for chunk in self._body:
            if not isinstance(chunk, bytes):
                raise TypeError("the front sent a body chunk that is not bytes")
            yield chunk

    # -- the resource's side ----------------------------------------------------

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.head = [status, [[k, v] for k, v in headers]]
        self._wake_reader()

    async def write(self, data: bytes) -> None:
        if self.head_request or not data:
            return
        self._chunks.append(bytes(data))
        self.buffered += len(data)
        self._wake_reader()
        while self.buffered > self.WINDOW:
            self._writer = asyncio.get_running_loop().create_future()
            try:
                await self._writer
            finally:
                self._writer = None

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        if self.head_request:
            return
        file.seek(offset)
        while count > 0:
            chunk = await asyncio.to_thread(file.read, min(count, CHUNK))
            if not chunk:
                raise OSError("the file became shorter while it was sent")
            count -= len(chunk)
            await self.write(chunk)

    async def end_response(self) -> None:
        self.ended = True
        self._wake_reader()

    # -- the answer's side ----------------------------------------------------------

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` buffered bytes (small writes joined, large ones
        cut), without waiting."""
        chunks = self._chunks
        out: list[bytes] = []
        size = 0
        while chunks and size < limit:
            head = chunks[0]
            want = limit - size
            if self._offset == 0 and len(head) <= want:
                out.append(chunks.popleft())
                size += len(head)
                continue
            piece = memoryview(head)[self._offset:self._offset + want]
            out.append(bytes(piece))
            size += len(piece)
            self._offset += len(piece)
            if self._offset == len(head):
                chunks.popleft()
                self._offset = 0
        self.buffered -= size
        if self._writer is not None and self.buffered <= self.WINDOW and not self._writer.done():
            self._writer.set_result(None)
        return out[0] if len(out) == 1 else b"".join(out)

    async def wait(self, task: asyncio.Task[None]) -> None:
        """Until the resource has written something, ended, or stopped
        (``task`` done)."""
        waiter = self._reader = asyncio.get_running_loop().create_future()

        def stopped(_: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(stopped)
        try:
            await waiter
        finally:
            self._reader = None
            task.remove_done_callback(stopped)


class Publisher(broker.Root):
    """What a personal server publishes: a resource tree, reachable by the
    front with ``handle``.  ``requests`` counts what it answered."""

    #: How long the rest of a response waits for the front to ask for it.
    claim_timeout = 30.0

    def __init__(self, resource: Resource, *, debug: bool = False) -> None:
        self.resource = resource
        self.debug = debug
        self.requests = 0

    def remote_handle(self, request: RelayedRequest, body: Any = None) -> Any:
        """Render ``request``; answer ``[status, headers, first_body, rest]``.

        ``first_body`` is what the resource wrote before it had to wait (for
        a small page: all of it, and ``rest`` is None: one round trip).
        Otherwise ``rest`` is a reference whose ``stream()`` yields the other
        chunks.

        A plain method, so that the broker calls it inside its receive pass
        with no task running: the rendering then starts here, in its own
        task but eagerly (``broker._eager``), and a page rendered without a
        wait is answered in this same pass: no task for the call, no loop
        turn and no wake-up between the call and its answer.  Otherwise the
        answer is a coroutine, which the broker awaits."""
        if not isinstance(request, RelayedRequest):
            raise TypeError("handle takes a RelayedRequest")
        if body is not None and not isinstance(body, broker.RemoteReference):
            raise TypeError("handle's body is a reference to the front's body source")
        self.requests += 1
        stream = broker.RemoteStream(body, window=4) if body is not None else None
        channel = _RelayChannel(stream, request.method == "HEAD")
        client = tuple(request.client) if request.client else None
        local = Request(channel, request.method, request.target,
                        [(k.lower(), v) for k, v in request.headers],
                        client=client, scheme=request.scheme,  # type: ignore[arg-type]
                        http_version=request.http_version, debug=self.debug,
                        root_path=request.mount)
        started = _eager.start(asyncio.get_running_loop(), self._render(local))
        if started.done and stream is None:
            if started.error is not None:
                raise started.error
            return self._answer(channel, None, None)
        # A body stream to close (which waits), or a rendering still running.
        return self._answer_later(channel, started, stream)

    async def _answer_later(self, channel: _RelayChannel, started: _eager.Started,
                            stream: Any) -> list[Any]:
        task = started.task
        rest: _ResponseRest | None = None
        try:
            if task is None:
                if started.error is not None:
                    raise started.error
            else:
                while channel.head is None and not task.done():
                    await channel.wait(task)
            answer = self._answer(channel, task, stream)
            rest = answer[3]
            return answer
        finally:
            if rest is None:
                await _finish(task, stream)

    def _answer(self, channel: _RelayChannel, task: asyncio.Task[None] | None,
                stream: Any) -> list[Any]:
        """The answer once the head is ready; ``task`` is None when the
        rendering is over (and did not fail)."""
        if channel.head is None:
            if task is not None:
                task.result()  # raises what the rendering raised
            raise RuntimeError("the resource ended without a response")
        # What is written already goes with the head: for a small page, all of it.
        first = channel.take(CHUNK)
        rest = None
        if not (channel.ended and not channel.buffered):
            if (task is None or task.done()) and not channel.buffered:
                if task is not None:
                    task.result()  # it stopped without ending: raise why
                raise RuntimeError("the resource stopped without ending its response")
            rest = _ResponseRest(channel, task, stream, self.claim_timeout)
        return [channel.head[0], channel.head[1], first, rest]

    async def _render(self, request: Request) -> None:
        try:
            await render_resource(self.resource, request)
        except HTTPError as error:
            if request.started:
                raise
            await request.respond_error(error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if request.started:
                raise
            _log.error("error rendering %s %s: %r", request.method, request.target, exc,
                       exc_info=exc)
            import traceback
            detail = "".join(traceback.format_exception(exc)) if self.debug else None
            await request.respond_error(HTTPError(500, "the server failed to answer this request"),
                                        detail)


async def _finish(task: asyncio.Task[None] | None, stream: Any) -> None:
    if task is not None:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
    if stream is not None:
        with contextlib.suppress(Exception):
            await stream.aclose()


class _ResponseRest(broker.Referenceable):
    """The rest of a response that did not fit in the first answer.  Its
    ``stream()`` is a broker stream (one pull per chunk, a window in flight);
    unclaimed for ``claim_timeout`` seconds, the rendering is cancelled.
    ``task`` is None when the rendering is over already."""

    def __init__(self, channel: _RelayChannel, task: asyncio.Task[None] | None, body: Any,
                 claim_timeout: float) -> None:
        self._channel = channel
        self._task = task
        self._body = body
        self._claimed = False
        self._timer = asyncio.get_running_loop().call_later(claim_timeout, self._expire)

    def _expire(self) -> None:
        if not self._claimed and self._task is not None:
            self._task.cancel()

    def remote_stream(self) -> AsyncIterator[bytes]:
        if self._claimed:
            raise RuntimeError("the rest of this response was already claimed")
        self._claimed = True
        self._timer.cancel()
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        channel, task = self._channel, self._task
        try:
            while True:
                if channel.buffered:
                    # Small writes are joined, so a chatty application does
                    # not cost one PB round trip per write.
                    yield channel.take(CHUNK)
                elif channel.ended:
                    return
                elif task is None:
                    return
                elif task.done():
                    task.result()  # raises what the rendering raised
                    return
                else:
                    await channel.wait(task)
        finally:
            await _finish(task, self._body)


# -- the front's side ---------------------------------------------------------------


class BodySource(broker.Referenceable):
    """The request body, pulled by the personal server (``pull``/``close``,
    the broker stream protocol)."""

    def __init__(self, request: Request, mount: Mount) -> None:
        self._stream = request.stream()
        self._lock = asyncio.Lock()
        self._done = False
        self._mount = mount

    async def remote_pull(self) -> list[Any]:
        async with self._lock:
            if self._done:
                return [False, None]
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                self._done = True
                return [False, None]
            self._mount.bytes_in += len(chunk)
            return [True, chunk]

    async def remote_close(self) -> None:
        self._done = True


@dataclass
class Mount:
    """One personal server as the front sees it, with its counters."""

    name: str
    kind: str  # "socket" or "published"
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    since: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "requests": self.requests,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "errors": self.errors,
                "since": self.since}


class Unavailable(Exception):
    """The personal server cannot be reached (502)."""


class SocketConnector:
    """Reaches a personal server on a UNIX socket, keeping one PB connection
    and making a new one after it drops (so the first request after the
    personal server comes back succeeds)."""

    def __init__(self, path: str, owner_uid: int | None, mount: Mount,
                 connect_timeout: float = 1.0) -> None:
        self.path = path
        self.owner_uid = owner_uid
        self.mount = mount
        self.connect_timeout = connect_timeout
        self._conn: broker.Connection | None = None
        self._root: Any = None
        self._lock = asyncio.Lock()

    def _check_socket(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            raise Unavailable(f"{self.mount.name}'s personal server is not running "
                              f"(no socket)") from None
        except OSError as exc:
            raise Unavailable(f"{self.mount.name}'s personal server socket: {exc.strerror}") from None
        if not stat.S_ISSOCK(info.st_mode):
            raise Unavailable(f"{self.mount.name}'s personal server socket is not a socket")
        if self.owner_uid is not None and info.st_uid != self.owner_uid:
            _log.warning("refusing %s: owned by uid %d, not by %s (uid %d)",
                         self.path, info.st_uid, self.mount.name, self.owner_uid)
            raise Unavailable(f"{self.mount.name}'s personal server socket has the wrong owner")

    async def get(self) -> Any:
        conn = self._conn
        if conn is not None and conn.is_open and self._root is not None:
            return self._root  # the usual case: no lock to take
        async with self._lock:
            if self._conn is not None and self._conn.is_open and self._root is not None:
                return self._root
            await self.close()
            self._check_socket()
            try:
                conn = await broker.connect(path=self.path, timeout=self.connect_timeout)
            except (OSError, broker.PBError) as exc:
                raise Unavailable(f"{self.mount.name}'s personal server does not answer "
                                  f"({type(exc).__name__})") from None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    root = await conn.root()
            except (TimeoutError, OSError, broker.PBError):
                await conn.close("no root")
                raise Unavailable(f"{self.mount.name}'s personal server did not say hello") from None
            self._conn, self._root = conn, root
            return root

    async def close(self) -> None:
        conn, self._conn, self._root = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close("front closing")


class PublishedConnector:
    """A personal server that logged in to the front and published itself."""

    def __init__(self, publisher: Any, mount: Mount) -> None:
        self.publisher = publisher
        self.mount = mount

    async def get(self) -> Any:
        if not getattr(self.publisher, "is_alive", True):
            raise Unavailable(f"{self.mount.name}'s personal server went away")
        return self.publisher

    async def close(self) -> None:
        conn = getattr(self.publisher, "connection", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close("unmounted by an administrator")


# Request headers the front replaces with its own.
_REPLACED = _HOP_BY_HOP | {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                           "forwarded"}


def _forwarded_headers(request: Request) -> list[list[str]]:
    headers = []
    xff = host = old = None
    # One pass over the headers (this runs for every relayed request).
    for name, value in request.headers:
        if name not in _REPLACED:
            headers.append([name, value])
            if name == "host" and host is None:
                host = value
        elif name == "x-forwarded-for":
            xff = value if xff is None else xff
        elif name == "forwarded":
            old = value if old is None else old
    client_ip = request.client[0] if request.client else "unknown"
    headers.append(["x-forwarded-for", f"{xff}, {client_ip}" if xff else client_ip])
    headers.append(["x-forwarded-proto", request.scheme])
    if host:
        headers.append(["x-forwarded-host", host])
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    element = f"for={node};proto={request.scheme}"
    if host and _HOST.fullmatch(host):
        element += f";host={host}"
    headers.append(["forwarded", f"{old}, {element}" if old else element])
    return headers


class RelayResource(Resource):
    """A leaf that relays every request under it to a personal server."""

    is_leaf = True

    def __init__(self, connector: Any, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.connector = connector
        self.mount = connector.mount
        self.timeout = timeout

    async def render(self, request: Request) -> Any:
        mount = self.mount
        if not request.raw_postpath:
            location = request.path + "/" + (("?" + request.query) if request.query else "")
            await request.respond(301, b"", headers=[("Location", location)])
            return None
        mount.requests += 1
        rest = "/" + "/".join(request.raw_postpath)
        target = rest + (("?" + request.query) if request.query else "")
        copy = RelayedRequest(request.method, target, _forwarded_headers(request),
                              list(request.client) if request.client else None,
                              request.scheme, request.http_version, request.mount_path)
        try:
            publisher = await self.connector.get()
        except Unavailable as exc:
            mount.errors += 1
            raise HTTPError(502, str(exc)) from None
        # A request without a body sends no body source: one reference less.
        has_body = (request.get_header("transfer-encoding") is not None
                    or request.get_header("content-length", "0") != "0")
        body = BodySource(request, mount) if has_body else None
        stream: Any = None
        try:
            try:
                # The call's own timeout (one timer) rather than a timeout
                # block: this is the relay's per-request path.
                answer = await publisher.call_remote("handle", copy, body, timeout=self.timeout)
            except broker.CallTimeout:
                mount.errors += 1
                raise HTTPError(504, f"{mount.name}'s personal server did not answer within "
                                     f"{self.timeout:g} s") from None
            except (broker.ConnectionLost, broker.DeadReference) as exc:
                mount.errors += 1
                raise HTTPError(502, f"{mount.name}'s personal server went away "
                                     f"({type(exc).__name__})") from None
            except broker.PBError as exc:
                mount.errors += 1
                raise HTTPError(502, f"{mount.name}'s personal server failed: "
                                     f"{type(exc).__name__}") from None
            status, headers, first, rest = self._check_answer(answer)
            request.set_status(status)
            # Fresh, checked str pairs: appended directly (add_header checks
            # and converts each one again).
            request.response_headers.extend(
                [pair for pair in headers if pair[0].lower() not in _HOP_BY_HOP])
            mount.bytes_out += len(first)
            await request.write(first)
            if rest is not None:
                try:
                    async with asyncio.timeout(self.timeout):
                        stream = await rest.call_remote("stream")
                except (TimeoutError, broker.PBError) as exc:
                    mount.errors += 1
                    raise ResponseAborted(f"{mount.name}'s personal server did not send the rest "
                                          f"of its response ({type(exc).__name__})") from None
                while True:
                    try:
                        async with asyncio.timeout(self.timeout):
                            chunk = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        mount.errors += 1
                        raise ResponseAborted(f"{mount.name}'s personal server stopped sending "
                                              f"for {self.timeout:g} s") from None
                    except broker.PBError as exc:
                        mount.errors += 1
                        raise ResponseAborted(f"{mount.name}'s personal server failed "
                                              f"mid-response: {type(exc).__name__}: {exc}") from None
                    if not isinstance(chunk, bytes):
                        raise ResponseAborted("the personal server sent a body chunk that is "
                                              "not bytes")
                    mount.bytes_out += len(chunk)
                    await request.write(chunk)
                stream = None  # ran to its end: nothing to close
            await request.finish()
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await stream.aclose()
        return None

    @staticmethod
    def _check_answer(answer: Any) -> tuple[int, list[tuple[str, str]], bytes, Any]:
        # 1xx answers belong to the hop between client and front, not here.
        if not (type(answer) is list and len(answer) == 4 and type(answer[0]) is int
                and 200 <= answer[0] <= 599 and type(answer[1]) is list
                and type(answer[2]) is bytes
                and (answer[3] is None or isinstance(answer[3], broker.RemoteReference))):
            raise HTTPError(502, "the personal server sent a malformed answer")
        # Checked here, so a personal server cannot split the front's
        # response (CR/LF) or smuggle a malformed name through it (join, in
        # headers_are_valid, refuses a name or value that is not a str).
        try:
            headers = [(name, value) for name, value in answer[1]]
            valid = headers_are_valid(headers)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise HTTPError(502, "the personal server sent a malformed header")
        return answer[0], headers, answer[2], answer[3]
