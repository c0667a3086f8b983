"""``pb call``: call one remote method and print the result as JSON.

``pb call HOST:PORT [OPTIONS] METHOD [JSON_ARG ...] [--kw NAME=JSON ...]``
calls ``METHOD`` on the server's root object, or, with ``--user``, on the
perspective a login returns.  ``--socket PATH`` replaces ``HOST:PORT``.

Arguments are JSON (``'"text"'``, ``42``, ``'[1, 2]'``); ``{"$bytes":
"<base64>"}`` stands for bytes.  The result is printed as one line of JSON:
references as ``{"$ref": "<repr>"}``, bytes as ``{"$bytes": "<base64>"}``,
tuples, sets and streams as lists (see docs/cli.md for the whole mapping).

Exit codes: 0 the call returned; 1 the call, the connection or the login
failed (the message is on stderr); 2 bad usage (an argument that is not
JSON, a malformed address or option).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import json
import os
import re
import ssl
import sys
from typing import Any

from ._common import (
    PASSWORD_ENV,
    RefusePassword,
    UsageError,
    check_host,
    is_text,
    non_negative_seconds,
    read_password,
)

__all__ = ["register", "to_json", "from_json", "parse_address"]

DEFAULT_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_DESCRIPTION = """\
Call METHOD on a server's root object (or, after --user, on your
perspective) and print the result as one line of JSON."""

_EPILOG = f"""\
Each JSON_ARG is one JSON value: '"text"', 42, '[1, 2]', '{{"a": null}}';
{{"$bytes": "<base64>"}} stands for bytes.  Keyword arguments: --kw NAME=JSON.
Options may also follow METHOD; use -- before a JSON_ARG that starts with -.

The result: references print as {{"$ref": "<repr>"}}, bytes as
{{"$bytes": "<base64>"}}, tuples, sets and streams as lists, datetimes as
ISO 8601 strings, Decimals as strings.

The password (with --user) comes from --password-stdin (one line), else
${PASSWORD_ENV}, else a prompt; never from the command line.

