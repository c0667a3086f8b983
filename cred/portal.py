"""The portal: where credentials become avatars.

Two ways in, both ending in the same checks and the same single error:

* :meth:`Portal.login` with credentials objects (``UsernamePassword``,
  ``Anonymous``) — in-process use and tests;
* :meth:`Portal.begin_scram` / :meth:`ScramChallenge.finish` — SCRAM over a
  transport, where the password never leaves the client; or
  :meth:`Portal.scram_one_trip`, the same proof in one message from a client
  that remembers the account's salt.

Each login: pick the checker (or verifier source), wait out the throttle
and start an attempt on it (for SCRAM: before the first answer, so the
challenge itself is throttled and counted), check the proof, check the
keyring if a service was named, ask the realm for the avatar of a
:class:`~cred.perspective.PerspectiveKey`, and tell the throttle how the
attempt ended.  Open SCRAM challenges are bounded per connection and in all,
and each is freed when it is answered, abandoned or times out.  Any failure is
:class:`~cred.errors.Unauthorized` with one fixed message; the real reason
goes to the ``cred.portal`` logger (at ERROR when the account store itself
failed: a client must not learn the database's path or SQLite's message).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from . import scram
from .errors import CredError, ScramError, ServiceRequired, StoreError, Unauthorized
from .interfaces import ICredentials, ICredentialsChecker, IKeyring, IRealm, IScramVerifierSource
from .log import get_logger
from .perspective import ANONYMOUS, PerspectiveKey
from .throttle import Attempt, Throttle
from .tickets import TicketStore

__all__ = ["Portal", "ScramChallenge", "ChallengeHost", "LoginResult", "ScramLoginResult"]

log = get_logger(__name__)


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
    """Internal: a login failed for ``reason`` (logged, never shown), with
    more facts for the log as ``fields``."""

    def __init__(self, reason: str, **fields: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


@runtime_checkable
class ChallengeHost(Protocol):
    """What a :class:`ScramChallenge` needs from the portal that made it.

    :class:`Portal` is one; a transport never calls these itself.
    """

    #: seconds between the challenge and its answer before it expires
    challenge_timeout: float

    async def admit(self, account: str | None, source: Hashable | None) -> Attempt:
        """Wait out the throttle for a login, and start its attempt."""
        ...

    async def enter(self, identity: Any, checker: Any, mind: Any, interfaces: tuple[Any, ...],
                    service: str | None, perspective: str | None,
                    offered: Collection[str] | None = None) -> LoginResult:
        """Let a proven identity in: keyring check, then the realm's avatar.
        Raises :class:`~cred.errors.Unauthorized`-worthy failures, and
        :class:`~cred.errors.ServiceRequired` when no service was named and
        none could be picked."""
        ...

    def refuse(self, reason: str, account: str | None, source: Hashable | None,
               attempt: Attempt | None = None, **fields: Any) -> None:
        """Log a refused login with its reason, and count it as failed."""
        ...

    def issue_ticket(self, account: str) -> str | None:
        """A single-use ticket for the account's next one-trip login, or None."""
        ...

    def challenge_closed(self, challenge: ScramChallenge) -> None:
        """The challenge was answered, expired or abandoned: forget it."""
        ...


