"""``pb chat``: a terminal chat client for the words service, over PB.

``pb chat HOST:PORT --user NAME [--password-stdin] [--script]`` logs in to
the cred service ``words`` and reads lines: text goes to the current group,
and commands start with ``/``::

    /join GROUP     join (creating it) and make it the current group
    /part [GROUP]   leave the current group (or GROUP)
    /msg USER TEXT  a private message
    /me TEXT        an action in the current group
    /topic [TEXT]   show or set the current group's topic
    /names [GROUP]  who is in the group, and whether they are online
    /list           the groups
    /whois USER     where someone is and whether they are away
    /away [TEXT]    mark yourself away (no TEXT: back)
    /sleep SECONDS  wait (scripts: let replies arrive)
    /quit           leave

Line editing and history come from the standard library's ``readline``
(GNU readline or libedit, whichever Python was built with): no dependency,
and the keys people already know from bash and python.  Incoming messages
are printed above the prompt: the line being typed is cleared, the message
written, and the prompt and the typed text redrawn.  prompt_toolkit would
draw that more cleanly but is a large dependency for one command.

``--script`` reads commands from standard input without a prompt or line
editing and prints every event as one line; at the end of input it makes a
round trip to the server (so everything the server sent before is printed)
and exits: for tests and bots.

Exit codes: 0 done, 1 the connection or the login failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import unicodedata
from typing import Any, Callable, TextIO

import broker

from ._common import PASSWORD_ENV, RefusePassword, UsageError, non_negative_seconds, read_password

__all__ = ["register", "RemoteGroupView", "GROUP_VIEW_TAG", "ChatClient", "clean"]

GROUP_VIEW_TAG = "words.GroupView"
DEFAULT_TIMEOUT = 30.0


@broker.register_cache(GROUP_VIEW_TAG)
class RemoteGroupView(broker.RemoteCache):
    """Our copy of a group's members and topic (the server's ``GroupView``)."""

    name: str
    topic: str
    topic_by: str
    members: dict[str, str]

    def set_copyable_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("members"), dict):
            raise broker.InsecureJelly("a words.GroupView state is a dict with members")
        super().set_copyable_state(state)

    def observe_joined(self, user: str, presence: str) -> None:
        self.members[user] = presence

    def observe_left(self, user: str) -> None:
        self.members.pop(user, None)

    def observe_topic(self, topic: str, by: str, at: float) -> None:
        self.topic, self.topic_by, self.topic_at = topic, by, at

    def observe_presence(self, user: str, presence: str, away: str | None) -> None:
        if user in self.members:
            self.members[user] = presence


def clean(text: Any) -> str:
    """*text* safe for a terminal: control characters (escape sequences
    among them) shown as ``^X`` or ``\\xNN`` instead of acting."""
    text = str(text)
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            out.append("^" + chr(code ^ 0x40))
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\u200d":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _say(kind: str, sender: str, text: str) -> str:
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        return f"* {clean(sender)} {clean(text[8:-1])}"
    if kind == "notice":
        return f"-{clean(sender)}- {clean(text)}"
    return f"<{clean(sender)}> {clean(text)}"


class _Mind(broker.Referenceable):
    """What the server calls back: each event becomes one printed line."""

    def __init__(self, show: Callable[[str], None], me: str) -> None:
        self.show = show
        self.me = me

    def remote_message(self, group: str, sender: str, text: str, at: float, kind: str) -> None:
        self.show(f"[#{clean(group)}] {_say(kind, sender, text)}")

    def remote_private(self, sender: str, text: str, at: float, kind: str) -> None:
        self.show(f"[private] {_say(kind, sender, text)}")

    def remote_joined(self, group: str, user: str) -> None:
        self.show(f"[#{clean(group)}] --> {clean(user)} joined")

    def remote_left(self, group: str, user: str, reason: str) -> None:
        why = f" ({clean(reason)})" if reason else ""
        self.show(f"[#{clean(group)}] <-- {clean(user)} left{why}")

    def remote_topic(self, group: str, topic: str, by: str, at: float) -> None:
        self.show(f"[#{clean(group)}] topic set by {clean(by)}: {clean(topic)}")

    def remote_presence(self, user: str, presence: str, away: str | None) -> None:
        if user == self.me:
            return
        detail = f": {clean(away)}" if away else ""
        self.show(f"* {clean(user)} is {clean(presence)}{detail}")


class ChatClient:
    """The commands, over one logged-in perspective."""

    def __init__(self, perspective: Any, show: Callable[[str], None],
                 error: Callable[[str], None]) -> None:
        self.perspective = perspective
        self.show = show
        self.error = error
        self.current: str | None = None
        self.groups: dict[str, tuple[Any, RemoteGroupView]] = {}
        self.done = False

    async def start(self) -> None:
        for name in await self.perspective.call_remote("my_groups"):
            await self._open(name, quiet=True)
        if self.groups:
            self.current = next(iter(self.groups))
            self.show(f"* you are in {', '.join('#' + clean(g) for g in self.groups)}; "
                      f"talking in #{clean(self.current)}")

    async def _open(self, name: str, quiet: bool = False) -> str:
        ref = await self.perspective.call_remote("join", name)
        real = await ref.call_remote("name")
        if real not in self.groups:
            view = await ref.call_remote("view")
            self.groups[real] = (ref, view)
        return real

    def _group(self, name: str | None) -> str:
        if name:
            name = name.lstrip("#")
            for known in self.groups:
                if known.lower() == name.lower():
                    return known
            raise UsageError(f"you are not in #{name}; /join {name} first")
        if self.current is None:
            raise UsageError("you are in no group: /join NAME first")
        return self.current

    async def handle(self, line: str) -> None:
        """Run one input line; errors are shown, never raised."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        try:
            await self._handle(line)
        except UsageError as exc:
            self.error(str(exc))
        except broker.RemoteError as exc:
            self.error(exc.remote_message or str(exc))
        except broker.PBError as exc:
            if isinstance(exc, (broker.ConnectionLost, broker.DeadReference)):
                raise
            self.error(str(exc))

    async def _handle(self, line: str) -> None:
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            group = self._group(None)
            await self.groups[group][0].call_remote("send", text)
            return
        command, _, rest = line[1:].partition(" ")
        command = command.lower()
        rest = rest.strip()
        if command == "join":
            if not rest:
                raise UsageError("/join GROUP")
            name = await self._open(rest.split()[0].lstrip("#"))
            self.current = name
            ref, view = self.groups[name]
            members = ", ".join(f"{clean(m)}{'' if p == 'online' else f' ({p})'}"
                                for m, p in view.members.items())
            self.show(f"* talking in #{clean(name)}; members: {members}")
            if view.topic:
                self.show(f"* topic: {clean(view.topic)} (set by {clean(view.topic_by)})")
            for sender, text, at, kind in await ref.call_remote("scrollback"):
                stamp = time.strftime("%H:%M", time.localtime(at))
                self.show(f"[#{clean(name)}] {stamp} {_say(kind, sender, text)}")
        elif command in ("part", "leave"):
            name = self._group(rest.split()[0] if rest else None)
            ref, _ = self.groups.pop(name)
            await ref.call_remote("leave", "")
            if self.current == name:
                self.current = next(iter(self.groups), None)
        elif command in ("msg", "query"):
            user, _, text = rest.partition(" ")
            if not user or not text:
                raise UsageError("/msg USER TEXT")
            await self.perspective.call_remote("send_private", user, text)
        elif command == "me":
            group = self._group(None)
            await self.groups[group][0].call_remote("send", f"\x01ACTION {rest}\x01")
        elif command == "topic":
            group = self._group(None)
            ref, view = self.groups[group]
            if rest:
                await ref.call_remote("set_topic", rest)
            elif view.topic:
                self.show(f"* topic of #{clean(group)}: {clean(view.topic)} "
                          f"(set by {clean(view.topic_by)})")
            else:
                self.show(f"* #{clean(group)} has no topic")
        elif command == "names":
            group = self._group(rest.split()[0] if rest else None)
            view = self.groups[group][1]
            self.show(f"* #{clean(group)}: " + ", ".join(
                f"{clean(m)} ({p})" for m, p in view.members.items()))
        elif command == "list":
            for info in await self.perspective.call_remote("list_groups"):
                topic = f": {clean(info['topic'])}" if info["topic"] else ""
                self.show(f"* #{clean(info['name'])} ({info['members']}){topic}")
        elif command == "whois":
            if not rest:
                raise UsageError("/whois USER")
            info = await self.perspective.call_remote("whois", rest.split()[0])
            away = f", away: {clean(info['away'])}" if info["away"] else ""
            rooms = ", ".join("#" + clean(g) for g in info["groups"]) or "no groups"
            self.show(f"* {clean(info['name'])} is {info['presence']}{away}; in {rooms}")
        elif command == "away":
            await self.perspective.call_remote("set_away", rest or None)
            self.show("* you are marked away" if rest else "* you are back")
        elif command == "sleep":
            try:
                seconds = non_negative_seconds(rest or "1")
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"/sleep: {exc}") from None
            await asyncio.sleep(min(seconds, 3600))
        elif command in ("quit", "exit"):
            self.done = True
        elif command == "help":
            self.show(__doc__.split("::")[1].split("\n\n")[1] if __doc__ else "")
        else:
            raise UsageError(f"unknown command /{clean(command)}; /help lists them "
                             f"(start a line with // to send text that begins with /)")


