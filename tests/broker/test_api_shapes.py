"""The entry points behave like asyncio's own (issue 16): ``async with
broker.connect(...)`` and ``broker.login(...)`` without the inner ``await``, a
perspective that closes its connection, and a client pointed at something
that is not a PB server says so."""

from __future__ import annotations

import asyncio

import pytest

import broker
import cred


class Echo(broker.Root):
    def remote_echo(self, value):
        return value


class Me(broker.Perspective):
    def perspective_echo(self, value):
        return value


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me()


@pytest.fixture
async def servers():
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("me", None)]})
    portal = cred.Portal(cred.ServiceRealm(Accounts("me")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    async with await broker.serve(Echo(), "127.0.0.1", 0) as plain, \
            await broker.serve(portal, "127.0.0.1", 0) as with_login:
        yield plain.port, with_login.port


async def test_async_with_connect_needs_no_inner_await(servers):
    plain, _ = servers
    async with broker.connect("127.0.0.1", plain) as conn:
        assert await (await conn.root()).call_remote("echo", 1) == 1
    assert not conn.is_open
    async with await broker.connect("127.0.0.1", plain) as conn:  # the old form
        assert await (await conn.root()).call_remote("echo", 2) == 2
    assert not conn.is_open
    conn = await broker.connect("127.0.0.1", plain)
    assert conn.is_open
    await conn.close()


async def test_a_login_and_its_perspective_are_async_context_managers(servers):
    _, port = servers
    async with broker.login("127.0.0.1", port, "alice", "pw", service="me") as me:
        assert await me.call_remote("echo", "hi") == "hi"
    assert not me.connection.is_open
    me = await broker.login("127.0.0.1", port, "alice", "pw", service="me")
    async with me:
        assert await me.call_remote("echo", "again") == "again"
    assert not me.connection.is_open


async def test_a_failed_login_in_async_with_leaves_nothing_open(servers):
    _, port = servers
    with pytest.raises(broker.Unauthorized):
        async with broker.login("127.0.0.1", port, "alice", "wrong", service="me"):
            pass


async def _fake_server(answer: bytes | None):
    async def handle(reader, writer):
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        try:
            await reader.read()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("answer, expected", [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
     "this looks like an HTTP server"),
    (b"220 mail.example.com ESMTP ready\r\n", "this looks like an SMTP server"),
    (b"+OK POP3 ready\r\n", "this looks like a POP3 server"),
])
async def test_a_client_pointed_at_another_protocol_is_told_what_it_found(answer, expected):
    server = await _fake_server(answer)
    port = server.sockets[0].getsockname()[1]
    try:
        async with broker.connect("127.0.0.1", port) as conn:
            root = await conn.root()
            with pytest.raises(broker.PBError) as raised:
                await root.call_remote("echo", 1, timeout=5)
        text = str(raised.value)
        assert f"127.0.0.1:{port}, which sent" in text and "are not a PB frame header" in text
        assert expected in text
    finally:
        server.close()
        await server.wait_closed()


async def test_a_silent_server_is_called_out_as_possibly_not_pb():
    server = await _fake_server(None)
    port = server.sockets[0].getsockname()[1]
    try:
        async with broker.connect("127.0.0.1", port) as conn:
            root = await conn.root()
            with pytest.raises(broker.CallTimeout,
                               match=rf"call 'echo': no PB HELLO from 127\.0\.0\.1:{port} "
                                     r"within 0\.3 s \(is this a PB server\?\)"):
                await root.call_remote("echo", 1, timeout=0.3)
        limits = broker.Limits(handshake_timeout=0.3)
        conn = await broker.connect("127.0.0.1", port, limits=limits)
        reason = await asyncio.wait_for(conn.wait_closed(), 5)
        assert reason == f"no PB HELLO from 127.0.0.1:{port} within 0.3 s (is this a PB server?)"
    finally:
        server.close()
        await server.wait_closed()
