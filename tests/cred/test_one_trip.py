"""One-trip SCRAM logins: tickets issued by the portal, kept by the client.

A verified login leaves the client with the account's salt and iteration
count and a single-use ticket; the next login sends client-first, the
ticket, the server-first message it expects and its proof in one message.
The portal checks it like a normal finish, or falls back to a normal
challenge without checking anything.
"""

from __future__ import annotations

import itertools

import pytest

import cred
from cred import scram

_servers = itertools.count()


class Me:
    def __init__(self, name):
        self.name = name


class Accounts(cred.Service):
    def create_perspective(self, name):
        return Me(name)


def make_portal(users=None, **kw):
    users = users or {"alice": "wonderland", "bob": "builder"}
    checker = cred.InMemoryChecker(users, keyring={u: [("pbecho", u)] for u in users})
    portal = cred.Portal(cred.ServiceRealm(Accounts("pbecho")), [checker],
                         throttle=cred.Throttle(base_delay=0), **kw)
    return portal, checker


def server_name():
    """A name no earlier test has kept salts or tickets under."""
    return ("test", next(_servers))


async def two_trip(portal, name, user="alice", password="wonderland"):
    """A normal login that keeps its ticket; returns (client, result)."""
    client = scram.ScramClient(user, password, server=name)
    challenge = await portal.begin_scram(client.first())
    result = await challenge.finish(await client.final_async(challenge.server_first), service="pbecho")
    client.verify(result.server_final)
    assert client.keep_ticket(challenge.ticket)
    return client, result


async def one_trip(portal, name, user="alice", password="wonderland", **kw):
    client = scram.ScramClient(user, password, server=name)
    trip = await client.one_trip_async()
    assert trip is not None, "no ticket was kept"
    challenge, result = await portal.scram_one_trip(*trip, service="pbecho", **kw)
    return client, trip, challenge, result


async def test_a_kept_ticket_makes_the_next_login_one_message():
    portal, _ = make_portal()
    name = server_name()
    assert await scram.ScramClient("alice", "wonderland", server=name).one_trip_async() is None
    await two_trip(portal, name)
    for _ in range(3):  # each answer brings the next ticket
        client, trip, challenge, result = await one_trip(portal, name)
        assert result is not None
        assert result.avatar.name == "alice"
        client.verify(result.server_final)
        assert client.done
        assert client.keep_ticket(challenge.ticket)
        client_first, ticket, server_first, client_final = trip
        assert server_first.startswith(f"r={client_first.split('r=')[1]}{ticket},s=")


async def test_a_replayed_one_trip_message_gets_a_challenge_not_a_session():
    portal, _ = make_portal()
    name = server_name()
    await two_trip(portal, name)
    client, trip, challenge, result = await one_trip(portal, name)
    assert result is not None
    challenge, result = await portal.scram_one_trip(*trip, service="pbecho")
    assert result is None  # the ticket was spent: nothing was checked
    # the fallback challenge is an ordinary one, with a fresh nonce, that the
    # replayed proof does not answer
    assert trip[1] not in challenge.server_first
    with pytest.raises(cred.Unauthorized):
        await challenge.finish(trip[3], service="pbecho")


async def test_the_ticket_is_single_use_even_when_the_proof_is_wrong():
    portal, _ = make_portal()
    name = server_name()
    await two_trip(portal, name)
    # a client with the wrong password uses the ticket kept for this server
    with pytest.raises(cred.Unauthorized):
        await one_trip(portal, name, password="not it")
    client = scram.ScramClient("alice", "wonderland", server=name)
    assert await client.one_trip_async() is None  # the client spent it too


async def test_a_ticket_works_only_for_the_account_it_was_issued_to():
    portal, _ = make_portal()
    alice_name, bob_name = server_name(), server_name()
    _, _ = await two_trip(portal, alice_name)
    bob, _ = await two_trip(portal, bob_name, "bob", "builder")
    # bob's client builds a one-trip message around alice's ticket
    alices_ticket = cred.default_client_cache.tickets(alice_name, "alice")[0]
    assert cred.default_client_cache.add_ticket(bob_name, "bob", alices_ticket, first=True)
    client, trip, challenge, result = await one_trip(portal, bob_name, "bob", "builder")
    assert trip[1] == alices_ticket and result is None
    # and alice's ticket was not spent by bob's try
    client, trip, challenge, result = await one_trip(portal, alice_name)
    assert result is not None


async def test_an_expired_ticket_falls_back():
    now = [1000.0]
    portal, _ = make_portal(tickets=cred.TicketStore(lifetime=60.0, clock=lambda: now[0]))
    name = server_name()
    await two_trip(portal, name)
    now[0] += 61.0
    client, trip, challenge, result = await one_trip(portal, name)
    assert result is None
    client.verify((await challenge.finish(await client.final_async(challenge.server_first),
                                          service="pbecho")).server_final)


async def test_a_changed_salt_falls_back_and_the_client_follows():
    portal, checker = make_portal()
    name = server_name()
    await two_trip(portal, name)
    checker.add_user("alice", "wonderland")  # the same password under a new salt
    client, trip, challenge, result = await one_trip(portal, name)
    assert result is None
    final = await client.final_async(challenge.server_first)
    result = await challenge.finish(final, service="pbecho")
    client.verify(result.server_final)
    assert client.keep_ticket(challenge.ticket)
    # the new salt is remembered: the next login is one message again
    _, _, _, result = await one_trip(portal, name)
    assert result is not None


