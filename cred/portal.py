"""The portal: where credentials become avatars.

Two ways in, both ending in the same checks and the same single error:

* :meth:`Portal.login` with credentials objects (``UsernamePassword``,
  ``Anonymous``) — in-process use and tests;
* :meth:`Portal.begin_scram` / :meth:`ScramChallenge.finish` — SCRAM over a
  transport, where the password never leaves the client; or
  :meth:`Portal.scram_one_trip`, the same proof in one message from a client
  that remembers the account's salt.

Each login: pick the checker (or verifier source), wait out the throttle,
check the proof, check the keyring if a service was named, ask the realm for
the avatar of a :class:`~cred.perspective.PerspectiveKey`.  Any failure is
:class:`~cred.errors.Unauthorized` with one fixed message; the real reason
goes to the ``cred.portal`` logger (at ERROR when the account store itself
failed: a client must not learn the database's path or SQLite's message).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import secrets
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any, NamedTuple

from . import scram
from .errors import CredError, ScramError, StoreError, Unauthorized
from .interfaces import ICredentials, ICredentialsChecker, IKeyring, IRealm, IScramVerifierSource
from .perspective import ANONYMOUS, PerspectiveKey
from .throttle import Throttle

__all__ = ["Portal", "ScramChallenge", "LoginResult", "ScramLoginResult"]

log = logging.getLogger(__name__)


class LoginResult(NamedTuple):
    interface: Any
    avatar: Any
    logout: Callable[[], None]


class ScramLoginResult(NamedTuple):
    server_final: str
    interface: Any
    avatar: Any
    logout: Callable[[], None]


class _Failed(Exception):
    """Internal: a login failed for ``reason`` (logged, never shown)."""


class Portal:
    """Joins checkers, a realm and a throttle.

    ``throttle=None`` means a default :class:`~cred.throttle.Throttle` (pass
    ``Throttle(base_delay=0)`` to switch throttling off, e.g. in tests).
    ``server_secret`` seeds fake SCRAM verifiers only when no checker is an
    ``IScramVerifierSource`` (so SCRAM starts still look normal); sources
    make their own fakes.  ``challenge_timeout`` bounds the time between
    :meth:`begin_scram` and :meth:`ScramChallenge.finish`.  Each SCRAM
    login issues a single-use ticket for a later one-trip login
    (:meth:`scram_one_trip`); the portal keeps at most ``max_tickets`` (the
    oldest go first; 0 turns one-trip logins off), each for
    ``ticket_lifetime`` seconds.
    """

    def __init__(
        self,
        realm: Any,
        checkers: Iterable[Any] = (),
        *,
        throttle: Throttle | None = None,
        server_secret: bytes | None = None,
        challenge_timeout: float = 60.0,
        max_tickets: int = 10_000,
        ticket_lifetime: float = 3600.0,
    ) -> None:
        if not IRealm.providedBy(realm) and not callable(getattr(realm, "request_avatar", None)):
            raise TypeError(f"{realm!r} is not a realm (it needs request_avatar)")
        self.realm = realm
        self.throttle = throttle if throttle is not None else Throttle()
        self.challenge_timeout = challenge_timeout
        if type(max_tickets) is not int or max_tickets < 0:
            raise ValueError(f"max_tickets must be an int >= 0, not {max_tickets!r}")
        self.max_tickets = max_tickets
        if not isinstance(ticket_lifetime, (int, float)) or not ticket_lifetime > 0:
            raise ValueError(f"ticket_lifetime must be a positive number of seconds, not {ticket_lifetime!r}")
        self.ticket_lifetime = ticket_lifetime
        #: ticket -> (user name, expiry on the monotonic clock); oldest first
        self._tickets: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._secret = server_secret if server_secret is not None else secrets.token_bytes(32)
        self._checkers: list[Any] = []
        for checker in checkers:
            self.register_checker(checker)

    def register_checker(self, checker: Any) -> None:
        if not ICredentialsChecker.providedBy(checker):
            raise TypeError(f"{checker!r} does not provide ICredentialsChecker")
        self._checkers.append(checker)

    @property
    def checkers(self) -> tuple[Any, ...]:
        return tuple(self._checkers)

    # --- plain credentials -----------------------------------------------------

    async def login(
        self,
        credentials: Any,
        mind: Any,
        *interfaces: Any,
        service: str | None = None,
        perspective: str | None = None,
        source: Hashable | None = None,
        offered: Collection[str] | None = None,
    ) -> LoginResult:
        """Check ``credentials`` and return ``(interface, avatar, logout)``.

        ``service``/``perspective`` ask for a perspective on the identity's
        keyring (perspective defaults to the user name); anonymous logins
        skip the keyring and leave it to the realm.  ``source`` (the peer's
        host, say) keys the throttle.  ``offered`` is the set of services
        the listener the login arrived on offers (None: any); a login to
        another service fails like every other.  Raises :class:`Unauthorized`.
        """
        username = getattr(credentials, "username", None)
        account = username if isinstance(username, str) else None
        try:
            _check_request(service, perspective, offered)
            checker = self._checker_for(credentials)
            await self._wait(account, source)
            try:
                identity = await checker.request_avatar_id(credentials)
            except Unauthorized:
                raise _Failed("bad credentials") from None
            return await self._enter(identity, checker, mind, interfaces, service, perspective,
                                     account, source)
        except _Failed as failure:
            self._log_failure(failure, account, source)
            raise Unauthorized() from None
        except StoreError as exc:
            _log_store_failure(exc, account, source)
            raise Unauthorized() from None

    def _checker_for(self, credentials: Any) -> Any:
        if ICredentials.providedBy(credentials):
            for checker in self._checkers:
                if any(iface.providedBy(credentials) for iface in checker.credential_interfaces):
                    return checker
        raise _Failed(f"no checker for {type(credentials).__name__}")

    # --- SCRAM -----------------------------------------------------------------

    async def begin_scram(self, client_first: str, *, source: Hashable | None = None,
                          offered: Collection[str] | None = None) -> ScramChallenge:
        """Start a SCRAM login: parse the client-first message, look up the
        verifier (a fake one for an unknown name) and return a
        :class:`ScramChallenge` whose ``server_first`` goes back to the
        client.  ``offered`` is as for :meth:`login`; the challenge keeps it
        for :meth:`ScramChallenge.finish`.  Raises :class:`Unauthorized` if
        the message is malformed."""
        server = self._scram_server(client_first, source, None)
        checker, verifier, known = await self._verifier_for(server.username, source)
        return ScramChallenge(self, server, server.start(verifier), checker, known, source, offered)

    async def scram_one_trip(
        self,
        client_first: str,
        ticket: str,
        server_first: str,
        client_final: str,
        *,
        source: Hashable | None = None,
        service: str | None = None,
        perspective: str | None = None,
        mind: Any = None,
        interfaces: Iterable[Any] = (),
        offered: Collection[str] | None = None,
    ) -> tuple[ScramChallenge, ScramLoginResult | None]:
        """A SCRAM login in one message from the client.

        ``ticket`` is a single-use server nonce this portal issued to the
        account at an earlier login (:attr:`ScramChallenge.ticket`); the
        client remembered the account's salt and iteration count, and sent
        the ``server_first`` message it expects along with its proof.  If
        the ticket is live and was issued to this account, and
        ``server_first`` is exactly the message this portal would send with
        it, the proof is checked as :meth:`ScramChallenge.finish` would:
        returns ``(challenge, result)``.  Otherwise (ticket spent, expired
        or unknown, salt changed) nothing is checked and ``(challenge,
        None)`` comes back, a challenge with a fresh nonce: send its
        ``server_first`` and go on as after :meth:`begin_scram`.  The
        ticket is used up either way.  Raises :class:`Unauthorized` for
        every failure.
        """
        if not isinstance(ticket, str) or not isinstance(server_first, str):
            self._log_failure(_Failed("malformed one-trip login: ticket or server-first is not text"),
                              None, source)
            raise Unauthorized()
        plausible = scram._valid_ticket(ticket)
        server = self._scram_server(client_first, source, ticket if plausible else None)
        username = server.username
        checker, verifier, known = await self._verifier_for(username, source)
        if plausible:
            expected = server.start(verifier)
            if self._redeem(ticket, username) and server_first == expected:
                challenge = ScramChallenge(self, server, expected, checker, known, source, offered)
                result = await challenge.finish(client_final, service=service, perspective=perspective,
                                                mind=mind, interfaces=interfaces)
                return challenge, result
            server = scram.ScramServer(client_first)  # the fallback's own fresh nonce
        return (ScramChallenge(self, server, server.start(verifier), checker, known, source, offered),
                None)

    def _issue_ticket(self, username: str) -> str | None:
        if self.max_tickets <= 0:
            return None
        ticket = secrets.token_urlsafe(18)  # 24 characters: a SCRAM nonce part
        tickets = self._tickets
        tickets[ticket] = (username, time.monotonic() + self.ticket_lifetime)
        while len(tickets) > self.max_tickets:
            tickets.popitem(last=False)  # the oldest: its client logs in the two-trip way
        return ticket

    def _redeem(self, ticket: str, username: str) -> bool:
        tickets = self._tickets
        entry = tickets.get(ticket)
        if entry is None or entry[0] != username:
            return False  # another account's ticket is not this caller's to spend
        del tickets[ticket]
        return entry[1] > time.monotonic()

    def _scram_server(self, client_first: str, source: Hashable | None,
                      nonce: str | None) -> scram.ScramServer:
        try:
            return scram.ScramServer(client_first, nonce=nonce)
        except ScramError as exc:
            self._log_failure(_Failed(f"malformed client-first: {exc}"), None, source)
            raise Unauthorized() from None

    async def _verifier_for(self, username: str, source: Hashable | None) -> tuple[Any, Any, bool]:
        """(checker, verifier, known): the account's verifier, or a fake one
        shaped like it for an unknown name."""
        checker = next((c for c in self._checkers if IScramVerifierSource.providedBy(c)), None)
        try:
            verifier = await checker.get_scram_verifier(username) if checker is not None else None
            known = verifier is not None
            if verifier is None:
                if checker is not None:
                    verifier = await checker.fake_scram_verifier(username)
                else:
                    verifier = scram.fake_verifier(self._secret, username)
        except StoreError as exc:
            _log_store_failure(exc, username, source)
            raise Unauthorized() from None
        return checker, verifier, known

    # --- shared tail -----------------------------------------------------------

    async def _wait(self, account: str | None, source: Hashable | None) -> None:
        delay = self.throttle.delay_for(account, source)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _enter(
        self,
        identity: Any,
        checker: Any,
        mind: Any,
        interfaces: tuple,
        service: str | None,
        perspective: str | None,
        account: str | None,
        source: Hashable | None,
    ) -> LoginResult:
        if identity is ANONYMOUS:
            key = PerspectiveKey(ANONYMOUS, service, perspective)
        else:
            if not isinstance(identity, str) or not identity:
                raise _Failed(f"checker returned a bad identity {identity!r}")
            key = PerspectiveKey(identity, service, perspective)
            if service is not None:
                key = PerspectiveKey(identity, service, identity if perspective is None else perspective)
                keyring = await self._keyring(identity, checker)
                if keyring is None or (key.service, key.perspective) not in keyring:
                    raise _Failed(f"{key.service}:{key.perspective} is not on {identity!r}'s keyring")
        try:
            result = self.realm.request_avatar(key, mind, *interfaces)
            if inspect.isawaitable(result):
                result = await result
            interface, avatar, logout = result
        except (KeyError, CredError) as exc:
            raise _Failed(f"realm refused {key!r}: {exc!r}") from None
        self.throttle.success(account, source)
        return LoginResult(interface, avatar, logout)

    async def _keyring(self, identity: str, checker: Any) -> set[tuple[str, str]] | None:
        if IKeyring.providedBy(checker):
            return await checker.get_keyring(identity)
        for other in self._checkers:
            if IKeyring.providedBy(other):
                return await other.get_keyring(identity)
        return None

    def _log_failure(self, failure: Exception, account: str | None, source: Hashable | None) -> None:
        self.throttle.failure(account, source)
        log.info("login failed: account=%r source=%r: %s", account, source, failure)


def _log_store_failure(exc: StoreError, account: str | None, source: Hashable | None) -> None:
    # The server's fault, not the client's: not counted by the throttle.
    log.error("login could not be checked: account=%r source=%r: the account store failed: %s",
              account, source, exc)


def _check_request(service: object, perspective: object,
                   offered: Collection[str] | None = None) -> None:
    if service is not None and not isinstance(service, str):
        raise _Failed("service name is not text")
    if offered is not None and service not in offered:
        # The listener binds the login: a service that shares this portal
        # is not reachable through another service's port.
        wanted = "no service" if service is None else f"service {service!r}"
        raise _Failed(f"{wanted} is not offered on the listener this login came through "
                      f"(it offers {', '.join(sorted(offered)) or 'nothing'})")
    if perspective is not None and not isinstance(perspective, str):
        raise _Failed("perspective name is not text")
    if perspective is not None and service is None:
        raise _Failed("a perspective was asked for without a service")


class ScramChallenge:
    """A SCRAM login in progress (from :meth:`Portal.begin_scram`).

    Send :attr:`server_first` to the client, then hand its client-final
    message to :meth:`finish`.  One shot: a second ``finish`` (a replayed
    proof) fails, and so does one after ``Portal.challenge_timeout``.
    """

    def __init__(
        self,
        portal: Portal,
        server: scram.ScramServer,
        server_first: str,
        checker: Any,
        known: bool,
        source: Hashable | None,
        offered: Collection[str] | None = None,
    ) -> None:
        self._portal = portal
        self._offered = offered
        self._server = server
        self._checker = checker
        self._known = known
        self._source = source
        self._started = time.monotonic()
        self._used = False
        self.username: str = server.username
        self.server_first: str = server_first
        #: After a successful :meth:`finish`: a single-use ticket for this
        #: account's next one-trip login (None if the portal issues none).
        self.ticket: str | None = None

    async def finish(
        self,
        client_final: str,
        *,
        service: str | None = None,
        perspective: str | None = None,
        mind: Any = None,
        interfaces: Iterable[Any] = (),
    ) -> ScramLoginResult:
        """Check the client's proof and enter.

        Returns ``(server_final, interface, avatar, logout)``; send
        ``server_final`` to the client so it can check the server's proof.
        Raises :class:`Unauthorized` for every failure.
        """
        portal = self._portal
        account, source = self.username, self._source
        try:
            if self._used:
                raise _Failed("challenge already used (replayed client-final?)")
            self._used = True  # before any await: concurrent finishes cannot both run
            if time.monotonic() - self._started > portal.challenge_timeout:
                raise _Failed("challenge expired")
            interfaces = tuple(interfaces)
            _check_request(service, perspective, self._offered)
            await portal._wait(account, source)
            try:
                server_final = self._server.finish(client_final)
            except ScramError as exc:
                raise _Failed(f"SCRAM proof refused: {exc}") from None
            if not self._known:
                raise _Failed("no such account")  # unreachable in practice: fakes match no proof
            interface, avatar, logout = await portal._enter(
                account, self._checker, mind, interfaces, service, perspective, account, source
            )
        except _Failed as failure:
            portal._log_failure(failure, account, source)
            raise Unauthorized() from None
        except StoreError as exc:
            _log_store_failure(exc, account, source)
            raise Unauthorized() from None
        self.ticket = portal._issue_ticket(account)
        return ScramLoginResult(server_final, interface, avatar, logout)
