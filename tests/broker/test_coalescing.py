"""Messages nobody waits for ride with the next one: the client's HELLO goes
out with its first call, the server's with its first answer (or on its own
soon after, when no call comes), a DECREF with the call after the release.
Checked over real sockets by counting the client transport's writes and by
reading what a raw server or a raw client receives."""

import asyncio
import struct

import msgpack

import broker
from broker import Referenceable, Root


class Child(Referenceable):
    def remote_ping(self):
        return "pong"


class Echo(Root):
    def remote_echo(self, value):
        return value

    def remote_make(self):
        return Child()


def count_writes(connection):
    transport = connection._protocol.transport
    writes = []
    original = transport.write

    def write(data):
        writes.append(bytes(data))
        return original(data)

    transport.write = write
    return writes


def held_by_server(server):
    (connection,) = server.connections
    return connection.local_object_count


def messages(data):
    out = []
    while data:
        (size,) = struct.unpack(">I", data[:4])
        out.append(msgpack.unpackb(data[4:4 + size], strict_map_key=False))
        data = data[4 + size:]
    return out


async def test_the_hello_and_a_first_call_made_at_once_leave_in_one_write():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        conn = await broker.connect("127.0.0.1", server.port)
        async with conn:
            writes = count_writes(conn)
            root = await conn.root()
            assert await root.call_remote("echo", "first") == "first"
            assert len(writes) == 1
            assert [m[0] for m in messages(writes[0])] == [0, 1]  # HELLO, CALL


async def test_a_connection_that_never_calls_still_sends_its_hello():
    received = bytearray()
    got_hello = asyncio.Event()

    async def handle(reader, writer):
        writer.write(struct.pack(">I", 0))  # not a HELLO: the client will close
        while data := await reader.read(65536):
            received.extend(data)
            if len(received) >= 4 and len(received) >= 4 + struct.unpack(">I", received[:4])[0]:
                got_hello.set()
        writer.close()

    raw = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with raw:
        port = raw.sockets[0].getsockname()[1]
        conn = await broker.connect("127.0.0.1", port)
        try:
            await asyncio.wait_for(got_hello.wait(), 5)
        finally:
            await conn.close()
    assert messages(bytes(received))[0][0] == 0


async def test_a_release_rides_with_the_next_call():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            child = await root.call_remote("make")
            assert held_by_server(server) == 1  # the child (the root is not counted)
            writes = count_writes(conn)
            await child.release()
            assert await root.call_remote("echo", 1) == 1
            assert len(writes) == 1
            assert [m[0] for m in messages(writes[0])] == [4, 1]  # DECREF, CALL
            assert held_by_server(server) == 0


async def test_a_release_with_nothing_after_it_is_sent_at_the_end_of_the_turn():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            child = await root.call_remote("make")
            writes = count_writes(conn)
            await child.release()
            assert writes == []
            for _ in range(200):
                if held_by_server(server) == 0:
                    break
                await asyncio.sleep(0.005)
            assert held_by_server(server) == 0
            assert [m[0] for m in messages(b"".join(writes))] == [4]


async def read_messages(reader, count):
    got = []
    data = b""
    while len(got) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "the server closed before sending what was expected"
        data += chunk
        while len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
            (size,) = struct.unpack(">I", data[:4])
            got.append(msgpack.unpackb(data[4:4 + size], strict_map_key=False))
            data = data[4 + size:]
    return got


def frame(message):
    body = msgpack.packb(message)
    return struct.pack(">I", len(body)) + body


async def test_a_server_sends_its_hello_to_a_client_that_sends_nothing():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            (hello,) = await read_messages(reader, 1)
            assert hello[:3] == [0, "pb", 1]
        finally:
            writer.close()
            await writer.wait_closed()


async def test_a_server_sends_its_hello_before_the_answer_to_a_first_call():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame([0, "pb", 1, [], 1 << 20]) + frame([1, 1, 0, "echo", ["x"], {}, True]))
            hello, answer = await read_messages(reader, 2)
            assert hello[0] == 0 and answer == [2, 1, "x"]
        finally:
            writer.close()
            await writer.wait_closed()
