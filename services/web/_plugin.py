"""The ``web`` plug-in: ``pb run web`` in its three shapes.

* ``pb run web --port 8080 --static DIR``: a static site.
* ``pb run web --port 8080 --users [--home-base DIR] [--pb-port P]``: the
  user front (``/``, ``/~NAME/``, ``/NAME.twistd/``); with ``--pb-port``,
  personal servers on other machines publish themselves through PB.
* ``pb run web --personal [--static DIR | --resource M:A | --asgi M:A |
  --wsgi M:A] [--socket PATH] [--publish-to HOST:PORT --user NAME]``: a
  personal server.

Every option is also a key of the ``[[service]]`` table in a TOML file.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import ssl
from pathlib import Path
from typing import Any

from services import Application, Service, ServicePlugin, account_portal, host_name, port_number

from ._asgi import ASGIResource
from ._core import Resource
from ._front import WebService
from ._http import HTTPLimits
from ._personal import PersonalService
from ._static import File
from ._users import PUBLIC_HTML, SOCKET_NAME, Homes, UserDirectory
from ._wsgi import WSGIResource

__all__ = ["DEFAULT_PORT", "WebPlugin", "plugin"]

DEFAULT_PORT = 8080
PASSWORD_ENV = "PB_PASSWORD"  # the same variable pb call reads


def _size(text: str) -> int:
    """A byte count with an optional K/M/G suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 65536, 64K or 100M, got {text!r}")
    scale = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a numeric port, got {text!r}") from None


