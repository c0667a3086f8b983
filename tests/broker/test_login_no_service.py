"""broker.login has no hidden service (issue 16): a login that names none
gets the account's only service, or hears which services the account may
use, but only once its password was proven."""

from __future__ import annotations

import inspect

import pytest

import broker
import clients
import cred


class Svc(cred.Service):
    def create_perspective(self, name):
        return broker.Perspective()


def make_portal():
    checker = cred.InMemoryChecker(
        {"alice": "pw", "bob": "pw", "carol": "pw"},
        keyring={"alice": [("chat", None), ("shop", None)], "bob": [("shop", None)], "carol": []})
    return cred.Portal(cred.ServiceRealm(Svc("chat"), Svc("shop"), Svc("pbecho")), [checker],
                       throttle=cred.Throttle(base_delay=0))


def test_no_library_login_defaults_to_pbecho():
    for function in (broker.login, broker.Connection.login, clients.login,
                     clients.Connection.login, broker.reconnecting, clients.reconnecting):
        assert inspect.signature(function).parameters["service"].default is None, function


@pytest.mark.parametrize("cache", ["fresh", "warm"])
async def test_a_login_without_a_service_names_the_accounts_services(cache):
    portal = make_portal()
    mine = cred.ClientCache()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        if cache == "warm":  # the one-trip form takes the same path
            me = await broker.login("127.0.0.1", server.port, "alice", "pw", service="chat",
                                    cache=mine)
            await me.connection.close()
            assert mine.tickets(("pb", ("127.0.0.1", server.port)), "alice")
        with pytest.raises(broker.Unauthorized) as refused:
            await broker.login("127.0.0.1", server.port, "alice", "pw", cache=mine)
    message = str(refused.value)
    assert message != cred.LOGIN_FAILED
    assert "chat, shop" in message and "service=" in message


async def test_an_account_with_one_service_gets_it():
    portal = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        async with broker.login("127.0.0.1", server.port, "bob", "pw",
                                cache=cred.ClientCache()) as me:
            assert me.is_alive


async def test_an_account_with_no_service_hears_so():
    portal = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized, match="no service here"):
            await broker.login("127.0.0.1", server.port, "carol", "pw", cache=cred.ClientCache())


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("mallory", "pw")])
async def test_a_stranger_learns_nothing_about_services(user, password):
    portal = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized) as refused:
            await broker.login("127.0.0.1", server.port, user, password,
                               cache=cred.ClientCache())
    assert str(refused.value) == cred.LOGIN_FAILED
