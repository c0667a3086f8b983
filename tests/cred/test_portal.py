import asyncio
import base64
import logging
import threading

import pytest
from zope.interface import Interface, implementer

from cred import (
    ANONYMOUS,
    LOGIN_FAILED,
    AccountStore,
    AllowAnonymous,
    Anonymous,
    InMemoryChecker,
    PerspectiveKey,
    Portal,
    ScramClient,
    Service,
    ServiceRealm,
    StoreChecker,
    StoreError,
    Throttle,
    Unauthorized,
    UsernamePassword,
    scram,
)

PASSWORD = "correct horse"


class IEcho(Interface):
    pass


class IOther(Interface):
    pass


@implementer(IEcho)
class Avatar:
    def __init__(self, service, name):
        self.service = service
        self.name = name


class EchoService(Service):
    """Every perspective exists; logouts are recorded."""

    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.logouts = []

    def create_perspective(self, name):
        return Avatar(self.name, name)

    def logout(self, perspective_name, avatar, mind):
        self.logouts.append((perspective_name, avatar, mind))


class AsyncService(EchoService):
    async def get_perspective(self, name):
        await asyncio.sleep(0)
        return super().get_perspective(name)


def memory_checker():
    return InMemoryChecker(
        {"alice": PASSWORD, "bob": PASSWORD},
        keyring={"alice": [("pbecho", None), ("words", "moderator")], "bob": [("pbecho", None)]},
    )


@pytest.fixture
def store(tmp_path):
    with AccountStore(tmp_path / "accounts.sqlite3", create=True) as store:
        for service in ("pbecho", "words"):
            store.add_service(service)
        store.add_user("alice", PASSWORD, keyring=[("pbecho", None), ("words", "moderator")])
        store.add_user("bob", PASSWORD, keyring=[("pbecho", None)])
        yield store


@pytest.fixture(params=["memory", "store"])
def checker(request, store):
    return memory_checker() if request.param == "memory" else StoreChecker(store)


@pytest.fixture
def realm():
    return ServiceRealm(EchoService("pbecho"), AsyncService("words"), EchoService("public", allow_anonymous=True))


@pytest.fixture
def portal(realm, checker):
    return Portal(realm, [checker, AllowAnonymous()], throttle=Throttle(base_delay=0))


async def scram_login(portal, username, password, **finish):
    client = ScramClient(username, password)
    challenge = await portal.begin_scram(client.first(), source=finish.pop("source", None))
    client_final = await client.final_async(challenge.server_first)
    result = await challenge.finish(client_final, **finish)
    client.verify(result.server_final)
    return result


def parse_server_first(server_first):
    attributes = dict(part.split("=", 1) for part in server_first.split(","))
    return base64.b64decode(attributes["s"]), int(attributes["i"]), attributes["r"]


async def test_full_scram_exchange_through_the_portal(portal, realm):
    result = await scram_login(portal, "alice", PASSWORD, service="pbecho", mind="the-mind", interfaces=[IEcho])
    assert result.interface is IEcho
    assert isinstance(result.avatar, Avatar) and (result.avatar.service, result.avatar.name) == ("pbecho", "alice")
    result.logout()
    result.logout()  # once only
    assert realm.services["pbecho"].logouts == [("alice", result.avatar, "the-mind")]


async def test_a_perspective_on_the_keyring_other_than_the_users_name(portal):
    result = await scram_login(portal, "alice", PASSWORD, service="words", perspective="moderator")
    assert (result.avatar.service, result.avatar.name) == ("words", "moderator")


async def test_plain_username_password_login_through_the_portal(portal):
    interface, avatar, logout = await portal.login(UsernamePassword("bob", PASSWORD), None, IEcho, service="pbecho")
    assert interface is IEcho and avatar.name == "bob"


