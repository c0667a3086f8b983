"""Login over PB: the portal root (server side) and ``login`` (client side).

The exchange is SCRAM-SHA-256 (RFC 5802/7677 messages) carried as two calls::

    client                                   server
    root.call_remote("login", client_first)
                                    ──▶      portal.begin_scram(...)
        ◀── (challenger, server_first)
    (client runs the KDF, off the event loop)
    challenger.call_remote("respond", client_final, service, perspective, mind)
                                    ──▶      challenge.finish(...)  → avatar
        ◀── (server_final, perspective reference)
    client checks server_final (mutual proof), or drops the reference.

The server never runs the KDF during a login: it holds StoredKey/ServerKey
only.  Every refusal is ``Unauthorized`` with one fixed message, except
one: a proven account that named no service, where the portal could not
pick one, hears which services it may use (``cred.ServiceRequired``).

Each connection counts as one ``connection=`` for the portal's cap on open
challenges (``Portal.max_challenges_per_connection``, 4 by default).  A
challenge ends when it is answered, when the portal's challenge timeout
passes, when the client drops the challenger, or when the connection
closes; the last two abandon it (counted as a failed login).
"""

from __future__ import annotations

from typing import Any

import cred
from cred.log import get_logger

from ._errors import NoSuchMethod, PBError, RemoteError, Unauthorized
from ._flavors import Referenceable, Root
from ._remote import RemoteReference

__all__ = ["PortalRoot", "login_over", "login_anonymous_over"]

log = get_logger("broker.login")

_UNAUTHORIZED_TYPES = frozenset({"cred.errors.Unauthorized", "broker.Unauthorized"})


class _Session:
    """One successful login on one connection: what to undo when it ends."""

    __slots__ = ("avatar", "mind", "logout", "done")

    def __init__(self, avatar: Any, mind: Any, logout: Any) -> None:
        self.avatar = avatar
        self.mind = mind
        self.logout = logout
        self.done = False

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            detached = getattr(self.avatar, "detached", None)
            if detached is not None:
                detached(self.mind)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # CancelledError too: it must not skip the logout
            log.exception("detached() failed", avatar=repr(self.avatar))
        try:
            self.logout()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            log.exception("logout failed", avatar=repr(self.avatar))


class PortalRoot(Root):
    """What ``serve(portal)`` publishes: each connection gets its own
    :class:`_ConnectionRoot`, so a login knows its connection.

    ``services`` is what this listener offers: a login through it to any
    other cred service of the portal is refused (None: every service).
    """

    #: Connections to it are strangers' until a login succeeds (smaller
    #: write cap, ``Limits.login_timeout``).
    requires_login = True

    def __init__(self, portal: Any, services: frozenset[str] | None = None) -> None:
        self.portal = portal
        self.services = services

    def root_object(self, connection: Any) -> Referenceable:
        return _ConnectionRoot(self.portal, connection, self.services)