async def test_an_unknown_user_with_a_plausible_ticket_gets_an_ordinary_challenge():
    portal, _ = make_portal()
    known = await portal.begin_scram(scram.ScramClient("alice", "x").first())
    client = scram.ScramClient("nobody", "x")
    challenge, result = await portal.scram_one_trip(
        client.first(), "A" * 24, "r=abc,s=c2FsdA==,i=4096", "c=biws,r=abc,p=AAAA", service="pbecho")
    assert result is None
    shape = lambda first: [part[:2] for part in first.split(",")]  # noqa: E731
    assert shape(challenge.server_first) == shape(known.server_first)


@pytest.mark.parametrize("ticket,server_first", [
    (None, "r=x"), (42, "r=x"), (b"A" * 24, "r=x"), (["A" * 24], "r=x"), ("A" * 24, None),
    ("A" * 24, 7), ("A" * 24, {"r": "x"}),
])
async def test_a_ticket_or_server_first_that_is_not_text_is_refused(ticket, server_first):
    portal, _ = make_portal()
    client = scram.ScramClient("alice", "wonderland")
    with pytest.raises(cred.Unauthorized):
        await portal.scram_one_trip(client.first(), ticket, server_first, "c=biws,r=x,p=AAAA")


@pytest.mark.parametrize("ticket", [
    "", "short", "A" * 65, "A" * 23 + ",", "A" * 23 + " ", "é" * 24, "A" * 5000, "\x00" * 24,
])
async def test_a_malformed_ticket_falls_back_without_checking_anything(ticket):
    portal, _ = make_portal()
    client = scram.ScramClient("alice", "wonderland")
    challenge, result = await portal.scram_one_trip(client.first(), ticket, "r=x", "c=biws,r=x,p=AAAA")
    assert result is None and challenge.username == "alice"


async def test_a_malformed_client_first_is_refused():
    portal, _ = make_portal()
    for client_first in [None, 42, "", "n,,", "y,,n=alice,r=abc", "n,,n=alice,r=" + "x" * 5000]:
        with pytest.raises(cred.Unauthorized):
            await portal.scram_one_trip(client_first, "A" * 24, "r=x", "c=biws,r=x,p=AAAA")


async def test_the_portal_keeps_at_most_max_tickets():
    portal, _ = make_portal(max_tickets=5)
    name = server_name()
    for _ in range(20):
        await two_trip(portal, name)
    assert len(portal.tickets) == 5
    # the client keeps a bounded number too, and the newest are still good
    kept = cred.default_client_cache.tickets(name, "alice")
    assert len(kept) <= 16
    client = scram.ScramClient("alice", "wonderland", server=name)
    while (trip := await client.one_trip_async()) is not None:
        challenge, result = await portal.scram_one_trip(*trip, service="pbecho")
        if result is not None:
            break
        client = scram.ScramClient("alice", "wonderland", server=name)
    assert result is not None, "none of the newest tickets was honoured"


async def test_max_tickets_zero_issues_none_and_one_trip_always_falls_back():
    portal, _ = make_portal(max_tickets=0)
    client = scram.ScramClient("alice", "wonderland", server=server_name())
    challenge = await portal.begin_scram(client.first())
    result = await challenge.finish(await client.final_async(challenge.server_first), service="pbecho")
    client.verify(result.server_final)
    assert challenge.ticket is None
    assert client.keep_ticket(challenge.ticket) is False


@pytest.mark.parametrize("kw", [{"max_tickets": -1}, {"max_tickets": 1.5}, {"max_tickets": "10"},
                                {"ticket_lifetime": 0}, {"ticket_lifetime": -5},
                                {"ticket_lifetime": "1h"}])
def test_bad_ticket_settings_are_refused(kw):
    with pytest.raises(ValueError):
        make_portal(**kw)


async def test_the_client_keeps_no_ticket_before_verify_or_without_a_server():
    portal, _ = make_portal()
    name = server_name()
    client = scram.ScramClient("alice", "wonderland", server=name)
    challenge = await portal.begin_scram(client.first())
    result = await challenge.finish(await client.final_async(challenge.server_first), service="pbecho")
    assert client.keep_ticket(challenge.ticket) is False  # not verified yet
    client.verify(result.server_final)
    for bad in [None, 42, "short", "A" * 65, "A" * 23 + ",", b"A" * 24]:
        assert client.keep_ticket(bad) is False
    assert client.keep_ticket(challenge.ticket) is True
    assert client.keep_ticket(challenge.ticket) is False  # once
    assert len(cred.default_client_cache.tickets(name, "alice")) == 1
    anonymous = scram.ScramClient("alice", "wonderland")  # no server name
    challenge = await portal.begin_scram(anonymous.first())
    result = await challenge.finish(await anonymous.final_async(challenge.server_first), service="pbecho")
    anonymous.verify(result.server_final)
    assert anonymous.keep_ticket(challenge.ticket) is False
    assert await scram.ScramClient("alice", "wonderland").one_trip_async() is None


async def test_a_wrong_server_signature_on_a_one_trip_login_is_refused():
    portal, _ = make_portal()
    name = server_name()
    await two_trip(portal, name)
    client, trip, challenge, result = await one_trip(portal, name)
    with pytest.raises(cred.ScramError, match="server signature is wrong"):
        client.verify("v=" + "A" * 43 + "=")
    assert client.keep_ticket(challenge.ticket) is False


def test_one_trip_is_refused_out_of_order():
    client = scram.ScramClient("alice", "wonderland", server=server_name())
    client.first()
    with pytest.raises(cred.ScramError, match="out of order"):
        client.one_trip()


def test_forgetting_the_key_cache_forgets_salts_and_tickets():
    name = server_name()
    cred.default_client_cache._remember_login(name, "alice", b"salt" * 4, 4096)
    assert cred.default_client_cache.add_ticket(name, "alice", "A" * 24)
    scram.clear_client_key_cache()
    assert scram.ScramClient("alice", "wonderland", server=name).one_trip() is None