async def failure_messages(portal):
    """Every way a login can fail, by SCRAM and by password."""
    attempts = {
        "wrong password": scram_login(portal, "alice", "wrong", service="pbecho"),
        "unknown user": scram_login(portal, "mallory", PASSWORD, service="pbecho"),
        "unknown service": scram_login(portal, "alice", PASSWORD, service="nosuch"),
        "service not on keyring": scram_login(portal, "bob", PASSWORD, service="words"),
        "perspective not on keyring": scram_login(portal, "bob", PASSWORD, service="pbecho", perspective="alice"),
        "perspective without service": scram_login(portal, "alice", PASSWORD, perspective="alice"),
        "non-text service": scram_login(portal, "alice", PASSWORD, service=["pbecho"]),
        "plain wrong password": portal.login(UsernamePassword("alice", "wrong"), None, service="pbecho"),
        "plain unknown user": portal.login(UsernamePassword("mallory", "x"), None, service="pbecho"),
        "plain unknown perspective": portal.login(
            UsernamePassword("alice", PASSWORD), None, service="pbecho", perspective="bob"
        ),
        "plain non-text password": portal.login(UsernamePassword("alice", 42), None, service="pbecho"),
        "not credentials": portal.login(object(), None, service="pbecho"),
        "anonymous where not allowed": portal.login(Anonymous(), None, service="pbecho"),
        "interface not provided": portal.login(UsernamePassword("alice", PASSWORD), None, IOther, service="pbecho"),
    }
    errors = {}
    for reason, attempt in attempts.items():
        with pytest.raises(Unauthorized) as info:
            await attempt
        errors[reason] = info.value
    return errors


async def test_every_failure_is_unauthorized_with_the_byte_identical_message(portal):
    errors = await failure_messages(portal)
    for reason, error in errors.items():
        assert type(error) is Unauthorized, reason
        assert str(error) == LOGIN_FAILED, reason
        assert error.args == (LOGIN_FAILED,), reason
        assert error.__cause__ is None and error.__suppress_context__, reason


async def test_failure_reasons_go_to_the_log_not_the_error(portal, caplog):
    with caplog.at_level(logging.INFO, logger="cred.portal"):
        await failure_messages(portal)
    text = caplog.text
    assert "proof refused" in text and "keyring" in text and "realm refused" in text


async def test_server_first_for_an_unknown_user_looks_like_a_known_ones(portal):
    firsts = {}
    for name in ("alice", "mallory", "mallory", "eve"):
        challenge = await portal.begin_scram(ScramClient(name, "x").first())
        firsts.setdefault(name, []).append(parse_server_first(challenge.server_first))
    (alice_salt, alice_i, _), = firsts["alice"]
    (m1_salt, m1_i, m1_nonce), (m2_salt, m2_i, m2_nonce) = firsts["mallory"]
    (eve_salt, _, _), = firsts["eve"]
    assert len(m1_salt) == len(alice_salt) and m1_i == alice_i
    assert m1_salt == m2_salt  # stable across calls, as a real account's is
    assert m1_nonce != m2_nonce
    assert eve_salt != m1_salt
    # and a known account is stable too
    challenge = await portal.begin_scram(ScramClient("alice", "x").first())
    assert parse_server_first(challenge.server_first)[0] == alice_salt


async def test_fake_salts_for_the_store_survive_a_restart(store):
    salts = []
    for _ in range(2):  # two server runs on the same database
        with AccountStore(store.path) as reopened:
            portal = Portal(ServiceRealm(), [StoreChecker(reopened)], throttle=Throttle(base_delay=0))
            challenge = await portal.begin_scram(ScramClient("mallory", "x").first())
            salts.append(parse_server_first(challenge.server_first)[0])
    assert salts[0] == salts[1]


async def test_a_portal_without_verifier_source_still_answers_scram_starts(realm):
    portal = Portal(realm, [AllowAnonymous()], server_secret=b"k" * 32)
    one = await portal.begin_scram(ScramClient("alice", "x").first())
    two = await portal.begin_scram(ScramClient("alice", "x").first())
    assert parse_server_first(one.server_first)[:2] == parse_server_first(two.server_first)[:2]


