"""The account store: identities, their SCRAM verifiers and keyrings, and the
registered services, in one SQLite file.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`, ``PRAGMA
application_id`` = :data:`APPLICATION_ID`)::

    meta(key TEXT PRIMARY KEY, value BLOB)             -- 'server_secret'
    accounts(name TEXT PRIMARY KEY, salt BLOB, iterations INTEGER,
             stored_key BLOB, server_key BLOB)
    services(name TEXT PRIMARY KEY)
    keyring(account → accounts, service → services, perspective TEXT,
            PRIMARY KEY (account, service, perspective))

Neither the password nor any unsalted hash of it is stored: only the salt,
the iteration count, StoredKey and ServerKey (see :mod:`cred.scram`).  A
new database is written whole into a file of mode 0600 beside its path and
then linked into place (its directory, if missing, is made with 0700), so
the path never holds a half-made one; SQLite gives its journal the same
mode.  An empty file found at the path is not an account database, and is
never filled in.  Deleted rows are overwritten (``secure_delete``).

The synchronous methods suit the ``pb user`` command.  Servers use the
``async`` ones, which run in a worker thread: key derivation and disk I/O
never happen on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from zope.interface import implementer

from . import scram
from .errors import (
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
from .interfaces import IKeyring, IScramVerifierSource
from .log import get_logger

__all__ = ["AccountStore", "SCHEMA_VERSION", "APPLICATION_ID", "MAX_NAME_LENGTH", "check_name"]

log = get_logger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x50427372  # "PBsr"
MAX_NAME_LENGTH = 128

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE accounts (
    name       TEXT PRIMARY KEY,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL
);
CREATE TABLE services (
    name TEXT PRIMARY KEY
);
CREATE TABLE keyring (
    account     TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    service     TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
    perspective TEXT NOT NULL,
    PRIMARY KEY (account, service, perspective)
);
"""


#: What AccountStore.verifier builds for a name without an account.
_NO_ROW = (b"\0" * scram.SALT_LENGTH, scram.DEFAULT_ITERATIONS, b"\0" * 32, b"\0" * 32)


