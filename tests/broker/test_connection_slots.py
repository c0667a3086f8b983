"""Connection slots and pre-auth time (security issue 13.4).

Before the fix a connection that sent HELLO and answered PINGs could stay
unauthenticated for ever, and one host could take all 10,000 slots; out of
descriptors, asyncio's accept loop logged hundreds of tracebacks a second.
"""

from __future__ import annotations

import asyncio
import re
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
from broker._api import source_of


class Echo(broker.Root):
    def remote_echo(self, value):
        return value


class Me(broker.Perspective):
    def perspective_echo(self, value):
        return value


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me()


def make_portal():
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("me", None)]})
    return cred.Portal(cred.ServiceRealm(Accounts("me")), [checker],
                       throttle=cred.Throttle(base_delay=0))


def frame(message) -> bytes:
    body = msgpack.packb(message)
    return struct.pack(">I", len(body)) + body


async def read_frames(reader, timeout):
    """Frames until the server closes; answers PINGs meanwhile."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                header = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">I", header)[0])
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return frames
            frames.append(msgpack.unpackb(body))


# -- login_timeout ------------------------------------------------------------------


async def test_a_connection_that_never_logs_in_is_closed_after_login_timeout():
    limits = Limits(login_timeout=0.5, keepalive_interval=0.1, idle_timeout=5)
    async with await broker.serve(make_portal(), "127.0.0.1", 0, limits=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame([0, "pb", 1, ["cancel", "ping"], 4 << 20]))
        # Keep answering the server's keepalives, as the probe's client did.
        started = time.monotonic()
        frames = []

        async def answer_pings():
            while True:
                try:
                    header = await reader.readexactly(4)
                    body = await reader.readexactly(struct.unpack(">I", header)[0])
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    return
                message = msgpack.unpackb(body)
                frames.append(message)
                if message[0] == 9:
                    writer.write(frame([10, message[1]]))

        await asyncio.wait_for(answer_pings(), 5)
        elapsed = time.monotonic() - started
        writer.close()
        await writer.wait_closed()
        assert any(m[0] == 9 for m in frames), "the test meant to answer keepalives"
        goodbye = frames[-1]
        assert goodbye[:2] == [11, "timeout"]
        assert "did not log in within 0.5 s" in goodbye[2]
        assert 0.4 < elapsed < 4
        assert not server.connections


async def test_a_connection_that_logged_in_outlives_login_timeout():
    limits = Limits(login_timeout=0.3)
    async with await broker.serve(make_portal(), "127.0.0.1", 0, limits=limits) as server:
        me = await broker.login("127.0.0.1", server.port, "alice", "pw", service="me")
        await asyncio.sleep(0.8)
        assert await me.call_remote("echo", "still in") == "still in"
        await me.connection.close()


async def test_the_client_of_a_connection_closed_for_not_logging_in_is_told_why():
    limits = Limits(login_timeout=0.3)
    async with await broker.serve(make_portal(), "127.0.0.1", 0, limits=limits) as server:
        conn = await broker.connect("127.0.0.1", server.port)
        await conn.root()
        reason = await asyncio.wait_for(conn.wait_closed(), 5)
        assert "did not log in within 0.3 s" in reason


async def test_a_server_without_a_portal_has_no_login_timeout():
    limits = Limits(login_timeout=0.2)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            await asyncio.sleep(0.6)
            assert await root.call_remote("echo", 1) == 1


@pytest.mark.parametrize("bad", [0, -1, "30", float("nan")])
def test_login_timeout_must_be_positive_seconds_or_none(bad):
    with pytest.raises(ValueError, match="login_timeout"):
        Limits(login_timeout=bad)
    assert Limits(login_timeout=None).login_timeout is None


# -- max_connections_per_source ---------------------------------------------------------


async def test_one_source_cannot_take_every_slot():
    async with await broker.serve(Echo(), "127.0.0.1", 0, max_connections_per_source=3) as server:
        mine = [await broker.connect("127.0.0.1", server.port) for _ in range(3)]
        for conn in mine:
            await (await conn.root()).call_remote("echo", 1)
        refused = await broker.connect("127.0.0.1", server.port)
        with pytest.raises(broker.ConnectionLost, match=r"max_connections_per_source=3"):
            await (await refused.root()).call_remote("echo", 1)
        await refused.close()
        # Another source is let in: the cap is per source, below the global one.
        other = await broker.connect("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        assert await (await other.root()).call_remote("echo", 2) == 2
        await other.close()
        # A freed slot is free again.
        await mine.pop().close()
        for _ in range(50):
            if server._per_source.get("127.0.0.1") == 2:
                break
            await asyncio.sleep(0.02)
        again = await broker.connect("127.0.0.1", server.port)
        assert await (await again.root()).call_remote("echo", 3) == 3
        mine.append(again)
        for conn in mine:
            await conn.close()
        await asyncio.sleep(0.1)
    assert server._per_source == {}


async def test_unix_socket_peers_are_not_counted_per_source(tmp_path):
    path = tmp_path / "s.sock"
    async with await broker.serve(Echo(), path=path, max_connections_per_source=1) as server:
        conns = [await broker.connect(path=path) for _ in range(3)]
        for conn in conns:
            assert await (await conn.root()).call_remote("echo", 1) == 1
            await conn.close()
        assert server._per_source == {}


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s():
    assert source_of(("192.0.2.7", 5000)) == "192.0.2.7"
    assert source_of(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:2:bbbb::9", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:3::1", 5000, 0, 0)) == "2001:db8:1:3::/64"
    assert source_of(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    assert source_of(("fe80::1%eth0", 5000, 0, 2)) == "fe80::/64"
    assert source_of("/run/pb.sock") is None
    assert source_of("") is None
    assert source_of(None) is None


@pytest.mark.parametrize("bad", [0, -5, 2.5, "256"])
async def test_max_connections_per_source_must_be_a_positive_int_or_none(bad):
    with pytest.raises(ValueError, match="max_connections_per_source"):
        await broker.serve(Echo(), "127.0.0.1", 0, max_connections_per_source=bad)


# -- out of descriptors -------------------------------------------------------------------

FD_SERVER = textwrap.dedent('''
    import asyncio, logging, resource, sys, broker
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    class Echo(broker.Root):
        def remote_echo(self, value):
            return value
    async def main():
        server = await broker.serve(Echo(), "127.0.0.1", 0)
        print(server.port, flush=True)
        await server.serve_forever()
    asyncio.run(main())
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NOFILE as on Linux")
async def test_out_of_descriptors_logs_once_a_second_and_recovers():
    proc = subprocess.Popen([sys.executable, "-c", FD_SERVER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    held = []
    try:
        port = int(await asyncio.to_thread(proc.stdout.readline))

        def flood():
            for _ in range(150):
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
                except OSError:
                    pass

        await asyncio.to_thread(flood)
        await asyncio.sleep(2.5)
        for sock in held[:120]:
            sock.close()
        del held[:120]
        # Descriptors are free again: a newcomer is served.
        async with asyncio.timeout(10):
            while True:
                try:
                    async with await broker.connect("127.0.0.1", port, timeout=2) as conn:
                        assert await (await conn.root()).call_remote("echo", "in") == "in"
                    break
                except broker.ConnectionLost:
                    await asyncio.sleep(0.2)
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    reports = re.findall(r"cannot accept connections: .* error=\"Too many open files\"", stderr)
    assert 1 <= len(reports) <= 8, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "raise the limit (ulimit -n)" in stderr
