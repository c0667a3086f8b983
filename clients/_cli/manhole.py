"""``pb manhole``: a Python console inside a running server.

``pb manhole [HOST:PORT | --socket PATH] --user NAME`` logs in to the
server's ``manhole`` service and opens an interactive console; with
``-c CODE``, or with a script on standard input when that is not a
terminal, it runs the code once and exits 1 if it raised.  The password is
never an argument: a prompt, one line of standard input
(``--password-stdin``) or ``$PB_PASSWORD``.  See docs/manhole.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
from typing import Any

import broker

from .. import _manhole_console as console
from ._common import (
    PASSWORD_ENV,
    RefusePassword,
    UsageError,
    is_text,
    non_negative_seconds,
    read_password,
)

__all__ = ["register"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_EPILOG = f"""\
The password comes from --password-stdin (the first line of standard input),
else ${PASSWORD_ENV}, else a prompt; never from the command line.

Interactive (standard input is a terminal, no -c): >>> and ... prompts,
Tab completes names in the server's namespace, Ctrl-C interrupts the
running code (or clears the line), Ctrl-D leaves. History is kept in
~/.pb_manhole_history (${console.HISTORY_ENV} overrides).

Otherwise the code (-c CODE, or all of standard input after the password
line, if any) runs as one block: its output goes to stdout, the value of a
final expression is printed, a traceback goes to stderr.

Exit codes: 0 done; 1 the code raised, login failed or the server could not
be reached; 2 usage.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "manhole",
        help="a Python console inside a running server (admins)",
        description="Log in to a server's manhole and evaluate Python inside it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --password must not pass for --password-stdin
    )
    parser.add_argument("address", nargs="?", metavar="HOST:PORT",
                        help=f"where the manhole listens (default: "
                             f"{console.DEFAULT_HOST}:{console.DEFAULT_PORT})")
    parser.add_argument("--socket", metavar="PATH",
                        help="connect to this UNIX socket instead")
    parser.add_argument("-u", "--user", required=True, metavar="NAME",
                        help="the account (it needs manhole:NAME: `pb user grant NAME manhole`)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    parser.add_argument("--password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    parser.add_argument("-c", dest="code", metavar="CODE",
                        help="run CODE, print its output, exit (1 if it raised)")
    parser.add_argument("--timeout", type=non_negative_seconds, default=30.0, metavar="S",
                        help="seconds to wait for the login and for each evaluation "
                             "(default: 30; 0: no limit for evaluations)")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, verifying the server against the system's CAs")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="connect with TLS, verifying the server against this CA (PEM)")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="the name to check the server's certificate against "
                             "(default: the host)")
    parser.set_defaults(func=main)


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca:
        try:
            return ssl.create_default_context(cafile=args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load --tls-ca {args.tls_ca}: {exc}") from None
    if args.tls:
        return ssl.create_default_context()
    return None


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"pb manhole: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    try:
        if args.socket is not None and args.address is not None:
            raise UsageError("give HOST:PORT or --socket PATH, not both")
        try:
            target = (console.Target(None, None, args.socket) if args.socket is not None
                      else console.parse_address(args.address))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        tls = _client_tls(args)
        if args.tls_server_name is not None and tls is None:
            raise UsageError("--tls-server-name needs --tls or --tls-ca")
        password = read_password(args.password_stdin,
                                 f"Password for {args.user} at {target}: ")
        source = None
        if args.code is not None:
            source, where = args.code, "-c"
        elif not sys.stdin.isatty():
            where = "standard input"
            try:
                source = sys.stdin.read()
            except UnicodeDecodeError:
                source = "\udcff"
        if source is not None and not is_text(source):
            raise UsageError(f"the code is not UTF-8 text ({where})")
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    timeout = args.timeout or None
    login_timeout = args.timeout or 30.0
    if source is not None:
        return _run_once(target, args.user, password, source, tls, login_timeout, timeout,
                         args.tls_server_name)
    return _interactive(target, args.user, password, tls, login_timeout, timeout,
                        args.tls_server_name)


def _describe_connect_error(exc: BaseException, target: console.Target) -> str | None:
    if isinstance(exc, broker.Unauthorized):
        return (f"{exc} (check the user and password; the account also needs the "
                f"manhole on its keyring: `pb user grant NAME manhole`)")
    if isinstance(exc, OSError):
        if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
            reason = exc.strerror or str(exc)
        else:
            reason = os.strerror(exc.errno)
        if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
            return (f"cannot connect to {target}: {reason} "
                    f"(is the manhole running? `pb run manhole` or `pb run demo`)")
        return f"cannot connect to {target}: {reason}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {target} in time (--timeout)"
    if isinstance(exc, broker.PBError):
        return f"{target}: {exc}"
    return None


async def _run_source(target: console.Target, user: str, password: str, source: str,
                      tls: ssl.SSLContext | None, login_timeout: float,
                      timeout: float | None, server_name: str | None) -> dict[str, Any] | str:
    try:
        perspective = await console.login(target, user, password, ssl=tls,
                                          server_hostname=server_name, timeout=login_timeout)
    except Exception as exc:
        message = _describe_connect_error(exc, target)
        if message is None:
            raise
        return message
    try:
        return await perspective.call_remote("run", source, timeout=timeout)
    except broker.CallTimeout as exc:
        return f"{exc} (--timeout sets the limit; 0: none)"
    except broker.PBError as exc:
        return f"{target}: {exc}"
    finally:
        if perspective.connection.is_open:
            await perspective.connection.close("done")


def _run_once(target: console.Target, user: str, password: str, source: str,
              tls: ssl.SSLContext | None, login_timeout: float, timeout: float | None,
              server_name: str | None) -> int:
    if not source.endswith("\n"):
        source += "\n"  # a block at the end is finished
    outcome = asyncio.run(_run_source(target, user, password, source, tls, login_timeout,
                                      timeout, server_name))
    if isinstance(outcome, str):
        return _fail(outcome)
    if outcome.get("more"):
        return _fail("the code is incomplete (unexpected end of input)")
    raised = console.show_result(outcome, sys.stdout, sys.stderr)
    return EXIT_FAILURE if raised else EXIT_OK


def _interactive(target: console.Target, user: str, password: str,
                 tls: ssl.SSLContext | None, login_timeout: float, timeout: float | None,
                 server_name: str | None) -> int:
    loop = console.LoopThread()
    loop.start()
    perspective = None
    try:
        try:
            perspective = loop.call(console.login(target, user, password, ssl=tls,
                                                  server_hostname=server_name,
                                                  timeout=login_timeout))
        except Exception as exc:
            message = _describe_connect_error(exc, target)
            if message is None:
                raise
            return _fail(message)
        banner = (f"Manhole at {target} as {user}: Python inside the server. "
                  f"`application`, `services` and `portal` are here;\n"
                  f"top-level await works. Ctrl-C interrupts at the next await; code that "
                  f"blocks without awaiting is\ninterrupted by the server after its "
                  f"block limit (5 s unless --block-limit). Ctrl-D leaves.")
        return console.Console(loop, perspective, timeout=timeout,
                               history=console.history_path(), banner=banner).interact()
    finally:
        if perspective is not None:
            connection = perspective.connection
            perspective = None

            async def close() -> None:
                if connection.is_open:
                    await connection.close("bye")

            try:
                loop.call(close(), 10)
            except Exception:
                pass
        loop.stop()
