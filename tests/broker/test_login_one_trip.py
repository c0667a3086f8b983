"""One-trip logins over real sockets: the first login to a server takes two
calls and leaves the client a ticket; later logins take one call."""

from __future__ import annotations

import asyncio

import pytest

import broker
import cred
from broker import Perspective, Referenceable


class Me(Perspective):
    def __init__(self, name):
        self.name = name
        self.minds = []

    def perspective_whoami(self):
        return self.name

    def attached(self, mind):
        self.minds.append(("attached", mind))

    def detached(self, mind):
        self.minds.append(("detached", mind))


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me(name)


class CountingPortal(cred.Portal):
    """Counts which way each login came in, and how it ended."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.counts = {"two-call": 0, "one-call": 0, "fallback": 0}

    async def begin_scram(self, client_first, **kw):
        self.counts["two-call"] += 1
        return await super().begin_scram(client_first, **kw)

    async def scram_one_trip(self, *args, **kw):
        challenge, result = await super().scram_one_trip(*args, **kw)
        self.counts["one-call" if result is not None else "fallback"] += 1
        return challenge, result


def make_portal(users=None, **kw):
    users = users or {"alice": "wonderland", "bob": "builder"}
    checker = cred.InMemoryChecker(users, keyring={u: [("pbecho", u)] for u in users})
    service = Accounts("pbecho")
    portal = CountingPortal(cred.ServiceRealm(service), [checker],
                            throttle=cred.Throttle(base_delay=0), **kw)
    return portal, checker, service


async def login_and_ask(address, user="alice", password="wonderland", **kw):
    perspective = await broker.login(*address, user, password, service="pbecho", **kw)
    try:
        return await perspective.call_remote("whoami")
    finally:
        await perspective.connection.close()


@pytest.fixture(params=["tcp", "unix"])
async def served(request, tmp_path):
    portal, checker, service = make_portal()
    if request.param == "tcp":
        server = await broker.serve(portal, "127.0.0.1", 0)
        address = ("127.0.0.1", server.port)
    else:
        path = tmp_path / "pb.sock"
        server = await broker.serve(portal, path=path)
        address = (None, None)
    kw = {} if request.param == "tcp" else {"path": path}
    async with server:
        yield portal, checker, service, address, kw


async def test_the_second_login_to_a_server_is_one_call(served):
    portal, _, _, address, kw = served
    assert await login_and_ask(address, **kw) == "alice"
    assert portal.counts == {"two-call": 1, "one-call": 0, "fallback": 0}
    for _ in range(3):
        assert await login_and_ask(address, **kw) == "alice"
    assert portal.counts == {"two-call": 1, "one-call": 3, "fallback": 0}
    # another account on the same server starts with two calls of its own
    assert await login_and_ask(address, "bob", "builder", **kw) == "bob"
    assert await login_and_ask(address, "bob", "builder", **kw) == "bob"
    assert portal.counts == {"two-call": 2, "one-call": 4, "fallback": 0}


async def test_logins_at_once_each_use_a_ticket_of_their_own(served):
    portal, _, _, address, kw = served
    await asyncio.gather(*[login_and_ask(address, **kw) for _ in range(8)])
    assert portal.counts["two-call"] == 8  # no tickets yet
    results = await asyncio.gather(*[login_and_ask(address, **kw) for _ in range(8)])
    assert results == ["alice"] * 8
    assert portal.counts == {"two-call": 8, "one-call": 8, "fallback": 0}


async def test_a_replayed_one_trip_call_on_a_new_connection_gets_no_session():
    portal, _, _ = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        await login_and_ask(("127.0.0.1", server.port))
        name = ("pb", ("127.0.0.1", server.port))
        client = cred.ScramClient("alice", "wonderland", server=name)
        trip = await client.one_trip_async()
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            answer = await root.call_remote("login_one_trip", *trip, "pbecho", None, None)
            assert len(answer) == 3  # welcome: server-final, perspective, ticket
        async with await broker.connect("127.0.0.1", server.port) as conn:  # an eavesdropper
            root = await conn.root()
            answer = await root.call_remote("login_one_trip", *trip, "pbecho", None, None)
            assert len(answer) == 2  # a fresh challenge, not a perspective
            challenger, server_first = answer
            assert trip[1] not in server_first
            with pytest.raises(broker.RemoteError) as info:
                await challenger.call_remote("respond", trip[3], "pbecho", None, None)
            assert info.value.remote_message == cred.LOGIN_FAILED


async def test_a_restarted_server_falls_back_then_issues_new_tickets():
    portal, _, _ = make_portal()
    server = await broker.serve(portal, "127.0.0.1", 0)
    port = server.port
    await login_and_ask(("127.0.0.1", port))
    server.close()
    await server.wait_closed()
    portal, _, _ = make_portal()  # new process: new portal, no tickets, new salts
    async with await broker.serve(portal, "127.0.0.1", port) as server:
        assert await login_and_ask(("127.0.0.1", port)) == "alice"
        assert portal.counts == {"two-call": 0, "one-call": 0, "fallback": 1}
        assert await login_and_ask(("127.0.0.1", port)) == "alice"
        assert portal.counts["one-call"] == 1


async def test_a_changed_password_with_a_ticket_kept(served):
    portal, checker, _, address, kw = served
    await login_and_ask(address, **kw)
    checker.add_user("alice", "new password")
    with pytest.raises(broker.Unauthorized) as info:
        await login_and_ask(address, **kw)  # the old one: a ticket, a stale salt
    assert str(info.value) == cred.LOGIN_FAILED
    assert await login_and_ask(address, "alice", "new password", **kw) == "alice"
    assert await login_and_ask(address, "alice", "new password", **kw) == "alice"
    assert portal.counts["one-call"] == 1


async def test_a_wrong_password_with_a_ticket_kept_is_refused_the_same_way(served):
    portal, _, _, address, kw = served
    await login_and_ask(address, **kw)
    with pytest.raises(broker.Unauthorized) as info:
        await login_and_ask(address, "alice", "guess", **kw)
    assert str(info.value) == cred.LOGIN_FAILED
    assert await login_and_ask(address, **kw) == "alice"


async def test_the_mind_is_attached_and_detached_once_on_a_one_trip_login():
    portal, _, service = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        await login_and_ask(("127.0.0.1", server.port))
        service.perspectives.clear()
        mind = Referenceable()
        perspective = await broker.login("127.0.0.1", server.port, "alice", "wonderland",
                                         service="pbecho", mind=mind)
        assert portal.counts["one-call"] == 1
        me = service.perspectives["alice"]
        assert [event for event, _ in me.minds] == ["attached"]
        await perspective.release()
        for _ in range(100):
            if len(me.minds) == 2:
                break
            await asyncio.sleep(0.01)
        assert [event for event, _ in me.minds] == ["attached", "detached"]
        assert me.minds[0][1] is me.minds[1][1]
        await perspective.connection.close()


def refused(exc):
    return isinstance(exc, broker.RemoteError) and exc.remote_message == cred.LOGIN_FAILED


async def test_garbage_one_trip_calls_are_refused_and_the_server_keeps_serving():
    portal, _, _ = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        bystander = await broker.login("127.0.0.1", server.port, "bob", "builder", service="pbecho")
        first = cred.ScramClient("alice", "wonderland").first()
        ticket, server_first, final = "A" * 24, "r=abc,s=c2FsdA==,i=4096", "c=biws,r=abc,p=AAAA"
        refusals = [
            (None, ticket, server_first, final), (42, ticket, server_first, final),
            ("n,,", ticket, server_first, final), ("x" * (3 * 1024 * 1024), ticket, server_first, final),
            (first, None, server_first, final), (first, 42, server_first, final),
            (first, [ticket], server_first, final), (first, ticket, None, final),
            (first, ticket, b"r=abc", final),
        ]
        fallbacks = [
            (first, "", server_first, final), (first, "x" * 100_000, server_first, final),
            (first, ticket, "x" * 100_000, final), (first, ticket, server_first, None),
            (first, "A" * 23 + ",", server_first, "garbage"),
        ]
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            for args in refusals:
                with pytest.raises(broker.RemoteError) as info:
                    await root.call_remote("login_one_trip", *args, "pbecho", None, None)
                assert refused(info.value), repr(args)[:80]
            for args in fallbacks:
                answer = await root.call_remote("login_one_trip", *args, "pbecho", None, None)
                assert isinstance(answer, tuple) and len(answer) == 2, repr(args)[:80]
            for args in [(), (first,), (first, ticket, server_first, final, "pbecho", None, None, 9)]:
                with pytest.raises(broker.RemoteError):
                    await root.call_remote("login_one_trip", *args)
            me = await conn.login("alice", "wonderland")
            assert await me.call_remote("whoami") == "alice"
        assert await bystander.call_remote("whoami") == "bob"
        await bystander.connection.close()


async def test_a_server_that_issues_no_tickets_still_logs_clients_in():
    portal, _, _ = make_portal(max_tickets=0)
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        for _ in range(3):
            assert await login_and_ask(("127.0.0.1", server.port)) == "alice"
        assert portal.counts == {"two-call": 3, "one-call": 0, "fallback": 0}


@pytest.mark.parametrize("answer", [
    ["v=", "not a tuple"], ("v=", "not a reference"), ("v=", "not a reference", "A" * 24),
    ("v=",), "v=", None,
])
async def test_the_client_refuses_a_malformed_final_answer(answer):
    class Odd(broker.Root):
        def remote_login(self, client_first):
            nonce = client_first.split("r=")[1]
            return Answers(), f"r={nonce}server,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096"

    class Answers(Referenceable):
        def remote_respond(self, client_final, service, perspective, mind):
            return answer

    async with await broker.serve(Odd(), "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized, match="malformed"):
            await broker.login("127.0.0.1", server.port, "alice", "wonderland")


async def test_a_ticket_for_an_address_now_served_by_a_server_without_one_trip_falls_back():
    """A client keeps tickets per address; another server there (an older
    one, or a test's next server on a reused port) gets the two-call login."""
    checker = cred.InMemoryChecker({"alice": "wonderland"}, keyring={"alice": [("pbecho", None)]})

    class Svc(cred.Service):
        def create_perspective(self, name):
            return broker.Perspective()

    portal = cred.Portal(cred.ServiceRealm(Svc("pbecho")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    server = await broker.serve(portal, "127.0.0.1", 0)
    port = server.port
    me = await broker.login("127.0.0.1", port, "alice", "wonderland", service="pbecho")
    await me.connection.close()  # the client now holds a ticket for 127.0.0.1:port
    server.close()
    await server.wait_closed()
    reached = []

    class Old(broker.Root):
        def remote_login(self, client_first):
            reached.append(client_first)
            raise broker.Unauthorized("refused by the old server")

    async with await broker.serve(Old(), "127.0.0.1", port):
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", port, "alice", "wonderland", service="pbecho")
    assert len(reached) == 1  # the ordinary first step, after the one-trip call was refused
