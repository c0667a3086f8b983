"""``pb run mail``: options, the config table, and building the service."""

from __future__ import annotations

import argparse
import math
import ssl
from pathlib import Path

import cred
from services import Application, Service, ServicePlugin, account_portal, host_name, port_number

from ._core import DEFAULT_MAX_MESSAGE, AddressError, Domain, check_mailbox_name, parse_address
from ._personal import DEFAULT_MAILDIR, DEFAULT_SOCKET, PersonalService
from ._queue import DEFAULT_QUEUE_MAX_BYTES
from ._server import DEFAULT_DATA_TIMEOUT, MIN_AUTOLOGOUT, MailService

__all__ = ["MailPlugin", "plugin"]


def _domain_dir(text: str) -> tuple[str, str]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected DOMAIN=DIR, got {text[:60]!r}")
    try:
        domain = parse_address(f"x@{name}").domain
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"--domain {name[:60]!r}: {exc}") from None
    return domain, directory


def _catch_all(text: str) -> tuple[str, str]:
    domain, sep, local = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected DOMAIN=LOCALPART, got {text[:60]!r}")
    try:
        address = check_mailbox_name(f"{local}@{domain}")
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"--catch-all {text[:60]!r}: {exc}") from None
    return address.domain, address.local


def _user(text: str) -> tuple[str, str]:
    mailbox, sep, password = text.partition(":")
    if not sep or not password:
        raise argparse.ArgumentTypeError("expected NAME@DOMAIN:PASSWORD (both parts non-empty)")
    try:
        address = check_mailbox_name(mailbox)
        cred.store.check_name("user", address.mailbox)
    except (AddressError, cred.InvalidName) as exc:
        raise argparse.ArgumentTypeError(f"--user {mailbox[:60]!r}: {exc}") from None
    return address.mailbox, password


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text[:60]!r}")
    return host, int(port)


def _personal_socket(text: str) -> tuple[str, str]:
    mailbox, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected NAME@DOMAIN=PATH, got {text[:60]!r}")
    try:
        return check_mailbox_name(mailbox).mailbox, path
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"--personal-socket {mailbox[:60]!r}: {exc}") from None


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal mode such as 0600, got {text!r}") from None
    if value & ~0o777 or value & 0o007:
        raise argparse.ArgumentTypeError(f"mode {text}: only owner and group bits (others may never connect)")
    return value


