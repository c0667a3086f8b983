import asyncio
import gc
import socket
import struct
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest

import broker
from broker import Limits, Root

from tests._tls import make_tls


class Echo(Root):
    def remote_echo(self, value):
        return value

    async def remote_hang(self):
        await asyncio.sleep(3600)


async def raw_client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer


def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


HELLO = [0, "pb", 1, [], 4 * 1024 * 1024]


async def expect_closed(reader):
    data = await asyncio.wait_for(reader.read(), 5)  # until EOF
    return data


async def read_frames_until_closed(reader):
    """Every frame the server sends until it closes (EOF or a reset)."""
    data = b""
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        pass
    frames = []
    while len(data) >= 4:
        (size,) = struct.unpack(">I", data[:4])
        frames.append(msgpack.unpackb(data[4:4 + size]))
        data = data[4 + size:]
    return frames


async def assert_server_still_serves(server):
    async with await broker.connect("127.0.0.1", server.port) as conn:
        root = await conn.root()
        assert await root.call_remote("echo", "still here") == "still here"


@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x05garba",                      # a frame that is not msgpack
    b"\x00\x00\x00\x01\xc1",                       # msgpack's never-used byte
    frame("not an array"),
    frame([]),
    frame([99, 1, 2]),                             # unknown opcode
    frame([1, 1, 0, "echo", [], {}, True]),        # CALL before HELLO
])
async def test_garbage_closes_only_that_connection(payload):
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as other:
            other_root = await other.root()
            reader, writer = await raw_client(server.port)
            writer.write(payload)
            await writer.drain()
            await expect_closed(reader)
            writer.close()
            await writer.wait_closed()
            assert await other_root.call_remote("echo", "unaffected") == "unaffected"
        await assert_server_still_serves(server)


@pytest.mark.parametrize("payload", [
    frame([4, 12345, 1]),                          # DECREF of an unknown id
    frame([2, 77, "answer to nothing"]),           # ANSWER for a request never sent
    frame([1, "x", 0, "echo", [], {}, True]),      # malformed CALL
    frame([0, "pb", 1, [], 1024]),                 # a second HELLO
])
async def test_protocol_violations_after_hello_close_the_connection_with_goodbye(payload):
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO) + payload)
        await writer.drain()
        data = await expect_closed(reader)
        unpacker = msgpack.Unpacker()
        messages = []
        offset = 0
        while offset + 4 <= len(data):
            (n,) = struct.unpack(">I", data[offset:offset + 4])
            messages.append(msgpack.unpackb(data[offset + 4:offset + 4 + n]))
            offset += 4 + n
        assert messages[0][0] == 0  # their HELLO
        assert messages[-1][:2] == [11, "protocol-error"]
        writer.close()
        await writer.wait_closed()
        await assert_server_still_serves(server)


async def test_a_length_header_of_0xffffffff_closes_before_allocating():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO) + b"\xff\xff\xff\xff")
        await writer.drain()
        await expect_closed(reader)
        writer.close()
        await writer.wait_closed()
        assert all(p.reader._buf.__len__() < 1024 * 1024 for p in server._protocols)
        await assert_server_still_serves(server)


async def test_truncated_frame_then_disconnect_leaves_server_serving():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO) + frame([1, 1, 0, "echo", ["x" * 100], {}, True])[:50])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await assert_server_still_serves(server)


async def test_pre_hello_bytes_are_limited():
    limits = Limits(handshake_bytes=1024)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        reader, writer = await raw_client(server.port)
        writer.write(struct.pack(">I", 2000) + b"x" * 100)
        await writer.drain()
        await expect_closed(reader)
        writer.close()
        await writer.wait_closed()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout():
    limits = Limits(handshake_timeout=0.2)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        reader, writer = await raw_client(server.port)
        start = time.monotonic()
        await expect_closed(reader)
        assert time.monotonic() - start < 3
        writer.close()
        await writer.wait_closed()


async def test_a_peer_that_stops_answering_is_declared_dead_by_keepalive():
    limits = Limits(keepalive_interval=0.05, idle_timeout=0.3)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO))
        await writer.drain()
        start = time.monotonic()
        data = await expect_closed(reader)
        assert 0.2 < time.monotonic() - start < 3
        assert b"\x91" in data or data  # pings were sent before the goodbye
        writer.close()
        await writer.wait_closed()


