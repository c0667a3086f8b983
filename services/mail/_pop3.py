"""POP3 (RFC 1939, with RFC 2449 CAPA, RFC 2595 STLS and RFC 5034 AUTH
PLAIN) as a sans-IO state machine.

Feed the client's bytes to :meth:`Pop3Machine.receive`, take replies from
:meth:`Pop3Machine.data_to_send` and work from :meth:`Pop3Machine.next_event`.
The machine never touches a socket, a file or the portal: where it needs
the world it stops and hands out an event, and waits for the adapter's
answer before reading the next command (pipelined commands stay queued,
up to :attr:`Pop3Machine.max_pending` bytes).

States (every transition is in :meth:`Pop3Machine._dispatch` and the
``*_done`` methods)::

    AUTHORIZATION --USER/PASS, AUTH--> [Login] --ok--> TRANSACTION
         |  --STLS--> [StartTls] --tls_started--> AUTHORIZATION (input discarded)
    TRANSACTION --QUIT--> [Commit] --committed--> CLOSED
    any --QUIT in AUTHORIZATION, too many errors, line too long--> CLOSED

Deletions are only remembered in TRANSACTION and handed out with
:class:`Commit` at QUIT: a dropped connection deletes nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "Close",
    "Commit",
    "Login",
    "Pop3Machine",
    "Pop3Message",
    "Retrieve",
    "StartTls",
    "State",
    "dot_stuff",
]

#: RFC 2449 §4: a command line is at most 255 octets with its CRLF; an AUTH
#: continuation (RFC 5034) may be longer, so lines up to this are taken.
MAX_LINE = 1024
MAX_COMMAND = 255
MAX_BAD_COMMANDS = 10
MAX_FAILED_LOGINS = 3


class State(Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Pop3Message:
    """One message of the maildrop as the machine sees it."""

    key: str        # the UIDL (printable ASCII, no spaces)
    size: int       # octets as sent (CRLF line ends), for STAT and LIST
    handle: Any     # the adapter's own reference (a MessageInfo)


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Reply sent; upgrade the transport, then call ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class Retrieve:
    message: Pop3Message
    lines: int | None  # None: the whole message (RETR); else TOP's body line count


@dataclass(frozen=True, slots=True)
class Commit:
    """QUIT in TRANSACTION: apply these deletions, then ``committed()``."""

    deleted: tuple[Pop3Message, ...]
    retrieved: tuple[Pop3Message, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Flush the output and close the connection."""


Event = Login | StartTls | Retrieve | Commit | Close


def dot_stuff(content: bytes, lines: int | None = None) -> bytes:
    """A stored message (LF or CRLF line ends) as a POP3 multi-line body:
    CRLF line ends, a leading '.' doubled, ending with the terminating
    ``.CRLF``.  *lines*: keep the headers, the blank line and that many
    body lines (TOP)."""
    text = content.replace(b"\r\n", b"\n")
    if lines is not None:
        head, sep, body = text.partition(b"\n\n")
        if sep:
            body_lines = body.split(b"\n")
            if body.endswith(b"\n"):
                body_lines.pop()  # the empty string after the last line end
            text = head + b"\n\n" + b"".join(line + b"\n" for line in body_lines[:lines])
        else:
            text = head
    if text and not text.endswith(b"\n"):
        text += b"\n"
    text = text.replace(b"\n.", b"\n..")
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\n", b"\r\n") + b".\r\n"