class _ConnectionRoot(Referenceable):
    # What a client that calls a method on a portal's root needs to hear.
    _pb_missing_method_hint = (
        ": this server wants a login first, and its root takes only login calls; "
        "log in (broker.login(..., service=...), or pb call --user NAME --service SERVICE, "
        "or --anonymous) and call the perspective's methods")
    def __init__(self, portal: Any, connection: Any, offered: frozenset[str] | None = None) -> None:
        self.portal = portal
        self.offered = offered
        self.connection = connection
        self.sessions: list[_Session] = []
        #: challengers handed out on this connection whose challenge may
        #: still be open: abandoned if the connection closes first
        self.challengers: set[_Challenger] = set()
        connection._protocol.add_release_hook(self._released)
        # A session whose perspective never reached the peer (its answer
        # could not be sent) has no reference to be released: the close ends it.
        connection.notify_on_disconnect(self._disconnected)

    def _source(self) -> Any:
        address = self.connection.peer_address
        if isinstance(address, tuple) and address:
            return address[0]
        return "local"

    async def remote_login(self, client_first: Any) -> tuple[Any, str]:
        # Whatever arrives goes to the portal, which bounds, logs and throttles
        # malformed messages like any other failed login.
        try:
            challenge = await self.portal.begin_scram(client_first, source=self._source(),
                                                      offered=self.offered, connection=self)
        except cred.Unauthorized:
            raise Unauthorized(cred.LOGIN_FAILED) from None
        return self._challenger(challenge), challenge.server_first

    async def remote_login_one_trip(self, client_first: Any, ticket: Any, server_first: Any,
                                    client_final: Any, service: Any = None,
                                    perspective: Any = None, mind: Any = None) -> tuple[Any, ...]:
        try:
            challenge, result = await self.portal.scram_one_trip(
                client_first, ticket, server_first, client_final, source=self._source(),
                service=service, perspective=perspective, mind=mind, offered=self.offered,
                connection=self)
        except cred.Unauthorized:
            raise Unauthorized(cred.LOGIN_FAILED) from None
        except cred.ServiceRequired as exc:
            raise Unauthorized(str(exc)) from None  # the proof was good: say what to add
        if result is None:
            return self._challenger(challenge), challenge.server_first
        return self._welcome(challenge, result, mind)

    def _challenger(self, challenge: Any) -> _Challenger:
        if not self.connection.is_open:
            # Closed while the portal looked the verifier up: nobody will
            # answer, and the close has already abandoned the others.
            challenge.abandon("abandoned (the connection closed)")
            raise Unauthorized(cred.LOGIN_FAILED)
        challenger = _Challenger(self, challenge)
        challengers = self.challengers
        if len(challengers) >= 16:
            # Expired ones the client still holds (the wire has no way to
            # take a reference back): forget them here at least.
            self.challengers = challengers = {c for c in challengers if not c._challenge.done}
        challengers.add(challenger)
        return challenger

    async def remote_login_anonymous(self, service: Any = None, perspective: Any = None,
                                     mind: Any = None) -> Any:
        try:
            result = await self.portal.login(cred.Anonymous(), mind, service=service,
                                             perspective=perspective, source=self._source(),
                                             offered=self.offered)
        except cred.Unauthorized:
            raise Unauthorized(cred.LOGIN_FAILED) from None
        return self._attach(result.avatar, mind, result.logout)

    def _attach(self, avatar: Any, mind: Any, logout: Any) -> Any:
        if not isinstance(avatar, Referenceable):
            logout()
            raise PBError(
                f"the realm returned {type(avatar).__qualname__}, which cannot be sent; "
                "perspectives served over PB must be broker.Perspective objects"
            )
        attached = getattr(avatar, "attached", None)
        if attached is not None:
            try:
                attached(mind)
            except BaseException:
                logout()
                raise
        self.sessions.append(_Session(avatar, mind, logout))
        self.connection._protocol.logged_in()
        return avatar

    def _welcome(self, challenge: Any, result: Any, mind: Any) -> tuple[str, Any, str | None]:
        """The answer to a SCRAM login that got in: server-final, the
        perspective, and a ticket for the next login."""
        return result.server_final, self._attach(result.avatar, mind, result.logout), challenge.ticket

    def _disconnected(self, connection: Any) -> None:
        challengers, self.challengers = self.challengers, set()
        for challenger in challengers:
            challenger.abandon("abandoned (the connection closed)")
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            session.end()

    def _released(self, object_id: int, entry: Any) -> None:
        """The peer dropped a reference (or the connection closed)."""
        obj = entry.obj
        if type(obj) is _Challenger:
            self.challengers.discard(obj)
            obj.abandon("dropped by the client")
            return
        if obj is self:
            sessions, self.sessions = self.sessions, []
            for session in sessions:
                session.end()
            return
        remaining = []
        for session in self.sessions:
            if session.avatar is obj:
                session.end()
            else:
                remaining.append(session)
        self.sessions = remaining
        if not self.connection.is_open:
            for session in self.sessions:
                session.end()
            self.sessions = []