async def test_keepalive_keeps_an_idle_but_live_connection_open():
    limits = Limits(keepalive_interval=0.05, idle_timeout=0.3)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            await asyncio.sleep(0.8)
            root = await conn.root()
            assert await root.call_remote("echo", 1) == 1


async def test_frame_size_limit_at_the_edge_and_one_past():
    limits = Limits(max_frame=64 * 1024)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            overhead = len(msgpack.packb([1, 1, 0, "echo", [b""], {}, True]))
            fits = b"x" * (64 * 1024 - overhead - 4)
            # Sending a value that fits works; the answer is about the same size.
            assert len(await root.call_remote("echo", fits[:-16])) == len(fits) - 16
            with pytest.raises(broker.LimitExceeded, match="max_frame"):
                root.call_remote("echo", b"x" * (64 * 1024))
            assert await root.call_remote("echo", "still open") == "still open"


async def test_outstanding_call_limit_at_the_edge_and_one_past_fails_fast_when_asked():
    limits = Limits(max_outstanding_calls=8, wait_for_call_slot=False)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            pending = [root.call_remote("hang") for _ in range(8)]
            with pytest.raises(broker.LimitExceeded, match="max_outstanding_calls"):
                root.call_remote("echo", 1)
            for p in pending:
                p.cancel()
            await asyncio.sleep(0.05)
            assert await root.call_remote("echo", 2) == 2


async def test_past_the_outstanding_call_limit_a_call_waits_for_a_slot():
    limits = Limits(max_outstanding_calls=8)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            pending = [root.call_remote("hang") for _ in range(8)]
            waiting = root.call_remote("echo", 1)
            await asyncio.sleep(0.1)
            assert not waiting.done()  # no slot yet, and not refused
            pending[3].cancel()
            assert await asyncio.wait_for(waiting, 5) == 1
            for p in pending:
                p.cancel()


async def test_a_client_learns_the_server_s_smaller_limit_from_its_hello():
    server_limits = Limits(max_outstanding_calls=4)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=server_limits) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:  # 1024 here
            root = await conn.root()
            await conn.wait_ready()  # the server's HELLO, with its limit, is in
            hangs = [root.call_remote("hang") for _ in range(4)]
            fifth = root.call_remote("echo", 5)  # waits, rather than being refused
            await asyncio.sleep(0.1)
            assert not fifth.done()
            hangs[0].cancel()
            assert await asyncio.wait_for(fifth, 5) == 5
            for h in hangs:
                h.cancel()


async def test_a_peer_flooding_calls_past_the_limit_gets_errors_not_a_crash():
    """A peer that ignores the limit in our HELLO (an old or hostile one)."""
    limits = Limits(max_outstanding_calls=4)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO))
        for req_id in range(1, 5):
            writer.write(frame([1, req_id, 0, "hang", [], {}, True]))
        writer.write(frame([1, 5, 0, "echo", [1], {}, True]))
        await writer.drain()
        async with asyncio.timeout(5):
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                message = msgpack.unpackb(await reader.readexactly(size))
                if message[0] == 3:
                    break
        assert message[1] == 5 and message[2] == "limit-exceeded"
        writer.close()
        await writer.wait_closed()
        await assert_server_still_serves(server)