async def test_replayed_client_final_fails(portal):
    client = ScramClient("alice", PASSWORD)
    client_first = client.first()
    challenge = await portal.begin_scram(client_first)
    client_final = await client.final_async(challenge.server_first)
    await challenge.finish(client_final, service="pbecho")
    with pytest.raises(Unauthorized):
        await challenge.finish(client_final, service="pbecho")
    # nor against a fresh challenge for the same client-first (new server nonce)
    again = await portal.begin_scram(client_first)
    with pytest.raises(Unauthorized):
        await again.finish(client_final, service="pbecho")


async def test_concurrent_finishes_of_one_challenge_admit_at_most_one(portal):
    client = ScramClient("alice", PASSWORD)
    challenge = await portal.begin_scram(client.first())
    client_final = await client.final_async(challenge.server_first)
    results = await asyncio.gather(
        *(challenge.finish(client_final, service="pbecho") for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Unauthorized) for r in results if isinstance(r, Exception))


async def test_an_expired_challenge_fails(portal):
    portal.challenge_timeout = 0.0
    client = ScramClient("alice", PASSWORD)
    challenge = await portal.begin_scram(client.first())
    client_final = await client.final_async(challenge.server_first)
    await asyncio.sleep(0.01)
    with pytest.raises(Unauthorized):
        await challenge.finish(client_final, service="pbecho")


@pytest.mark.parametrize(
    "message",
    ["", "garbage", "n,,n=alice", "n,,n=alice,r=" + "x" * 5000, None, 42, b"n,,n=alice,r=abc", "y,,n=alice,r=abc"],
)
async def test_garbage_client_first_through_the_portal_is_unauthorized(portal, message):
    with pytest.raises(Unauthorized):
        await portal.begin_scram(message)


@pytest.mark.parametrize("message", ["", "c=biws", "c=biws,r=x,p=" + "A" * 5000, None, 7])
async def test_garbage_client_final_through_the_portal_is_unauthorized(portal, message):
    challenge = await portal.begin_scram(ScramClient("alice", PASSWORD).first())
    with pytest.raises(Unauthorized):
        await challenge.finish(message, service="pbecho")


async def test_anonymous_login_reaches_a_service_that_allows_it(portal):
    interface, avatar, _ = await portal.login(Anonymous(), None, IEcho, service="public")
    assert interface is IEcho and avatar.name == "anonymous"
    with pytest.raises(Unauthorized):  # and only the anonymous perspective
        await portal.login(Anonymous(), None, service="public", perspective="alice")


async def test_anonymous_needs_an_anonymous_checker(realm, checker):
    portal = Portal(realm, [checker], throttle=Throttle(base_delay=0))
    with pytest.raises(Unauthorized):
        await portal.login(Anonymous(), None, service="public")


async def test_realms_get_a_perspective_key_and_may_be_synchronous(checker):
    seen = []

    class Realm:
        def request_avatar(self, avatar_id, mind, *interfaces):
            seen.append((avatar_id, mind, interfaces))
            return None, "avatar", lambda: None

    portal = Portal(Realm(), [checker, AllowAnonymous()], throttle=Throttle(base_delay=0))
    await scram_login(portal, "alice", PASSWORD, service="words", perspective="moderator", mind="m")
    await scram_login(portal, "alice", PASSWORD)
    await portal.login(Anonymous(), None, service="pbecho")
    assert [key for key, _, _ in seen] == [
        PerspectiveKey("alice", "words", "moderator"),
        PerspectiveKey("alice", None, None),
        PerspectiveKey(ANONYMOUS, "pbecho", None),
    ]
    assert seen[0][1] == "m" and seen[2][0].is_anonymous


