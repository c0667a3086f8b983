"""The login exchange over PB, fed garbage through real sockets.

Both entry points a client can reach before it has logged in —
``root.call_remote("login", client_first)`` and the challenger's
``respond(client_final, service, perspective, mind)`` — are called with
wrong types, truncated, malformed and oversize messages, and again and
again.  Each attempt must be refused with the one login-failure message,
the connection must stay usable, a session opened before must keep
working, and other clients must still log in.
"""

from __future__ import annotations

import asyncio

import pytest

import broker
import cred

PASSWORD = "wonderland"


class Me(broker.Perspective):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me(name)


@pytest.fixture
async def server(tmp_path):
    with cred.AccountStore(tmp_path / "accounts.sqlite3", create=True) as store:
        store.add_service("pbecho")
        store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
        store.add_user("bob", "builder", keyring=[("pbecho", None)])
        portal = cred.Portal(cred.ServiceRealm(Accounts("pbecho")), [cred.StoreChecker(store)],
                             throttle=cred.Throttle(base_delay=0))
        async with await broker.serve(portal, "127.0.0.1", 0) as server:
            yield server


def refused(exc: BaseException) -> bool:
    return (isinstance(exc, broker.RemoteError) and exc.remote_type == "broker.Unauthorized"
            and exc.remote_message == cred.LOGIN_FAILED)


GOOD_FIRST = cred.ScramClient("alice", PASSWORD).first()

BAD_CLIENT_FIRSTS = [
    None, 42, 1.5, True, b"n,,n=alice,r=abc", [GOOD_FIRST], {"n": "alice"}, (GOOD_FIRST,),
    "", "n", "n,", "n,,", "n,,n=alice", "n,,n=alice,r=", "n,,n=,r=abc",   # truncated
    "y,,n=alice,r=abc", "p=tls-unique,,n=alice,r=abc", "n,a=bob,n=alice,r=abc",
    "n,,n=al=ZZice,r=abc", "n,,n=alice,r=a b", "n,,n=alice,r=abc,m=ext", "\x00" * 64,
    "n,,n=alice,r=" + "x" * 5000,                     # over the SCRAM limit
    "n,,n=" + "é" * 600 + ",r=abc",                   # over it in UTF-8 bytes only
    "x" * (3 * 1024 * 1024),                          # large, still within one frame
]


async def test_garbage_client_first_messages_are_refused_and_nothing_else_is_hurt(server):
    bystander = await broker.login("127.0.0.1", server.port, "bob", "builder", service="pbecho")
    async with await broker.connect("127.0.0.1", server.port) as conn:
        root = await conn.root()
        for message in [*BAD_CLIENT_FIRSTS, broker.Referenceable()]:
            with pytest.raises(broker.RemoteError) as info:
                await root.call_remote("login", message)
            assert refused(info.value), (repr(message)[:60], info.value)
        # the wrong number of arguments is an ordinary remote error
        for args, kwargs in [((), {}), ((GOOD_FIRST, "extra"), {}), ((), {"zzz": 1})]:
            with pytest.raises(broker.RemoteError):
                await root.call_remote("login", *args, **kwargs)
        # the same connection still logs in
        me = await conn.login("alice", PASSWORD)
        assert await me.call_remote("whoami") == "alice"
    assert await bystander.call_remote("whoami") == "bob"
    await bystander.connection.close()


async def fresh_challenge(root, password=PASSWORD):
    client = cred.ScramClient("alice", password)
    challenger, server_first = await root.call_remote("login", client.first())
    return client, challenger, await client.final_async(server_first)


def flip_first_proof_character(final):
    head, proof = final.rsplit("p=", 1)
    other = "A" if proof[0] != "A" else "B"
    return f"{head}p={other}{proof[1:]}"


async def test_garbage_client_final_messages_are_refused_and_nothing_else_is_hurt(server):
    bystander = await broker.login("127.0.0.1", server.port, "bob", "builder", service="pbecho")
    # each takes the right client-final for a fresh challenge and spoils one thing
    spoilers = [
        lambda f: (None,), lambda f: (42,), lambda f: (f.encode(),), lambda f: ([f],),
        lambda f: ({"c": "biws"},),
        lambda f: ("",), lambda f: ("c=biws",), lambda f: ("c=biws,r=",),
        lambda f: (f[: len(f) // 2],), lambda f: (f[:-5],),             # truncated
        lambda f: (f.replace("c=biws", "c=eSws"),), lambda f: (flip_first_proof_character(f),),
        lambda f: (f + ",m=ext",), lambda f: (f + "A" * 5000,),        # oversize
        lambda f: ("p" * (3 * 1024 * 1024),),
        lambda f: (f, 5), lambda f: (f, ["pbecho"]), lambda f: (f, "pbecho", 7),
        lambda f: (f, "pbecho", {"x": 1}),
        lambda f: (f, None, "alice"),           # a perspective without a service
        lambda f: (f, "nosuch"), lambda f: (f, "pbecho", "bob"),
    ]
    async with await broker.connect("127.0.0.1", server.port) as conn:
        root = await conn.root()
        for spoil in spoilers:
            _, challenger, final = await fresh_challenge(root)
            args = spoil(final)
            with pytest.raises(broker.RemoteError) as info:
                await challenger.call_remote("respond", *args)
            assert refused(info.value), (repr(args)[:60], info.value)
            if isinstance(args[0], str) and len(args[0]) <= cred.scram.MAX_MESSAGE_LENGTH:
                # the challenge was spent: even the right answer now fails
                with pytest.raises(broker.RemoteError) as info:
                    await challenger.call_remote("respond", final, "pbecho")
                assert refused(info.value)
        _, challenger, final = await fresh_challenge(root)
        with pytest.raises(broker.RemoteError):             # wrong number of arguments
            await challenger.call_remote("respond")
        me = await conn.login("alice", PASSWORD)
        assert await me.call_remote("whoami") == "alice"
    assert await bystander.call_remote("whoami") == "bob"
    await bystander.connection.close()


async def test_a_hundred_failed_attempts_leave_the_server_serving(server):
    async def wrong(i):
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", server.port, "alice" if i % 2 else f"nobody{i}",
                               "guess", service="pbecho")

    async with await broker.connect("127.0.0.1", server.port) as conn:
        for i in range(50):  # one connection, one after the other
            with pytest.raises(broker.Unauthorized):
                await conn.login("alice", f"guess{i}")
        await asyncio.gather(*(wrong(i) for i in range(50)))  # fifty connections at once
        me = await conn.login("alice", PASSWORD)
        assert await me.call_remote("whoami") == "alice"
    other = await broker.login("127.0.0.1", server.port, "bob", "builder", service="pbecho")
    assert await other.call_remote("whoami") == "bob"
    await other.connection.close()


async def test_a_damaged_account_database_never_shows_through_the_login(tmp_path):
    db = tmp_path / "accounts.sqlite3"
    with cred.AccountStore(db, create=True) as store:
        store.add_service("pbecho")
        store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[page_size:] = b"\xff" * (len(data) - page_size)
    db.write_bytes(bytes(data))
    with cred.AccountStore(db) as store:
        portal = cred.Portal(cred.ServiceRealm(Accounts("pbecho")), [cred.StoreChecker(store)],
                             throttle=cred.Throttle(base_delay=0))
        async with await broker.serve(portal, "127.0.0.1", 0) as server:
            with pytest.raises(broker.Unauthorized) as info:
                await broker.login("127.0.0.1", server.port, "alice", PASSWORD, service="pbecho")
    assert str(info.value) == cred.LOGIN_FAILED
    assert str(tmp_path) not in str(info.value)
