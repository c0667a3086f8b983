"""After closing on an error, the server shuts down its side and discards
what the peer still sends for a moment, so its GOODBYE is not destroyed by
a TCP reset; the lingering is bounded in time and bytes, and the server
keeps serving everyone else."""

import asyncio
import struct

import msgpack

import broker
from broker import Root, _protocol


class Echo(Root):
    def remote_echo(self, value):
        return value


def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


HELLO = [0, "pb", 1, [], 4 * 1024 * 1024]


async def read_all_messages(reader):
    """Frames until EOF; a reset propagates as ConnectionResetError."""
    messages = []
    while True:
        header = await reader.read(4)
        if not header:
            return messages
        if len(header) < 4:
            header += await reader.readexactly(4 - len(header))
        (size,) = struct.unpack(">I", header)
        messages.append(msgpack.unpackb(await reader.readexactly(size), strict_map_key=False))


async def test_a_violation_followed_by_megabytes_of_input_still_delivers_the_goodbye():
    # The violation sits in front of 2 MiB the server will never read: without
    # lingering, closing with that input unread resets the connection.
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            filler = frame([1, 1, 0, "echo", [b"x" * 1024 * 1024], {}, True])
            writer.write(frame(HELLO) + frame([2, 77, "answer to nothing"]) + filler + filler)
            messages = await asyncio.wait_for(read_all_messages(reader), 10)
        finally:
            writer.close()
        assert messages[-1][:2] == [11, "protocol-error"]
        await server_still_serves(server)


async def server_still_serves(server):
    async with await broker.connect("127.0.0.1", server.port) as conn:
        root = await conn.root()
        assert await root.call_remote("echo", "still here") == "still here"


async def test_a_peer_that_never_closes_is_cut_off_after_the_linger_time(monkeypatch):
    monkeypatch.setattr(_protocol, "_LINGER", 0.2)
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame(HELLO) + frame([2, 77, "answer to nothing"]))
            messages = await asyncio.wait_for(read_all_messages(reader), 5)
            assert messages[-1][:2] == [11, "protocol-error"]
            assert server.connections == []  # torn down at once, socket still open
            # We never close; the server closes its socket after the linger.
            for _ in range(200):
                if not server._protocols:
                    break
                await asyncio.sleep(0.01)
            assert not server._protocols
        finally:
            writer.close()
        await server_still_serves(server)


async def test_a_peer_that_keeps_sending_is_cut_off_after_the_linger_budget(monkeypatch):
    monkeypatch.setattr(_protocol, "_LINGER_BYTES", 256 * 1024)
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame(HELLO) + frame([2, 77, "answer to nothing"]))
            await writer.drain()
            messages = await asyncio.wait_for(read_all_messages(reader), 5)
            assert messages[-1][:2] == [11, "protocol-error"]
            cut_off = False
            for _ in range(400):  # keep sending past the budget: the server aborts
                try:
                    writer.write(b"\x00" * 65536)
                    await writer.drain()
                except ConnectionError:
                    cut_off = True
                    break
                if not server._protocols:
                    cut_off = True
                    break
            assert cut_off
        finally:
            writer.close()
        await server_still_serves(server)
