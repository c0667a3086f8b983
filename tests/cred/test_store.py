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


@pytest.mark.parametrize("version", [-1, -(2**31)])
def test_a_negative_schema_version_is_refused_too(store, db, version):
    store.close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {version}"):
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


@pytest.mark.parametrize("create", [False, True])
def test_an_empty_file_is_not_an_account_database_and_is_left_alone(tmp_path, create):
    empty = tmp_path / "accounts.sqlite3"
    empty.touch()
    with pytest.raises(StoreError) as info:
        AccountStore(empty, create=create).users()
    assert str(empty) in str(info.value) and "empty (0 bytes)" in str(info.value)
    assert empty.stat().st_size == 0  # no schema, no server secret written into it
    assert os.listdir(tmp_path) == ["accounts.sqlite3"]


def test_a_new_database_is_created_whole_and_leaves_nothing_beside_it(tmp_path):
    db = tmp_path / "accounts.sqlite3"
    with AccountStore(db, create=True) as store:
        assert store.users() == []
        assert len(store.server_secret()) == 32
    assert os.listdir(tmp_path) == ["accounts.sqlite3"]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_an_sqlite_file_without_any_schema_is_not_taken_over(tmp_path):
    blank = tmp_path / "blank.sqlite3"
    conn = sqlite3.connect(blank)
    conn.execute("VACUUM")  # a valid SQLite file with nothing in it
    conn.close()
    assert blank.stat().st_size > 0
    with pytest.raises(StoreError, match="not a Perspective Broker account database"):
        AccountStore(blank, create=True).users()


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


# -- bad input, damaged files, other writers --------------------------------------


@pytest.mark.parametrize("name", ["", "x" * 129, "a\x01b", "with space", "a\udcffb"])
def test_looking_up_a_name_no_account_can_have_is_an_invalid_name_error(store, name):
    # "a\udcffb" is what a non-UTF-8 command-line argument becomes in Python
    store.add_user("alice", PASSWORD)
    for call in (
        lambda: store.set_password(name, PASSWORD),
        lambda: store.remove_user(name),
        lambda: store.grant(name, "pbecho"),
        lambda: store.revoke(name, "pbecho"),
        lambda: store.revoke("alice", name),
        lambda: store.keyring(name),
        lambda: store.remove_service(name),
    ):
        with pytest.raises(InvalidName):
            call()
    # the login path asks about any name a client sends: it is just unknown
    assert store.verifier(name) is None
    assert asyncio.run(store.get_keyring(name)) is None
    assert store.users() == ["alice"]


def damage(db):
    """Keep the header and the schema page, overwrite every other page."""
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > page_size
    data[page_size:] = b"\xff" * (len(data) - page_size)
    db.write_bytes(bytes(data))


def test_a_damaged_database_is_a_store_error_for_every_operation(store, db):
    store.add_user("alice", PASSWORD, keyring=[("pbecho", None)])
    store.close()
    damage(db)
    with AccountStore(db) as damaged:
        for call in (
            damaged.users,
            damaged.services,
            lambda: damaged.keyring("alice"),
            lambda: damaged.verifier("alice"),
            lambda: damaged.check_add_user("bob"),
            lambda: damaged.add_user("bob", PASSWORD),
            lambda: damaged.grant("alice", "words"),
            lambda: damaged.add_service("mail"),
        ):
            with pytest.raises(StoreError, match="malformed"):
                call()


def test_a_locked_database_is_a_store_error_and_leaves_no_transaction_open(store, db):
    store._connection().execute("PRAGMA busy_timeout = 0")  # fail at once, not in 10 s
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer
        with pytest.raises(StoreError, match="locked"):
            store.add_service("mail")
        other.execute("ROLLBACK")
        other.execute("BEGIN")  # a reader that holds its lock through our COMMIT
        other.execute("SELECT count(*) FROM services").fetchall()
        with pytest.raises(StoreError, match="locked"):
            store.add_service("mail")
        other.execute("COMMIT")
    finally:
        other.close()
    store.add_service("mail")  # nothing was left half-done on our connection
    assert store.services() == ["mail", "pbecho", "words"]


@pytest.mark.parametrize("strike", range(1, 7))
def test_two_processes_creating_the_database_at_once_both_succeed(tmp_path, monkeypatch, strike):
    """Another creator may commit the schema between any two statements of
    ours; opening must never mistake the result for a foreign database."""
    import cred.store

    db = tmp_path / "accounts.sqlite3"
    real_connect = sqlite3.connect
    statements = []

    class Racing(sqlite3.Connection):
        def execute(self, sql, *args):
            statements.append(sql)
            if len(statements) == strike:
                try:
                    with AccountStore(db, create=True) as rival:
                        rival.add_service("rival")
                except StoreError:
                    pass  # we hold a lock at this point: the rival must wait
            return super().execute(sql, *args)

    def connect(*args, **kwargs):
        if not statements:
            return real_connect(*args, factory=Racing, **kwargs)
        return real_connect(*args, **{**kwargs, "timeout": 0})

    monkeypatch.setattr(cred.store.sqlite3, "connect", connect)
    with AccountStore(db, create=True) as store:
        store.add_service("mine")
        assert "mine" in store.services()


# Found by the store-row fuzz harness (tests/fuzz): SQLite's loosely typed
# columns let a damaged file hand back text or NULL where a blob belongs, and
# bytes() of it escaped as a TypeError instead of the store's StoreError.
@pytest.mark.parametrize("row", [
    ("73616c74", 4096, b"k" * 32, b"k" * 32),    # salt stored as text
    (b"salt", 4096.0, b"k" * 32, None),         # float count, NULL key
    (b"salt", 4096, b"short", b"k" * 32),       # key of the wrong length
    (b"salt", 4096, b"k" * 32),                 # a column missing
])
def test_a_damaged_account_row_is_a_store_error(row):
    from cred import StoreError
    from cred.store import _verifier_from_row

    with pytest.raises(StoreError, match="damaged account row"):
        _verifier_from_row(row)
