"""Mount a WSGI application as a resource; it runs in a thread pool.

The application's thread reads the body (``wsgi.input``) and writes the
response through the event loop, waiting for each step: a slow client
holds one worker thread, never the loop, and nothing is buffered whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from ._core import HTTPError, Request, Resource

__all__ = ["WSGIResource"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Gone(Exception):
    """The client left; the application's thread stops at its next step."""


class _Input(io.RawIOBase):
    """``wsgi.input``: reads pull the body from the loop, chunk by chunk."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = request.stream()
        self._loop = loop
        self._buffer = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        if self._eof:
            return False
        future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        chunk = future.result()
        if chunk is None:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def _next(self) -> bytes | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._more():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buffer and (size < 0 or len(self._buffer) < size) and self._more():
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size >= 0:
            end = min(end, size)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data


class WSGIResource(Resource):
    is_leaf = True

    def __init__(self, app: WSGIApp, *, max_workers: int = 16,
                 server: tuple[str, int] = ("localhost", 80)) -> None:
        super().__init__()
        self.app = app
        self.server = server
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="pb-web-wsgi")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _environ(self, request: Request, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        rest = "/" + "/".join(request.raw_postpath) if request.raw_postpath else ""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": unquote(request.mount_path),
            "PATH_INFO": unquote(rest, encoding="latin-1"),
            "QUERY_STRING": request.query,
            "SERVER_NAME": self.server[0],
            "SERVER_PORT": str(self.server[1]),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
            "REMOTE_ADDR": request.client[0] if request.client else "",
            "REMOTE_PORT": str(request.client[1]) if request.client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": request.scheme,
            "wsgi.input": io.BufferedReader(_Input(request, loop)),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name == "content-length":
                environ["CONTENT_LENGTH"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    async def render(self, request: Request) -> Any:
        loop = asyncio.get_running_loop()
        gone = False

        def call(coro: Any) -> Any:
            if gone:
                coro.close()
                raise _Gone()
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

        def run() -> None:
            headers_set: list[Any] = []

            def start_response(status: str, headers: list[tuple[str, str]],
                               exc_info: Any = None) -> Callable[[bytes], None]:
                if exc_info is not None and request.started:
                    raise exc_info[1].with_traceback(exc_info[2])
                headers_set[:] = [status, headers]
                return write

            def write(data: bytes) -> None:
                if not request.started:
                    send_headers()
                call(request.write(data))

            def send_headers() -> None:
                if not headers_set:
                    raise RuntimeError("the WSGI application wrote before start_response")
                status, headers = headers_set
                request.set_status(int(status.split(" ", 1)[0]))
                for name, value in headers:
                    request.add_header(name, value)

            result = self.app(self._environ(request, loop), start_response)
            try:
                for chunk in result:
                    if chunk:
                        write(chunk)
                if not request.started:
                    send_headers()
                call(request.finish())
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        try:
            await loop.run_in_executor(self.executor, run)
        except _Gone:
            raise asyncio.CancelledError() from None
        except asyncio.CancelledError:
            gone = True
            raise
        except HTTPError:
            raise
        return None
