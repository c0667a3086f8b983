"""``pb run words``: options (also the keys of a ``[[service]]`` table with
``plugin = "words"``) and building the service.

The PB face gets a listener of its own that offers only the cred service
``words`` (logins are bound to listeners).  Its default port, 8787, is also
echo's: an application that runs both gives one of them another port
(``--pb-port``), or puts words' PB face on a UNIX socket (``--pb-socket``).
"""

from __future__ import annotations

import argparse
import math

import cred
from services import Application, ServicePlugin, account_portal, host_name, port_number

from ._core import (
    DEFAULT_MAX_GROUPS,
    DEFAULT_MAX_GROUPS_PER_USER,
    DEFAULT_MAX_MESSAGE,
    DEFAULT_SCROLLBACK,
    InvalidName,
    check_user_name,
)
from ._server import IRCLimits
from ._service import DEFAULT_IRC_PORT, DEFAULT_IRC_TLS_PORT, DEFAULT_PB_PORT, WordsService

__all__ = ["WordsPlugin", "plugin"]


def _user_password(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {name!r}... "
                                         f"(both parts non-empty)")
    try:
        cred.store.check_name("user", name)
        check_user_name(name)
    except (cred.InvalidName, InvalidName) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, password


def _admin_path(text: str) -> str:
    from services.web._mounts import mount_prefix

    try:
        return "/" + "/".join(mount_prefix(text)) + "/"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(minimum: int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its errors
    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class WordsPlugin(ServicePlugin):
    name = "words"
    description = "chat: rooms shared by PB (service \"words\") and IRC clients"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", type=host_name, default="127.0.0.1",
                            help="address the PB and IRC listeners use (default: 127.0.0.1)")
        parser.add_argument("--pb-port", type=port_number, default=DEFAULT_PB_PORT,
                            help=f"PB port (default {DEFAULT_PB_PORT}; 0: any free port)")
        parser.add_argument("--pb-socket", metavar="PATH", default=None,
                            help="serve PB on this UNIX socket instead of TCP")
        parser.add_argument("--no-pb", action="store_true", help="no PB face")
        parser.add_argument("--irc-port", type=port_number, default=DEFAULT_IRC_PORT,
                            help=f"IRC port (default {DEFAULT_IRC_PORT}; 0: any free port)")
        parser.add_argument("--no-irc", action="store_true", help="no IRC face")
        parser.add_argument("--irc-tls-port", type=port_number, default=DEFAULT_IRC_TLS_PORT,
                            help=f"IRC over TLS, opened when --tls-cert is given "
                                 f"(default {DEFAULT_IRC_TLS_PORT})")
        parser.add_argument("--tls-cert", metavar="PEM", default=None,
                            help="certificate chain for the IRC TLS port")
        parser.add_argument("--tls-key", metavar="PEM", default=None,
                            help="its private key (default: in the --tls-cert file)")
        parser.add_argument("--server-name", default="words",
                            help="the IRC server's name in replies (default: words)")
        parser.add_argument("--motd", action="append", default=[], metavar="LINE",
                            help="a line of the IRC message of the day (repeatable)")
        parser.add_argument("--scrollback", type=_count(0), default=DEFAULT_SCROLLBACK,
                            help=f"messages kept per group (default {DEFAULT_SCROLLBACK})")
        parser.add_argument("--max-message", type=_count(1), default=DEFAULT_MAX_MESSAGE,
                            help=f"longest message in characters (default {DEFAULT_MAX_MESSAGE})")
        parser.add_argument("--max-groups", type=_count(1), default=DEFAULT_MAX_GROUPS,
                            help=f"groups the chat may hold (default {DEFAULT_MAX_GROUPS})")
        parser.add_argument("--max-groups-per-user", type=_count(1),
                            default=DEFAULT_MAX_GROUPS_PER_USER,
                            help=f"groups one user may be in "
                                 f"(default {DEFAULT_MAX_GROUPS_PER_USER})")
        limits = IRCLimits()
        parser.add_argument("--flood-rate", type=_positive, default=limits.flood_rate,
                            help=f"IRC lines a second per client after the burst "
                                 f"(default {limits.flood_rate:g})")
        parser.add_argument("--flood-burst", type=_count(1), default=limits.flood_burst,
                            help=f"IRC lines handled at once (default {limits.flood_burst})")
        parser.add_argument("--max-queued", type=_count(1), default=limits.max_queued,
                            help=f"IRC lines waiting per client before it is disconnected "
                                 f"(default {limits.max_queued})")
        parser.add_argument("--max-output", type=_count(1024), default=limits.max_output,
                            help=f"unsent bytes per IRC client before it is dropped as a "
                                 f"slow reader (default {limits.max_output})")
        parser.add_argument("--max-irc-per-source", type=_count(1),
                            default=limits.max_per_source,
                            help=f"simultaneous IRC clients from one IPv4 address or IPv6 /64 "
                                 f"(default {limits.max_per_source})")
        parser.add_argument("--ping-interval", type=_positive, default=limits.ping_interval,
                            metavar="SECONDS",
                            help=f"PING an IRC client silent this long; drop it after as long "
                                 f"again (default {limits.ping_interval:g})")
        parser.add_argument("--max-irc-connections", type=_count(1),
                            default=limits.max_connections,
                            help=f"simultaneous IRC clients (default {limits.max_connections})")
        parser.add_argument("--user", metavar="NAME:PASSWORD", type=_user_password,
                            action="append", default=[],
                            help="create or update this account and grant it words:NAME "
                                 "(repeatable; shows in the process list: for demos)")
        parser.add_argument("--no-web-admin", action="store_true",
                            help="do not mount the administration pages on the application's "
                                 "web front")
        parser.add_argument("--admin-path", type=_admin_path, default="/words/",
                            help="where the administration pages go on the web front "
                                 "(default: /words/)")
        parser.add_argument("--admin", metavar="NAME:PASSWORD", type=_user_password,
                            action="append", default=[],
                            help="create or update this account and grant it words-admin, "
                                 "the administrator permission (repeatable; for demos)")
        parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                            help="when stopping, how long PB calls in progress may take")

    def build(self, options: argparse.Namespace, application: Application) -> WordsService:
        if options.no_pb and options.pb_socket is not None:
            raise ValueError("--no-pb and --pb-socket contradict each other; give one")
        if options.tls_key is not None and options.tls_cert is None:
            raise ValueError("--tls-key needs --tls-cert (the certificate for the IRC TLS port)")
        limits = IRCLimits(flood_rate=options.flood_rate, flood_burst=options.flood_burst,
                           max_queued=options.max_queued, max_output=options.max_output,
                           max_connections=options.max_irc_connections,
                           ping_interval=options.ping_interval,
                           max_per_source=options.max_irc_per_source)
        return WordsService(
            "words",
            portal=account_portal(application),
            data_dir=application.data_dir,
            host=options.host,
            pb_port=None if options.no_pb else options.pb_port,
            pb_socket=options.pb_socket,
            irc_port=None if options.no_irc else options.irc_port,
            irc_tls_port=options.irc_tls_port,
            tls_cert=options.tls_cert,
            tls_key=options.tls_key,
            scrollback=options.scrollback,
            max_message=options.max_message,
            max_groups=options.max_groups,
            max_groups_per_user=options.max_groups_per_user,
            irc_limits=limits,
            server_name=options.server_name,
            motd=options.motd,
            users=options.user,
            grace=options.grace,
            web_admin=not options.no_web_admin,
            admin_path=options.admin_path,
            admins=options.admin,
        )


plugin = WordsPlugin()
