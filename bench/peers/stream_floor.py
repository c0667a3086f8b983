"""The streaming floor: raw bytes over a plain TCP connection.

The client sends the number of bytes it wants (8 bytes, big-endian); the
server writes that many bytes as 256 KiB ``transport.write`` calls, pausing
when the transport says so (``pause_writing``/``resume_writing``: at most one
chunk beyond the transport's high-water mark is buffered).  There are **no
length prefixes** and no messages: the client is an ``asyncio.BufferedProtocol``
reading into one 256 KiB buffer and counting bytes until it has them all.
This is the least asyncio can do to move the data, not a protocol.

    python -m peers.stream_floor serve [--loop asyncio|uvloop]
    python -m peers.stream_floor client --port N [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct

from _harness import ChildDriver, announce, run_loop
from peers.stream_common import CHUNK, CHUNK_BYTES, HOST, TOTAL, client_main, serve_usage_requests

_REQUEST = struct.Struct(">Q")


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FloorStreamServer(asyncio.Protocol):
    def __init__(self) -> None:
        self._request = b""
        self._remaining = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self._request += data
        while len(self._request) >= _REQUEST.size:
            (size,) = _REQUEST.unpack_from(self._request)
            self._request = self._request[_REQUEST.size:]
            self._remaining += size
        self._pump()

    def _pump(self) -> None:
        write = self.transport.write  # type: ignore[attr-defined]
        while self._remaining > 0 and not self._paused:
            n = min(CHUNK, self._remaining)
            write(CHUNK_BYTES if n == CHUNK else CHUNK_BYTES[:n])
            self._remaining -= n

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()


class FloorStreamClient(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self._buf = memoryview(bytearray(CHUNK))
        self._expected = 0
        self._received = 0
        self._done: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        self._received += nbytes
        if self._received >= self._expected and self._done is not None and not self._done.done():
            self._done.set_result(self._received)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("floor stream connection lost"))

    async def fetch(self, size: int) -> int:
        self._expected, self._received = size, 0
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(_REQUEST.pack(size))  # type: ignore[attr-defined]
        return await self._done


# --------------------------------------------------------------------------
# processes


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorStreamServer, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _client(port: int, loop: str) -> None:
    async def setup():
        _, protocol = await asyncio.get_running_loop().create_connection(FloorStreamClient, HOST, port)

        async def transfer() -> int:
            return await protocol.fetch(TOTAL)

        return transfer

    client_main(setup, loop)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.stream_floor")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args(argv)
    if args.mode == "serve":
        serve_usage_requests()
        run_loop(_serve, args.loop)
    else:
        _client(args.port, args.loop)


# --------------------------------------------------------------------------
# benchmark side


def unavailable() -> str | None:
    return None


def driver(name: str, children, loop: str = "asyncio") -> ChildDriver:
    server = children.start("peers.stream_floor", "serve", "--loop", loop)
    client = children.start("peers.stream_floor", "client", "--port", str(server.port), "--loop", loop)
    if client.handshake != "ready":
        raise RuntimeError(f"floor client: {client.handshake}")
    drv = ChildDriver(name, client)
    drv.server = server  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
