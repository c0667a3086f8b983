"""``pb mail``: a terminal mail reader over PB.

``pb mail HOST:PORT --user NAME [--mailbox NAME@DOMAIN]`` logs in to the
mail service (``service="mail"``; the perspective is the mailbox, by
default the user name) and reads commands::

    folders                       list the folders
    list [FOLDER]                 number, sender, subject of each message
    read N [FOLDER]               print message N of the last listing
    delete N [FOLDER]             move it to Trash (from Trash: delete for good)
    move N TARGET [FOLDER]        move it to the folder TARGET
    send TO[,TO...] SUBJECT       then the body, ended by a line with "."
    quit

``--script`` reads one JSON array per line instead (``["list", "INBOX"]``,
``["read", "INBOX", KEY]``, ``["delete", "INBOX", KEY]``, ``["move",
"INBOX", KEY, "Archive"]``, ``["send", ["bob@x"], "Subject", "body"]``,
``["folders"]``) and prints one JSON object per line: ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": "..."}``.  With
``--password-stdin`` the first line of input is the password.

Exit codes: 0 success; 1 login, connection or (in --script mode) any
command failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import socket
import sys
from typing import Any

from ._common import PASSWORD_ENV, RefusePassword, UsageError, read_password
from .call import parse_address

__all__ = ["register"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_SCRIPT_LINE = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mail", help="read and send mail over PB (the mail service's mailbox face)",
        description=__doc__.split("\n\n")[1], allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"The password comes from --password-stdin, ${PASSWORD_ENV} or a prompt.")
    parser.add_argument("address", nargs="?", metavar="HOST:PORT", help="the mail service's PB port")
    parser.add_argument("--socket", metavar="PATH", help="connect to this UNIX socket instead")
    parser.add_argument("--user", required=True, help="the account to log in as")
    parser.add_argument("--mailbox", metavar="NAME@DOMAIN", default=None,
                        help="the mailbox (perspective) to open (default: the user name)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    parser.add_argument("--password", action=RefusePassword, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--script", action="store_true",
                        help="read JSON commands, one per line; print JSON results")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default: 30)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        if (args.address is None) == (args.socket is None):
            raise UsageError("give HOST:PORT or --socket PATH")
        host, port = parse_address(args.address) if args.address is not None else (None, None)
        password = read_password(args.password_stdin, f"password for {args.user}: ")
    except UsageError as exc:
        print(f"pb mail: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_session(args, host, port, password))


async def _session(args: argparse.Namespace, host: str | None, port: int | None, password: str) -> int:
    import broker

    class Mind(broker.Referenceable):
        def remote_new_mail(self, folder: str, key: str) -> None:
            if not args.script:
                print(f"\n(new mail in {folder})", flush=True)

    mailbox = args.mailbox or args.user
    try:
        box = await broker.login(host, port, args.user, password, service="mail", perspective=mailbox,
                                 mind=Mind(), path=args.socket, timeout=args.timeout)
    except broker.Unauthorized:
        print(f"pb mail: login refused for {args.user} (mailbox {mailbox}): check the name, "
              f"the password and that the keyring holds mail:{mailbox}", file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, broker.PBError) as exc:
        where = args.socket or f"{host}:{port}"
        print(f"pb mail: cannot reach {where}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        reader = _Reader(box, mailbox, args.timeout)
        if args.script:
            return await reader.script()
        return await reader.interactive()
    finally:
        await box.connection.close()


def _readline() -> str | None:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        line = sys.stdin.readline()
    else:
        raw = stream.readline(MAX_SCRIPT_LINE)
        line = raw.decode("utf-8", "replace")
    return line or None


class _Reader:
    def __init__(self, box: Any, mailbox: str, timeout: float) -> None:
        self.box = box
        self.mailbox = mailbox
        self.timeout = timeout
        self.listings: dict[str, list[dict[str, Any]]] = {}

    async def call(self, name: str, *args: Any) -> Any:
        return await self.box.call_remote(name, *args, timeout=self.timeout)

    async def fetch(self, folder: str, key: str) -> bytes:
        import broker

        stream = await self.call("fetch", folder, key)
        return await broker.collect(stream)

    def compose(self, recipients: list[str], subject: str, body: str) -> bytes:
        headers = [f"From: {self.mailbox}", f"To: {', '.join(recipients)}", f"Subject: {subject}",
                   f"Date: {email.utils.formatdate(localtime=True)}",
                   f"Message-ID: {email.utils.make_msgid(domain=socket.getfqdn() or 'localhost')}",
                   "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                   "Content-Transfer-Encoding: 8bit"]
        if any("\n" in h or "\r" in h for h in (subject, *recipients)):
            raise ValueError("line breaks are not allowed in the subject or the addresses")
        text = "\r\n".join(headers) + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
        if not text.endswith("\r\n"):
            text += "\r\n"
        return text.encode("utf-8")

    # -- --script ----------------------------------------------------------------------

    async def script(self) -> int:
        import broker

        failed = False
        while (line := await asyncio.to_thread(_readline)) is not None:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                if not isinstance(command, list) or not command or not isinstance(command[0], str):
                    raise ValueError('each line is a JSON array such as ["list", "INBOX"]')
                result = await self.run_json(command[0], command[1:])
                answer = {"ok": True, "result": result}
            except (ValueError, TypeError, broker.PBError) as exc:
                failed = True
                answer = {"ok": False, "error": str(exc)}
            print(json.dumps(answer), flush=True)
        return EXIT_FAILURE if failed else EXIT_OK

    async def run_json(self, name: str, args: list[Any]) -> Any:
        if name == "folders":
            return await self.call("folders")
        if name == "list":
            return await self.call("list", *args[:1])
        if name == "read":
            folder, key = args
            return (await self.fetch(folder, key)).decode("utf-8", "replace")
        if name in ("delete", "move"):
            return await self.call(name, *args)
        if name == "send":
            recipients, subject, body = args
            if not isinstance(recipients, list):
                raise TypeError("send: the recipients are a JSON array of addresses")
            return await self.call("send", recipients, self.compose(recipients, str(subject), str(body)))
        raise ValueError(f"unknown command {name!r}: folders, list, read, delete, move or send")

    # -- interactive ----------------------------------------------------------------------

    async def interactive(self) -> int:
        import broker

        print(f"{self.mailbox}: type 'help' for the commands", flush=True)
        while True:
            print("mail> ", end="", flush=True)
            line = await asyncio.to_thread(_readline)
            if line is None or line.strip() in ("quit", "exit"):
                return EXIT_OK
            words = line.split()
            if not words:
                continue
            try:
                await self.command(words)
            except (ValueError, IndexError, KeyError) as exc:
                print(f"error: {exc}")
            except broker.PBError as exc:
                print(f"error from the server: {exc}")

    def pick(self, folder: str, number: str) -> str:
        listing = self.listings.get(folder)
        if listing is None:
            raise ValueError(f"list {folder} first, then use the numbers it shows")
        if not number.isdigit() or not 1 <= int(number) <= len(listing):
            raise ValueError(f"no message {number} in the last listing of {folder}")
        return listing[int(number) - 1]["key"]

    async def command(self, words: list[str]) -> None:
        verb, rest = words[0], words[1:]
        if verb == "help":
            print(__doc__.split("\n\n")[1])
        elif verb == "folders":
            print("\n".join(await self.call("folders")))
        elif verb == "list":
            folder = rest[0] if rest else "INBOX"
            listing = self.listings[folder] = await self.call("list", folder)
            for i, m in enumerate(listing, 1):
                mark = " " if m["seen"] else "N"
                print(f"{i:4d} {mark} {m['from'][:30]:30} {m['subject'][:60]}")
            if not listing:
                print(f"({folder} is empty)")
        elif verb == "read":
            folder = rest[1] if len(rest) > 1 else "INBOX"
            data = await self.fetch(folder, self.pick(folder, rest[0]))
            print(data.decode("utf-8", "replace"))
        elif verb == "delete":
            folder = rest[1] if len(rest) > 1 else "INBOX"
            print(await self.call("delete", folder, self.pick(folder, rest[0])))
        elif verb == "move":
            folder = rest[2] if len(rest) > 2 else "INBOX"
            print(await self.call("move", folder, self.pick(folder, rest[0]), rest[1]))
        elif verb == "send":
            recipients = rest[0].split(",")
            subject = " ".join(rest[1:])
            print("body; end with a line holding only '.':")
            lines = []
            while (line := await asyncio.to_thread(_readline)) is not None and line.rstrip("\r\n") != ".":
                lines.append(line)
            print(await self.call("send", recipients, self.compose(recipients, subject, "".join(lines))))
        else:
            raise ValueError(f"unknown command {verb!r}; type 'help'")
