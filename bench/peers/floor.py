"""The floor: the least an asyncio request/response echo can do.

Server and client are both ``asyncio.BufferedProtocol``.  A frame is a 4-byte
big-endian length and a msgpack body ``[req_id, value]``; the client keeps
one future per call, the server answers each frame as soon as it is parsed.
TCP_NODELAY on both ends.  No handshake, no objects, no errors: whatever a
real broker does on top of this is what its ratio to the floor shows.

    python -m peers.floor serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import socket
import struct

import msgpack

from _harness import AsyncDriver, announce, serve_main
from peers.common import HOST, async_ops

_HEADER = struct.Struct(">I")
_MIN_READ = 256 * 1024


class _Framed(asyncio.BufferedProtocol):
    """Length-prefixed msgpack frames read straight into one growable buffer."""

    def __init__(self) -> None:
        self._buf = bytearray(_MIN_READ)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes received so far
        self._need = 4  # bytes from _start needed before the next frame parses
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # The buffer is only moved or grown here: while buffer_updated() runs the
    # transport may still hold the view it was given.
    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._buf
        if self._start == self._end:
            self._start = self._end = 0
        elif len(buf) - self._end < _MIN_READ:
            pending = self._end - self._start
            buf[:pending] = buf[self._start:self._end]
            self._start, self._end = 0, pending
        size = max(self._start + self._need, self._end + _MIN_READ)
        if len(buf) < size:
            buf.extend(bytes(size - len(buf)))
        return memoryview(buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        buf = self._buf
        with memoryview(buf) as view:
            while True:
                avail = self._end - self._start
                if avail < 4:
                    self._need = 4
                    return
                total = 4 + _HEADER.unpack_from(buf, self._start)[0]
                if avail < total:
                    self._need = total
                    return
                message = msgpack.unpackb(view[self._start + 4:self._start + total])
                self._start += total
                self.message_received(message)

    def send(self, message: object) -> None:
        body = msgpack.packb(message)
        self.transport.write(_HEADER.pack(len(body)) + body)  # type: ignore[union-attr]

    def message_received(self, message: list) -> None:
        raise NotImplementedError


class FloorServer(_Framed):
    def message_received(self, message: list) -> None:
        self.send(message)  # [req_id, value] comes back as it went


class FloorClient(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()

    def call(self, value: object) -> asyncio.Future:
        req_id = self._next_id = self._next_id + 1
        fut = self._loop.create_future()
        self._calls[req_id] = fut
        self.send([req_id, value])
        return fut

    def message_received(self, message: list) -> None:
        fut = self._calls.pop(message[0], None)
        if fut is not None and not fut.done():
            fut.set_result(message[1])

    def connection_lost(self, exc: Exception | None) -> None:
        calls, self._calls = self._calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(ConnectionError("floor connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self) -> None:
        self.transport.close()  # type: ignore[union-attr]
        await self.closed


async def connect(host: str, port: int) -> FloorClient:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(FloorClient, host, port)
    return protocol


# --------------------------------------------------------------------------
# server process


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorServer, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    serve_main("peers.floor", _serve, argv)


# --------------------------------------------------------------------------
# benchmark side


def unavailable() -> str | None:
    return None  # msgpack is a core dependency


def driver(name: str, children, runners, loop: str = "asyncio") -> AsyncDriver:
    child = children.start("peers.floor", "serve", "--loop", loop)
    runner = runners.get(loop)
    client = runner.run(connect(HOST, child.port))

    async def connect_once() -> None:
        c = await connect(HOST, child.port)
        await c.call("hello")
        await c.close()

    drv = AsyncDriver(name, runner, async_ops(client.call, connect_once))
    drv.close = lambda: runner.run(client.close())  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