# -- input and output -------------------------------------------------------------------


class _Terminal:
    """Printing above a readline prompt, from the event loop's thread."""

    def __init__(self, prompt: str, out: TextIO) -> None:
        self.prompt = prompt
        self.out = out
        self.lock = threading.Lock()
        self.reading = False
        try:
            import readline  # noqa: F401  (input() gets line editing and history)

            self.readline: Any = sys.modules["readline"]
        except ImportError:  # pragma: no cover - Python built without it
            self.readline = None

    def show(self, text: str) -> None:
        with self.lock:
            if self.reading and self.readline is not None:
                typed = self.readline.get_line_buffer()
                self.out.write(f"\r\x1b[2K{text}\n{self.prompt}{typed}")
            else:
                self.out.write(text + "\n")
            self.out.flush()


def _reader_thread(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None],
                   read: Callable[[], str | None], next_line: threading.Event) -> None:
    while True:
        try:
            line = read()
        except (EOFError, KeyboardInterrupt, OSError, ValueError):
            line = None
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: we are exiting
            return
        if line is None:
            return
        next_line.wait()
        next_line.clear()


#: The longest script line taken (longer ones are cut, with an error).
MAX_SCRIPT_LINE = 64 * 1024


def _fd_lines(fd: int):  # type: ignore[no-untyped-def]
    """Lines from the file descriptor *fd*, read with os.read: a thread
    blocked here holds none of Python's stdin locks, so the process can exit
    while it waits (a daemon thread inside sys.stdin.buffer.readline() can
    abort the interpreter's shutdown)."""
    buffer = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
        if len(buffer) > MAX_SCRIPT_LINE:
            yield buffer[:MAX_SCRIPT_LINE]
            buffer = b""


