"""Twisted PB's login secret: the weaker, opt-in one.

Twisted PB logs in with a challenge/response: the server sends a random
challenge, the client answers ``MD5(MD5(password) + challenge)``.  To check
that answer a server must hold ``MD5(password)``, unsalted, and anyone who
reads that value can log in as the user over the Twisted dialect without
knowing the password.  So it is never derived silently: an account gets
one only when asked (``pb user add NAME --twisted-secret``, or
:func:`set_twisted_secret`), it is kept in a table of its own (marked
``weak``), and only the Twisted dialect's checker reads it.  SCRAM
accounts without it cannot log in over the Twisted dialect at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zope.interface import Interface, implementer

from .errors import Unauthorized
from .interfaces import ICredentials, ICredentialsChecker

__all__ = ["ITwistedChallengeResponse", "TwistedChallengeResponse", "TwistedSecretChecker",
           "twisted_secret", "twisted_response", "new_challenge", "set_twisted_secret",
           "remove_twisted_secret", "get_twisted_secret"]

_TABLE = """
CREATE TABLE IF NOT EXISTS twisted_secrets (
    account TEXT PRIMARY KEY REFERENCES accounts(name) ON DELETE CASCADE,
    md5     BLOB NOT NULL,
    weak    INTEGER NOT NULL DEFAULT 1
)
"""


def twisted_secret(password: str | bytes) -> bytes:
    """What the server keeps: ``MD5(password)`` (password-equivalent for this login)."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hashlib.md5(password).digest()


def twisted_response(secret: bytes, challenge: bytes) -> bytes:
    """The answer to ``challenge``: ``MD5(secret + challenge)``."""
    return hashlib.md5(secret + challenge).digest()


def new_challenge() -> bytes:
    """A random challenge (Twisted's are 16 bytes too; ours come from ``secrets``)."""
    return secrets.token_bytes(16)


class ITwistedChallengeResponse(ICredentials):
    """A Twisted PB login: a user name, our challenge, the peer's response."""


@implementer(ITwistedChallengeResponse)
@dataclass(frozen=True)
class TwistedChallengeResponse:
    username: str
    challenge: bytes = field(repr=False)
    response: bytes = field(repr=False)


# -- the store side -------------------------------------------------------------

def _ensure_table(store: Any) -> None:
    with store._transaction() as conn:
        conn.execute(_TABLE)


def set_twisted_secret(store: Any, name: str, password: str) -> None:
    """Give account ``name`` a Twisted-compatible secret (blocking)."""
    from .errors import UnknownUser
    from .store import _check_password, check_name

    check_name("user", name)
    _check_password(password)
    _ensure_table(store)
    with store._transaction() as conn:
        if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone() is None:
            raise UnknownUser(f"no account named {name!r}")
        conn.execute("INSERT OR REPLACE INTO twisted_secrets (account, md5, weak) VALUES (?, ?, 1)",
                     (name, twisted_secret(password)))


def remove_twisted_secret(store: Any, name: str) -> None:
    _ensure_table(store)
    with store._transaction() as conn:
        conn.execute("DELETE FROM twisted_secrets WHERE account = ?", (name,))


def get_twisted_secret(store: Any, name: str) -> bytes | None:
    """The account's Twisted secret, or None (no account, or none given)."""
    try:
        rows = store._query(
            "SELECT t.md5 FROM twisted_secrets t JOIN accounts a ON a.name = t.account "
            "WHERE t.account = ?", (name,))
    except Exception as exc:
        if "no such table" in str(exc):
            return None
        raise
    return bytes(rows[0][0]) if rows else None


# -- the checker ----------------------------------------------------------------

@implementer(ICredentialsChecker)
class TwistedSecretChecker:
    """Checks Twisted PB challenge/responses against the opt-in secrets.

    ``source`` is an :class:`~cred.store.AccountStore` (secrets set with
    ``pb user add NAME --twisted-secret``) or a mapping of user name to
    password, for tests and small servers.  Register it on the portal
    that a Twisted-dialect listener serves::

        portal.register_checker(TwistedSecretChecker(store))
    """

    credential_interfaces = (ITwistedChallengeResponse,)

    def __init__(self, source: Any) -> None:
        if isinstance(source, Mapping):
            self._secrets: dict[str, bytes] | None = {
                name: twisted_secret(pw) for name, pw in source.items()}
            self._store = None
        else:
            self._secrets = None
            self._store = source

    async def _secret(self, username: str) -> bytes | None:
        if self._secrets is not None:
            return self._secrets.get(username)
        return await asyncio.to_thread(get_twisted_secret, self._store, username)

    async def request_avatar_id(self, credentials: Any) -> str:
        username = getattr(credentials, "username", None)
        if not isinstance(username, str) or not username:
            raise Unauthorized()
        secret = await self._secret(username)
        # Compare against something either way, so timing says nothing.
        expected = twisted_response(secret or b"\0" * 16, credentials.challenge)
        if hmac.compare_digest(expected, credentials.response) and secret is not None:
            return username
        refused = Unauthorized()
        refused.reason = ("wrong Twisted response" if secret is not None  # type: ignore[attr-defined]
                          else "no Twisted secret for this account")
        raise refused
