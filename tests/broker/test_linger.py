"""After closing on an error, the server shuts down its side and discards
what the peer still sends for a moment, so its GOODBYE is not destroyed by
a TCP reset; the lingering is bounded in time and bytes, and the server
keeps serving everyone else."""

import asyncio
import struct

import msgpack

import broker
from broker import Root, _core


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
    monkeypatch.setattr(_core, "LINGER_SECONDS", 0.2)
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
    monkeypatch.setattr(_core, "LINGER_BYTES", 256 * 1024)
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


async def test_connections_past_max_connections_are_told_why_and_closed():
    async with await broker.serve(Echo(), "127.0.0.1", 0, max_connections=2) as server:
        first = await broker.connect("127.0.0.1", server.port)
        second = await broker.connect("127.0.0.1", server.port)
        for conn in (first, second):
            assert await (await conn.root()).call_remote("echo", 1) == 1
        third = await broker.connect("127.0.0.1", server.port)
        root = await third.root()
        try:
            await asyncio.wait_for(root.call_remote("echo", 3), 5)
        except broker.ConnectionLost as exc:
            assert "max_connections=2" in str(exc)
        else:
            raise AssertionError("a third connection was served")
        await third.close()
        await first.close()
        for _ in range(200):  # the server forgets the closed one
            if len(server.connections) == 1:
                break
            await asyncio.sleep(0.01)
        async with await broker.connect("127.0.0.1", server.port) as again:
            assert await (await again.root()).call_remote("echo", 4) == 4
        await second.close()


async def test_max_connections_must_be_a_positive_int_or_none():
    import pytest

    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(ValueError, match="max_connections"):
            await broker.serve(Echo(), "127.0.0.1", 0, max_connections=bad)