class _Challenger(Referenceable):
    """The short-lived reference that receives the client's proof."""

    def __init__(self, root: _ConnectionRoot, challenge: Any) -> None:
        self._root = root
        self._challenge = challenge

    def abandon(self, reason: str) -> None:
        self._challenge.abandon(reason)  # nothing if it was answered or expired

    async def remote_respond(self, client_final: Any, service: Any = None,
                             perspective: Any = None, mind: Any = None) -> tuple[str, Any, str | None]:
        self._root.challengers.discard(self)  # answered: nothing left to abandon
        try:  # the portal uses the challenge up even for a malformed proof
            result = await self._challenge.finish(client_final, service=service,
                                                  perspective=perspective, mind=mind)
        except cred.Unauthorized:
            raise Unauthorized(cred.LOGIN_FAILED) from None
        except cred.ServiceRequired as exc:
            raise Unauthorized(str(exc)) from None  # the proof was good: say what to add
        return self._root._welcome(self._challenge, result, mind)


def _as_unauthorized(exc: RemoteError) -> Exception:
    if exc.remote_type in _UNAUTHORIZED_TYPES:
        return Unauthorized(exc.remote_message)
    return exc


async def login_over(connection: Any, username: str, password: str, *,
                     service: str | None = None, perspective: str | None = None,
                     mind: Any = None, cache: cred.ClientCache | None = None) -> Any:
    """Log in on an open connection; return the perspective's reference.

    One call when ``cache`` (``cred.default_client_cache`` unless given)
    kept a ticket from an earlier login to the same server and account;
    two otherwise, or when the server did not take the ticket.
    """
    try:
        client = cred.ScramClient(username, password, server=_server_name(connection),
                                  cache=cache)
    except cred.ScramError as exc:
        raise Unauthorized(str(exc)) from None
    root = await connection.root()
    challenger = None
    try:
        trip = await _scram(client.one_trip_async())
        answer = None
        if trip is not None:
            try:
                answer = await root.call_remote("login_one_trip", *trip, service, perspective,
                                                mind)
            except NoSuchMethod:
                # Another server on that address now (one without one-trip
                # logins, or not a portal at all): the ordinary exchange,
                # with a client that holds no ticket.
                client = cred.ScramClient(username, password, cache=cache)
                trip = None
        if answer is not None:
            if _is_challenge(answer):
                challenger, server_first = answer
            else:
                server_final, avatar, ticket = _welcome(answer)
        else:
            challenger, server_first = await root.call_remote("login", client.first())
        if challenger is not None:
            client_final = await _scram(client.final_async(server_first))
            server_final, avatar, ticket = _welcome(await challenger.call_remote(
                "respond", client_final, service, perspective, mind))
    except RemoteError as exc:
        raise _as_unauthorized(exc) from None
    finally:
        del root
        if challenger is not None:
            # Answered (or given up on): the challenge is over, so the
            # server may forget the challenger now (protocol.md section 4).
            await challenger.release()
    try:
        client.verify(server_final)
    except cred.ScramError:
        await avatar.release()
        raise Unauthorized(
            "the server could not prove it knows this account's verifier; "
            "it may be an impostor — the session was dropped"
        ) from None
    client.keep_ticket(ticket)
    return avatar


def _server_name(connection: Any) -> Any:
    """What the client files its salts and tickets under: the server's address."""
    address = connection.peer_address
    return ("pb", address) if address else None


async def _scram(step: Any) -> Any:
    try:
        return await step
    except cred.ScramError as exc:
        raise Unauthorized(f"the server's challenge was refused: {exc}") from None


def _is_challenge(answer: Any) -> bool:
    return type(answer) is tuple and len(answer) == 2 and isinstance(answer[0], RemoteReference)


def _welcome(answer: Any) -> tuple[Any, Any, Any]:
    """(server_final, perspective, ticket) from a login's last answer; a
    server that issues no tickets may leave the ticket out."""
    if type(answer) is tuple and len(answer) in (2, 3) and isinstance(answer[1], RemoteReference):
        return answer if len(answer) == 3 else (answer[0], answer[1], None)
    raise Unauthorized("the server's answer to a login was malformed (expected "
                       "server-final, perspective and ticket)")


async def login_anonymous_over(connection: Any, *, service: str | None = None,
                               perspective: str | None = None, mind: Any = None) -> Any:
    root = await connection.root()
    try:
        return await root.call_remote("login_anonymous", service, perspective, mind)
    except RemoteError as exc:
        raise _as_unauthorized(exc) from None
