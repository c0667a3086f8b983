"""cred without hidden state (issue 15): the portal's tickets live in a
TicketStore it is given, a ScramChallenge talks to its portal only through
the public ChallengeHost protocol, and the SCRAM client is its own module."""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

import cred
from cred import scram, scram_client


class Me(cred.Service):
    def create_perspective(self, name):
        return object()


def make_portal(**kw):
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("svc", None)]})
    return cred.Portal(cred.ServiceRealm(Me("svc")), [checker],
                       throttle=cred.Throttle(base_delay=0), **kw)


async def scram_login(portal, cache, name):
    client = cred.ScramClient("alice", "pw", server=name, cache=cache)
    challenge = await portal.begin_scram(client.first())
    result = await challenge.finish(await client.final_async(challenge.server_first),
                                    service="svc")
    client.verify(result.server_final)
    assert client.keep_ticket(challenge.ticket)
    return challenge


# -- TicketStore ------------------------------------------------------------------

def test_a_ticket_is_good_once_for_its_account_until_it_expires():
    now = [0.0]
    store = cred.TicketStore(max_tickets=3, lifetime=10, clock=lambda: now[0])
    ticket = store.issue("alice")
    assert ticket is not None and scram._valid_ticket(ticket)
    assert not store.redeem(ticket, "bob")          # not bob's to spend...
    assert store.redeem(ticket, "alice")            # ...so alice still can, once
    assert not store.redeem(ticket, "alice")
    late = store.issue("alice")
    now[0] = 10.5
    assert not store.redeem(late, "alice") and len(store) == 0


def test_the_store_is_bounded_oldest_first_and_can_issue_none():
    store = cred.TicketStore(max_tickets=2)
    first, second, third = (store.issue("alice") for _ in range(3))
    assert len(store) == 2 and not store.redeem(first, "alice") and store.redeem(third, "alice")
    assert cred.TicketStore(max_tickets=0).issue("alice") is None


@pytest.mark.parametrize("kw", [{"max_tickets": -1}, {"max_tickets": True}, {"lifetime": 0},
                                {"lifetime": "5"}, {"lifetime": True}])
def test_bad_store_settings_are_refused(kw):
    with pytest.raises(ValueError):
        cred.TicketStore(**kw)


async def test_the_portal_issues_from_the_store_it_is_given():
    store = cred.TicketStore()
    portal = make_portal(tickets=store)
    assert portal.tickets is store
    challenge = await scram_login(portal, cred.ClientCache(), ("test", "given-store"))
    assert len(store) == 1 and store.redeem(challenge.ticket, "alice")


async def test_two_portals_never_share_tickets():
    one, other = make_portal(), make_portal()
    assert one.tickets is not other.tickets
    cache, name = cred.ClientCache(), ("test", "two-portals")
    await scram_login(one, cache, name)
    client = cred.ScramClient("alice", "pw", server=name, cache=cache)
    trip = await client.one_trip_async()
    _, result = await other.scram_one_trip(*trip, service="svc")
    assert result is None  # the other portal never issued that ticket: two trips


def test_ticket_settings_go_to_the_store_when_one_is_given():
    with pytest.raises(ValueError, match="TicketStore"):
        make_portal(tickets=cred.TicketStore(), max_tickets=5)


# -- ChallengeHost ------------------------------------------------------------------

def test_the_portal_is_a_challenge_host():
    assert isinstance(make_portal(), cred.ChallengeHost)


def test_scram_challenge_uses_nothing_private_of_its_portal():
    source = inspect.getsource(cred.ScramChallenge)
    tree = ast.parse(source)
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "portal"}
    used |= {node.attr for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
             and node.value.attr == "_portal"}
    assert used and not {name for name in used if name.startswith("_")}, used
    hosted = {name for name in dir(cred.ChallengeHost) if not name.startswith("_")}
    assert used <= hosted | {"challenge_timeout"}, used - hosted


async def test_a_challenge_runs_against_any_challenge_host():
    """A host that is not a Portal: the challenge needs only the protocol."""
    portal = make_portal()
    calls = []

    class Host:
        challenge_timeout = 60.0

        async def admit(self, account, source):
            calls.append("admit")
            return await portal.admit(account, source)

        async def enter(self, *args):
            calls.append("enter")
            return await portal.enter(*args)

        def refuse(self, reason, account, source, attempt=None, **fields):
            calls.append(("refuse", reason))
            portal.refuse(reason, account, source, attempt, **fields)

        def issue_ticket(self, account):
            calls.append("ticket")
            return "T" * 24

        def challenge_closed(self, challenge):
            calls.append("closed")

    host = Host()
    assert isinstance(host, cred.ChallengeHost)
    verifier = scram.ScramVerifier.from_password("pw")
    checker = portal.checkers[0]
    for password, expected in (("pw", ["closed", "admit", "enter", "ticket"]),
                               ("no", ["closed", "admit", ("refuse", "wrong password")])):
        calls.clear()
        client = cred.ScramClient("alice", password, cache=cred.ClientCache())
        server = scram.ScramServer(client.first())
        challenge = cred.ScramChallenge(host, server, server.start(verifier), checker, True, None)
        final = await client.final_async(challenge.server_first)
        if password == "pw":
            result = await challenge.finish(final, service="svc")
            client.verify(result.server_final)
            assert challenge.ticket == "T" * 24
        else:
            with pytest.raises(cred.Unauthorized):
                await challenge.finish(final, service="svc")
        assert calls == expected


# -- the SCRAM modules -----------------------------------------------------------

def test_the_client_is_its_own_module_and_the_old_paths_still_work():
    assert scram.ScramClient is scram_client.ScramClient is cred.ScramClient
    assert scram.ClientCache is cred.ClientCache
    assert scram.clear_client_key_cache is scram_client.clear_client_key_cache
    from cred.scram import ScramClient, clear_client_key_cache  # noqa: F401
    server_source = pathlib.Path(scram.__file__).read_text()
    assert "class ScramClient" not in server_source and "class ScramServer" in server_source
    assert "_LOGINS" not in server_source and "_CLIENT_KEYS" not in server_source
    client_source = pathlib.Path(scram_client.__file__).read_text()
    assert "_LOGINS" not in client_source and "_CLIENT_KEYS" not in client_source


def test_scram_client_keeps_nothing_at_module_level_but_the_visible_default():
    caches = [name for name, value in vars(scram_client).items()
              if isinstance(value, scram_client.ClientCache)]
    assert caches == ["default_client_cache"]
