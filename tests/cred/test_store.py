import asyncio
import hashlib
import os
import sqlite3
import stat
import threading

import pytest

from cred import scram
from cred.errors import (
    DuplicateService,
    DuplicateUser,
    InvalidName,
    MissingDatabase,
    NotGranted,
    SchemaVersionError,
    StoreError,
    UnknownService,
    UnknownUser,
)
from cred.interfaces import IKeyring, IScramVerifierSource
from cred.store import SCHEMA_VERSION, AccountStore

PASSWORD = "Tr0ub4dor&3 correct-horse"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "data" / "accounts.sqlite3"


@pytest.fixture
def store(db):
    with AccountStore(db, create=True) as store:
        store.add_service("pbecho")
        store.add_service("words")
        yield store


def test_store_provides_verifier_and_keyring_interfaces(store):
    assert IScramVerifierSource.providedBy(store)
    assert IKeyring.providedBy(store)


def test_missing_database_is_an_error_unless_creation_is_asked_for(db):
    with pytest.raises(MissingDatabase, match="pb user add"):
        AccountStore(db).users()
    assert not db.exists()
    with AccountStore(db, create=True) as store:
        assert store.users() == []
    with AccountStore(db) as store:
        assert store.users() == []


def test_database_file_is_created_with_mode_0600_in_a_0700_directory(db):
    old = os.umask(0o022)
    try:
        with AccountStore(db, create=True) as store:
            store.add_service("pbecho")
            store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_database_contains_neither_the_password_nor_its_plain_digests(store, db):
    store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
    store.add_user("bob", PASSWORD + "2")
    store.set_password("bob", PASSWORD)  # the old verifier is overwritten
    store.close()
    data = db.read_bytes()
    for path in db.parent.iterdir():
        data += path.read_bytes()  # and any journal left behind
    secret = PASSWORD.encode()
    forbidden = [secret, secret.hex().encode(), (PASSWORD + "2").encode()]
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        digest = hashlib.new(algorithm, secret).digest()
        forbidden += [digest, digest.hex().encode(), digest.hex().upper().encode()]
    for needle in forbidden:
        assert needle not in data, needle


def test_store_keeps_salt_iterations_and_keys_that_verify_the_password(store):
    store.add_user("alice", PASSWORD, iterations=5000)
    verifier = store.verifier("alice")
    assert verifier.iterations == 5000 and len(verifier.salt) == scram.SALT_LENGTH
    assert verifier.check_password(PASSWORD)
    assert not verifier.check_password("wrong")
    assert store.verifier("nobody") is None


def test_newer_schema_version_is_refused_with_a_clear_error(store, db):
    store.close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="upgrade perspective-broker"):
        AccountStore(db).users()


def test_schema_version_is_recorded(store, db):
    store.users()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_file_that_is_not_an_account_database_is_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an account database"):
        AccountStore(junk).users()
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a Perspective Broker account database"):
        AccountStore(other).users()


def test_duplicate_and_unknown_users_are_named_errors(store):
    store.add_user("alice", PASSWORD)
    with pytest.raises(DuplicateUser, match="alice"):
        store.add_user("alice", "other")
    for call in (
        lambda: store.set_password("bob", PASSWORD),
        lambda: store.remove_user("bob"),
        lambda: store.grant("bob", "pbecho"),
        lambda: store.revoke("bob", "pbecho"),
        lambda: store.keyring("bob"),
    ):
        with pytest.raises(UnknownUser, match="bob"):
            call()


def test_empty_passwords_and_bad_names_are_refused(store):
    with pytest.raises(StoreError, match="empty password"):
        store.add_user("alice", "")
    for name in ["", "with space", "tab\there", "x" * 129, "\u2168"]:
        with pytest.raises(InvalidName):
            store.add_user(name, PASSWORD)
    with pytest.raises(InvalidName, match=":"):
        store.add_service("a:b")
    assert store.users() == []


def test_services_must_be_registered_before_they_are_granted(store):
    with pytest.raises(UnknownService, match="pb user add-service mail"):
        store.add_user("alice", PASSWORD, keyring=[("mail", None)])
    assert store.users() == []  # nothing half-created
    store.add_user("alice", PASSWORD)
    with pytest.raises(UnknownService):
        store.grant("alice", "mail")
    with pytest.raises(DuplicateService):
        store.add_service("pbecho")
    assert store.services() == ["pbecho", "words"]


def test_keyring_grant_defaults_to_own_name_and_revoke_removes(store):
    store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
    store.grant("alice", "words", "moderator")
    store.grant("alice", "words", "moderator")  # harmless twice
    assert store.keyring("alice") == {("pbecho", "alice"), ("words", "moderator")}
    store.revoke("alice", "words", "moderator")
    assert store.keyring("alice") == {("pbecho", "alice")}
    with pytest.raises(NotGranted):
        store.revoke("alice", "words", "moderator")


def test_removing_a_user_or_service_cleans_keyrings(store):
    store.add_user("alice", PASSWORD, keyring=[("pbecho", None), ("words", None)])
    store.remove_service("words")
    assert store.keyring("alice") == {("pbecho", "alice")}
    store.remove_user("alice")
    assert store.users() == []
    store.add_user("alice", PASSWORD)
    assert store.keyring("alice") == set()


def test_fake_verifiers_are_stable_across_reopening(store, db):
    store.add_user("alice", PASSWORD)
    fake = store.fake_verifier("mallory")
    real = store.verifier("alice")
    assert len(fake.salt) == len(real.salt) and fake.iterations == real.iterations
    store.close()
    with AccountStore(db) as again:
        assert again.fake_verifier("mallory") == fake
        assert again.fake_verifier("eve") != fake


async def test_async_methods_run_in_worker_threads(store, monkeypatch):
    threads = []
    real = scram.salted_password

    def spy(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(scram, "salted_password", spy)
    await store.add_user_async("alice", PASSWORD, keyring=[("pbecho", None)])
    await store.set_password_async("alice", PASSWORD + "!")
    assert len(threads) == 2 and threading.main_thread() not in threads
    verifier = await store.get_scram_verifier("alice")
    assert await asyncio.to_thread(verifier.check_password, PASSWORD + "!")
    assert await store.get_scram_verifier("nobody") is None
    assert await store.get_keyring("alice") == {("pbecho", "alice")}
    assert await store.get_keyring("nobody") is None
    assert await store.fake_scram_verifier("nobody") == store.fake_verifier("nobody")


def test_two_store_objects_on_one_file_see_each_others_changes(store, db):
    with AccountStore(db) as other:
        other.add_user("alice", PASSWORD)
        assert store.users() == ["alice"]
        store.grant("alice", "pbecho")
        assert other.keyring("alice") == {("pbecho", "alice")}
