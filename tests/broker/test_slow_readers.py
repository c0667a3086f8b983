"""A peer that does not read what it is sent (security issue 13.2).

Before the fix, HELLO followed by 4 MiB PINGs that were never read grew the
server by more than a gigabyte in seconds: every PONG stayed queued.  Now a
server stops reading from a peer whose backlog passes its cap (much smaller
before login) and drops it if the backlog is still there after
``write_stall_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest

import broker
import cred
from broker import Limits

MiB = 1024 * 1024


def frame(message) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


HELLO = frame([0, "pb", 1, ["cancel", "ping"], 4 * MiB])


class Blobs(broker.Perspective):
    def perspective_blob(self, size):
        return b"b" * size

    def perspective_echo(self, value):
        return value


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Blobs()


def make_portal():
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("blobs", None)]})
    return cred.Portal(cred.ServiceRealm(Accounts("blobs")), [checker],
                       throttle=cred.Throttle(base_delay=0))


class Root(broker.Root):
    def remote_blob(self, size):
        return b"b" * size

    def remote_echo(self, value):
        return value


def non_reader(port: int) -> socket.socket:
    sock = socket.socket()
    # A small receive window, so that the server's backlog is ours to see
    # rather than the kernel's.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def send_until_blocked(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send ``data`` over and over without reading; the number of copies sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, data), deadline - loop.time())
        except (TimeoutError, OSError):
            break
        sent += 1
    return sent


async def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Read (now, at last) until the server's close shows: EOF or a reset."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), deadline - loop.time())
        except TimeoutError:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False


async def test_a_stranger_that_never_reads_is_paused_then_dropped(caplog):
    caplog.set_level(logging.WARNING, logger="broker")
    limits = Limits(preauth_write_buffer=64 * 1024, write_stall_timeout=0.5)
    async with await broker.serve(make_portal(), "127.0.0.1", 0, limits=limits) as server:
        sock = non_reader(server.port)
        try:
            ping = frame([9, b"p" * (1 * MiB)])
            await asyncio.get_running_loop().sock_sendall(sock, HELLO)
            sent = await send_until_blocked(sock, ping, 3.0)
            # The server stopped reading after the first PONGs: the kernel's
            # buffers then filled and our sends blocked, long before 3 s of
            # 1 MiB PINGs went through.
            assert sent < 40
            bystander = await broker.login("127.0.0.1", server.port, "alice", "pw",
                                           service="blobs")
            assert await bystander.call_remote("echo", "still here", timeout=5) == "still here"
            assert await closed_by_server(sock, 10)
            assert "left" in caplog.text and "preauth_write_buffer" in caplog.text
            assert await bystander.call_remote("echo", "and now", timeout=5) == "and now"
            await bystander.connection.close()
        finally:
            sock.close()


async def test_a_logged_in_client_gets_the_larger_cap():
    limits = Limits(preauth_write_buffer=64 * 1024, max_write_buffer=64 * MiB,
                    write_stall_timeout=0.3)
    async with await broker.serve(make_portal(), "127.0.0.1", 0, limits=limits) as server:
        me = await broker.login("127.0.0.1", server.port, "alice", "pw", service="blobs")
        transport = me.connection._protocol.transport
        transport.pause_reading()
        calls = [asyncio.ensure_future(me.call_remote("blob", MiB, timeout=20)) for _ in range(6)]
        await asyncio.sleep(1.0)  # three stall periods with 6 MiB queued
        transport.resume_reading()
        assert [len(blob) for blob in await asyncio.gather(*calls)] == [MiB] * 6
        await me.connection.close()


async def test_past_max_write_buffer_a_client_that_stops_reading_is_dropped(caplog):
    caplog.set_level(logging.WARNING, logger="broker")
    limits = Limits(max_write_buffer=256 * 1024, write_stall_timeout=0.3)
    async with await broker.serve(Root(), "127.0.0.1", 0, limits=limits) as server:
        conn = await broker.connect("127.0.0.1", server.port)
        root = await conn.root()
        transport = conn._protocol.transport
        transport.pause_reading()
        calls = [asyncio.ensure_future(root.call_remote("blob", MiB, timeout=20))
                 for _ in range(12)]
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.05)
        assert not server.connections, "the server kept a client that read nothing"
        assert "max_write_buffer" in caplog.text
        transport.resume_reading()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert any(isinstance(r, broker.ConnectionLost) for r in results)
        await conn.close()
        # Others are served as before.
        async with await broker.connect("127.0.0.1", server.port) as other:
            assert await (await other.root()).call_remote("echo", 1) == 1


SERVER = textwrap.dedent('''
    import asyncio, broker, cred
    class P(broker.Perspective):
        def perspective_echo(self, value):
            return value
    class S(cred.Service):
        def create_perspective(self, name):
            return P()
    async def main():
        checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("pbecho", None)]})
        portal = cred.Portal(cred.ServiceRealm(S("pbecho")), [checker])
        server = await broker.serve(portal, "127.0.0.1", 0)
        print(server.port, flush=True)
        await server.serve_forever()
    asyncio.run(main())
''')


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
async def test_the_probe_s_attack_leaves_the_server_small_and_others_served():
    """The attack as the probe ran it, against default limits: HELLO, then
    4 MiB PINGs never read, for three seconds."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(await asyncio.to_thread(proc.stdout.readline))
        bystander = await broker.login("127.0.0.1", port, "alice", "pw", service="pbecho")
        before = rss_mib(proc.pid)
        peak = before
        worst = 0.0
        sock = non_reader(port)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, HELLO)
            attack = asyncio.ensure_future(
                send_until_blocked(sock, frame([9, b"p" * (4 * MiB - 64)]), 3.0))
            while not attack.done():
                started = time.perf_counter()
                assert await bystander.call_remote("echo", "x", timeout=10) == "x"
                worst = max(worst, time.perf_counter() - started)
                peak = max(peak, rss_mib(proc.pid))
                await asyncio.sleep(0.02)
            await attack
        finally:
            sock.close()
        await bystander.connection.close()
        growth = peak - before
        print(f"server RSS growth {growth:.1f} MiB, bystander's worst call {worst * 1000:.1f} ms")
        assert growth < 64, f"the server grew by {growth:.0f} MiB"
        assert worst < 1.0  # liveness, not speed: before the fix calls starved for seconds
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