Exit codes: 0 success, 1 the call, connection or login failed,
2 usage error (including an argument that is not JSON).  See docs/cli.md.
"""


_USAGE = ("pb call (HOST:PORT | --socket PATH) [options] METHOD [JSON_ARG ...] "
          "[--kw NAME=JSON ...]")


# -- addresses and TLS ------------------------------------------------------------

def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → ``(host, port)``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise UsageError(f"expected HOST:PORT, got {text!r} (or use --socket PATH)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise UsageError(f"no address between the brackets in {text!r}")
    elif ":" in host:
        raise UsageError(f"write an IPv6 address in brackets: [{host}]:{port_text}")
    if not (port_text.isascii() and port_text.isdigit()):
        raise UsageError(f"the port in {text!r} is not a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise UsageError(f"the port in {text!r} is out of range (1-65535)")
    return check_host(host, text), port


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.tls_ca or args.tls_server_name):
        return None
    try:
        return ssl.create_default_context(cafile=args.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the CA file {args.tls_ca}: {exc}") from None


# -- JSON in and out ----------------------------------------------------------------

#: Arrays and objects nested deeper than this in one JSON argument are a usage
#: error.  Far deeper than a peer accepts by default (max_depth 64; a peer
#: that raised it still gets up to this from pb call), and shallow enough for
#: every supported Python to parse: the limit used to be wherever the
#: interpreter ran out of recursion, which was about 500 levels on 3.11 and
#: 1000 on 3.12, so the same argument was refused or sent by version.
MAX_JSON_DEPTH = 256

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON *text* (brackets inside
    strings do not count), without parsing it; for malformed text a guess,
    and json.loads then says what is wrong."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match[0] in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def from_json(text: str, what: str) -> Any:
    """Parse one JSON argument; ``{"$bytes": "..."}`` becomes bytes."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not is_text(text):
        raise UsageError(f"{what} is not UTF-8 text: {shown!r}")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise UsageError(f"{what}: arrays or objects nested too deeply "
                         f"({depth} levels; at most {MAX_JSON_DEPTH})")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc}): {shown!r}") from None
    try:
        return _decode_bytes(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _decode_bytes(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except ValueError:
                raise ValueError(f"{value['$bytes']!r} is not base64") from None
        return {k: _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    return value


def _json_key(key: Any) -> Any:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key  # json.dumps turns non-str scalars into strings itself
    return json.dumps(to_json(key), ensure_ascii=False, sort_keys=True)


def to_json(value: Any) -> Any:
    """Turn a call's result into something ``json.dumps`` accepts."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {_json_key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, complex):
        return [value.real, value.imag]
    import clients

    if isinstance(value, clients.RemoteReference):
        return {"$ref": repr(value)}
    if isinstance(value, clients.RemoteStream):
        with value:
            return [to_json(item) for item in value]
    return {"$repr": repr(value)}


# -- the command --------------------------------------------------------------------

def _add_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    where = parser.add_argument_group("where")
    where.add_argument("--socket", metavar="PATH", default=default(None),
                       help="connect to this UNIX socket instead of HOST:PORT")
    where.add_argument("--timeout", type=non_negative_seconds, metavar="S",
                       default=default(DEFAULT_TIMEOUT),
                       help="seconds allowed for connecting, logging in and the call "
                            f"(default {DEFAULT_TIMEOUT:g}; 0 waits for ever)")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true", default=default(False),
                     help="use TLS, trusting the system's certificate authorities")
    tls.add_argument("--tls-ca", metavar="FILE", default=default(None),
                     help="use TLS, trusting the CA certificates in FILE (PEM)")
    tls.add_argument("--tls-server-name", metavar="NAME", default=default(None),
                     help="the name the server's certificate must carry "
                          "(default: HOST; implies TLS)")
    login = parser.add_argument_group("login (call the perspective instead of the root)")
    login.add_argument("--user", "-u", metavar="USER", default=default(None),
                       help="log in as USER")
    login.add_argument("--service", "-s", metavar="SERVICE", default=default(None),
                       help="the service to log in to (default: pbecho)")
    login.add_argument("--perspective", "-p", metavar="NAME", default=default(None),
                       help="the perspective to take (default: USER)")
    login.add_argument("--anonymous", action="store_true", default=default(False),
                       help="log in anonymously to --service")
    login.add_argument("--password-stdin", action="store_true", default=default(False),
                       help=f"read the password from standard input (one line); "
                            f"else ${PASSWORD_ENV}, else a prompt")
    login.add_argument("--password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    parser.add_argument("--kw", action="append", metavar="NAME=JSON", default=default([]),
                        help="a keyword argument (repeatable)")


def _inner_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pb call", add_help=False, usage=_USAGE,
                                     allow_abbrev=False)
    _add_options(parser, defaults=False)
    parser.add_argument("words", nargs="*")
    return parser


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "call",
        help="call a remote method and print the result as JSON",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        usage=_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --password must not pass for --password-stdin
    )
    _add_options(parser, defaults=True)
    # Everything from the first positional on is parsed again by _inner_parser
    # (intermixed), so options may come before or after METHOD.
    parser.add_argument("words", nargs=argparse.REMAINDER,
                        metavar="[HOST:PORT] METHOD [JSON_ARG ...]",
                        help="where to connect (unless --socket), the method, its arguments")
    parser.set_defaults(func=_main, _call_parser=parser)


def _parse(args: argparse.Namespace) -> argparse.Namespace:
    """Re-parse the words after the first positional, options intermixed."""
    head = args.words[:args.words.index("--")] if "--" in args.words else args.words
    if "-h" in head or "--help" in head:
        args._call_parser.print_help()
        raise SystemExit(EXIT_OK)
    inner = _inner_parser()
    more = inner.parse_intermixed_args(args.words)
    for key, value in vars(more).items():
        if key == "kw":
            args.kw = list(args.kw) + value
        else:
            setattr(args, key, value)
    words = list(args.words)
    if args.socket is None:
        if not words:
            raise UsageError("missing HOST:PORT (or --socket PATH) and METHOD")
        args.host, args.port = parse_address(words.pop(0))
    else:
        args.host = args.port = None
    if not words:
        raise UsageError("missing METHOD")
    args.method = words.pop(0)
    args.call_args = [from_json(text, f"argument {i} (JSON_ARG)")
                      for i, text in enumerate(words, 1)]
    args.call_kwargs = {}
    for spec in args.kw:
        name, sep, text = spec.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--kw {spec!r}: expected NAME=JSON with NAME an identifier")
        args.call_kwargs[name] = from_json(text, f"--kw {name}")
    if args.perspective and not args.user and not args.anonymous:
        raise UsageError("--perspective needs --user (or --anonymous)")
    if args.user and args.anonymous:
        raise UsageError("--user and --anonymous exclude each other")
    args.timeout = args.timeout or None
    return args


def _where(args: argparse.Namespace) -> str:
    if args.socket is not None:
        return args.socket
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"{host}:{args.port}"


def _main(args: argparse.Namespace) -> int:
    try:
        args = _parse(args)
        context = _tls_context(args)
        password = (read_password(args.password_stdin, f"Password for {args.user}: ")
                    if args.user else None)
    except UsageError as exc:
        print(f"pb call: {exc}", file=sys.stderr)
        return EXIT_USAGE

    import broker
    import clients

    where = _where(args)
    try:
        try:
            conn = clients.connect(args.host, args.port, path=args.socket, ssl=context,
                                   server_hostname=(args.tls_server_name or args.host)
                                   if context else None,
                                   timeout=args.timeout)
        except (OSError, broker.ConnectionLost) as exc:
            errno = getattr(exc, "errno", None)
            if isinstance(errno, int) and errno > 0:
                reason = os.strerror(errno)  # asyncio's own text repeats the address
            else:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            print(f"pb call: cannot connect to {where}: {reason}", file=sys.stderr)
            return EXIT_FAILURE
        with conn:
            try:
                if args.user:
                    target = conn.login(args.user, password, service=args.service or "pbecho",
                                        perspective=args.perspective)
                elif args.anonymous:
                    target = conn.login_anonymous(service=args.service or "pbecho",
                                                  perspective=args.perspective)
                else:
                    target = conn.root()
            except broker.Unauthorized as exc:
                print(f"pb call: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            except broker.PBError as exc:
                print(f"pb call: cannot log in at {where}: {_describe(exc)}", file=sys.stderr)
                return EXIT_FAILURE
            try:
                result = target.call_remote(args.method, *args.call_args, **args.call_kwargs)
                output = to_json(result)
            except Exception as exc:
                print(f"pb call: {args.method} failed: {_describe(exc)}", file=sys.stderr)
                return EXIT_FAILURE
            print(json.dumps(output, ensure_ascii=False))
            return EXIT_OK
    finally:
        clients.shutdown()


def _describe(exc: BaseException) -> str:
    import broker

    if isinstance(exc, broker.PBError):
        text = str(exc) or type(exc).__name__
        if isinstance(exc, (broker.CallTimeout, broker.ConnectionLost)):
            return text
        if isinstance(exc, broker.RemoteError):
            return text
        return f"{type(exc).__name__}: {text}"
    return f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__