def load_object(spec: str) -> Any:
    """``module:attribute`` (dotted attributes allowed) to the object."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {spec!r}: {exc} "
                         f"(is it on PYTHONPATH?)") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _server_tls(options: argparse.Namespace) -> ssl.SSLContext | None:
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    if options.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


class WebPlugin(ServicePlugin):
    name = "web"
    description = ("HTTP server: a static site (--static), a user front (--users) or a "
                   "personal server (--personal) relayed over PB")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        site = parser.add_argument_group("serving")
        site.add_argument("--host", type=host_name, default="127.0.0.1",
                          help="address to listen on (default: 127.0.0.1)")
        site.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                          help=f"HTTP port (default: {DEFAULT_PORT}; 0: any free port)")
        site.add_argument("--static", metavar="DIR", default=None,
                          help="serve this directory (with --personal: default ~/public_html)")
        site.add_argument("--tls-cert", metavar="PEM", default=None,
                          help="serve HTTPS (and TLS on --pb-port) with this certificate chain")
        site.add_argument("--tls-key", metavar="PEM", default=None,
                          help="the private key for --tls-cert")
        site.add_argument("--debug", action="store_true",
                          help="show tracebacks in 500 pages (never in production)")
        front = parser.add_argument_group("user front")
        front.add_argument("--users", action="store_true",
                           help="serve / (user list), /~NAME/ (public_html) and /NAME.twistd/ "
                                "(relayed to NAME's personal server)")
        front.add_argument("--home-base", metavar="DIR", default=None,
                           help="homes are DIR/NAME instead of the password database's")
        front.add_argument("--prefer-personal", action="store_true",
                           help="serve /~NAME/ from NAME's published personal server when there is one")
        front.add_argument("--relay-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                           help="a personal server silent this long gets a 504 (default: 30)")
        front.add_argument("--pb-host", type=host_name, default="127.0.0.1",
                           help="address of the PB listener for publishing and admin")
        front.add_argument("--pb-port", type=port_number, default=None,
                           help="open a PB listener (services web-publish and web) on this port")
        personal = parser.add_argument_group("personal server")
        personal.add_argument("--personal", action="store_true",
                              help="run a personal server for a front")
        personal.add_argument("--socket", metavar="PATH", default=None,
                              help=f"the personal server's UNIX socket (default: ~/{SOCKET_NAME})")
        personal.add_argument("--resource", metavar="MODULE:ATTR", default=None,
                              help="publish this Resource")
        personal.add_argument("--asgi", metavar="MODULE:APP", default=None,
                              help="publish this ASGI application")
        personal.add_argument("--wsgi", metavar="MODULE:APP", default=None,
                              help="publish this WSGI application")
        personal.add_argument("--publish-to", type=_host_port, metavar="HOST:PORT", default=None,
                              help="log in to a front's PB port and publish there")
        personal.add_argument("--user", metavar="NAME", default=None,
                              help=f"the account for --publish-to (password in ${PASSWORD_ENV})")
        personal.add_argument("--tls-ca", metavar="PEM", default=None,
                              help="use TLS for --publish-to, trusting this CA")
        limits = parser.add_argument_group("limits")
        limits.add_argument("--max-body", type=_size, default=64 * 1024 * 1024, metavar="BYTES",
                            help="largest request body (default: 64M)")
        limits.add_argument("--max-request-line", type=_positive, default=8190, metavar="BYTES")
        limits.add_argument("--max-header-bytes", type=_positive, default=16384, metavar="BYTES")
        limits.add_argument("--max-headers", type=_positive, default=100, metavar="N")
        limits.add_argument("--max-connections", type=_positive, default=1024, metavar="N")
        limits.add_argument("--max-connections-per-source", type=_positive, default=256,
                            metavar="N", help="connections at once from one address (IPv6: "
                                              "one /64) (default: 256)")
        limits.add_argument("--header-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                            help="time to receive a request's headers (default: 10)")
        limits.add_argument("--idle-timeout", type=_seconds, default=15.0, metavar="SECONDS",
                            help="keep-alive time between requests (default: 15)")
        limits.add_argument("--body-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                            help="longest wait for the next piece of a request body "
                                 "(default: 30)")

    def build(self, options: argparse.Namespace, application: Application) -> Service:
        if options.personal:
            return self._personal(options)
        if options.resource or options.asgi or options.wsgi or options.publish_to:
            raise ValueError("--resource, --asgi, --wsgi and --publish-to are for --personal; "
                             "add --personal")
        limits = HTTPLimits(
            max_request_line=options.max_request_line, max_header_bytes=options.max_header_bytes,
            max_headers=options.max_headers, max_body=options.max_body,
            header_timeout=options.header_timeout, idle_timeout=options.idle_timeout,
            body_timeout=options.body_timeout, max_connections=options.max_connections,
            max_connections_per_source=options.max_connections_per_source)
        tls = _server_tls(options)
        static = File(_existing_dir(options.static, "--static")) if options.static else None
        directory = None
        portal = None
        if options.users:
            directory = UserDirectory(Homes(options.home_base), relay_timeout=options.relay_timeout,
                                      prefer_personal=options.prefer_personal, fallback=static)
            resource: Resource = directory
            if options.pb_port is not None:
                portal = account_portal(application)
        elif static is not None:
            if options.pb_port is not None:
                raise ValueError("--pb-port is for the user front; add --users")
            resource = static
        else:
            raise ValueError("say what to serve: --static DIR, --users, or --personal")
        return WebService("web", resource=resource, host=options.host, port=options.port,
                          ssl=tls, limits=limits, debug=options.debug, directory=directory,
                          portal=portal, pb_host=options.pb_host, pb_port=options.pb_port,
                          pb_ssl=tls)

    def _personal(self, options: argparse.Namespace) -> PersonalService:
        if options.users:
            raise ValueError("--users is for the front and --personal for a personal server; "
                             "run them as two services")
        chosen = [name for name in ("static", "resource", "asgi", "wsgi") if getattr(options, name)]
        if len(chosen) > 1:
            raise ValueError(f"a personal server publishes one thing; got --{' and --'.join(chosen)}")
        apps: list[Resource] = []
        if options.resource:
            resource = load_object(options.resource)
            if not isinstance(resource, Resource):
                raise ValueError(f"{options.resource} is a {type(resource).__name__}, "
                                 f"not a services.web.Resource")
        elif options.asgi:
            resource = ASGIResource(load_object(options.asgi))
            apps.append(resource)
        elif options.wsgi:
            resource = WSGIResource(load_object(options.wsgi))
            apps.append(resource)
        elif options.static:
            resource = File(_existing_dir(options.static, "--static"))
        else:
            default = Path.home() / PUBLIC_HTML
            if not default.is_dir():
                raise ValueError(f"{default} is not a directory: a personal server publishes "
                                 f"~/{PUBLIC_HTML} by default; create it, or give --static DIR, "
                                 f"--resource, --asgi or --wsgi")
            resource = File(str(default))
        socket_path = options.socket
        if socket_path is None and options.publish_to is None:
            socket_path = str(Path.home() / SOCKET_NAME)
        password = None
        publish_ssl = None
        if options.publish_to is not None:
            if not options.user:
                raise ValueError("--publish-to needs --user NAME (the account to log in as)")
            password = os.environ.get(PASSWORD_ENV)
            if password is None:
                raise ValueError(f"--publish-to needs the account's password in ${PASSWORD_ENV}")
            if options.tls_ca:
                publish_ssl = ssl.create_default_context(cafile=options.tls_ca)
        return PersonalService("web", resource=resource, socket_path=socket_path,
                               publish_to=options.publish_to, user=options.user,
                               password=password, publish_ssl=publish_ssl, apps=apps,
                               debug=options.debug)


def _existing_dir(path: str, option: str) -> str:
    if not os.path.isdir(path):
        raise ValueError(f"{option} {path}: not a directory")
    return path


plugin = WebPlugin()
