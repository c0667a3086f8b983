"""What the ``pb`` subcommands that log in share: the usage error, the
seconds option type and reading the password.

The leading underscore keeps this module out of the subcommand list
(see :func:`clients._cli.build_parser`).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from services import non_negative_seconds

__all__ = [
    "RefusePassword", "PASSWORD_ENV", "UsageError", "check_host", "have_terminal", "is_text",
    "non_negative_seconds", "read_password", "read_stdin_line"]

#: The environment variable a password may come from.
PASSWORD_ENV = "PB_PASSWORD"


class UsageError(Exception):
    """Bad input from the user (exit code 2)."""


def is_text(text: str) -> bool:
    """False if *text* holds lone surrogates: bytes that were not UTF-8 (in
    a command-line argument, or standard input under a C locale)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_host(host: str, address: str) -> str:
    """*host* if a resolver can take it (labels of 1 to 63 characters,
    UTF-8); else UsageError naming *address*."""
    try:
        host.encode("idna")
    except UnicodeError:
        shown = address if len(address) <= 80 else address[:77] + "..."
        raise UsageError(f"{shown!r} is not a valid host name: dot-separated labels of "
                         f"1 to 63 characters") from None
    return host


def read_stdin_line() -> str:
    """The first line of standard input, decoded on its own: what follows
    it (a script, say) may be in another state, and is not read yet.
    UnicodeDecodeError if the line is not in the input's encoding."""
    stream = sys.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return stream.readline()
    return buffer.readline().decode(stream.encoding or "utf-8", stream.errors or "strict")


def read_password(password_stdin: bool, prompt: str) -> str:
    """The password, from the first line of standard input if
    *password_stdin*, else ``$PB_PASSWORD``, else asked for with *prompt*
    on the terminal; UsageError if there is none, or no terminal to ask on.
    """
    if password_stdin:
        try:
            line = read_stdin_line()
        except UnicodeDecodeError:
            line = "\udcff"
        password = line.rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: the first line of standard input is empty")
        if not is_text(password):
            raise UsageError("--password-stdin: the first line of standard input is not UTF-8 text")
        return password
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if not have_terminal():
        # getpass would fall back to reading standard input, echoing (and
        # taking the first line of a script for the password).
        raise UsageError(f"no terminal to ask for the password on: use --password-stdin "
                         f"or ${PASSWORD_ENV}")
    try:
        password = getpass.getpass(prompt)
    except (EOFError, OSError):
        password = ""
    if not password:
        raise UsageError(f"no password: type it at the prompt, or use --password-stdin "
                         f"or ${PASSWORD_ENV}")
    return password


def have_terminal() -> bool:
    """True if there is a controlling terminal to prompt on."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()
    os.close(fd)
    return True


class RefusePassword(argparse.Action):
    """``--password`` on the command line is refused: other users can read a
    process's arguments.  (Parsers using it also set ``allow_abbrev=False``,
    so that ``--password`` is not taken for ``--password-stdin``.)"""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"passwords are not taken from the command line (other users can see "
                     f"it); use --password-stdin, ${PASSWORD_ENV} or the prompt")