class Portal:
    """Joins checkers, a realm and a throttle.

    ``throttle=None`` means a default :class:`~cred.throttle.Throttle` (pass
    ``Throttle(base_delay=0)`` to switch throttling off, e.g. in tests).
    ``server_secret`` seeds fake SCRAM verifiers only when no checker is an
    ``IScramVerifierSource`` (so SCRAM starts still look normal); sources
    make their own fakes.  ``challenge_timeout`` bounds the time between
    :meth:`begin_scram` and :meth:`ScramChallenge.finish`: a challenge
    still unanswered then is freed and counted as a failed login.  At most
    ``max_challenges`` SCRAM logins are open at once (started and not yet
    answered, expired or abandoned), and at most
    ``max_challenges_per_connection`` for one ``connection=`` (what the
    transport passes to tell its connections apart); a login past either
    cap is refused at once.  Each SCRAM
    login issues a single-use ticket for a later one-trip login
    (:meth:`scram_one_trip`) from ``tickets``, a
    :class:`~cred.tickets.TicketStore`; without one the portal makes its
    own from ``max_tickets`` (the oldest go first; 0 turns one-trip logins
    off) and ``ticket_lifetime`` (seconds).
    """

    def __init__(
        self,
        realm: Any,
        checkers: Iterable[Any] = (),
        *,
        throttle: Throttle | None = None,
        server_secret: bytes | None = None,
        challenge_timeout: float = 60.0,
        max_tickets: int | None = None,
        ticket_lifetime: float | None = None,
        max_challenges: int = 10_000,
        max_challenges_per_connection: int = 4,
        tickets: TicketStore | None = None,
    ) -> None:
        if not IRealm.providedBy(realm) and not callable(getattr(realm, "request_avatar", None)):
            raise TypeError(f"{realm!r} is not a realm (it needs request_avatar)")
        self.realm = realm
        self.throttle = throttle if throttle is not None else Throttle()
        self.challenge_timeout = challenge_timeout
        if tickets is None:
            tickets = TicketStore(
                max_tickets=10_000 if max_tickets is None else max_tickets,
                lifetime=3600.0 if ticket_lifetime is None else ticket_lifetime)
        elif max_tickets is not None or ticket_lifetime is not None:
            raise ValueError("pass max_tickets and ticket_lifetime to the TicketStore, not "
                             "to a Portal given tickets=")
        #: where this portal's one-trip tickets are issued and redeemed
        self.tickets = tickets
        for name, value in (("max_challenges", max_challenges),
                            ("max_challenges_per_connection", max_challenges_per_connection)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        self.max_challenges = max_challenges
        self.max_challenges_per_connection = max_challenges_per_connection
        #: SCRAM challenges sent and not yet answered, expired or abandoned
        self._challenges: set[ScramChallenge] = set()
        #: SCRAM logins waiting for the throttle or the verifier (no challenge yet)
        self._opening = 0
        #: connection -> its SCRAM logins open (opening, or holding a challenge)
        self._per_connection: dict[Hashable, int] = {}
        self._refused_full = 0
        self._full_logged_at = -math.inf
        self._secret = server_secret if server_secret is not None else secrets.token_bytes(32)
        self._fakes = scram._FakeVerifiers(self._secret)
        self._checkers: list[Any] = []
        #: the first checker that is an IScramVerifierSource (None: fakes only)
        self._verifier_source: Any = None
        for checker in checkers:
            self.register_checker(checker)

    def register_checker(self, checker: Any) -> None:
        if not ICredentialsChecker.providedBy(checker):
            raise TypeError(f"{checker!r} does not provide ICredentialsChecker")
        self._checkers.append(checker)
        if self._verifier_source is None and IScramVerifierSource.providedBy(checker):
            self._verifier_source = checker

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
        attempt = None
        try:
            _check_request(service, perspective, offered)
            checker = self._checker_for(credentials)
            attempt = await self.admit(account, source)
            try:
                identity = await checker.request_avatar_id(credentials)
            except Unauthorized as refused:
                raise _Failed(getattr(refused, "reason", "bad credentials")) from None
            result = await self.enter(identity, checker, mind, interfaces, service, perspective,
                                      offered)
        except BaseException as exc:
            raise _settle(exc, self, account, source, attempt) from None
        attempt.success()
        return result

    def _checker_for(self, credentials: Any) -> Any:
        if ICredentials.providedBy(credentials):
            for checker in self._checkers:
                if any(iface.providedBy(credentials) for iface in checker.credential_interfaces):
                    return checker
        raise _Failed(f"no checker for {type(credentials).__name__}")

    # --- SCRAM -----------------------------------------------------------------

    async def begin_scram(self, client_first: str, *, source: Hashable | None = None,
                          offered: Collection[str] | None = None,
                          connection: Hashable | None = None) -> ScramChallenge:
        """Start a SCRAM login: parse the client-first message, wait out the
        throttle and start an attempt on it, look up the verifier (a fake
        one for an unknown name, with the same work as for a known one),
        and return a :class:`ScramChallenge` whose ``server_first`` goes
        back to the client.  ``offered`` is as for :meth:`login`; the challenge
        keeps it for :meth:`ScramChallenge.finish`.  ``connection`` (any
        hashable, e.g. the transport's connection object) is what
        ``max_challenges_per_connection`` counts by.  Raises
        :class:`Unauthorized` if the message is malformed or a cap on open
        challenges is reached."""
        server = self._scram_server(client_first, source, None)
        attempt, checker, verifier, known = await self._open_scram(server.username, source,
                                                                   connection)
        return self._challenge(server, server.start(verifier), checker, known, source, offered,
                               attempt, connection)

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
        connection: Hashable | None = None,
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
            self.refuse("malformed one-trip login: ticket or server-first is not text",
                        None, source)
            raise Unauthorized()
        plausible = scram._valid_ticket(ticket)
        server = self._scram_server(client_first, source, ticket if plausible else None)
        username = server.username
        attempt, checker, verifier, known = await self._open_scram(username, source, connection)
        if plausible:
            expected = server.start(verifier)
            if self.tickets.redeem(ticket, username) and server_first == expected:
                # Answered at once: no expiry timer to arm (and cancel).
                challenge = self._challenge(server, expected, checker, known, source, offered,
                                            attempt, connection, expires=False)
                result = await challenge.finish(client_final, service=service, perspective=perspective,
                                                mind=mind, interfaces=interfaces)
                return challenge, result
            server = scram.ScramServer(client_first)  # the fallback's own fresh nonce
        # The fallback challenge carries on the attempt started above: one
        # login, one attempt, however many calls it takes.
        return (self._challenge(server, server.start(verifier), checker, known, source, offered,
                                attempt, connection), None)

    async def _open_scram(self, username: str, source: Hashable | None,
                          connection: Hashable | None) -> tuple[Attempt, Any, Any, bool]:
        """The first step every SCRAM login shares: hold a place under the
        caps, wait out the throttle, look the verifier up.  Returns
        ``(attempt, checker, verifier, known)``."""
        self._hold(connection, username, source)
        attempt = None
        try:
            attempt = await self.admit(username, source)
            checker, verifier, known = await self._verifier_for(username, source, attempt)
        except BaseException:
            self._unhold(connection)
            if attempt is not None:
                attempt.failure()  # cancelled after it started (a no-op if already ended)
            raise
        finally:
            self._opening -= 1
        return attempt, checker, verifier, known

    @property
    def open_challenges(self) -> int:
        """SCRAM challenges sent and not yet answered, expired or abandoned."""
        return len(self._challenges)

    def _hold(self, connection: Hashable | None, account: str, source: Hashable | None) -> None:
        """Count a SCRAM login that is starting, or refuse it past a cap."""
        open_now = len(self._challenges) + self._opening
        if open_now >= self.max_challenges:
            # The server is full, which is not this client's doing: not
            # counted by the throttle, and logged once a second at most (a
            # flood would otherwise write a line per refusal).
            self._refused_full += 1
            now = time.monotonic()
            if now - self._full_logged_at >= 1.0:
                log.warning("SCRAM logins refused: too many open", refused=self._refused_full,
                            seconds=round(min(now - self._full_logged_at, 999)),
                            account=account, source=source, open=open_now,
                            max_challenges=self.max_challenges)
                self._full_logged_at, self._refused_full = now, 0
            raise Unauthorized()
        if connection is not None:
            held = self._per_connection.get(connection, 0)
            if held >= self.max_challenges_per_connection:
                # Counted against the source, not the account: it is how this
                # client uses its connection, not a guess at anyone's password.
                self.throttle.failure(None, source)
                log.info("login refused", account=account, source=source,
                         reason="too many SCRAM logins open on this connection", open=held,
                         max_challenges_per_connection=self.max_challenges_per_connection)
                raise Unauthorized()
            self._per_connection[connection] = held + 1
        self._opening += 1

    def _unhold(self, connection: Hashable | None) -> None:
        if connection is not None:
            held = self._per_connection.pop(connection) - 1
            if held:
                self._per_connection[connection] = held

    def _challenge(self, server: scram.ScramServer, server_first: str, checker: Any, known: bool,
                   source: Hashable | None, offered: Collection[str] | None, attempt: Attempt,
                   connection: Hashable | None, expires: bool = True) -> ScramChallenge:
        challenge = ScramChallenge(self, server, server_first, checker, known, source, offered,
                                   attempt=attempt, connection=connection)
        self._challenges.add(challenge)
        if expires:
            challenge._timer = asyncio.get_running_loop().call_later(self.challenge_timeout,
                                                                     challenge.abandon, "expired")
        return challenge

    # --- what a ScramChallenge calls (ChallengeHost) ----------------------------

    def issue_ticket(self, account: str) -> str | None:
        """A single-use ticket for ``account``'s next one-trip login."""
        return self.tickets.issue(account)

    def challenge_closed(self, challenge: ScramChallenge) -> None:
        """Forget a challenge that was answered, expired or abandoned."""
        if challenge in self._challenges:
            self._challenges.discard(challenge)
            self._unhold(challenge.connection)

    def _scram_server(self, client_first: str, source: Hashable | None,
                      nonce: str | None) -> scram.ScramServer:
        try:
            return scram.ScramServer(client_first, nonce=nonce)
        except ScramError as exc:
            self.refuse("malformed client-first message", None, source, detail=str(exc))
            raise Unauthorized() from None

    async def _verifier_for(self, username: str, source: Hashable | None,
                            attempt: Attempt | None = None) -> tuple[Any, Any, bool]:
        """(checker, verifier, known): the account's verifier, or a fake one
        shaped like it for an unknown name.

        Both are looked up whether the name is known or not, so the first
        step does the same work either way: an unknown name used to cost
        the fake's derivation on top (about 28 µs, enough to tell which
        users exist)."""
        checker = self._verifier_source
        try:
            if checker is not None:
                real = await checker.get_scram_verifier(username)
                fake = await checker.fake_scram_verifier(username)
            else:
                real = None
                fake = self._fakes(username)
        except StoreError as exc:
            _log_store_failure(exc, username, source, attempt)
            raise Unauthorized() from None
        known = real is not None
        return checker, real if known else fake, known

    # --- shared tail -----------------------------------------------------------

    async def admit(self, account: str | None, source: Hashable | None) -> Attempt:
        """Wait until the throttle lets a login for ``account`` from
        ``source`` start, and start it.  Attempts that wait together wake
        together; the first to run takes the slot (no ``await`` between the
        last check and the start) and the others go back to sleep, so they
        start one at a time, as far apart as sequential failures would."""
        throttle = self.throttle
        while True:
            delay = throttle.delay_for(account, source)
            if delay <= 0:
                return throttle.start(account, source)
            await asyncio.sleep(delay)

    async def enter(
        self,
        identity: Any,
        checker: Any,
        mind: Any,
        interfaces: tuple[Any, ...],
        service: str | None,
        perspective: str | None,
        offered: Collection[str] | None = None,
    ) -> LoginResult:
        """Let an identity the checker proved in: pick the service if none
        was named, check the keyring, ask the realm.

        Without a service, the realm is asked for ``(identity, None,
        perspective)`` (a realm may have a default); where it refuses, or
        the listener binds logins to ``offered`` services, an account whose
        keyring (restricted to ``offered``) holds exactly one service gets
        that one, and otherwise :class:`~cred.errors.ServiceRequired` names
        the services it may use.  Only a proven identity gets this far, so
        the list tells nobody anything they could not learn by logging in.
        """
        if identity is ANONYMOUS:
            if service is None and offered is not None:
                raise _Failed("no service named (an anonymous login must name one on this "
                              "listener)", offered=",".join(sorted(offered)))
            return await self._avatar(PerspectiveKey(ANONYMOUS, service, perspective),
                                      mind, interfaces)
        if not isinstance(identity, str) or not identity:
            raise _Failed("checker returned a bad identity", identity=repr(identity))
        keyring = None
        if service is None:
            if offered is None:
                try:
                    return await self._avatar(PerspectiveKey(identity, None, perspective),
                                              mind, interfaces)
                except _Failed:
                    keyring = await self._keyring(identity, checker)
                    if keyring is None:
                        raise
            else:
                keyring = await self._keyring(identity, checker)
            service = _pick_service(keyring, offered)
        key = PerspectiveKey(identity, service, identity if perspective is None else perspective)
        if keyring is None:
            keyring = await self._keyring(identity, checker)
        if keyring is None or (key.service, key.perspective) not in keyring:
            raise _Failed("not on the keyring", key=f"{key.service}:{key.perspective}")
        return await self._avatar(key, mind, interfaces)

    async def _avatar(self, key: PerspectiveKey, mind: Any,
                      interfaces: tuple[Any, ...]) -> LoginResult:
        try:
            result = self.realm.request_avatar(key, mind, *interfaces)
            if _is_awaitable(result):
                result = await result
            interface, avatar, logout = result
        except (KeyError, CredError) as exc:
            raise _Failed("the realm refused", key=repr(key), error=repr(exc)) from None
        return LoginResult(interface, avatar, logout)

    async def _keyring(self, identity: str, checker: Any) -> set[tuple[str, str]] | None:
        if IKeyring.providedBy(checker):
            return await checker.get_keyring(identity)
        for other in self._checkers:
            if IKeyring.providedBy(other):
                return await other.get_keyring(identity)
        return None

    def refuse(self, reason: str, account: str | None, source: Hashable | None,
               attempt: Attempt | None = None, **fields: Any) -> None:
        """Log a refused login (``login refused account=… source=…
        reason=…``) and count it as a failure."""
        if attempt is not None and not attempt.done:
            attempt.failure()
        else:  # refused before any attempt started, or a replay of one that ended
            self.throttle.failure(account, source)
        log.info("login refused", account=account, source=source, reason=reason, **fields)


def _is_awaitable(value: Any) -> bool:
    # inspect.isawaitable asks the Awaitable ABC, which is slow for the plain
    # values (tuples, perspectives) realms and services mostly return.
    return asyncio.iscoroutine(value) or hasattr(type(value), "__await__")


def _settle(exc: BaseException, host: ChallengeHost, account: str | None,
            source: Hashable | None, attempt: Attempt | None) -> BaseException:
    """What a login that ended in ``exc`` raises, once logged and counted:
    the one :class:`Unauthorized` for a refusal or a failed account store,
    ``exc`` itself otherwise."""
    if isinstance(exc, _Failed):
        host.refuse(exc.reason, account, source, attempt, **exc.fields)
        return Unauthorized()
    if isinstance(exc, ServiceRequired):
        _log_service_required(account, source, attempt)
        return exc
    if isinstance(exc, StoreError):
        _log_store_failure(exc, account, source, attempt)
        return Unauthorized()
    if attempt is not None:
        attempt.failure()  # cancelled mid-check: it may have been a guess
    return exc


def _pick_service(keyring: set[tuple[str, str]] | None,
                  offered: Collection[str] | None) -> str:
    """The one service a login that named none can mean, or ServiceRequired."""
    services = {name for name, _ in keyring or ()}
    if offered is not None:
        services &= set(offered)
    if len(services) == 1:
        return services.pop()
    raise ServiceRequired(sorted(services))


def _log_service_required(account: str | None, source: Hashable | None,
                          attempt: Attempt | None) -> None:
    # The password was right: not a guess, so not counted as a failure.
    if attempt is not None:
        attempt.release()
    log.info("login refused", account=account, source=source,
             reason="no service named, and the account has not exactly one")


def _log_store_failure(exc: StoreError, account: str | None, source: Hashable | None,
                       attempt: Attempt | None = None) -> None:
    # The server's fault, not the client's: not counted by the throttle.
    if attempt is not None:
        attempt.release()
    log.error("login could not be checked", account=account, source=source,
              reason="the account store failed", error=str(exc))


def _check_request(service: object, perspective: object,
                   offered: Collection[str] | None = None) -> None:
    if service is not None and not isinstance(service, str):
        raise _Failed("service name is not text")
    if offered is not None and service is not None and service not in offered:
        # The listener binds the login: a service that shares this portal
        # is not reachable through another service's port.  (No service:
        # Portal.enter picks one of those offered, once the account is proven.)
        raise _Failed("service not offered on this listener", service=service,
                      offered=",".join(sorted(offered)) or "nothing")
    if perspective is not None and not isinstance(perspective, str):
        raise _Failed("perspective name is not text")
    if perspective is not None and service is None:
        raise _Failed("a perspective was asked for without a service")


class ScramChallenge:
    """A SCRAM login in progress (from :meth:`Portal.begin_scram`).

    Send :attr:`server_first` to the client, then hand its client-final
    message to :meth:`finish`.  One shot: a second ``finish`` (a replayed
    proof) fails, and so does one after ``Portal.challenge_timeout``.  A
    transport that will not deliver an answer (the client dropped the
    challenge, or its connection closed) calls :meth:`abandon`.  Either way
    the challenge then leaves the portal's tables and lets go of the
    verifier and the SCRAM state, and an unanswered one is counted as a
    failed login.
    """

    def __init__(
        self,
        portal: ChallengeHost,
        server: scram.ScramServer,
        server_first: str,
        checker: Any,
        known: bool,
        source: Hashable | None,
        offered: Collection[str] | None = None,
        *,
        attempt: Attempt | None = None,
        connection: Hashable | None = None,
    ) -> None:
        self._portal = portal
        self._offered = offered
        self._server: scram.ScramServer | None = server
        self._checker = checker
        self._known = known
        self._source = source
        self._attempt = attempt
        #: what the portal counts this challenge against (see ``connection=``)
        self.connection = connection
        self._timer: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._used = False
        self.username: str = server.username
        self.server_first: str = server_first
        #: After a successful :meth:`finish`: a single-use ticket for this
        #: account's next one-trip login (None if the portal issues none).
        self.ticket: str | None = None

    @property
    def done(self) -> bool:
        """True once the challenge was answered, expired or abandoned."""
        return self._used

    def _close(self) -> None:
        """Leave the portal's tables and drop what the exchange held (the
        verifier and the SCRAM state), so that a challenge a client keeps
        a reference to costs next to nothing once it is over."""
        self._used = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._portal.challenge_closed(self)
        self._server = self._checker = self._offered = None

    def abandon(self, reason: str = "abandoned") -> None:
        """End a challenge that will not be answered: freed, and counted as
        a failed login (an unanswered challenge is how a flood, or a guess
        broken off, looks).  Does nothing once the challenge was answered."""
        if self._used:
            return
        self._close()
        self._portal.refuse(f"challenge {reason} without an answer", self.username,
                            self._source, self._attempt)

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
        attempt = self._attempt
        try:
            if self._used:
                raise _Failed("challenge already used (replayed client-final?) or expired")
            server, checker, offered, known = self._server, self._checker, self._offered, self._known
            expired = time.monotonic() - self._started > portal.challenge_timeout
            self._close()  # before any await: concurrent finishes cannot both run
            assert server is not None
            if expired:
                raise _Failed("challenge expired")
            interfaces = tuple(interfaces)
            _check_request(service, perspective, offered)
            if attempt is None:  # not made by the portal: throttle here
                attempt = await portal.admit(account, source)
            try:
                server_final = server.finish(client_final)
            except ScramError as exc:
                # The same answer either way; the operator's log says which.
                if not known:
                    raise _Failed("no such account",
                                  detail="its proof was checked against a stand-in verifier") from None
                raise _Failed("wrong password", detail=f"SCRAM proof refused: {exc}") from None
            if not known:
                raise _Failed("no such account")  # unreachable in practice: fakes match no proof
            interface, avatar, logout = await portal.enter(
                account, checker, mind, interfaces, service, perspective, offered)
        except BaseException as exc:
            raise _settle(exc, portal, account, source, attempt) from None
        attempt.success()
        self.ticket = portal.issue_ticket(account)
        return ScramLoginResult(server_final, interface, avatar, logout)