def _password_from_fd(fd: int) -> str:
    """The first line of *fd*, read a byte at a time so that nothing after
    it is taken (the script follows it)."""
    data = bytearray()
    while len(data) <= 4096:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            break
        data += byte
    try:
        password = data.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise UsageError("--password-stdin: the first line of standard input is not "
                         "UTF-8 text") from None
    if not password:
        raise UsageError("--password-stdin: the first line of standard input is empty")
    return password


async def _run(args: argparse.Namespace, password: str) -> int:
    loop = asyncio.get_running_loop()
    err = sys.stderr
    if args.script:
        def show(text: str) -> None:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        terminal = None
    else:
        terminal = _Terminal(f"{args.user}> ", sys.stdout)
        show = terminal.show

    def error(text: str) -> None:
        err.write(f"pb chat: {text}\n")
        err.flush()

    timeout = args.timeout or None
    try:
        perspective = await broker.login(
            args.host, args.port, args.user, password, service="words",
            mind=_Mind(show, args.user), path=args.socket, timeout=timeout)
    except broker.Unauthorized:
        error(f"login refused for {args.user!r}: check the user name and password, and that "
              f"the account may use words (pb user grant {args.user} words)")
        return 1
    except (OSError, broker.PBError) as exc:
        where = args.socket or f"{args.host}:{args.port}"
        error(f"cannot reach the words service at {where}: {exc}")
        return 1
    client = ChatClient(perspective, show, error)
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    next_line = threading.Event()
    if args.script:
        lines = _fd_lines(0)

        def read() -> str | None:
            raw = next(lines, None)
            return raw.decode("utf-8", "replace") if raw is not None else None
    else:
        assert terminal is not None

        def read() -> str | None:
            terminal.reading = True
            try:
                return input(terminal.prompt)
            finally:
                terminal.reading = False
    thread = threading.Thread(target=_reader_thread, args=(loop, queue, read, next_line),
                              name="pb-chat-input", daemon=True)
    try:
        await client.start()
        if not args.script:
            show(f"* logged in as {args.user}; /help lists the commands, /quit leaves")
        thread.start()
        while not client.done:
            line = await queue.get()
            if line is None:
                break
            await client.handle(line)
            next_line.set()
        # Everything the server sent before this answer has been printed.
        await perspective.call_remote("whoami", timeout=timeout)
        return 0
    except (broker.ConnectionLost, broker.DeadReference) as exc:
        error(f"the connection to the server was lost: {exc}")
        return 1
    finally:
        next_line.set()
        await perspective.connection.close()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat in the words service's rooms (PB)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Commands: /join /part /msg /me /topic /names /list /whois /away /sleep "
               "/quit.  See docs/words.md.",
        allow_abbrev=False)
    parser.add_argument("address", nargs="?", metavar="HOST:PORT",
                        help="the words service's PB address (default port 8787)")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="connect to this UNIX socket instead of HOST:PORT")
    parser.add_argument("--user", "-u", required=True, metavar="NAME", help="log in as NAME")
    parser.add_argument("--password-stdin", action="store_true",
                        help=f"read the password from the first line of standard input; "
                             f"else ${PASSWORD_ENV}, else a prompt")
    parser.add_argument("--password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    parser.add_argument("--script", action="store_true",
                        help="read commands from standard input, no prompt: for tests and bots")
    parser.add_argument("--timeout", type=non_negative_seconds, default=DEFAULT_TIMEOUT,
                        metavar="S", help=f"seconds allowed to connect and log in "
                                          f"(default {DEFAULT_TIMEOUT:g}; 0: no limit)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from .call import parse_address

    try:
        if args.socket is not None:
            if args.address is not None:
                raise UsageError("give HOST:PORT or --socket PATH, not both")
            args.host = args.port = None
        else:
            if args.address is None:
                raise UsageError("missing HOST:PORT (or --socket PATH)")
            address = args.address if ":" in args.address.lstrip("[").split("]")[-1] \
                else f"{args.address}:8787"
            args.host, args.port = parse_address(address)
        if not args.script and not sys.stdin.isatty():
            args.script = True  # no terminal to edit lines on: read them as a script
        if args.password_stdin:
            password = _password_from_fd(0)
        else:
            password = read_password(False, f"password for {args.user}: ")
    except UsageError as exc:
        print(f"pb chat: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, password))
