"""The manhole service and its plug-in: a PB server, separate from the
application's other servers, whose only cred service is ``manhole``.

Where it listens is the first line of its security: 127.0.0.1:8788 by
default, or a UNIX socket created with mode 0600 (``--socket PATH``).  Any
other address is refused unless the operator says ``--allow-remote`` *and*
gives a certificate (``--tls-cert``/``--tls-key``), so that neither the
password exchange's transcript nor the session travels in clear.
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
from typing import Any

from services import (
    Application,
    PortalService,
    ServicePlugin,
    account_portal,
    get_logger,
    host_name,
    non_negative_seconds,
    port_number,
)

from ._capture import DEFAULT_OUTPUT_LIMIT
from ._evaluator import Evaluator, default_namespace
from ._perspective import ManholePerspective, ManholeRealmService
from ._watchdog import DEFAULT_BLOCK_LIMIT, Watchdog

__all__ = [
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "ManholePlugin",
    "ManholeService",
    "check_bind_options",
    "is_loopback",
    "plugin",
    "server_tls_context",
]

#: The cred service name (``pb user grant NAME manhole``).
SERVICE_NAME = "manhole"
DEFAULT_PORT = 8788

_log = get_logger("pb.manhole")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve anywhere


class ManholeService(PortalService):
    """Serves the application's portal, with the ``manhole`` cred service
    in its realm, on its own address (a UNIX socket is born 0600).

    Each admin login gets a namespace holding ``application``, ``services``
    (``application.services``), ``portal`` and ``asyncio``.  Typed code that
    holds the event loop for more than *block_limit* seconds without
    awaiting is interrupted (0: never).
    """

    def __init__(
        self,
        name: str | None = "manhole",
        *,
        application: Application,
        portal: Any,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        service_name: str = SERVICE_NAME,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        grace: float = 5.0,
        show_banner: bool = True,
        block_limit: float = DEFAULT_BLOCK_LIMIT,
    ) -> None:
        super().__init__(name, portal=portal,
                         realm_service=ManholeRealmService(service_name, self._new_session),
                         host=host, port=port, path=path, ssl_context=ssl_context,
                         socket_mode=0o600, grace=grace, show_banner=show_banner)
        self.application = application
        self.output_limit = output_limit
        self.watchdog = Watchdog(block_limit)
        self.sessions: set[ManholePerspective] = set()

    # -- sessions -----------------------------------------------------------

    def namespace(self) -> dict[str, Any]:
        """A fresh namespace for one session."""
        application = self.application
        return default_namespace(
            application=application, services=application.services, portal=self.portal
        )

    def _new_session(self, perspective_name: str) -> ManholePerspective:
        if not self.running:
            raise KeyError("the manhole is not running")
        evaluator = Evaluator(self.namespace(), label=self.service_name,
                              output_limit=self.output_limit, watchdog=self.watchdog)
        session = ManholePerspective(perspective_name, evaluator, on_close=self.sessions.discard)
        self.sessions.add(session)
        return session

    # -- lifecycle ------------------------------------------------------------

    async def on_start(self) -> None:
        await super().on_start()
        self.watchdog.start()
        _log.info("listening", address=self.address, service=self.service_name,
                  tls=self.ssl_context is not None,
                  block_limit=f"{self.watchdog.limit:g}s" if self.watchdog.limit else "off")

    async def on_stop(self) -> None:
        # Evaluations are an admin's, not a client's: interrupt them rather
        # than wait for them.
        for session in list(self.sessions):
            session.evaluator.interrupt()
        try:
            await super().on_stop()
        finally:
            for session in list(self.sessions):
                session.close()
            self.watchdog.stop()

    def banner(self) -> str | None:
        if not self.show_banner:
            return None
        if self.socket_path is not None:
            hint = f"pb manhole --socket {self.socket_path} --user NAME"
        else:
            shown = f"[{self.host}]" if ":" in self.host else self.host
            hint = f"pb manhole {shown}:{self.port} --user NAME"
            if self.ssl_context is not None:
                hint += " --tls-ca CA.pem"
        return f"{self.service_name}: {self.address}   (admins only: {hint})"


# -- the plug-in ---------------------------------------------------------------


def check_bind_options(options: argparse.Namespace) -> None:
    """Refuse an address the manhole should not listen on (ValueError
    naming the fix)."""
    if options.socket is not None:
        if options.host is not None or options.port is not None:
            raise ValueError("give either --socket PATH or --host/--port, not both")
        if options.allow_remote:
            raise ValueError("--allow-remote is for TCP; a UNIX socket is local already")
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both files")
    host = options.host or "127.0.0.1"
    if options.socket is None and not is_loopback(host):
        if not options.allow_remote or options.tls_cert is None:
            raise ValueError(
                f"refusing to open the manhole on {host}: it runs Python inside the server, "
                f"so by default it listens only on 127.0.0.1 or a UNIX socket (--socket PATH). "
                f"To reach it from other machines pass --allow-remote together with "
                f"--tls-cert FILE --tls-key FILE"
            )


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context for *cert*/*key* (PEM files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None
    return context


class ManholePlugin(ServicePlugin):
    name = "manhole"
    description = "a Python console inside the running server, for admins (loopback only by default)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", type=host_name, default=None,
                            help="address to listen on (default: 127.0.0.1; anything but "
                                 "loopback needs --allow-remote and TLS)")
        parser.add_argument("--port", type=port_number, default=None,
                            help=f"TCP port (default: {DEFAULT_PORT}; 0: any free port)")
        parser.add_argument("--socket", metavar="PATH", default=None,
                            help="listen on this UNIX socket (created with mode 0600) instead")
        parser.add_argument("--allow-remote", action="store_true",
                            help="allow a non-loopback --host (requires --tls-cert and --tls-key)")
        parser.add_argument("--tls-cert", metavar="FILE", default=None,
                            help="serve TLS with this certificate chain (PEM)")
        parser.add_argument("--tls-key", metavar="FILE", default=None,
                            help="the certificate's private key (PEM)")
        parser.add_argument("--block-limit", metavar="SECONDS", type=non_negative_seconds,
                            default=DEFAULT_BLOCK_LIMIT,
                            help="interrupt typed code that holds the server's event loop "
                                 f"this long without awaiting (default: {DEFAULT_BLOCK_LIMIT:g}; "
                                 "0: never)")

    def build(self, options: argparse.Namespace, application: Application) -> ManholeService:
        check_bind_options(options)
        context = None
        if options.tls_cert is not None:
            context = server_tls_context(options.tls_cert, options.tls_key)
        portal = account_portal(application)
        return ManholeService(
            "manhole",
            application=application,
            portal=portal,
            host=options.host or "127.0.0.1",
            port=DEFAULT_PORT if options.port is None else options.port,
            path=options.socket,
            ssl_context=context,
            block_limit=options.block_limit,
        )


plugin = ManholePlugin()
