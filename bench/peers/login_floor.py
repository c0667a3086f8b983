"""The floor for a login: what asyncio itself costs for the same shape of
exchange, with no serializer, no broker and no authentication.

One "login" = a new TCP connection (the server writes a 4-byte greeting at
once, like a HELLO), two request/response round trips of length-prefixed
bytes (the one-trip login call, the size of ours, and the echo), and a
close that waits until the connection is closed.  (Ours takes one more
round trip on a first login, when the client holds no ticket yet.)  Server: ``asyncio.BufferedProtocol``
echoing each frame; client: ``loop.create_connection`` with a
``BufferedProtocol`` and one future per round trip.

    python -m peers.login_floor serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Callable

from _harness import announce, serve_main
from peers.login_common import HOST, async_driver, async_login_ops, serve_usage_requests

_HEADER = struct.Struct(">I")
_GREETING = _HEADER.pack(0)
_REQUESTS = (b"\x97\x01n,,n=alice,r=abcdefgh" + b"x" * 240, b"\xa2hi")


def unavailable() -> str | None:
    return None


class _Framed(asyncio.BufferedProtocol):
    """Collects length-prefixed frames; ``frame(body)`` is called per frame."""

    def __init__(self) -> None:
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._end = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        start = 0
        while self._end - start >= 4:
            (size,) = _HEADER.unpack_from(self._buf, start)
            stop = start + 4 + size
            if stop > self._end:
                break
            self.frame(bytes(self._view[start + 4:stop]))
            start = stop
        if start:
            self._buf[:self._end - start] = self._view[start:self._end]
            self._end -= start

    def frame(self, body: bytes) -> None:
        raise NotImplementedError


class _EchoServer(_Framed):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(_GREETING)

    def frame(self, body: bytes) -> None:
        self.transport.write(_HEADER.pack(len(body)) + body)


class _Client(_Framed):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.waiting: asyncio.Future | None = None
        self.greeted = False
        self.closed = loop.create_future()

    def frame(self, body: bytes) -> None:
        if not self.greeted:
            self.greeted = True
            return
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(body)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    async def request(self, body: bytes) -> bytes:
        self.waiting = self.loop.create_future()
        self.transport.write(_HEADER.pack(len(body)) + body)
        return await self.waiting


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoServer, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    serve_main("peers.login_floor", _serve, argv, watch_parent=serve_usage_requests)


def login_ops(port: int) -> dict[str, Callable[[], Any]]:
    async def login_once() -> None:
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_connection(lambda: _Client(loop), HOST, port)
        try:
            for body in _REQUESTS:
                if await client.request(body) != body:
                    raise AssertionError("the floor server echoed something else")
        finally:
            transport.close()
            await client.closed

    return async_login_ops(login_once)


def driver(name: str, children, runners, loop: str = "asyncio"):
    return async_driver("peers.login_floor", name, children, runners, loop, login_ops)


if __name__ == "__main__":
    main()
