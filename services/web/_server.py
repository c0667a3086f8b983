"""The asyncio adapter: sockets in, :class:`HTTPMachine` events, resources out.

One :class:`HTTPServer` owns its listening sockets, every connection and
every connection's task: ``close()`` ends them all (asyncio's own
``Server.close`` leaves accepted connections open).  Each connection runs
one task that reads a request, renders it, writes the answer and starts the
next cycle, so pipelined requests are answered in order.

Flow control both ways: writes wait while the transport is paused
(``pause_writing``), and reading stops while more than ``max_pipelined``
unparsed bytes wait or a body chunk waits for the resource to take it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as _ssl
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from broker._api import release_source, source_of  # PB's own per-source counting

from ._core import (
    HTTPError,
    Request,
    Resource,
    ResponseAborted,
    SMALL_FILE,
    error_page,
    http_date,
    read_span,
    render_resource,
)
from ._http import BODY_END, CLOSED, NEED_DATA, PAUSED, HTTPLimits, HTTPMachine, RequestHead

__all__ = ["HTTPServer", "serve_http"]

access_log = logging.getLogger("pb.web.access")

#: After an error answer, how long input is read and dropped before closing.
LINGER = 2.0
_log = logging.getLogger("pb.web")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _log_field(text: str | None) -> str:
    """A quoted access-log field: quotes, backslashes and control characters
    escaped, so a client cannot forge log lines."""
    if text is None:
        return "-"
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def combined_log_line(request: Request, status: int, size: int, when: float) -> str:
    """One line in the combined log format (Apache's ``combined``)."""
    t = time.gmtime(when)
    stamp = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
    host = request.client[0] if request.client else "-"
    line = _log_field(f"{request.method} {request.target} HTTP/{request.http_version}")
    return (f'{host} - - [{stamp}] "{line}" {status} {size if size else "-"} '
            f'"{_log_field(request.get_header("referer"))}" '
            f'"{_log_field(request.get_header("user-agent"))}"')


class _ClientGone(Exception):
    pass


class HTTPProtocol(asyncio.Protocol):
    """One HTTP connection: feeds the machine, runs the request loop."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.limits = server.limits
        self.machine = HTTPMachine(server.limits)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        #: What HTTPServer counts this connection under (max_connections_per_source).
        self.counted_source: Any = None
        self._data_ready = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._lost = False
        self._reading_paused = False
        self._cycle_bytes = 0
        self._unread = 0  # bytes received since the machine last ran dry
        self._in_request = False
        self._reading_body = False  # the resource is waiting for body bytes
        self._linger_needed = False
        self._discarding = False
        self._peer_eof = False
        self.task: asyncio.Task[None] | None = None
        self.scheme = "http"
        # The request loop's wait for bytes has a deadline; one timer per
        # connection, re-armed only when it fires early or must fire sooner,
        # serves every wait (a timeout block per request measured ~7% of a
        # keep-alive request's time).
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.server._connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return  # lingering after an error: dropped unread
        self._cycle_bytes += len(data)
        self._unread += len(data)
        self.machine.receive_data(data)
        self._data_ready.set()
        # Stop reading while the request loop has not taken what it has:
        # pipelined heads or a body chunk the resource is not reading yet.
        if self._unread > self.limits.max_pipelined and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._discarding:
            self._data_ready.set()
            return False
        self.machine.receive_data(b"")
        self._data_ready.set()
        if self._in_request and not self._reading_body:
            # The client closed while its request is being answered.  A
            # half-close is legal HTTP but no browser or curl does it, and
            # a closed client must stop the work done for it (as nginx
            # does for proxied requests): treat it as gone.
            return False
        return True  # keep our side open to finish the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._data_ready.set()
        self._can_write.set()
        self.server._connection_lost(self)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- helpers for the request loop -----------------------------------------

    def _resume_reading(self) -> None:
        self._unread = 0  # called when the machine needs data: all was parsed
        if self._reading_paused and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    async def _wait_for_data(self, deadline: float) -> bool:
        """Wait until data_received (or the connection's end) sets
        ``_data_ready``; False if ``deadline`` (loop time) came first."""
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._deadline_passed)
        self._deadline = deadline
        try:
            await self._data_ready.wait()
        finally:
            self._deadline = None
        if self._timed_out:
            self._timed_out = False
            return False
        return True

    def _deadline_passed(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._lost:
            return  # not waiting now: the next wait arms a timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._timed_out = True
            self._data_ready.set()
        else:
            self._timer = loop.call_at(deadline, self._deadline_passed)

    async def _next(self, deadline: float | None) -> Any:
        """The machine's next event, waiting for bytes until ``deadline``
        (loop time); TimeoutError past it."""
        while True:
            event = self.machine.next_event()
            if event is NEED_DATA:
                if self._lost:
                    return CLOSED
                self._data_ready.clear()
                self._resume_reading()
                if deadline is None:
                    await self._data_ready.wait()
                elif not await self._wait_for_data(deadline):
                    raise TimeoutError
                continue
            if event is PAUSED:
                return CLOSED
            return event

    def _write(self, data: bytes) -> None:
        if data and not self._lost:
            self.transport.write(data)  # type: ignore[union-attr]

    async def _drain(self) -> None:
        if self._lost:
            raise _ClientGone()
        if not self._can_write.is_set():
            await self._can_write.wait()
            if self._lost:
                raise _ClientGone()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- the request loop -----------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._lost:
                self._cycle_bytes = self.machine.buffered
                try:
                    head = await self._read_head()
                except HTTPError as error:
                    self._write(self.machine.error_response(error))
                    self._linger_needed = True
                    break
                if head is None:
                    break
                if not await self._serve(head):
                    self._linger_needed = True
                    break
                if not self.machine.start_next_cycle():
                    break
            if self._linger_needed:
                await self._linger()
        except _ClientGone:
            pass
        finally:
            self._close()

    async def _linger(self) -> None:
        """Close after an error without losing the answer: a client may
        still be sending (a body we refused with 413); closing with its
        bytes unread makes the kernel send a reset, which can destroy our
        answer before the client reads it.  So send our FIN, then read and
        drop what comes for up to LINGER seconds, or until the client
        closes (as nginx's lingering close does)."""
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            return
        self._discarding = True
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            return
        self._resume_reading()
        self._data_ready.clear()
        try:
            async with asyncio.timeout(LINGER):
                while not self._lost and not self._peer_eof:
                    self._data_ready.clear()
                    await self._data_ready.wait()
        except TimeoutError:
            pass

    async def _read_head(self) -> RequestHead | None:
        """Wait for a request head: the first byte within the idle timeout
        (else close quietly), the whole head within the header timeout of
        that byte (else 408: a slowloris client)."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        idle_deadline = loop.time() + limits.idle_timeout
        header_deadline: float | None = None
        while True:
            event = self.machine.next_event()
            if event is NEED_DATA:
                if self._lost:
                    return None
                if header_deadline is None and (self._cycle_bytes or self.machine.buffered):
                    header_deadline = loop.time() + limits.header_timeout
                self._data_ready.clear()
                self._resume_reading()
                if not await self._wait_for_data(header_deadline or idle_deadline):
                    if header_deadline is None and not self._cycle_bytes:
                        return None  # an idle keep-alive connection
                    raise HTTPError(408, f"the request headers did not arrive within "
                                         f"{limits.header_timeout:g} s", close=True)
                continue
            if event is CLOSED or event is PAUSED:
                return None
            if isinstance(event, RequestHead):
                return event
            raise HTTPError(400, "unexpected data before a request", close=True)

    def _body(self) -> AsyncIterator[bytes]:
        return self._body_gen()

    async def _body_gen(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        if self.machine.they_are_waiting_for_100_continue:
            self._write(self.machine.continue_100())
        while True:
            self._reading_body = True
            try:
                event = await self._next(loop.time() + self.limits.body_timeout)
            except TimeoutError:
                raise HTTPError(408, f"no request body data for {self.limits.body_timeout:g} s",
                                close=True) from None
            finally:
                self._reading_body = False
            if event is BODY_END:
                return
            if event is CLOSED:
                raise _ClientGone()
            yield event

    async def _serve(self, head: RequestHead) -> bool:
        """Answer one request; True if the connection may go on."""
        server = self.server
        channel = _Channel(self)
        request = Request(channel, head.method, head.target, head.headers, client=self.client,
                          scheme=self.scheme, http_version=head.http_version,
                          debug=server.debug)
        server.requests += 1
        keep_going = True
        self._in_request = True
        try:
            await render_resource(server.resource, request)
        except _ClientGone:
            raise
        except asyncio.CancelledError:
            if self._lost:
                raise _ClientGone() from None
            raise
        except Exception as exc:
            keep_going = await self._fail(request, exc)
        finally:
            self._in_request = False
        status = self.machine.response_status or 0
        size = request.bytes_sent
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(combined_log_line(request, status, size, time.time()))
        if not keep_going or self._lost:
            return False
        if not self.machine.body_done:
            keep_going = await self._discard_body()
        return keep_going

    async def _fail(self, request: Request, exc: Exception) -> bool:
        if isinstance(exc, HTTPError):
            error = exc
            detail = None
        elif isinstance(exc, ResponseAborted):
            _log.warning("%s %s: %s", request.method, request.target, exc)
            error = HTTPError(502, str(exc))
            detail = None
        else:
            _log.error("error rendering %s %s: %r", request.method, request.target, exc,
                       exc_info=exc)
            error = HTTPError(500, "the server failed to answer this request")
            detail = "".join(traceback.format_exception(exc)) if self.server.debug else None
        if not request.started and self.machine.can_send_error():
            self._write(self.machine.error_response(error, detail))
            return not error.close
        # Headers are out: the only honest signal left is a cut connection.
        if self.transport is not None:
            self.transport.abort()
        return False

    async def _discard_body(self) -> bool:
        """The resource answered without reading the whole body: read and
        drop a little of it to keep the connection, or give up on it."""
        if self.machine.they_are_waiting_for_100_continue:
            return False  # the client has not sent it; never will.
        budget = 65536
        loop = asyncio.get_running_loop()
        try:
            while True:
                event = await self._next(loop.time() + 1.0)
                if event is BODY_END:
                    return True
                if event is CLOSED:
                    return False
                budget -= len(event)
                if budget < 0:
                    return False
        except (TimeoutError, HTTPError):
            return False


class _Channel:
    """How a :class:`Request` reaches its HTTP connection.

    The response head waits in ``_head`` until the first body bytes (or the
    end), so a small page leaves in one ``transport.write``."""

    def __init__(self, protocol: HTTPProtocol) -> None:
        self.protocol = protocol
        self._head = b""

    def body(self) -> AsyncIterator[bytes]:
        return self.protocol._body()

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._head = self.protocol.machine.response(status, headers)

    def _take_head(self) -> bytes:
        head, self._head = self._head, b""
        return head

    async def write(self, data: bytes) -> None:
        protocol = self.protocol
        protocol._write(self._take_head() + protocol.machine.data(data))
        await protocol._drain()

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        protocol = self.protocol
        if protocol.machine.is_head_request:
            return
        if count <= SMALL_FILE:
            # A read from the page cache is cheaper than the sendfile
            # machinery (a drain wait, a pause of reading) for a small page.
            await self.write(read_span(file, offset, count))
            return
        transport = protocol.transport
        if protocol.scheme == "http" and hasattr(os, "sendfile"):
            before, after = protocol.machine.file_span(count)
            protocol._write(self._take_head() + before)
            await protocol._drain()
            loop = asyncio.get_running_loop()
            try:
                # Zero-copy where the transport allows (plain TCP); asyncio
                # falls back to reading and writing otherwise.
                await loop.sendfile(transport, file, offset, count)  # type: ignore[arg-type]
            except (ConnectionError, RuntimeError) as exc:
                if protocol._lost or transport.is_closing():  # type: ignore[union-attr]
                    raise _ClientGone() from exc
                raise
            protocol._write(after)
            await protocol._drain()
            return
        remaining = count
        file.seek(offset)
        while remaining > 0:
            chunk = await asyncio.to_thread(file.read, min(remaining, 256 * 1024))
            if not chunk:
                raise OSError("the file became shorter while it was sent")
            remaining -= len(chunk)
            await self.write(chunk)

    async def end_response(self) -> None:
        self.protocol._write(self._take_head() + self.protocol.machine.end())


_OVERLOADED = error_page(503, "the server has too many connections; try again later")
_SOURCE_OVERLOADED = error_page(503, "too many connections from your address; "
                                     "close some, or try again later")
_STOPPING = error_page(503, "the server is shutting down; try again later")


class HTTPServer:
    """Serves a resource tree over HTTP on one or more listening sockets."""

    def __init__(self, resource: Resource, *, limits: HTTPLimits | None = None,
                 debug: bool = False) -> None:
        self.resource = resource
        self.limits = limits or HTTPLimits()
        self.debug = debug
        self._servers: list[asyncio.base_events.Server] = []
        self._protocols: set[HTTPProtocol] = set()
        #: source -> connections open from it (those that were let in)
        self._per_source: dict[Any, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.requests = 0
        self._previous_handler: Any = None
        self._handler_installed = False

    def _connection_made(self, protocol: HTTPProtocol) -> None:
        transport = protocol.transport
        assert transport is not None
        source = source_of(protocol.client)
        count = self._per_source.get(source, 0) if source is not None else 0
        if (self._closing or len(self._protocols) >= self.limits.max_connections
                or count >= self.limits.max_connections_per_source):
            body = (_STOPPING if self._closing else
                    _OVERLOADED if len(self._protocols) >= self.limits.max_connections else
                    _SOURCE_OVERLOADED)
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\nDate: %s\r\n\r\n"
                % (len(body), http_date().encode()) + body)
            transport.close()
            return
        if source is not None:
            self._per_source[source] = count + 1
            protocol.counted_source = source
        self._protocols.add(protocol)
        task = asyncio.get_running_loop().create_task(protocol.run())
        protocol.task = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("connection task failed", exc_info=task.exception())

    def _connection_lost(self, protocol: HTTPProtocol) -> None:
        source = protocol.counted_source
        if source is not None:
            protocol.counted_source = None
            release_source(self._per_source, source)
        self._protocols.discard(protocol)
        task = protocol.task
        # A client that went away cancels the work done for it (a relayed
        # request, an application call); the loop sees _lost and ends.
        if task is not None and not task.done():
            task.cancel()

    @property
    def connections(self) -> int:
        return len(self._protocols)

    async def listen(self, host: str | None = "127.0.0.1", port: int = 0, *,
                     path: str | None = None, ssl: _ssl.SSLContext | None = None,
                     backlog: int = 512) -> Any:
        """Start listening; returns the address (``(host, port)`` or path)."""
        loop = asyncio.get_running_loop()
        if ssl is not None and not self._handler_installed:
            self._install_tls_error_filter(loop)
        if path is not None:
            server = await loop.create_unix_server(lambda: HTTPProtocol(self), path,
                                                   ssl=ssl, backlog=backlog)
        else:
            server = await loop.create_server(lambda: HTTPProtocol(self), host, port,
                                              ssl=ssl, backlog=backlog)
        self._servers.append(server)
        sock = server.sockets[0]
        return path if path is not None else sock.getsockname()[:2]

    def _install_tls_error_filter(self, loop: asyncio.AbstractEventLoop) -> None:
        """A client that fails the TLS handshake (plain HTTP on the HTTPS
        port, a scanner) is routine for a web server; asyncio reports each
        with a traceback through the loop's exception handler.  Log one line
        instead, and pass everything else on to the previous handler."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, (_ssl.SSLError, ConnectionError, TimeoutError)) and \
                    "incoming connection" in context.get("message", ""):
                _log.info("TLS handshake failed: %s", exc)
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        self._previous_handler = previous
        self._handler_installed = True

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for server in self._servers for s in server.sockets]

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting; let requests in progress finish within ``grace``
        seconds; then close every connection and await every task."""
        self._closing = True
        for server in self._servers:
            server.close()
        if grace and self._tasks:
            # Idle keep-alive connections end at once; busy ones get the grace.
            for protocol in list(self._protocols):
                if protocol.machine.waiting_for_head and protocol._cycle_bytes == 0:
                    protocol._close()
            await asyncio.wait(list(self._tasks), timeout=grace)
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._handler_installed:
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)
            self._handler_installed = False


async def serve_http(resource: Resource, host: str = "127.0.0.1", port: int = 0, *,
                     limits: HTTPLimits | None = None, ssl: _ssl.SSLContext | None = None,
                     debug: bool = False) -> HTTPServer:
    """Serve ``resource`` on ``host:port``; close the result when done."""
    server = HTTPServer(resource, limits=limits, debug=debug)
    await server.listen(host, port, ssl=ssl)
    return server
