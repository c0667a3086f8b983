"""PortalService: the base of services that serve the application's portal.

Echo, the manhole, and every service with a PB face do the same four things:
put their cred service into the shared realm, make sure the account store
knows its name (and the demo accounts they were given), serve the portal on
their own listener, bound to their own cred service, and undo all of it on
stop.  This class does them once; a subclass gives its cred service and
whatever it holds of its own.

Everything :func:`services.stop_serving` needs is an argument of the
constructor, so a service that forgets one fails when the plug-in builds it,
not when it stops.
"""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._accounts import account_store, ensure_account, ensure_service_name, stop_serving
from ._logging import get_logger
from ._service import Service

if TYPE_CHECKING:
    import broker

__all__ = ["PortalService"]

_log = get_logger("pb.service")


class PortalService(Service):
    """Serves ``portal`` on ``host:port`` (or the UNIX socket ``path``),
    offering the cred service ``realm_service`` and no other.

    ``users`` are ``(name, password)`` accounts created or reset at start
    and granted this service under their own name (a demo convenience).
    ``socket_mode`` (say ``0o600``) makes the UNIX socket born with those
    permissions.  ``grace`` bounds the calls in progress when stopping.
    """

    def __init__(
        self,
        name: str | None,
        *,
        portal: Any,
        realm_service: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str | None = None,
        ssl_context: _ssl.SSLContext | None = None,
        socket_mode: int | None = None,
        users: Iterable[tuple[str, str]] = (),
        grace: float = 10.0,
        show_banner: bool = True,
        dialect: str = "native",
    ) -> None:
        super().__init__(name)
        if dialect not in ("native", "twisted"):
            raise ValueError(f"dialect must be 'native' or 'twisted', not {dialect!r}")
        #: The wire dialect of this listener; "twisted" also lets accounts
        #: given a Twisted secret (pb user add --twisted-secret) log in.
        self.dialect = dialect
        service_name = getattr(realm_service, "name", None)
        if not isinstance(service_name, str) or not service_name:
            raise TypeError(f"{type(self).__name__}: realm_service must be a cred.Service "
                            f"with a name, not {realm_service!r}")
        self.portal = portal
        self.store = account_store(portal)  # TypeError now if the portal has no account store
        self.realm_service = realm_service
        self.service_name = service_name
        self.host = host
        self.port = port
        self.socket_path = path
        self.ssl_context = ssl_context
        self.socket_mode = socket_mode
        self.users = list(users)
        self.grace = grace
        self.show_banner = show_banner
        self.server: broker.Server | None = None
        self.started_at: float | None = None

    @property
    def address(self) -> str:
        """Where it listens: ``pb://host:port``, ``pbs://`` with TLS, or
        ``pb+unix:///path``."""
        if self.socket_path is not None:
            return f"pb+unix://{self.socket_path}"
        shown = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "pbs" if self.ssl_context is not None else "pb"
        return f"{scheme}://{shown}:{self.port}"

    async def on_start(self) -> None:
        realm = self.portal.realm
        if self.service_name in realm.services:
            raise RuntimeError(
                f"the application's realm already has a cred service {self.service_name!r}; "
                f"run one {type(self).__name__} per application, or give it another name"
            )
        # Bind first: a port that is taken must change nothing in the
        # account store.  Logins that arrive before the realm has the
        # service are refused like any other; there is no window the other
        # way round.
        server = await self.listen()
        try:
            await ensure_service_name(self.store, self.service_name)
            for user, password in self.users:
                created = await ensure_account(self.store, user, password,
                                               [(self.service_name, None)])
                if self.dialect == "twisted":  # a demo account must work for its listener
                    from cred.twisted_secret import set_twisted_secret

                    await asyncio.to_thread(set_twisted_secret, self.store, user, password)
                _log.info("account created" if created else "account password reset",
                          user=user, grant=f"{self.service_name}:{user}")
            realm.add_service(self.realm_service)
        except BaseException:
            server.close()
            await server.wait_closed()
            raise
        self.server = server
        if self.socket_path is None:
            self.port = server.port or self.port
        self.started_at = time.monotonic()

    async def listen(self) -> broker.Server:
        """Serve the portal, offering this service only (see docs/cred.md,
        "Logins are bound to listeners")."""
        import broker

        offered = {self.service_name}
        dialect = self.dialect
        if dialect == "twisted":
            from cred.twisted_secret import TwistedSecretChecker

            if not any(isinstance(c, TwistedSecretChecker) for c in self.portal.checkers):
                self.portal.register_checker(TwistedSecretChecker(self.store))
        if self.socket_path is None:
            return await broker.serve(self.portal, self.host, self.port, ssl=self.ssl_context,
                                      services=offered, dialect=dialect)
        if self.socket_mode is None:
            return await broker.serve(self.portal, path=self.socket_path, ssl=self.ssl_context,
                                      services=offered, dialect=dialect)
        # Born with the mode (umask while binding), then chmod'ed in case
        # the umask was ignored.
        old_umask = os.umask(0o777 & ~self.socket_mode)
        try:
            server = await broker.serve(self.portal, path=self.socket_path,
                                        ssl=self.ssl_context, services=offered, dialect=dialect)
        finally:
            os.umask(old_umask)
        try:
            os.chmod(self.socket_path, self.socket_mode)
        except BaseException:
            server.close()
            await server.wait_closed()
            raise
        return server

    async def on_stop(self) -> None:
        server, self.server = self.server, None
        await stop_serving(self, server)