class Pop3Machine:
    """One POP3 session.

    *plain_allowed*: USER/PASS and AUTH PLAIN may be used now (the adapter
    says True on loopback with ``--allow-plain-auth``; after STLS it is
    always allowed).  *tls_available*: STLS can be offered.
    """

    max_pending = 64 * 1024

    def __init__(self, *, hostname: str = "localhost", plain_allowed: bool = False,
                 tls_available: bool = False, tls_active: bool = False) -> None:
        self.state = State.AUTHORIZATION
        self.hostname = hostname
        self.plain_allowed = plain_allowed or tls_active
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.mailbox: str | None = None
        self._out: list[bytes] = []
        self._in = bytearray()
        self._events: list[Event] = []
        self._waiting = False        # an event is out; no command is read until it is answered
        self._user: str | None = None
        self._sasl_pending = False   # AUTH PLAIN sent "+ ", the next line is the response
        self._messages: list[Pop3Message] = []
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()
        self._bad = 0
        self._failed_logins = 0
        self._reply("+OK POP3 server ready")

    # -- the adapter's side ------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the client (b"" at end of input)."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._close()
            return
        self._in += data
        if len(self._in) > self.max_pending:
            self._in.clear()
            self._reply("-ERR too much input at once; closing")
            self._close()

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The next thing the adapter must do, or None (then wait for input)."""
        while not self._events and not self._waiting and self.state is not State.CLOSED:
            line = self._next_line()
            if line is None:
                break
            self._dispatch(line)
        if self._events:
            return self._events.pop(0)
        return None

    def login_done(self, mailbox: str | None, messages: Sequence[Pop3Message] = (), *,
                   in_use: bool = False) -> None:
        """The answer to :class:`Login`: the mailbox and its messages, or
        None (refused; ``in_use`` when the login was right but the maildrop
        is locked by another session)."""
        self._waiting = False
        if in_use:
            self._reply("-ERR [IN-USE] maildrop already locked by another session; try later")
            return
        if mailbox is None:
            self._failed_logins += 1
            self._reply("-ERR [AUTH] authentication failed")
            if self._failed_logins >= MAX_FAILED_LOGINS:
                self._reply("-ERR too many failed logins; closing")
                self._close()
            return
        self.mailbox = mailbox
        self._messages = list(messages)
        self.state = State.TRANSACTION
        total = sum(m.size for m in self._messages)
        self._reply(f"+OK {mailbox} has {len(self._messages)} messages ({total} octets)")

    def tls_started(self) -> None:
        """The answer to :class:`StartTls`: the connection is encrypted now."""
        self._waiting = False
        self.tls_active = True
        self.plain_allowed = True
        self._in.clear()  # RFC 2595 §4: nothing sent before TLS counts after it

    def tls_failed(self) -> None:
        self._waiting = False
        self._close()

    def send_message(self, content: bytes, lines: int | None) -> None:
        """The answer to :class:`Retrieve`: the stored message."""
        self._waiting = False
        self._out.append(b"+OK message follows\r\n")
        self._out.append(dot_stuff(content, lines))

    def message_gone(self) -> None:
        """The answer to :class:`Retrieve` when the file vanished."""
        self._waiting = False
        self._reply("-ERR that message is no longer there")

    def committed(self, ok: bool = True) -> None:
        """The answer to :class:`Commit`."""
        self._waiting = False
        if ok:
            self._reply(f"+OK {self.hostname} POP3 server signing off")
        else:
            self._reply("-ERR some deleted messages were not removed")
        self._close()

    # -- parsing ---------------------------------------------------------------------

    def _next_line(self) -> bytes | None:
        end = self._in.find(b"\n")
        if end < 0:
            if len(self._in) > MAX_LINE:
                self._in.clear()
                self._reply("-ERR line too long; closing")
                self._close()
            return None
        line = bytes(self._in[:end])
        del self._in[:end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) + 2 > MAX_LINE:
            self._reply("-ERR line too long; closing")
            self._close()
            return None
        return line

    def _reply(self, text: str) -> None:
        self._out.append(text.encode("utf-8") + b"\r\n")

    def _close(self) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._events.append(Close())

    def _bad_command(self, text: str) -> None:
        self._bad += 1
        self._reply(f"-ERR {text}")
        if self._bad >= MAX_BAD_COMMANDS:
            self._reply("-ERR too many errors; closing")
            self._close()

    def _dispatch(self, line: bytes) -> None:
        if self._sasl_pending:
            self._sasl_pending = False
            self._auth_plain_response(line)
            return
        if len(line) + 2 > MAX_COMMAND:
            self._bad_command(f"command longer than {MAX_COMMAND} octets")
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad_command("command is not UTF-8 text")
            return
        if any(ch < " " and ch != "\t" for ch in text):
            self._bad_command("control characters in command")
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = (_AUTH_COMMANDS if self.state is State.AUTHORIZATION else _TRANSACTION_COMMANDS).get(verb)
        if handler is None:
            if verb in _TRANSACTION_COMMANDS and self.state is State.AUTHORIZATION:
                self._bad_command(f"{verb} needs a login first (USER/PASS or AUTH PLAIN)")
            elif verb in _AUTH_COMMANDS:
                self._bad_command(f"{verb} is not valid once logged in")
            else:
                self._bad_command(f"unknown command {verb[:20]!r}")
            return
        handler(self, arg)

    # -- AUTHORIZATION -----------------------------------------------------------------

    def _capa(self, arg: str) -> None:
        lines = ["+OK capability list follows", "TOP", "UIDL", "RESP-CODES",
                 "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.state is State.AUTHORIZATION:
            if self.plain_allowed:
                lines += ["USER", "SASL PLAIN"]
            if self.tls_available and not self.tls_active:
                lines.append("STLS")
        lines += ["IMPLEMENTATION perspective-broker", "."]
        self._out.append("".join(f"{line}\r\n" for line in lines).encode())

    def _plain_refused(self) -> bool:
        if self.plain_allowed:
            return False
        hint = "use STLS first" if self.tls_available else "this server allows no plain login here"
        self._reply(f"-ERR [AUTH] plain-text login needs TLS: {hint}")
        return True

    def _user_cmd(self, arg: str) -> None:
        if self._plain_refused():
            return
        if not arg or " " in arg:
            self._bad_command("usage: USER name")
            return
        self._user = arg
        self._reply("+OK send PASS")

    def _pass_cmd(self, arg: str) -> None:
        if self._plain_refused():
            return
        if self._user is None:
            self._bad_command("USER first")
            return
        user, self._user = self._user, None
        self._login(user, arg)

    def _auth_cmd(self, arg: str) -> None:
        if not arg:
            self._out.append(b"+OK SASL mechanisms\r\nPLAIN\r\n.\r\n")
            return
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() != "PLAIN":
            self._reply("-ERR unsupported SASL mechanism; use PLAIN")
            return
        if self._plain_refused():
            return
        if initial:
            self._auth_plain_response(initial.encode("utf-8"))
        else:
            self._sasl_pending = True
            self._out.append(b"+ \r\n")

    def _auth_plain_response(self, line: bytes) -> None:
        if line.strip() == b"*":
            self._reply("-ERR authentication cancelled")
            return
        try:
            blob = base64.b64decode(line.strip(), validate=True)
            authzid, user, password = (part.decode("utf-8") for part in blob.split(b"\x00"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self._bad_command("AUTH PLAIN wants base64 of authzid NUL user NUL password")
            return
        if authzid and authzid != user:
            self._reply("-ERR [AUTH] authentication failed")
            return
        self._login(user, password)

    def _login(self, user: str, password: str) -> None:
        self._waiting = True
        self._events.append(Login(user, password))

    def _stls(self, arg: str) -> None:
        if self.tls_active or not self.tls_available:
            self._bad_command("STLS not available" if not self.tls_active else "TLS already active")
            return
        self._reply("+OK begin TLS negotiation")
        self._in.clear()  # anything pipelined after STLS is an injection attempt: dropped
        self._waiting = True
        self._events.append(StartTls())

    def _quit_auth(self, arg: str) -> None:
        self._reply(f"+OK {self.hostname} POP3 server signing off")
        self._close()

    # -- TRANSACTION ----------------------------------------------------------------------

    def _message(self, arg: str) -> tuple[int, Pop3Message] | None:
        if not arg.isascii() or not arg.isdigit() or len(arg) > 9:
            self._bad_command("a message number is required")
            return None
        number = int(arg)
        if not 1 <= number <= len(self._messages):
            self._reply(f"-ERR no message {arg[:12]}")
            return None
        if number - 1 in self._deleted:
            self._reply(f"-ERR message {number} already deleted")
            return None
        return number - 1, self._messages[number - 1]

    def _live(self) -> list[tuple[int, Pop3Message]]:
        return [(i, m) for i, m in enumerate(self._messages) if i not in self._deleted]

    def _stat(self, arg: str) -> None:
        live = self._live()
        self._reply(f"+OK {len(live)} {sum(m.size for _, m in live)}")

    def _list(self, arg: str) -> None:
        self._listing(arg, lambda m: str(m.size))

    def _uidl(self, arg: str) -> None:
        self._listing(arg, lambda m: m.key)

    def _listing(self, arg: str, field: Any) -> None:
        if arg:
            found = self._message(arg)
            if found is not None:
                self._reply(f"+OK {found[0] + 1} {field(found[1])}")
            return
        body = "".join(f"{i + 1} {field(m)}\r\n" for i, m in self._live())
        self._out.append(f"+OK\r\n{body}.\r\n".encode())

    def _retr(self, arg: str) -> None:
        found = self._message(arg)
        if found is not None:
            self._retrieved.add(found[0])
            self._waiting = True
            self._events.append(Retrieve(found[1], None))

    def _top(self, arg: str) -> None:
        number, _, count = arg.partition(" ")
        if not count.isascii() or not count.isdigit() or len(count) > 9:
            self._bad_command("usage: TOP message lines")
            return
        found = self._message(number)
        if found is not None:
            self._waiting = True
            self._events.append(Retrieve(found[1], int(count)))

    def _dele(self, arg: str) -> None:
        found = self._message(arg)
        if found is not None:
            self._deleted.add(found[0])
            self._reply(f"+OK message {found[0] + 1} deleted")

    def _noop(self, arg: str) -> None:
        self._reply("+OK")

    def _rset(self, arg: str) -> None:
        self._deleted.clear()
        self._stat(arg)

    def _quit_transaction(self, arg: str) -> None:
        self._waiting = True
        deleted = tuple(self._messages[i] for i in sorted(self._deleted))
        retrieved = tuple(self._messages[i] for i in sorted(self._retrieved - self._deleted))
        self._events.append(Commit(deleted, retrieved))


_AUTH_COMMANDS = {
    "CAPA": Pop3Machine._capa,
    "USER": Pop3Machine._user_cmd,
    "PASS": Pop3Machine._pass_cmd,
    "AUTH": Pop3Machine._auth_cmd,
    "STLS": Pop3Machine._stls,
    "QUIT": Pop3Machine._quit_auth,
}
_TRANSACTION_COMMANDS = {
    "CAPA": Pop3Machine._capa,
    "STAT": Pop3Machine._stat,
    "LIST": Pop3Machine._list,
    "UIDL": Pop3Machine._uidl,
    "RETR": Pop3Machine._retr,
    "TOP": Pop3Machine._top,
    "DELE": Pop3Machine._dele,
    "NOOP": Pop3Machine._noop,
    "RSET": Pop3Machine._rset,
    "QUIT": Pop3Machine._quit_transaction,
}