async def test_local_reference_limit_at_the_edge_and_one_past():
    class Maker(Root):
        def remote_make(self, n):
            return [broker.Referenceable() for _ in range(n)]

    limits = Limits(max_local_references=10)
    async with await broker.serve(Maker(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            refs = await root.call_remote("make", 10)
            assert len(refs) == 10
            with pytest.raises(broker.LimitExceeded, match="max_local_references"):
                await root.call_remote("make", 1)
            (server_conn,) = server.connections
            assert server_conn.local_object_count == 10  # the failed answer counted nothing
            del refs
            gc.collect()
            for _ in range(100):
                if server_conn.local_object_count == 0:
                    break
                await asyncio.sleep(0.01)
            assert len(await root.call_remote("make", 10)) == 10


async def test_ipv6_loopback_works():
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6 support")
    try:
        server = await broker.serve(Echo(), "::1", 0)
    except OSError as exc:
        pytest.skip(f"IPv6 loopback is not configured here: {exc}")
    async with server:
        async with await broker.connect("::1", server.port) as conn:
            root = await conn.root()
            assert await root.call_remote("echo", "v6") == "v6"


async def test_tls_echo(tmp_path):
    server_ctx, client_ctx = make_tls(tmp_path)
    async with await broker.serve(Echo(), "127.0.0.1", 0, ssl=server_ctx) as server:
        async with await broker.connect("127.0.0.1", server.port, ssl=client_ctx,
                                        server_hostname="localhost") as conn:
            root = await conn.root()
            assert await root.call_remote("echo", b"secret" * 1000) == b"secret" * 1000


async def test_tls_client_refuses_an_untrusted_server(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server_ctx, _ = make_tls(tmp_path / "a")
    _, other_client_ctx = make_tls(tmp_path / "b")
    async with await broker.serve(Echo(), "127.0.0.1", 0, ssl=server_ctx) as server:
        with pytest.raises(OSError):
            await broker.connect("127.0.0.1", server.port, ssl=other_client_ctx,
                                 server_hostname="localhost")


async def test_unix_socket_echo_and_cleanup(tmp_path):
    path = tmp_path / "echo.sock"
    async with await broker.serve(Echo(), path=path) as server:
        assert server.address == str(path)
        async with await broker.connect(path=path) as conn:
            root = await conn.root()
            assert await root.call_remote("echo", "unix") == "unix"
    assert not path.exists()


async def test_version_mismatch_is_a_clear_error():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame([0, "pb", 99, [], 1024]))
        await writer.drain()
        data = await expect_closed(reader)
        assert b"version" in data
        writer.close()
        await writer.wait_closed()


SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import broker

    class Hang(broker.Root):
        async def remote_hang(self):
            await asyncio.sleep(3600)

    async def main():
        server = await broker.serve(Hang(), "127.0.0.1", 0)
        print(server.port, flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")


async def test_killing_the_server_fails_100_calls_in_flight_within_a_second():
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(await asyncio.to_thread(proc.stdout.readline))
        async with await broker.connect("127.0.0.1", port) as conn:
            root = await conn.root()
            pending = [root.call_remote("hang") for _ in range(100)]
            await asyncio.sleep(0.2)
            proc.kill()
            start = time.monotonic()
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert time.monotonic() - start < 1.0
            assert len(results) == 100
            assert all(isinstance(r, broker.ConnectionLost) for r in results)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


async def test_graceful_shutdown_lets_calls_in_progress_finish():
    class Slow(Root):
        async def remote_slow(self):
            await asyncio.sleep(0.2)
            return "done"

    server = await broker.serve(Slow(), "127.0.0.1", 0)
    conn = await broker.connect("127.0.0.1", server.port)
    root = await conn.root()
    pending = root.call_remote("slow")
    await asyncio.sleep(0.05)
    await server.shutdown(grace=5)
    assert await pending == "done"
    reason = await conn.wait_closed()
    assert "shutting down" in reason


async def test_one_way_calls_produce_no_answer_frames():
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(frame(HELLO)
                     + frame([1, 1, 0, "echo", ["one-way"], {}, False])
                     + frame([1, 2, 0, "missing", [], {}, False])   # error: also silent
                     + frame([9, "after"]))                         # PING
        await writer.drain()
        unpacker = msgpack.Unpacker()
        frames = []
        while len(frames) < 2:
            header = await asyncio.wait_for(reader.readexactly(4), 5)
            body = await asyncio.wait_for(reader.readexactly(struct.unpack(">I", header)[0]), 5)
            frames.append(msgpack.unpackb(body))
        assert frames[0][0] == 0                 # the server's HELLO
        assert frames[1] == [10, "after"]        # then the PONG: no ANSWER, no ERROR
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("opening, hint", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "this looks like HTTP"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32), "this looks like a TLS handshake"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "this looks like SSH"),
    (b"\xff\xff\xff\xffgarbage", "is this client speaking PB"),
])
async def test_a_stream_that_is_not_pb_is_told_so_not_that_it_sent_too_much(opening, hint, caplog):
    """Issue 13.8: a 27-byte HTTP GET was told it 'sent more than
    handshake_bytes=16384 bytes'; what tripped was the length its first four
    bytes announce."""
    async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
        reader, writer = await raw_client(server.port)
        writer.write(opening)
        await writer.drain()
        frames = await read_frames_until_closed(reader)
        writer.close()
        await writer.wait_closed()
        goodbye = frames[-1]
        assert goodbye[:2] == [11, "limit-exceeded"]
        assert "are not a PB frame header" in goodbye[2]
        assert f"{opening[:4]!r}" in goodbye[2]
        assert hint in goodbye[2]
        assert "sent more than" not in goodbye[2]
        await assert_server_still_serves(server)