def check_name(kind: str, name: object) -> str:
    """Validate an account, service or perspective name and return it.

    Names are 1–128 characters, without whitespace or control characters,
    already in SASLprep form (so the name typed at login is the name
    stored), and without ``:``, the keyring's separator
    (``SERVICE:PERSPECTIVE``: a user ``a:b`` would make ``pbecho:a:b``).
    Raises :class:`~cred.errors.InvalidName` naming the problem.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{kind} name must be non-empty text")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{kind} name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        raise InvalidName(f"{kind} name {name!r} contains whitespace or control characters")
    if ":" in name:
        raise InvalidName(f"{kind} name {name!r} contains ':', which separates SERVICE:PERSPECTIVE "
                          f"on a keyring")
    try:
        prepared = scram.saslprep(name)
    except scram.ScramError as exc:
        raise InvalidName(f"{kind} name {name!r}: {exc}") from None
    if prepared != name:
        raise InvalidName(f"{kind} name {name!r} is not in normalised form; use {prepared!r}")
    return name


def _check_password(password: object) -> str:
    if not isinstance(password, str) or not password:
        raise StoreError("empty password: choose a non-empty password")
    return password


def _verifier_from_row(row: tuple) -> scram.ScramVerifier:
    """An accounts row (salt, iterations, stored_key, server_key) as a verifier.

    SQLite's columns are loosely typed: a damaged or hand-edited file can hold
    text, a float or NULL where a blob or an integer belongs.  Such a row is a
    StoreError naming the damage, never a TypeError from bytes() deep inside.
    """
    try:
        salt, iterations, stored, server = row
    except (TypeError, ValueError):
        raise StoreError(f"damaged account row: {len(row)} columns, expected 4") from None
    if type(iterations) is not int or not all(type(v) is bytes for v in (salt, stored, server)):
        raise StoreError("damaged account row: salt and keys must be blobs, iterations an integer")
    try:
        return scram.ScramVerifier(salt, iterations, stored, server)
    except ValueError as exc:
        raise StoreError(f"damaged account row: {exc}") from None


@implementer(IScramVerifierSource, IKeyring)
class AccountStore:
    """The account database at ``path``.

    ``create=True`` creates the file (mode 0600) and schema when missing;
    otherwise a missing file raises :class:`~cred.errors.MissingDatabase`.
    A file that exists is never initialised: an empty one (0 bytes), or an
    SQLite file without our schema, raises :class:`~cred.errors.StoreError`.
    The file is opened lazily, on first use.  ``iterations`` is the default
    iteration count for new verifiers and for fake ones; keep every account
    at that count so unknown names cannot be told from known ones.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        iterations: int = scram.DEFAULT_ITERATIONS,
    ) -> None:
        if iterations < scram.MIN_ITERATIONS:
            raise ValueError(f"iterations must be >= {scram.MIN_ITERATIONS}")
        self.path = Path(path)
        self.create = create
        self.iterations = iterations
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._secret: bytes | None = None
        self._fakes: scram._FakeVerifiers | None = None  # made from the secret once read

    # --- connection ------------------------------------------------------------

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            if path.is_dir():
                raise StoreError(f"{path} is a directory, not an account database file")
            if not path.exists():
                if not self.create:
                    raise MissingDatabase(
                        f"no account database at {path}: create one with `pb user add NAME` "
                        f"(or AccountStore(path, create=True)), or point to the right file"
                    )
                for parent in path.parents:
                    if parent.exists():
                        if not parent.is_dir():
                            raise StoreError(f"cannot create account database {path}: "
                                             f"{parent} is not a directory")
                        break
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._create_file(path)
            stat_result = path.stat()
            mode = stat.S_IMODE(stat_result.st_mode)
        except OSError as exc:  # a file where a directory should be, no permission, ...
            raise StoreError(
                f"cannot {'create' if self.create else 'open'} account database {path}: "
                f"{exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else "")
            ) from None
        if stat_result.st_size == 0:
            # SQLite takes an empty file for a new database, and would let us
            # write a schema and a new server secret into it.  A database is
            # only ever created whole (see _create_file), so an empty file is
            # damage (a truncated copy, `: > file`) and not ours to fill; a
            # new secret would also change every unknown name's fake salt.
            raise StoreError(
                f"{path} is empty (0 bytes), not an account database: restore it from a "
                f"backup, or delete it and let `pb user add NAME` (or `pb run`) create a new one"
            )
        if mode & 0o077:
            log.warning("the account database should have mode 0600 (chmod 600 it)", path=path, mode=f"{mode:04o}")
        uri = path.resolve().as_uri() + "?mode=rw"  # never let sqlite create the file itself
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open account database {path}: {exc}") from None
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_file(self, path: Path) -> None:
        """Create the database at ``path`` whole: schema and server secret
        are written to a new file (mode 0600) beside it, which is then
        linked to ``path`` unless another process created ``path``
        meanwhile (then theirs is used).  So ``path`` is never seen empty,
        and an empty file there is never a database being created."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            try:
                conn = sqlite3.connect(temporary.resolve().as_uri() + "?mode=rw", uri=True,
                                       timeout=10.0, isolation_level=None)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot create account database {path}: {exc}") from None
            try:
                self._create_schema(conn)
            finally:
                conn.close()
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # someone else created it meanwhile; open theirs
            except OSError:
                # A file system without hard links: a rename, which would
                # replace a database created in the last instant, so check.
                if not path.exists():
                    os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        path = self.path
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            # One statement, so one consistent read.
            app_id, version, tables = conn.execute(
                "SELECT (SELECT application_id FROM pragma_application_id),"
                " (SELECT user_version FROM pragma_user_version),"
                " (SELECT count(*) FROM sqlite_master)"
            ).fetchone()
        except sqlite3.OperationalError as exc:  # locked, unreadable, ...
            raise StoreError(f"cannot read account database {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not an account database ({exc})") from None
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise StoreError(f"{path} is an SQLite file but not a Perspective Broker account database")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"account database {path} has schema version {version}, newer than this "
                f"perspective-broker understands ({SCHEMA_VERSION}): upgrade perspective-broker"
            )
        if version < 0:
            raise SchemaVersionError(
                f"account database {path} has schema version {version}, which no "
                f"perspective-broker writes: the file is damaged; restore it from a backup"
            )
        if version == 0:
            # Only _create_file writes a schema, into a file of its own; an
            # existing SQLite file without one is someone else's.
            raise StoreError(f"{path} is an SQLite file but not a Perspective Broker account database")
        # (versions 1..SCHEMA_VERSION-1 would be migrated here)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        path = self.path
        with self._sqlite_errors():
            conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('server_secret', ?)",
                (secrets.token_bytes(32),),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot create account database {path}: {exc}") from exc
            raise

    def _transaction(self):
        return _Transaction(self)

    @contextlib.contextmanager
    def _sqlite_errors(self):
        """SQLite's errors (locked, damaged file, ...) as StoreError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"account database {self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock, self._sqlite_errors():
            return self._connection().execute(sql, params).fetchall()

    # --- secret and fakes ------------------------------------------------------

    def server_secret(self) -> bytes:
        """The random secret generated with the database (fake verifiers)."""
        if self._secret is None:
            rows = self._query("SELECT value FROM meta WHERE key = 'server_secret'")
            if not rows:
                raise StoreError(f"account database {self.path} has no server secret; it is damaged")
            self._secret = bytes(rows[0][0])
        return self._secret

    def fake_verifier(self, name: str) -> scram.ScramVerifier:
        """A stable verifier for an unknown ``name``, shaped like a real one."""
        fakes = self._fakes
        if fakes is None:
            fakes = self._fakes = scram._FakeVerifiers(self.server_secret())
        return fakes(name, iterations=self.iterations)

    # --- accounts --------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str,
        *,
        iterations: int | None = None,
        keyring: Iterable[tuple[str, str | None]] = (),
    ) -> None:
        """Create an account.  ``keyring`` holds ``(service, perspective)``
        pairs; a perspective of None means the user's own name.  Raises
        DuplicateUser, UnknownService, InvalidName or StoreError (empty
        password).  Blocking: runs the KDF."""
        check_name("user", name)
        _check_password(password)
        pairs = [self._pair(name, service, perspective) for service, perspective in keyring]
        verifier = scram.ScramVerifier.from_password(password, iterations=iterations or self.iterations)
        with self._transaction() as conn:
            self._check_new_user(conn, name, pairs)
            conn.execute(
                "INSERT INTO accounts (name, salt, iterations, stored_key, server_key) VALUES (?, ?, ?, ?, ?)",
                (name, verifier.salt, verifier.iterations, verifier.stored_key, verifier.server_key),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO keyring (account, service, perspective) VALUES (?, ?, ?)",
                [(name, service, perspective) for service, perspective in pairs],
            )

    def check_add_user(self, name: str, keyring: Iterable[tuple[str, str | None]] = ()) -> None:
        """Raise what :meth:`add_user` would raise for ``name`` and
        ``keyring`` (short of the password), e.g. before prompting for one."""
        check_name("user", name)
        pairs = [self._pair(name, service, perspective) for service, perspective in keyring]
        with self._lock, self._sqlite_errors():
            self._check_new_user(self._connection(), name, pairs)

    def set_password(self, name: str, password: str, *, iterations: int | None = None) -> None:
        """Replace an account's verifier (new salt).  Blocking: runs the KDF."""
        check_name("user", name)
        _check_password(password)
        verifier = scram.ScramVerifier.from_password(password, iterations=iterations or self.iterations)
        with self._transaction() as conn:
            self._require_user(conn, name)
            conn.execute(
                "UPDATE accounts SET salt = ?, iterations = ?, stored_key = ?, server_key = ? WHERE name = ?",
                (verifier.salt, verifier.iterations, verifier.stored_key, verifier.server_key, name),
            )

    def remove_user(self, name: str) -> None:
        check_name("user", name)
        with self._transaction() as conn:
            self._require_user(conn, name)
            conn.execute("DELETE FROM accounts WHERE name = ?", (name,))

    def users(self) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM accounts ORDER BY name")]

    def verifier(self, name: str) -> scram.ScramVerifier | None:
        """The account's verifier, or None if there is no such account
        (including for any name no account can have)."""
        try:
            check_name("user", name)
        except InvalidName:
            return None
        rows = self._query(
            "SELECT salt, iterations, stored_key, server_key FROM accounts WHERE name = ?", (name,)
        )
        # A name without an account takes the same steps as one with: a
        # verifier is built from a placeholder row, then dropped.  A login's
        # first step must not tell them apart by its time.
        verifier = _verifier_from_row(rows[0] if rows else _NO_ROW)
        return verifier if rows else None

    # --- keyrings --------------------------------------------------------------

    def grant(self, name: str, service: str, perspective: str | None = None) -> None:
        """Put ``(service, perspective)`` on ``name``'s keyring (perspective
        defaults to ``name``).  Granting twice is harmless."""
        check_name("user", name)
        service, perspective = self._pair(name, service, perspective)
        with self._transaction() as conn:
            self._require_user(conn, name)
            self._require_service(conn, service)
            conn.execute(
                "INSERT OR IGNORE INTO keyring (account, service, perspective) VALUES (?, ?, ?)",
                (name, service, perspective),
            )

    def revoke(self, name: str, service: str, perspective: str | None = None) -> None:
        """Take ``(service, perspective)`` off ``name``'s keyring."""
        check_name("user", name)
        service, perspective = self._pair(name, service, perspective)
        with self._transaction() as conn:
            self._require_user(conn, name)
            deleted = conn.execute(
                "DELETE FROM keyring WHERE account = ? AND service = ? AND perspective = ?",
                (name, service, perspective),
            ).rowcount
            if not deleted:
                raise NotGranted(
                    f"user {name!r} does not hold {service}:{perspective} "
                    f"(see the keyring with `pb user list`)"
                )

    def keyring(self, name: str) -> set[tuple[str, str]]:
        """The account's ``(service, perspective)`` pairs; UnknownUser if none."""
        check_name("user", name)
        with self._lock, self._sqlite_errors():
            conn = self._connection()
            self._require_user(conn, name)
            rows = conn.execute(
                "SELECT service, perspective FROM keyring WHERE account = ?", (name,)
            ).fetchall()
        return {(service, perspective) for service, perspective in rows}

    # --- services --------------------------------------------------------------

    def add_service(self, name: str) -> None:
        check_name("service", name)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone():
                raise DuplicateService(f"service {name!r} is already registered")
            conn.execute("INSERT INTO services (name) VALUES (?)", (name,))

    def remove_service(self, name: str) -> None:
        """Unregister a service; it leaves every keyring too."""
        check_name("service", name)
        with self._transaction() as conn:
            self._require_service(conn, name)
            conn.execute("DELETE FROM services WHERE name = ?", (name,))

    def services(self) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM services ORDER BY name")]

    # --- async, for servers (IScramVerifierSource, IKeyring) --------------------

    async def get_scram_verifier(self, username: str) -> scram.ScramVerifier | None:
        return await asyncio.to_thread(self.verifier, username)

    async def fake_scram_verifier(self, username: str) -> scram.ScramVerifier:
        if self._secret is None:
            await asyncio.to_thread(self.server_secret)
        return self.fake_verifier(username)

    async def get_keyring(self, username: str) -> set[tuple[str, str]] | None:
        try:
            return await asyncio.to_thread(self.keyring, username)
        except (UnknownUser, InvalidName):
            return None

    async def add_user_async(self, name: str, password: str, **kwargs) -> None:
        await asyncio.to_thread(self.add_user, name, password, **kwargs)

    async def set_password_async(self, name: str, password: str, **kwargs) -> None:
        await asyncio.to_thread(self.set_password, name, password, **kwargs)

    # --- helpers ---------------------------------------------------------------

    @staticmethod
    def _pair(name: str, service: str, perspective: str | None) -> tuple[str, str]:
        check_name("service", service)
        perspective = name if perspective is None else perspective
        check_name("perspective", perspective)
        return service, perspective

    @classmethod
    def _check_new_user(cls, conn: sqlite3.Connection, name: str, pairs: list[tuple[str, str]]) -> None:
        if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
            raise DuplicateUser(f"user {name!r} already exists (change the password with `pb user passwd {name}`)")
        for service, _ in pairs:
            cls._require_service(conn, service)

    @staticmethod
    def _require_user(conn: sqlite3.Connection, name: str) -> None:
        if not conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
            raise UnknownUser(f"no user named {name!r} (see `pb user list`; create it with `pb user add {name}`)")

    @staticmethod
    def _require_service(conn: sqlite3.Connection, service: str) -> None:
        if not conn.execute("SELECT 1 FROM services WHERE name = ?", (service,)).fetchone():
            raise UnknownService(
                f"no service named {service!r} (see `pb user services`; register it with "
                f"`pb user add-service {service}`)"
            )


class _Transaction:
    """``with store._transaction() as conn``: one write transaction under the
    store's lock; rolled back if the body raises, or if the commit fails
    (another process holding the file, say), so the connection is never
    left inside a transaction.  SQLite's errors become StoreError."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        try:
            with self._store._sqlite_errors():
                conn = self._store._connection()
                conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._store._lock.release()
            raise
        self._conn = conn
        return conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as error:
                    _rollback(self._conn)
                    raise StoreError(f"account database {self._store.path}: {error}") from error
            else:
                _rollback(self._conn)
        finally:
            self._store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"account database {self._store.path}: {exc}") from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """End the open transaction, if any, without raising."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("account database: ROLLBACK failed", exc_info=True)
