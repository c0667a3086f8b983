"""Twisted PB's login, both sides, over the Twisted dialect.

Client (what ``PBClientFactory.login`` does)::

    root.callRemote("login", username)         -> (challenge, challenger)
    challenger.callRemote("respond", MD5(MD5(password) + challenge), mind)
                                               -> the perspective
    root.callRemote("loginAnonymous", mind)    -> the perspective

Server: the same two methods on the root a ``cred.Portal`` is published
as.  The response is checked by the portal, through a checker for
:class:`cred.twisted_secret.TwistedChallengeResponse` (only accounts given
a Twisted secret on purpose have one), with the portal's throttle, keyring
and realm.  Twisted's login names no service: the listener's one offered
service is used (``services={"name"}`` on ``serve``), else ``"pbecho"``.
``attached(mind)`` runs on success and ``detached(mind)`` exactly once,
when the client drops the perspective or the connection closes.
"""

from __future__ import annotations

from typing import Any

import cred
from cred.log import get_logger
from cred.twisted_secret import TwistedChallengeResponse, new_challenge, twisted_response, twisted_secret

from .._errors import Unauthorized
from .._flavors import Referenceable, Root
from .._login import _Session

__all__ = ["TwistedPortalRoot", "login_over"]

log = get_logger("broker.twisted.login")

DEFAULT_SERVICE = "pbecho"


async def login_over(conn: Any, username: str, password: str, mind: Any = None) -> Any:
    root = await conn.root()
    name = username.encode("utf-8") if isinstance(username, str) else username
    secret = twisted_secret(password)
    challenge, challenger = await root.call_remote("login", name)
    if type(challenge) is not bytes:
        raise Unauthorized("the server's login challenge is not a byte string")
    return await challenger.call_remote("respond", twisted_response(secret, challenge), mind)


class TwistedPortalRoot(Root):
    """What ``serve(portal, dialect="twisted")`` publishes."""

    requires_login = True

    def __init__(self, portal: Any, services: frozenset[str] | None = None) -> None:
        self.portal = portal
        self.services = services
        if services is not None and len(services) == 1:
            self.service = next(iter(services))
        else:
            self.service = DEFAULT_SERVICE

    def root_object(self, connection: Any) -> Referenceable:
        return _ConnectionRoot(self, connection)


class _ConnectionRoot(Referenceable):
    def __init__(self, root: TwistedPortalRoot, connection: Any) -> None:
        self.root = root
        self.connection = connection
        self.sessions: list[_Session] = []
        connection._protocol.add_release_hook(self._released)
        connection.notify_on_disconnect(self._disconnected)

    def _source(self) -> Any:
        address = self.connection.peer_address
        return address[0] if isinstance(address, tuple) and address else "local"

    def remote_login(self, username: Any) -> tuple[bytes, Any]:
        if type(username) is bytes:
            username = username.decode("utf-8", "replace")
        if not isinstance(username, str):
            raise Unauthorized("login failed")
        challenge = new_challenge()
        return challenge, _Challenger(self, username, challenge)

    async def remote_loginAnonymous(self, mind: Any = None) -> Any:
        return await self._login(cred.Anonymous(), mind)

    async def _login(self, credentials: Any, mind: Any) -> Any:
        root = self.root
        try:
            _iface, avatar, logout = await root.portal.login(
                credentials, mind, service=root.service, source=self._source(),
                offered=root.services)
        except cred.Unauthorized:
            raise Unauthorized("login failed") from None
        session = _Session(avatar, mind, logout)
        self.sessions.append(session)
        attached = getattr(avatar, "attached", None)
        if attached is not None:
            attached(mind)
        return avatar

    def _released(self, object_id: int, entry: Any) -> None:
        for session in list(self.sessions):
            if session.avatar is entry.obj:
                self.sessions.remove(session)
                session.end()

    def _disconnected(self, _connection: Any) -> None:
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            session.end()


class _Challenger(Referenceable):
    def __init__(self, root: _ConnectionRoot, username: str, challenge: bytes) -> None:
        self._root = root
        self._username = username
        self._challenge = challenge
        self._used = False

    async def remote_respond(self, response: Any, mind: Any = None) -> Any:
        if self._used or type(response) is not bytes:
            raise Unauthorized("login failed")
        self._used = True  # one answer per challenge: no replays, no guessing here
        return await self._root._login(
            TwistedChallengeResponse(self._username, self._challenge, response), mind)
