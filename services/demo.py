"""The ``demo`` plug-in: echo, a manhole and the web, with an admin, in one command.

``pb run demo`` builds the ``echo`` and ``manhole`` services through their
own plug-ins (as ``pb run echo --port P`` and ``pb run manhole --port M``
would), both on 127.0.0.1 and sharing the application's portal and account
store, and puts them under one service named ``demo``.  It also runs a web
front on 127.0.0.1:8080 (``--web-port``) whose user directory lives in
``<data_dir>/web``, and the demo's own personal server on the UNIX socket
``<data_dir>/web/demo/.pb-web.sock``: ``/demo.twistd/`` is a page relayed
over PB.  At each start, once everything listens, it creates the account
``admin`` (or resets its password) with a fresh random password, grants it
``pbecho:admin`` and ``manhole:admin``, and prints once
what a newcomer needs to try it.

From the manhole the two services are ``services['demo']['echo']`` and
``services['demo']['manhole']``.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from services import (
    Application,
    MultiService,
    Service,
    ServicePlugin,
    account_store,
    ensure_account,
    get_logger,
    plugin_parser,
    port_number,
)
from services.echo import DEFAULT_PORT as ECHO_PORT
from services.echo import EchoService
from services.echo import plugin as echo_plugin
from services.manhole import DEFAULT_PORT as MANHOLE_PORT
from services.manhole import ManholeService
from services.manhole import plugin as manhole_plugin
from services.web import Homes, PersonalService, Request, Resource, UserDirectory, WebService

__all__ = ["ADMIN", "WEB_PORT", "DemoPage", "DemoPlugin", "DemoService", "plugin"]

#: The account the demo creates (or whose password it resets) at each start.
ADMIN = "admin"
WEB_PORT = 8080

_log = get_logger("pb.demo")


class DemoPage(Resource):
    """The demo personal server's page: proof that it came over PB."""

    is_leaf = True

    def render_GET(self, request: Request) -> str:
        return ("<!DOCTYPE html><title>Relayed over PB</title><h1>Hello from the demo's "
                "personal server</h1><p>The front on port 8080 relayed this request over PB "
                "to a personal server on a UNIX socket, which wrote this page.</p>")


class DemoService(MultiService):
    """``echo`` and ``manhole`` as children, and the admin account.

    ``password`` is the admin's password of this run (None until started).
    ``demo["echo"]`` is ``demo.get("echo")``.
    """

    def __init__(self, name: str | None = "demo", *, echo: EchoService,
                 manhole: ManholeService, admin: str = ADMIN,
                 web: WebService | None = None, personal: PersonalService | None = None) -> None:
        super().__init__(name)
        self.admin = admin
        self.password: str | None = None
        self.store = account_store(echo.portal)
        # One banner for the whole demo: the children stay quiet.
        echo.show_banner = False
        manhole.show_banner = False
        self.add(echo)
        self.add(manhole)
        # The personal server starts before the front, so the first page works.
        for child in (personal, web):
            if child is not None:
                child.show_banner = False
                self.add(child)

    def __getitem__(self, name: str) -> Service:
        return self.get(name)

    @property
    def echo(self) -> EchoService:
        return self.get("echo")  # type: ignore[return-value]

    @property
    def manhole(self) -> ManholeService:
        return self.get("manhole")  # type: ignore[return-value]

    async def on_start(self) -> None:
        # Before the children start: the personal server's home must exist
        # when it listens.
        personal = self.get("personal") if "personal" in self else None
        if personal is not None:
            Path(personal.socket_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def on_started(self) -> None:
        # After the children are listening: a port that is taken fails the
        # start before the admin's password is touched.
        password = secrets.token_urlsafe(12)
        grants: list[tuple[str, str | None]] = [
            (self.echo.service_name, None),
            (self.manhole.service_name, None),
        ]
        created = await ensure_account(self.store, self.admin, password, grants)
        self.password = password
        _log.info("admin account created" if created else "admin password reset",
                  user=self.admin, store=str(self.store.path))

    def banner(self) -> str | None:
        echo, manhole = self.echo, self.manhole
        echo_at = f"{echo.host}:{echo.port}"
        manhole_at = f"{manhole.host}:{manhole.port}"
        web = self.get("web") if "web" in self else None
        web_lines = [] if web is None else [f"  Web front:        {web.url}"]
        web_try = [] if web is None else [f"      curl {web.url}demo.twistd/   (a page relayed over PB)"]
        return "\n".join([
            "Perspective Broker demo is running.",
            f'  PB echo service:  {echo_at}   (service "{echo.service_name}")',
            f"  Manhole:          {manhole_at}",
            *web_lines,
            f"  Admin user:       {self.admin}",
            f"  Admin password:   {self.password}",
            f"Try:  pb manhole {manhole_at} --user {self.admin}",
            f"      pb call {echo_at} --user {self.admin} --service {echo.service_name} "
            f"echo '\"hello\"'",
            *web_try,
            "Press Ctrl-C to stop.",
        ])


class DemoPlugin(ServicePlugin):
    name = "demo"
    description = ("echo + manhole + a web front on 127.0.0.1 with a generated admin password: "
                   "try PB in a minute")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=port_number, default=ECHO_PORT,
                            help=f"the echo service's TCP port (default: {ECHO_PORT}; 0: any)")
        parser.add_argument("--manhole-port", type=port_number, default=MANHOLE_PORT,
                            help=f"the manhole's TCP port (default: {MANHOLE_PORT}; 0: any)")
        parser.add_argument("--web-port", type=port_number, default=WEB_PORT,
                            help=f"the web front's TCP port (default: {WEB_PORT}; 0: any)")
        parser.add_argument("--data-dir", type=Path, metavar="DIR", default=None,
                            help="state directory (the account store); default: pb run's "
                                 "--data-dir, ./pb-data")

    def build(self, options: argparse.Namespace, application: Application) -> DemoService:
        if options.data_dir is not None:
            if application.portal is not None and Path(application.data_dir) != options.data_dir:
                raise ValueError(
                    f"another service already opened the accounts in {application.data_dir}; "
                    f"give the data directory to pb run (pb run --data-dir DIR ...) instead"
                )
            application.data_dir = options.data_dir
        echo = self._build(echo_plugin, ["--port", str(options.port)], application)
        manhole = self._build(manhole_plugin, ["--port", str(options.manhole_port)], application)
        homes = Path(application.data_dir) / "web"
        personal = PersonalService("personal", resource=DemoPage(),
                                   socket_path=str(homes / "demo" / ".pb-web.sock"))
        directory = UserDirectory(Homes(str(homes)), relay_timeout=10.0)
        web = WebService("web", resource=directory, port=options.web_port, directory=directory)
        return DemoService("demo", echo=echo, manhole=manhole, web=web, personal=personal)

    @staticmethod
    def _build(plugin: Any, argv: list[str], application: Application) -> Any:
        options = plugin_parser(plugin).parse_args(argv)
        return plugin.build(options, application)


plugin = DemoPlugin()
