"""A closed connection's objects go by reference counting, not by waiting
for the cyclic garbage collector (a server makes a connection per login)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import broker
import cred


class Me(broker.Perspective):
    def perspective_echo(self, x):
        return x


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me()


async def test_both_ends_of_a_closed_login_are_freed_without_the_cyclic_collector():
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("pbecho", "alice")]})
    portal = cred.Portal(cred.ServiceRealm(Accounts("pbecho")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        seen = []
        for _ in range(2):  # the first login takes two calls, the second one
            perspective = await broker.login("127.0.0.1", server.port, "alice", "pw", service="pbecho")
            assert await perspective.call_remote("echo", "hi") == "hi"
            conn = perspective.connection
            client_side = weakref.ref(conn._protocol)
            (server_protocol,) = list(server._protocols)
            server_side = weakref.ref(server_protocol)
            del server_protocol
            gc.collect()
            gc.disable()
            try:
                await conn.close()
                del perspective, conn
                for _ in range(50):
                    if client_side() is None and server_side() is None:
                        break
                    await asyncio.sleep(0.01)
                seen.append((client_side() is None, server_side() is None))
            finally:
                gc.enable()
        assert seen == [(True, True), (True, True)]


async def test_a_connection_held_after_close_stays_the_same_object_and_says_closed():
    async with await broker.serve(broker.Referenceable(), "127.0.0.1", 0) as server:
        conn = await broker.connect("127.0.0.1", server.port)
        root = await conn.root()
        await conn.close()
        assert root.connection is conn
        assert not conn.is_open
        assert await conn.wait_closed() == "closed by the application"
