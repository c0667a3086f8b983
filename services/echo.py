"""The ``echo`` plug-in: the PB echo service of Twisted's seeds, over cred.

``pb run echo`` publishes the login portal of the application on
127.0.0.1:8787 (``--port``, ``--host``) or on a UNIX socket (``--socket``).
The cred service is called ``pbecho``; an account whose keyring holds
``pbecho:NAME`` logs in as the perspective NAME::

    perspective = await broker.login("127.0.0.1", 8787, "alice", pw, service="pbecho")
    await perspective.call_remote("echo", "hi")      # "hi"
    await perspective.call_remote("whoami")          # "alice"
    await perspective.call_remote("stats")           # {"echoes": 1, "sessions": 1, ...}

Accounts live in ``<data_dir>/accounts.sqlite3`` (created if missing), the
store ``pb user`` manages; the portal over it is shared with every other
service of the application (``services.account_portal``).
``--user NAME:PASSWORD`` (repeatable) creates or updates an account and
grants it ``pbecho:NAME`` at start: a convenience for demos, since it puts
the password on the command line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import broker
import cred
from services import (
    add_listen_arguments,
    Application,
    PortalService,
    ServicePlugin,
    account_portal,
    account_store,
    ensure_account,
    ensure_service_name,
    get_logger,
    non_negative_seconds,
    option_type,
)

__all__ = [
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "EchoPerspective",
    "EchoPlugin",
    "EchoService",
    # The shared portal's helpers live in services; still importable from here.
    "account_portal",
    "account_store",
    "ensure_account",
    "ensure_service_name",
    "plugin",
]

#: The cred service name clients ask for (``service="pbecho"``).
SERVICE_NAME = "pbecho"
DEFAULT_PORT = 8787

_log = get_logger("pb.echo")


# -- perspectives -------------------------------------------------------------------


class EchoPerspective(broker.Perspective):
    """What an account logged in to ``pbecho`` holds."""

    def __init__(self, name: str, owner: EchoService) -> None:
        self.name = name
        self.owner = owner

    def perspective_echo(self, text: Any) -> Any:
        """Return *text* unchanged."""
        self.owner.echoes += 1
        return text

    def perspective_whoami(self) -> str:
        """The perspective's name (the account name for a ``pbecho:NAME`` grant)."""
        return self.name

    def perspective_stats(self) -> dict[str, Any]:
        """The service's counters: echoes answered, logins so far, sessions
        open now, seconds since it started."""
        return self.owner.stats()

    def attached(self, mind: Any) -> None:
        self.owner.logins += 1
        self.owner.sessions += 1
        _log.info("login", perspective=self.name, sessions=self.owner.sessions)

    def detached(self, mind: Any) -> None:
        self.owner.sessions -= 1
        _log.info("logout", perspective=self.name, sessions=self.owner.sessions)

    def __repr__(self) -> str:
        return f"<EchoPerspective {self.name!r}>"


class _EchoRealmService(cred.Service):
    """The cred service ``pbecho``: one perspective per name, made on demand
    (the portal has already checked the keyring)."""

    def __init__(self, name: str, owner: EchoService) -> None:
        super().__init__(name)
        self.owner = owner

    def create_perspective(self, name: str) -> EchoPerspective:
        return EchoPerspective(name, self.owner)


# -- the service ------------------------------------------------------------------------


class EchoService(PortalService):
    """Serves the portal with the ``pbecho`` cred service in its realm.

    The counters (``echoes``, ``logins``, ``sessions``) are plain attributes,
    readable and settable from a manhole.
    """

    def __init__(
        self,
        name: str | None = "echo",
        *,
        portal: Any,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        path: str | None = None,
        users: list[tuple[str, str]] | None = None,
        grace: float = 10.0,
        service_name: str = SERVICE_NAME,
        show_banner: bool = True,
        dialect: str = "native",
    ) -> None:
        super().__init__(name, portal=portal, realm_service=_EchoRealmService(service_name, self),
                         host=host, port=port, path=path, users=users or (), grace=grace,
                         show_banner=show_banner, dialect=dialect)
        self.echoes = 0
        self.logins = 0
        self.sessions = 0

    def stats(self) -> dict[str, Any]:
        uptime = 0.0 if self.started_at is None else time.monotonic() - self.started_at
        return {"echoes": self.echoes, "logins": self.logins, "sessions": self.sessions,
                "uptime": round(uptime, 3)}

    async def on_start(self) -> None:
        await super().on_start()
        _log.info("listening", address=self.address, service=self.service_name)

    def banner(self) -> str | None:
        if not self.show_banner:
            return None
        return f"{self.service_name}: {self.address}"


# -- the plug-in ----------------------------------------------------------------------------


@option_type(str, 'NAME:PASSWORD (a string, "alice:secret")')
def _user_password(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(
            f"expected NAME:PASSWORD, got {text.split(':')[0]!r}... "
            f"(both parts non-empty)"
        )
    try:
        cred.store.check_name("user", name)
    except cred.InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, password


class EchoPlugin(ServicePlugin):
    name = "echo"
    description = 'the PB echo service ("pbecho"): perspective_echo returns what it gets'

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_listen_arguments(parser, DEFAULT_PORT)
        parser.add_argument("--user", metavar="NAME:PASSWORD", type=_user_password,
                            action="append", default=[],
                            help="create or update this account and grant it pbecho:NAME "
                                 "(repeatable; the password shows in the process list: "
                                 "for demos — use `pb user add` otherwise)")
        parser.add_argument("--dialect", choices=("native", "twisted"), default="native",
                            help="the wire protocol of the listener: native (default) or "
                                 "twisted, for Twisted PB clients (their accounts need "
                                 "`pb user add NAME --twisted-secret`)")
        parser.add_argument("--grace", type=non_negative_seconds, default=10.0, metavar="SECONDS",
                            help="when stopping, how long calls in progress may take "
                                 "(default: 10, within pb run's own --grace)")

    def build(self, options: argparse.Namespace, application: Application) -> EchoService:
        if options.socket is not None and (options.host is not None or options.port is not None):
            raise ValueError("give either --socket PATH or --host/--port, not both")
        portal = account_portal(application)
        return EchoService(
            "echo",
            portal=portal,
            host=options.host or "127.0.0.1",
            port=DEFAULT_PORT if options.port is None else options.port,
            path=options.socket,
            users=options.user,
            grace=options.grace,
            dialect=options.dialect,
        )


plugin = EchoPlugin()