def _seconds(minimum: float = 0.0):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if math.isnan(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number of seconds >= {minimum:g}, got {text!r}")
        return value
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _smarthost_security(options: argparse.Namespace) -> tuple[ssl.SSLContext | None, tuple[str, str] | None]:
    if options.smarthost is None:
        if options.smarthost_tls or options.smarthost_ca or options.smarthost_user:
            raise ValueError("--smarthost-tls, --smarthost-ca and --smarthost-user need --smarthost")
        return None, None
    tls = None
    if options.smarthost_tls or options.smarthost_ca:
        try:
            tls = ssl.create_default_context(cafile=options.smarthost_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--smarthost-ca {options.smarthost_ca}: cannot load it: {exc}") from None
    if (options.smarthost_user is None) != (options.smarthost_password_file is None):
        raise ValueError("give --smarthost-user and --smarthost-password-file together")
    login = None
    if options.smarthost_user is not None:
        try:
            password = Path(options.smarthost_password_file).read_text().splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"--smarthost-password-file {options.smarthost_password_file}: "
                             f"cannot read a password from it ({exc!r})") from None
        login = (options.smarthost_user, password)
        host = options.smarthost[0]
        if tls is None and host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("--smarthost-user sends a password: add --smarthost-tls "
                             "(only a loopback smarthost may be logged in to without TLS)")
    return tls, login


class MailPlugin(ServicePlugin):
    name = "mail"
    description = "SMTP in, Maildir storage, POP3 out, smarthost relay, mailboxes over PB"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        personal = parser.add_argument_group(
            "personal server", "pb run mail --personal: take this user's mail over PB on a UNIX socket")
        personal.add_argument("--personal", action="store_true",
                              help="run as a personal server instead of the mail server")
        personal.add_argument("--socket", metavar="PATH", default=DEFAULT_SOCKET,
                              help=f"the personal server's socket (default: {DEFAULT_SOCKET})")
        personal.add_argument("--socket-mode", metavar="OCTAL", type=_mode, default=0o600,
                              help="its permissions (default: 0600; 0660 lets the socket's group, "
                                   "the mail server's, connect)")
        personal.add_argument("--maildir", metavar="DIR", default=DEFAULT_MAILDIR,
                              help=f"where the personal server stores mail (default: {DEFAULT_MAILDIR})")
        personal.add_argument("--mailbox", metavar="NAME@DOMAIN", action="append", default=[],
                              help="take mail only for this mailbox (repeatable; default: any)")
        parser.add_argument("--personal-socket", metavar="NAME@DOMAIN=PATH", type=_personal_socket,
                            action="append", default=[],
                            help="hand mail for this mailbox to the personal server on PATH, "
                                 "falling back to the server's Maildir when it is down")
        parser.add_argument("--domain", metavar="DOMAIN=DIR", type=_domain_dir, action="append",
                            default=[], help="a virtual domain and the directory of its Maildirs "
                                             "(repeatable; DIR/NAME is the Maildir of NAME@DOMAIN)")
        parser.add_argument("--catch-all", metavar="DOMAIN=NAME", type=_catch_all, action="append",
                            default=[], help="mail for unknown names of DOMAIN goes to NAME@DOMAIN")
        parser.add_argument("--user", metavar="NAME@DOMAIN:PASSWORD", type=_user, action="append",
                            default=[], help="create or update the account NAME@DOMAIN with that "
                                             "mailbox (repeatable; for demos: the password shows "
                                             "in the process list)")
        parser.add_argument("--host", type=host_name, default="127.0.0.1",
                            help="address to listen on (default: 127.0.0.1)")
        parser.add_argument("--smtp-port", type=port_number, default=2525,
                            help="SMTP port (default: 2525; 0: any free port)")
        parser.add_argument("--pop3-port", type=port_number, default=1110,
                            help="POP3 port (default: 1110; 0: any free port)")
        parser.add_argument("--pb-port", type=port_number, default=None,
                            help="serve the PB mailbox face on this TCP port (default: off)")
        parser.add_argument("--pb-socket", metavar="PATH", default=None,
                            help="serve the PB mailbox face on this UNIX socket")
        parser.add_argument("--smarthost", metavar="HOST:PORT", type=_host_port, default=None,
                            help="relay mail for other domains (from authenticated senders only) "
                                 "through this SMTP server")
        parser.add_argument("--smarthost-tls", action="store_true",
                            help="require STARTTLS with the smarthost, checking its certificate")
        parser.add_argument("--smarthost-ca", metavar="PEM", default=None,
                            help="CA certificates for the smarthost (default: the system's)")
        parser.add_argument("--smarthost-user", metavar="NAME", default=None,
                            help="log in to the smarthost as NAME (with --smarthost-password-file)")
        parser.add_argument("--smarthost-password-file", metavar="PATH", default=None,
                            help="file whose first line is the smarthost password")
        parser.add_argument("--allow-plain-auth", action="store_true",
                            help="allow AUTH PLAIN/LOGIN and POP3 USER/PASS without TLS, "
                                 "on loopback connections only")
        parser.add_argument("--tls-cert", metavar="PEM", default=None,
                            help="certificate for STARTTLS and STLS (with --tls-key)")
        parser.add_argument("--tls-key", metavar="PEM", default=None, help="its private key")
        parser.add_argument("--hostname", default=None,
                            help="the name this server gives in greetings and Received: headers")
        parser.add_argument("--max-message-size", type=_positive, default=DEFAULT_MAX_MESSAGE,
                            help=f"SMTP SIZE limit in bytes (default: {DEFAULT_MAX_MESSAGE}, as Postfix)")
        parser.add_argument("--max-recipients", type=_positive, default=100,
                            help="recipients per message (default: 100)")
        parser.add_argument("--command-timeout", type=_seconds(1.0), default=300.0,
                            help="SMTP: seconds a client may take per command (default: 300)")
        parser.add_argument("--autologout", type=_seconds(MIN_AUTOLOGOUT), default=MIN_AUTOLOGOUT,
                            help="POP3 idle timeout in seconds (default and minimum: 600)")
        parser.add_argument("--retry-base", type=_seconds(0.1), default=60.0,
                            help="relay: first retry after this many seconds, doubling (default: 60)")
        parser.add_argument("--retry-max", type=_seconds(0.1), default=3600.0,
                            help="relay: longest wait between retries (default: 3600)")
        parser.add_argument("--give-up", type=_seconds(1.0), default=5 * 86400.0,
                            help="relay: bounce to the sender after this long (default: 5 days)")
        parser.add_argument("--queue-max-bytes", type=_positive, default=DEFAULT_QUEUE_MAX_BYTES,
                            help="relay: most bytes the queue may hold; beyond, SMTP answers "
                                 "452 4.3.1 (try later) to relayed mail (default: 1 GiB)")
        parser.add_argument("--data-timeout", type=_seconds(1.0), default=DEFAULT_DATA_TIMEOUT,
                            help="SMTP: seconds to wait for each read of message data "
                                 "(default: 180, RFC 5321 4.5.3.2.5)")
        parser.add_argument("--max-connections", type=_positive, default=256,
                            help="connections at once on each listener (default: 256)")
        parser.add_argument("--max-connections-per-host", type=_positive, default=32,
                            help="connections at once from one address, per listener (default: 32)")
        parser.add_argument("--grace", type=_seconds(), default=10.0,
                            help="when stopping, how long messages being stored may take")

    def build(self, options: argparse.Namespace, application: Application) -> Service:
        if options.personal:
            if options.domain or options.user:
                raise ValueError("--personal runs a personal server: --domain and --user are for the "
                                 "mail server")
            for mailbox in options.mailbox:
                try:
                    check_mailbox_name(mailbox)
                except AddressError as exc:
                    raise ValueError(f"--mailbox {mailbox}: {exc}") from None
            return PersonalService("mail", socket_path=options.socket, maildir=options.maildir,
                                   mailboxes=options.mailbox, socket_mode=options.socket_mode,
                                   max_message_size=options.max_message_size, grace=options.grace)
        if (options.socket != DEFAULT_SOCKET or options.maildir != DEFAULT_MAILDIR or options.mailbox
                or options.socket_mode != 0o600):
            raise ValueError("--socket, --socket-mode, --maildir and --mailbox are for --personal")
        if not options.domain:
            raise ValueError("give at least one --domain DOMAIN=DIR")
        names = [name for name, _ in options.domain]
        if len(set(names)) != len(names):
            raise ValueError("each --domain may be given once")
        catch_all = dict(options.catch_all)
        for name in catch_all:
            if name not in names:
                raise ValueError(f"--catch-all {name}: not one of the --domain names")
        for mailbox, _ in options.user:
            if mailbox.rpartition("@")[2] not in names:
                raise ValueError(f"--user {mailbox}: its domain is not one of the --domain names")
        for mailbox, _ in options.personal_socket:
            if mailbox.rpartition("@")[2] not in names:
                raise ValueError(f"--personal-socket {mailbox}: its domain is not one of the --domain names")
        if (options.tls_cert is None) != (options.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        if options.pb_port is not None and options.pb_socket is not None:
            raise ValueError("give either --pb-port or --pb-socket, not both")
        smarthost_tls, smarthost_login = _smarthost_security(options)
        tls = None
        if options.tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(options.tls_cert, options.tls_key)
        domains = [Domain(name, str(Path(directory).expanduser().resolve()), catch_all.get(name))
                   for name, directory in options.domain]
        return MailService(
            "mail",
            portal=account_portal(application),
            domains=domains,
            data_dir=application.data_dir,
            host=options.host,
            smtp_port=options.smtp_port,
            pop3_port=options.pop3_port,
            pb_port=options.pb_port,
            pb_socket=options.pb_socket,
            smarthost=options.smarthost,
            smarthost_tls=smarthost_tls,
            smarthost_login=smarthost_login,
            personal_sockets=dict(options.personal_socket),
            users=options.user,
            allow_plain_auth=options.allow_plain_auth,
            tls=tls,
            hostname=options.hostname,
            max_message_size=options.max_message_size,
            max_recipients=options.max_recipients,
            command_timeout=options.command_timeout,
            autologout=options.autologout,
            retry_base=options.retry_base,
            retry_max=options.retry_max,
            give_up=options.give_up,
            max_connections=options.max_connections,
            max_connections_per_host=options.max_connections_per_host,
            grace=options.grace,
            queue_max_bytes=options.queue_max_bytes,
            data_timeout=options.data_timeout,
        )


plugin = MailPlugin()
