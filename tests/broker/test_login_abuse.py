"""Login abuse over real sockets (issue 13.5): parallel guessing is held to
the throttle's sequential schedule, and open challenges are capped per
connection and in all, and freed when they time out, are dropped, or their
connection closes."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import secrets
import time
import weakref

import pytest

import broker
import cred
from broker import Perspective


class Me(Perspective):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me(name)


USERS = {f"user{i}": f"password {i}" for i in range(8)}


def make_portal(throttle=None, **kw):
    checker = cred.InMemoryChecker(USERS, keyring={u: [("pbecho", u)] for u in USERS})
    return cred.Portal(cred.ServiceRealm(Accounts("pbecho")), [checker],
                       throttle=cred.Throttle(base_delay=0) if throttle is None else throttle, **kw)


def wrong_final(server_first):
    nonce = server_first.split(",")[0][2:]
    return f"c=biws,r={nonce},p={base64.b64encode(secrets.token_bytes(32)).decode()}"


def first(name="user0"):
    return cred.ScramClient(name, "guess").first()


def refused(exc):
    return isinstance(exc, broker.RemoteError) and exc.remote_message == cred.LOGIN_FAILED


def sequential_allowance(throttle, seconds):
    """How many attempts one source may start within ``seconds`` when each
    waits for the previous one's failure, as fast as the schedule allows."""
    started, elapsed = 1, 0.0
    while True:
        elapsed += throttle._penalty(started)
        if elapsed > seconds:
            return started
        started += 1


@pytest.fixture
def checked_proofs(monkeypatch):
    """The times at which the server checked a SCRAM proof."""
    times = []
    finish = cred.ScramServer.finish

    def counting(self, client_final):
        times.append(time.monotonic())
        return finish(self, client_final)

    monkeypatch.setattr(cred.ScramServer, "finish", counting)
    return times


async def test_concurrent_wrong_proofs_from_one_source_are_held_to_the_sequential_schedule(
        checked_proofs):
    throttle = cred.Throttle(base_delay=0.02, factor=2, max_delay=0.08)
    # The per-connection cap would refuse most of these before the throttle
    # saw them: raise it, so that this is the throttle's test.
    portal = make_portal(throttle, max_challenges_per_connection=1000)
    window = 1.0
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        conns = [await broker.connect("127.0.0.1", server.port) for _ in range(4)]
        roots = [await conn.root() for conn in conns]
        stop = time.monotonic() + window

        async def guess(root):
            while time.monotonic() < stop:
                challenger, server_first = await root.call_remote("login", first())
                with pytest.raises(broker.RemoteError) as info:
                    await challenger.call_remote("respond", wrong_final(server_first),
                                                 "pbecho", None, None)
                assert refused(info.value)

        began = time.monotonic()
        tasks = [asyncio.create_task(guess(root)) for root in roots for _ in range(100)]
        await asyncio.sleep(window)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in conns:
            await conn.close()
    in_window = [t for t in checked_proofs if t - began <= window]
    # 400 guesses in flight got no more proofs checked than one guess at a
    # time, each after the previous failure, would have (14 in a second).
    assert 3 <= len(in_window) <= sequential_allowance(throttle, window)


async def test_logins_of_different_accounts_from_one_source_at_once_all_get_in():
    # A NAT: one source, many users.  Each login waits while another is in
    # flight (it might be a guess), but successes take their reservation
    # back and leave no failures behind.
    portal = make_portal(cred.Throttle(base_delay=0.02, factor=2, max_delay=1))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        perspectives = await asyncio.gather(*[
            broker.login("127.0.0.1", server.port, name, password, service="pbecho")
            for name, password in USERS.items()])
        assert [await p.call_remote("whoami") for p in perspectives] == list(USERS)
        for p in perspectives:
            await p.connection.close()
    assert portal.throttle.delay_for("someone", "127.0.0.1") == 0
    assert len(portal.throttle) == 0


async def test_the_first_step_waits_for_the_throttle_and_counts_when_never_answered():
    portal = make_portal(cred.Throttle(base_delay=30))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            challenger, _ = await root.call_remote("login", first("nobody"))
            await challenger.release()  # dropped unanswered: a failed login
            for _ in range(100):
                if portal.open_challenges == 0:
                    break
                await asyncio.sleep(0.01)
            assert portal.open_challenges == 0
            # The source is now blocked for 30 s, challenge and all.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(root.call_remote("login", first("user3")), 0.3)
    assert portal.throttle.delay_for("another", "127.0.0.1") > 29


