"""``pb user``: manage the account database (identities, keyrings, services).

Passwords are never taken from the command line: they are read from
standard input (one line) when it is not a terminal, or prompted for twice
with ``getpass`` when it is.

Exit codes: 0 success, 1 the database refused (missing file, duplicate or
unknown user/service, ...), 2 bad input (empty or mismatched password, bad
name, bad option).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cred import scram
from cred.errors import InvalidName, MissingDatabase, ScramError, StoreError, UnknownService
from cred.store import AccountStore, check_name

from ._common import read_stdin_line

__all__ = ["register", "default_db_path"]

DB_FILENAME = "accounts.sqlite3"


class _InputError(Exception):
    """Bad input from the user (exit code 2)."""


def default_db_path() -> Path:
    """``$PB_DATA_DIR/accounts.sqlite3``, else ``./pb-data/accounts.sqlite3``."""
    data_dir = os.environ.get("PB_DATA_DIR") or "pb-data"
    return Path(data_dir) / DB_FILENAME


def _service_spec(text: str) -> tuple[str, str | None]:
    """``SERVICE`` or ``SERVICE:PERSPECTIVE``."""
    service, sep, perspective = text.partition(":")
    if not service or (sep and not perspective):
        raise argparse.ArgumentTypeError(f"expected SERVICE or SERVICE:PERSPECTIVE, got {text!r}")
    return service, (perspective if sep else None)


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not scram.MIN_ITERATIONS <= value <= scram.MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"must be between {scram.MIN_ITERATIONS} and {scram.MAX_ITERATIONS}, got {value}"
        )
    return value


def _read_password(prompt: str = "Password: ") -> str:
    if sys.stdin is None:
        raise _InputError("no standard input to read the password from")
    try:
        if sys.stdin.isatty():
            first = getpass.getpass(prompt)
            if first and getpass.getpass("Repeat password: ") != first:
                raise _InputError("the passwords do not match; nothing was changed")
            password = first
        else:
            password = read_stdin_line()
            if password.endswith("\n"):
                password = password[:-1]
            if password.endswith("\r"):
                password = password[:-1]
    except UnicodeDecodeError:
        raise _InputError("the password is not UTF-8 text; nothing was changed") from None
    if not password:
        raise _InputError(
            "empty password: give a non-empty password (on standard input, one line, "
            "or at the prompt)"
        )
    if any("\udc80" <= ch <= "\udcff" for ch in password):  # undecodable bytes, escaped
        raise _InputError("the password is not UTF-8 text; nothing was changed")
    try:
        scram.saslprep(password)  # what every login will do to it
    except ScramError as exc:
        raise _InputError(f"the password cannot be used: {exc}; choose another "
                          f"(nothing was changed)") from None
    return password


def _open(args: argparse.Namespace, *, create: bool = False) -> AccountStore:
    return AccountStore(args.db, create=create)


# --- subcommands ------------------------------------------------------------------

def _add(args: argparse.Namespace) -> int:
    check_name("user", args.name)
    try:
        with _open(args) as store:
            store.check_add_user(args.name, args.service)  # refuse before the prompt
    except MissingDatabase:
        if args.service:  # a new database has no services yet
            service = args.service[0][0]
            raise UnknownService(
                f"no service named {service!r}: the database {args.db} does not exist yet; "
                f"register the service first with `pb user add-service {service}`"
            ) from None
    password = _read_password()
    with _open(args, create=True) as store:
        store.add_user(args.name, password, iterations=args.iterations, keyring=args.service)
        if args.twisted_secret:
            from cred.twisted_secret import set_twisted_secret

            set_twisted_secret(store, args.name, password)
    ring = ", ".join(f"{s}:{p or args.name}" for s, p in args.service) or "nothing yet"
    print(f"added user {args.name} (keyring: {ring}) to {args.db}")
    if args.twisted_secret:
        print(f"{args.name} also has a Twisted PB secret (unsalted MD5 of the password: "
              "weaker, see docs/cred.md); Twisted-dialect listeners accept it")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.keyring(args.name)  # UnknownUser before the prompt
        store.set_password(args.name, _read_password("New password: "), iterations=args.iterations)
    print(f"changed the password of {args.name}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.remove_user(args.name)
    print(f"removed user {args.name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        names = store.users()
        for name in names:
            ring = " ".join(f"{s}:{p}" for s, p in sorted(store.keyring(name)))
            print(f"{name}\t{ring}" if ring else name)
        if not names:
            # On stderr: standard output stays one line per account.
            print(f"no users in {store.path} (add one: pb user add NAME)", file=sys.stderr)
    return 0


def _grant(args: argparse.Namespace) -> int:
    service, perspective = args.spec
    with _open(args) as store:
        store.grant(args.name, service, perspective)
    print(f"granted {service}:{perspective or args.name} to {args.name}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    service, perspective = args.spec
    with _open(args) as store:
        store.revoke(args.name, service, perspective)
    print(f"revoked {service}:{perspective or args.name} from {args.name}")
    return 0


def _services(args: argparse.Namespace) -> int:
    with _open(args) as store:
        for name in store.services():
            print(name)
    return 0


def _add_service(args: argparse.Namespace) -> int:
    with _open(args, create=True) as store:
        store.add_service(args.name)
    print(f"registered service {args.name} in {args.db}")
    return 0


def _remove_service(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.remove_service(args.name)
    print(f"removed service {args.name} (and it left every keyring)")
    return 0


def _run(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (_InputError, InvalidName) as exc:
            print(f"pb user: {exc}", file=sys.stderr)
            return 2
        except MissingDatabase:
            print(
                f"pb user: no account database at {args.db}: create one with "
                "`pb user add NAME` or `pb user add-service NAME`, or point --db "
                "(or PB_DATA_DIR) at the existing one",
                file=sys.stderr,
            )
            return 1
        except StoreError as exc:
            print(f"pb user: {exc}", file=sys.stderr)
            return 1
        except EOFError:
            print("pb user: no password given", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        type=Path,
        default=default_db_path(),
        metavar="PATH",
        help=f"account database (default: $PB_DATA_DIR/{DB_FILENAME}, else ./pb-data/{DB_FILENAME})",
    )
    kdf = argparse.ArgumentParser(add_help=False)
    kdf.add_argument(
        "--iterations",
        type=_iterations,
        default=None,
        metavar="N",
        help=f"PBKDF2 iterations for the new verifier (default {scram.DEFAULT_ITERATIONS}; "
        "keep every account at the same count)",
    )

    parser = subparsers.add_parser(
        "user",
        help="manage accounts, keyrings and services in the account database",
        description="Manage the account database: users, their keyrings of "
        "SERVICE:PERSPECTIVE pairs, and the registered services. Passwords are "
        "read from standard input (one line) or prompted for, never taken from "
        "the command line.",
    )
    commands = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    p = commands.add_parser("add", parents=[common, kdf], help="create an account (and the database if needed)")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--service", "-s",
        type=_service_spec,
        action="append",
        default=[],
        metavar="SERVICE[:PERSPECTIVE]",
        help="put this pair on the keyring (perspective defaults to NAME); repeatable",
    )
    p.add_argument(
        "--twisted-secret", action="store_true",
        help="also store the weaker secret Twisted PB's login needs (MD5 of the password, "
        "kept apart and marked weak), so that Twisted PB clients can log in through a "
        "listener with dialect = \"twisted\"; see docs/cred.md")
    p.set_defaults(func=_run(_add))

    p = commands.add_parser("list", parents=[common], help="list accounts and their keyrings")
    p.set_defaults(func=_run(_list))

    p = commands.add_parser("passwd", parents=[common, kdf], help="change an account's password")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_run(_passwd))

    p = commands.add_parser("remove", parents=[common], help="delete an account")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_run(_remove))

    for action, handler, text in (
        ("grant", _grant, "put SERVICE:PERSPECTIVE on an account's keyring"),
        ("revoke", _revoke, "take SERVICE:PERSPECTIVE off an account's keyring"),
    ):
        p = commands.add_parser(action, parents=[common], help=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("spec", type=_service_spec, metavar="SERVICE[:PERSPECTIVE]")
        p.set_defaults(func=_run(handler))

    p = commands.add_parser("services", parents=[common], help="list the registered services")
    p.set_defaults(func=_run(_services))

    p = commands.add_parser("add-service", parents=[common], help="register a service (creates the database if needed)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_run(_add_service))

    p = commands.add_parser("remove-service", parents=[common], help="unregister a service (it leaves every keyring)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_run(_remove_service))