async def test_the_portal_throttles_repeated_failures_but_not_other_accounts(realm, checker):
    portal = Portal(realm, [checker], throttle=Throttle(base_delay=0.2, factor=2))
    loop = asyncio.get_running_loop()
    with pytest.raises(Unauthorized):
        await scram_login(portal, "alice", "wrong", service="pbecho", source="10.0.0.1")
    start = loop.time()
    with pytest.raises(Unauthorized):  # delayed: the throttle answers late, not differently
        await scram_login(portal, "alice", PASSWORD + "x", service="pbecho", source="10.0.0.2")
    assert loop.time() - start >= 0.19
    assert portal.throttle.delay_for("bob", "10.0.0.3") == 0
    await scram_login(portal, "bob", PASSWORD, service="pbecho", source="10.0.0.3")
    assert portal.throttle.delay_for("alice", "10.0.0.4") > 0.2  # two failures now


async def test_fifty_concurrent_scram_logins_succeed(realm, store):
    portal = Portal(realm, [StoreChecker(store)], throttle=Throttle(base_delay=0))
    names = [f"user{i}" for i in range(50)]
    for name in names:
        await store.add_user_async(name, PASSWORD, keyring=[("pbecho", None)])
    results = await asyncio.gather(*(scram_login(portal, name, PASSWORD, service="pbecho") for name in names))
    assert sorted(r.avatar.name for r in results) == sorted(names)


async def test_key_derivation_never_runs_on_the_event_loop(portal, monkeypatch):
    calls = []
    real = scram.salted_password

    def spy(*args):
        calls.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(scram, "salted_password", spy)
    await scram_login(portal, "alice", PASSWORD, service="pbecho")
    assert len(calls) == 1  # the client's; the server derives nothing at login
    await portal.login(UsernamePassword("alice", PASSWORD), None, service="pbecho")
    with pytest.raises(Unauthorized):
        await portal.login(UsernamePassword("mallory", PASSWORD), None, service="pbecho")
    assert len(calls) == 3  # an unknown user costs the same derivation
    assert threading.main_thread() not in calls


def test_portal_refuses_things_that_are_not_checkers_or_realms(realm):
    with pytest.raises(TypeError):
        Portal(realm, [object()])
    with pytest.raises(TypeError):
        Portal(object())


class FailingKeyring(StoreChecker):
    """The verifiers are readable, the keyrings are not (a disk error, say)."""

    async def get_keyring(self, username):
        raise StoreError(f"account database {self.store.path}: disk I/O error")


async def test_an_account_store_that_fails_mid_login_gives_unauthorized_and_an_error_log(
        realm, store, caplog):
    """Whatever the store's trouble, a client learns only LOGIN_FAILED (not the
    database's path nor SQLite's message); the operator gets an ERROR record."""
    path = str(store.path)
    keyring_portal = Portal(realm, [FailingKeyring(store)], throttle=Throttle(base_delay=0))
    store.close()
    data = bytearray(store.path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[page_size:] = b"\xff" * (len(data) - page_size)
    damaged = AccountStore(tmp := store.path.with_name("damaged.sqlite3"))
    tmp.write_bytes(bytes(data))
    tmp.chmod(0o600)
    damaged_portal = Portal(realm, [StoreChecker(damaged)], throttle=Throttle(base_delay=0))
    with caplog.at_level(logging.INFO, logger="cred.portal"):
        attempts = [
            lambda: damaged_portal.begin_scram(ScramClient("alice", PASSWORD).first()),
            lambda: damaged_portal.login(UsernamePassword("alice", PASSWORD), None, service="pbecho"),
            lambda: scram_login(keyring_portal, "alice", PASSWORD, service="pbecho"),
            lambda: keyring_portal.login(UsernamePassword("alice", PASSWORD), None, service="pbecho"),
        ]
        for attempt in attempts:
            with pytest.raises(Unauthorized) as info:
                await attempt()
            assert str(info.value) == LOGIN_FAILED
            assert info.value.__cause__ is None and info.value.__suppress_context__
    damaged.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 4
    assert all("account" in r.getMessage() for r in errors)
    assert "malformed" in errors[0].getMessage() and "disk I/O error" in errors[2].getMessage()
    assert path in errors[2].getMessage()