async def test_a_fifth_open_challenge_on_a_connection_is_refused():
    portal = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn, \
                await broker.connect("127.0.0.1", server.port) as other:
            root = await conn.root()
            held = [await root.call_remote("login", first()) for _ in range(4)]
            with pytest.raises(broker.RemoteError) as info:
                await root.call_remote("login", first())
            assert refused(info.value)
            with pytest.raises(broker.RemoteError) as info:  # the one-trip door too
                await root.call_remote("login_one_trip", first(), "A" * 24, "r=x,s=eA==,i=4096",
                                       "c=biws,r=x,p=AA==", "pbecho", None, None)
            assert refused(info.value)
            # another connection is not affected
            other_root = await other.root()
            held.append(await other_root.call_remote("login", first()))
            assert portal.open_challenges == 5
            # an answered challenge makes room
            challenger, server_first = held.pop(0)
            with pytest.raises(broker.RemoteError):
                await challenger.call_remote("respond", wrong_final(server_first), "pbecho", None, None)
            held.append(await root.call_remote("login", first()))
            assert portal.open_challenges == 5


async def test_a_login_past_the_portals_cap_is_refused_until_one_closes():
    portal = make_portal(max_challenges=5)
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as b:
            a = await broker.connect("127.0.0.1", server.port)
            a_root, b_root = await a.root(), await b.root()
            held = [await a_root.call_remote("login", first()) for _ in range(4)]
            held.append(await b_root.call_remote("login", first()))
            with pytest.raises(broker.RemoteError) as info:
                await b_root.call_remote("login", first())
            assert refused(info.value)
            await a.close()  # its four challenges are abandoned and freed
            for _ in range(100):
                if portal.open_challenges == 1:
                    break
                await asyncio.sleep(0.01)
            assert portal.open_challenges == 1
            held.append(await b_root.call_remote("login", first()))
            assert portal.open_challenges == 2


async def test_a_challenge_the_client_drops_is_freed_at_once():
    portal = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            challenger, _ = await root.call_remote("login", first())
            assert portal.open_challenges == 1
            await challenger.release()
            for _ in range(100):
                if portal.open_challenges == 0:
                    break
                await asyncio.sleep(0.01)
            assert portal.open_challenges == 0 and portal._per_connection == {}


async def test_unanswered_challenges_are_freed_and_counted_at_the_challenge_timeout(caplog):
    caplog.set_level(logging.INFO, logger="cred.portal")
    portal = make_portal(challenge_timeout=0.3)
    servers = weakref.WeakSet()
    original = cred.ScramServer.__init__

    def tracked(self, *args, **kw):
        original(self, *args, **kw)
        servers.add(self)

    cred.ScramServer.__init__ = tracked
    try:
        async with await broker.serve(portal, "127.0.0.1", 0) as server:
            conns = [await broker.connect("127.0.0.1", server.port) for _ in range(3)]
            roots = [await conn.root() for conn in conns]
            held = [await root.call_remote("login", first("nobody")) for root in roots for _ in range(4)]
            assert portal.open_challenges == 12
            assert len(servers) == 12
            await asyncio.sleep(0.5)
            gc.collect()
            assert portal.open_challenges == 0
            assert portal._per_connection == {} and portal._opening == 0
            assert len(servers) == 0  # the SCRAM state of each is gone
            expired = [r for r in caplog.records if "challenge expired without an answer" in r.getMessage()]
            assert len(expired) == 12
            # an answer after the timeout is the one refusal
            challenger, server_first = held[0]
            with pytest.raises(broker.RemoteError) as info:
                await challenger.call_remote("respond", wrong_final(server_first), "pbecho", None, None)
            assert refused(info.value)
            # and the connection may open challenges again
            again = [await roots[0].call_remote("login", first()) for _ in range(4)]
            assert portal.open_challenges == 4
            del held, challenger, again
            for conn in conns:
                await conn.close()
            assert portal.open_challenges == 0
    finally:
        cred.ScramServer.__init__ = original


async def test_a_refusal_past_the_connections_cap_counts_against_the_source_not_the_account():
    # Four logins run at once without waiting (free_failures=4); the fifth
    # is refused, and that refusal is a failure of the source's only.
    portal = make_portal(cred.Throttle(base_delay=10, free_failures=4))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            held = [await root.call_remote("login", first("user0")) for _ in range(4)]
            assert portal.throttle.delay_for("someone", "127.0.0.1") == 0
            with pytest.raises(broker.RemoteError) as info:
                await root.call_remote("login", first("user0"))
            assert refused(info.value)
            assert portal.throttle.delay_for("someone", "127.0.0.1") > 9
            assert portal.throttle.delay_for("user0", "192.0.2.1") == 0
            del held
