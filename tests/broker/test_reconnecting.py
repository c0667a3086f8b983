"""A session that survives server restarts (issue 16): broker.reconnecting
and its blocking twin clients.reconnecting, against a real server that is
stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import broker
import clients
import cred


class Counter(broker.Root):
    def __init__(self) -> None:
        self.hangs = 0

    def remote_echo(self, value):
        return value

    async def remote_hang(self):
        self.hangs += 1
        await asyncio.sleep(3600)


class Me(broker.Perspective):
    def perspective_whoami(self):
        return "alice"


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_session_comes_back_after_a_restart_and_never_replays_a_call():
    port = free_port()
    first = Counter()
    server = await broker.serve(first, "127.0.0.1", port)
    seen = []
    async with broker.reconnecting("127.0.0.1", port, initial_delay=0.05, max_delay=0.2,
                                   on_connect=seen.append) as session:
        assert await session.call_remote("echo", 1, timeout=5) == 1
        in_flight = asyncio.ensure_future(session.call_remote("hang", timeout=10))
        while first.hangs == 0:
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        with pytest.raises(broker.ConnectionLost):
            await in_flight  # it may have run: it is not sent again
        during = asyncio.ensure_future(session.call_remote("echo", "waited", timeout=10))
        await asyncio.sleep(0.3)
        assert not during.done()  # waits for the next connection
        second = Counter()
        server = await broker.serve(second, "127.0.0.1", port)
        assert await during == "waited"
        assert session.connections == 2 and len(seen) == 2
        assert (first.hangs, second.hangs) == (1, 0)
    server.close()
    await server.wait_closed()


async def test_wait_false_fails_at_once_while_down_and_max_attempts_gives_up():
    port = free_port()
    session = broker.reconnecting("127.0.0.1", port, wait=False, initial_delay=0.05,
                                  max_delay=0.1, max_attempts=3)
    async with session:
        with pytest.raises(broker.ConnectionLost, match="not connected"):
            await session.call_remote("echo", 1)
        await asyncio.sleep(0.5)
        with pytest.raises(broker.ConnectionLost, match="gave up reconnecting after 3"):
            await session.call_remote("echo", 1)


async def test_a_login_session_logs_in_again_and_stops_on_a_refusal():
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("me", None)]})

    def portal():
        return cred.Portal(cred.ServiceRealm(Accounts("me")), [checker],
                           throttle=cred.Throttle(base_delay=0))

    port = free_port()
    server = await broker.serve(portal(), "127.0.0.1", port)
    cache = cred.ClientCache()
    async with broker.reconnecting("127.0.0.1", port, username="alice", password="pw",
                                   service="me", initial_delay=0.05, cache=cache) as session:
        assert await session.call_remote("whoami", timeout=5) == "alice"
        # its logins keep their key and tickets in the cache it was given
        assert cache.key_count == 1 and cache.tickets(("pb", ("127.0.0.1", port)), "alice")
        server.close()
        await server.wait_closed()
        server = await broker.serve(portal(), "127.0.0.1", port)
        assert await session.call_remote("whoami", timeout=10) == "alice"
        assert session.connections == 2
    async with broker.reconnecting("127.0.0.1", port, username="alice", password="wrong",
                                   service="me") as refused:
        with pytest.raises(broker.Unauthorized):
            await refused.call_remote("whoami", timeout=10)
    server.close()
    await server.wait_closed()


def test_the_blocking_session_comes_back_too():
    port = free_port()

    async def start():
        return await broker.serve(Counter(), "127.0.0.1", port)

    loop = asyncio.new_event_loop()
    try:
        server = loop.run_until_complete(start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        with clients.reconnecting("127.0.0.1", port, initial_delay=0.05, timeout=10) as session:
            assert session.call_remote("echo", "one") == "one"

            async def restart():
                nonlocal server
                server.close()
                await server.wait_closed()
                await asyncio.sleep(0.2)
                server = await broker.serve(Counter(), "127.0.0.1", port)

            asyncio.run_coroutine_threadsafe(restart(), loop).result(10)
            assert session.call_remote("echo", "two") == "two"
            assert session.connections == 2

        async def stop():
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
