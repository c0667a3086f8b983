"""Credential checkers: credentials in, identity out.

:class:`InMemoryChecker` and :class:`StoreChecker` check user names and
passwords against SCRAM verifiers (so the same accounts serve plain and
SCRAM logins), and hand the portal verifiers and keyrings.
:class:`AllowAnonymous` lets anonymous credentials through (the realm still
decides whether a service admits them).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping

from zope.interface import implementer

from . import scram
from .errors import Unauthorized
from .interfaces import (
    IAnonymous,
    ICredentialsChecker,
    IKeyring,
    IScramVerifierSource,
    IUsernamePassword,
)
from .perspective import ANONYMOUS, Anonymity

__all__ = ["InMemoryChecker", "StoreChecker", "AllowAnonymous"]


async def _check_username_password(source, credentials) -> str:
    """Shared by the verifier-backed checkers.  An unknown name costs the
    same key derivation as a known one (against its fake verifier)."""
    username = getattr(credentials, "username", None)
    password = getattr(credentials, "password", None)
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise Unauthorized()
    verifier = await source.get_scram_verifier(username)
    known = verifier is not None
    if verifier is None:
        verifier = await source.fake_scram_verifier(username)
    matches = await asyncio.to_thread(verifier.check_password, password)
    if known and matches:
        return username
    refused = Unauthorized()
    # For the server's log only (the portal logs it; the peer sees LOGIN_FAILED).
    refused.reason = "wrong password" if known else "no such account"  # type: ignore[attr-defined]
    raise refused


@implementer(ICredentialsChecker, IScramVerifierSource, IKeyring)
class InMemoryChecker:
    """Accounts held in memory, for tests and small servers::

        InMemoryChecker({"alice": "pw"}, keyring={"alice": [("pbecho", "alice")]})

    Verifiers are derived at construction (blocking: one KDF per user); the
    passwords are not kept.  A keyring perspective of None means the user's
    own name.  ``server_secret`` seeds the fake verifiers of unknown names
    (random if not given, so stable for this object's lifetime).
    """

    credential_interfaces = (IUsernamePassword,)

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        keyring: Mapping[str, Iterable[tuple[str, str | None]]] | None = None,
        iterations: int = scram.DEFAULT_ITERATIONS,
        server_secret: bytes | None = None,
    ) -> None:
        self.iterations = iterations
        self._secret = server_secret if server_secret is not None else secrets.token_bytes(32)
        self._fakes = scram._FakeVerifiers(self._secret)
        self._verifiers: dict[str, scram.ScramVerifier] = {}
        self._keyrings: dict[str, set[tuple[str, str]]] = {}
        for name, password in (users or {}).items():
            self.add_user(name, password)
        for name, pairs in (keyring or {}).items():
            if name not in self._verifiers:
                raise ValueError(f"keyring given for {name!r}, who is not among the users")
            for service, perspective in pairs:
                self.grant(name, service, perspective)

    def add_user(self, name: str, password: str) -> None:
        """Add an account (blocking: runs the KDF)."""
        if not isinstance(name, str) or not name:
            raise ValueError("user name must be non-empty text")
        self._verifiers[name] = scram.ScramVerifier.from_password(password, iterations=self.iterations)
        self._keyrings.setdefault(name, set())

    def grant(self, name: str, service: str, perspective: str | None = None) -> None:
        self._keyrings[name].add((service, name if perspective is None else perspective))

    async def request_avatar_id(self, credentials) -> str:
        return await _check_username_password(self, credentials)

    async def get_scram_verifier(self, username: str) -> scram.ScramVerifier | None:
        return self._verifiers.get(username)

    async def fake_scram_verifier(self, username: str) -> scram.ScramVerifier:
        return self._fakes(username, iterations=self.iterations)

    async def get_keyring(self, username: str) -> set[tuple[str, str]] | None:
        pairs = self._keyrings.get(username)
        return None if pairs is None else set(pairs)


@implementer(ICredentialsChecker, IScramVerifierSource, IKeyring)
class StoreChecker:
    """Accounts from a :class:`cred.store.AccountStore` (read in a worker
    thread; nothing is cached, so ``pb user`` changes apply at the next
    login)."""

    credential_interfaces = (IUsernamePassword,)

    def __init__(self, store) -> None:
        self.store = store

    async def request_avatar_id(self, credentials) -> str:
        return await _check_username_password(self, credentials)

    async def get_scram_verifier(self, username: str) -> scram.ScramVerifier | None:
        return await self.store.get_scram_verifier(username)

    async def fake_scram_verifier(self, username: str) -> scram.ScramVerifier:
        return await self.store.fake_scram_verifier(username)

    async def get_keyring(self, username: str) -> set[tuple[str, str]] | None:
        return await self.store.get_keyring(username)


@implementer(ICredentialsChecker)
class AllowAnonymous:
    """Accepts :class:`cred.Anonymous` credentials as the identity
    :data:`cred.ANONYMOUS`."""

    credential_interfaces = (IAnonymous,)

    async def request_avatar_id(self, credentials) -> Anonymity:
        if not IAnonymous.providedBy(credentials):
            raise Unauthorized()
        return ANONYMOUS
