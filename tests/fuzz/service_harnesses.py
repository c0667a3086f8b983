"""Harnesses for the services' parsers: HTTP and the relay copy (web), an
IRC line (words), SMTP commands and DATA, the DATA text reader, the Maildir reader and a POP3
command (mail).  Like ``harnesses``: each parser is built the way its
adapter drives it, fed one input, and its contract is asserted."""

from __future__ import annotations

import os
import shutil
import tempfile

import jelly
from services.mail import _core as mail_core
from services.mail._maildir import Maildir, MaildirError
from services.mail._pop3 import MAX_LINE as POP3_MAX_LINE
from services.mail._pop3 import Close, Commit, Login, Pop3Machine, Pop3Message, Retrieve, StartTls
from services.mail._smtp import MailSMTP, SmtpPolicy, has_bare_line_end
from services.web._core import HTTPError
from services.web._http import BODY_END, CLOSED, NEED_DATA, PAUSED, HTTPLimits, HTTPMachine, RequestHead
from services.web._relay import RelayedRequest, RelayResource
from services.words._core import Chat
from services.words._irc import IRCConnection, IRCWorld
from services.words._irc_wire import MAX_LINE as IRC_MAX_LINE
from services.words._irc_wire import LineReader
from tests.services.mail._data_model import by_blocks, line_by_line

from ._harness import Harness


def _chunks(data: bytes) -> list[bytes]:
    """The first byte picks a read size (1..256), so inputs also arrive
    split where a line, a head or a command is cut in two."""
    if not data:
        return []
    size = data[0] + 1
    rest = data[1:]
    return [rest[i:i + size] for i in range(0, len(rest), size)] or [b""]


def _run(coro):
    """Drive a coroutine that never really waits (our sinks complete at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine waited on something")


# --- 6. HTTP: bytes -> the sans-IO HTTPMachine, answered like the adapter ----

HTTP_LIMITS = HTTPLimits(max_request_line=256, max_header_bytes=512, max_headers=8, max_body=1024)


def _http(data: bytes) -> None:
    machine = HTTPMachine(HTTP_LIMITS)
    pieces = _chunks(data)
    pieces.append(b"")  # the peer closes at the end
    answered = 0
    try:
        for piece in pieces:
            machine.receive_data(piece)
            while True:
                event = machine.next_event()
                if event is CLOSED:
                    return
                if event is NEED_DATA:
                    break
                if isinstance(event, RequestHead):
                    assert len(event.target) + len(event.method) + 10 <= HTTP_LIMITS.max_request_line
                    assert len(event.headers) <= HTTP_LIMITS.max_headers
                    assert event.target.startswith("/") or event.target == "*", event.target
                    if machine.they_are_waiting_for_100_continue:
                        machine.continue_100()
                elif isinstance(event, bytes):
                    assert machine.body_received <= HTTP_LIMITS.max_body, "body past max_body"
                elif event is BODY_END:
                    machine.response(200, [("Content-Length", "2")])
                    machine.data(b"ok")
                    machine.end()
                    answered += 1
                    if not machine.start_next_cycle():
                        return
                elif event is PAUSED:
                    if not machine.start_next_cycle():
                        return
                else:
                    raise AssertionError(f"unexpected event {event!r}")
    except HTTPError as error:
        assert error.status in (400, 413, 414, 431, 505), error.status
        # The adapter answers the error; that must never fail either.
        machine.error_response(error)
        raise


HTTP = Harness(
    "http", "request bytes -> services.web HTTPMachine (httptools + our limits), answered per request",
    _http, allowed=(HTTPError,),
)

# --- 7. the relay copy: what a front sends a personal server, and back -------

RELAY_LIMITS = jelly.Limits(max_size=64 * 1024, max_depth=8, max_items=64, max_objects=512)
RELAY_REGISTRY = jelly.Registry()
RELAY_REGISTRY.register(RelayedRequest)


def _relay(data: bytes) -> None:
    # Odd first byte: a RelayedRequest as the personal server receives it;
    # even: the answer [status, headers, first_body, rest] the front checks.
    mode, body = data[:1], data[1:]
    value = jelly.loads(body, limits=RELAY_LIMITS, registry=RELAY_REGISTRY)
    if mode and mode[0] & 1:
        if isinstance(value, RelayedRequest):
            assert isinstance(value.target, str) and value.target.startswith("/")
            assert value.scheme in ("http", "https")
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in value.headers)
    else:
        status, headers, first, _rest = RelayResource._check_answer(value)
        assert 200 <= status <= 599 and isinstance(first, bytes)
        for name, text in headers:
            assert "\r" not in text and "\n" not in text and ":" not in name


RELAY = Harness(
    "relay", "jelly -> the RelayedRequest copy (personal side) / the answer check (front side)",
    _relay, allowed=(jelly.DecodeError, jelly.InsecureJelly, jelly.LimitExceeded, HTTPError),
)

# --- 8. an IRC line: LineReader -> parse -> IRCConnection ------------------------


def _irc(data: bytes) -> None:
    chat = Chat(scrollback=4, max_message=200, max_groups=4, max_groups_per_user=4)
    world = IRCWorld(chat, server_name="fuzz", max_errors=50)
    other = IRCConnection(world, "peer")  # a second client, to receive what the first says
    for line in (b"NICK bob", b"USER bob 0 * :Bob", b"PASS pencil"):
        other.receive_line(line)
    if other.login_request:
        other.login_succeeded()
    other.receive_line(b"JOIN #room")
    conn = IRCConnection(world, "fuzzer")
    reader = LineReader()
    for piece in _chunks(data):
        for line in reader.feed(piece):
            conn.receive_line(line)
            if conn.login_request is not None:
                # Every password is right: the fuzzer reaches the active state.
                conn.login_succeeded()
        assert reader.pending < IRC_MAX_LINE, "LineReader holds more than a line"
        for out in (conn.data_to_send(), other.data_to_send()):
            for sent in out.split(b"\r\n")[:-1]:
                assert len(sent) + 2 <= IRC_MAX_LINE, f"line of {len(sent) + 2} bytes sent"
                assert b"\r" not in sent and b"\n" not in sent and b"\x00" not in sent
    conn.connection_lost()
    other.connection_lost()
    assert not world.nicks, "a nick outlived its connection"


IRC = Harness(
    "irc", "bytes -> LineReader -> parse -> IRCConnection.receive_line (logged in or not)",
    _irc, allowed=(),
)

# --- 9. SMTP: our policy's MAIL/RCPT/DATA/AUTH handlers, address parsing --------


class _Session:
    def __init__(self, authenticated: bool) -> None:
        self.authenticated = authenticated
        self.auth_data = "alice@example.org" if authenticated else None
        self.peer = ("127.0.0.1", 2525)
        self.host_name = "client.example"
        self.extended_smtp = True
        self.ssl = None


class _Envelope:
    def __init__(self) -> None:
        self.mail_from = None
        self.mail_options: list[str] = []
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []
        self.smtp_utf8 = False
        self.original_content: bytes | None = None


class _Server:
    """What SmtpPolicy's AUTH hooks ask of aiosmtpd's SMTP object."""

    AuthLoginUsernameChallenge = "VXNlciBOYW1lAA=="
    AuthLoginPasswordChallenge = "UGFzc3dvcmQA"

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.session = _Session(False)

    async def challenge_auth(self, challenge):
        return self.answers.pop(0) if self.answers else None


_MAIL_CORE = mail_core.MailCore(mailboxes={"alice@example.org"}, smarthost=("smarthost", 25),
                                max_recipients=5, hostname="mx.example.org")
_MAIL_CORE.add_domain(mail_core.Domain("example.org", "/nonexistent"))
_STORED: list = []


async def _sink(accepted) -> None:
    _STORED.append(accepted)


async def _authenticate(user: str, password: str, peer: str) -> str | None:
    return "alice@example.org" if (user, password) == ("alice", "pencil") else None


_POLICY = SmtpPolicy(_MAIL_CORE, _sink, _authenticate, hostname="mx.example.org")
_GETADDR = MailSMTP._getaddr.__get__(object.__new__(MailSMTP))


def _smtp(data: bytes) -> None:
    # Lines of "VERB argument" (MAIL/RCPT/AUTH/DATA), as aiosmtpd hands them
    # to our hooks; after DATA the rest of the input is the message.
    mode = data[:1]
    session = _Session(bool(mode and mode[0] & 1))
    envelope = _Envelope()
    text, _, message = data[1:].partition(b"\r\nDATA\r\n")
    for raw in text.split(b"\r\n"):
        line = raw.decode("utf-8", "surrogateescape")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb in ("MAIL", "RCPT"):
            # aiosmtpd strips "FROM:"/"TO:" and calls _getaddr on the rest.
            arg = arg.split(":", 1)[-1]
            address, _options = _GETADDR(arg)
            if address is None:
                continue
            # aiosmtpd's order: RCPT only after MAIL (else 503), MAIL only once.
            if (verb == "RCPT") != bool(envelope.mail_from):
                continue
            utf8 = "SMTPUTF8" in arg.upper()
            envelope.smtp_utf8 = utf8
            if verb == "MAIL":
                reply = _run(_POLICY.handle_MAIL(None, session, envelope, address,
                                                 ["SMTPUTF8"] if utf8 else []))
            else:
                reply = _run(_POLICY.handle_RCPT(None, session, envelope, address, []))
            assert reply[:3].isdigit() and "\n" not in reply, reply
            assert len(envelope.rcpt_tos) <= _MAIL_CORE.max_recipients
        elif verb == "AUTH":
            mech, _, rest = arg.partition(" ")
            args = [mech] + ([rest] if rest else [])
            answers = [bytes(p, "utf-8", "surrogateescape") for p in rest.split(" ")[1:]]
            server = _Server(answers)
            hook = _POLICY.auth_PLAIN if mech.upper() == "PLAIN" else _POLICY.auth_LOGIN
            result = _run(hook(server, args))
            assert not result.success or result.auth_data == "alice@example.org"
    if envelope.rcpt_tos:
        envelope.original_content = message
        _STORED.clear()
        reply = _run(_POLICY.handle_DATA(None, session, envelope))
        if has_bare_line_end(message):
            assert reply.startswith("550"), reply
            assert not _STORED
        else:
            assert reply.startswith("250"), reply
            (stored,) = _STORED
            assert b"\r" not in stored.content.split(b"\n", 1)[1] or b"\r" not in message
            assert len(stored.local) + len(stored.relay) <= _MAIL_CORE.max_recipients


SMTP = Harness(
    "smtp", "MAIL/RCPT addresses -> MailSMTP._getaddr -> SmtpPolicy hooks, AUTH PLAIN/LOGIN, DATA",
    _smtp, allowed=(),
)

# --- 9b. SMTP DATA text: DataReader against the line-at-a-time model ---------

_DATA_SIZE_LIMITS = (None, 0, 10, 200, 1000, 2500)
_DATA_LINE_LIMIT = 1001  # aiosmtpd's: 999 octets and the CRLF


def _smtp_data(data: bytes) -> None:
    # First byte: the SIZE limit; the second: the read size, so the text
    # and its end marker also arrive cut in two.  The rest is what follows
    # the 354, the client's next commands after the end marker included.
    if len(data) < 2:
        return
    size_limit = _DATA_SIZE_LIMITS[data[0] % len(_DATA_SIZE_LIMITS)]
    step, text = data[1] + 1, data[2:]
    cuts = list(range(step, len(text), step))
    expected = line_by_line(text, line_limit=_DATA_LINE_LIMIT, size_limit=size_limit)
    got = by_blocks(text, cuts, line_limit=_DATA_LINE_LIMIT, size_limit=size_limit)
    assert got == expected, (got, expected)


SMTP_DATA = Harness(
    "smtp-data", "the text after 354, cut into reads -> DataReader, judged by the line-at-a-time model",
    _smtp_data, allowed=(),
)

# --- 10. the Maildir reader: file names and contents another program left ------

_MAILDIR_ROOT = tempfile.mkdtemp(prefix="pb-fuzz-maildir-",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def _maildir(data: bytes) -> None:
    # Entries separated by b"\n--\n": "name\ncontent"; an odd first byte of
    # a name puts it in cur/, else in new/.
    path = os.path.join(_MAILDIR_ROOT, "box")
    shutil.rmtree(path, ignore_errors=True)
    box = Maildir(path, fsync=False)
    for entry in data.split(b"\n--\n")[:16]:
        name, _, content = entry.partition(b"\n")
        subdir = b"cur" if name[:1] and name[0] & 1 else b"new"
        name = name[1:]
        if not name or b"/" in name or b"\x00" in name or name in (b".", b"..") or len(name) > 200:
            continue
        with open(os.path.join(os.fsencode(path), subdir, name), "wb") as file:
            file.write(content)
    trash = box.folder("Trash")
    for info in box.messages():
        assert info.subdir in ("new", "cur")
        assert box.read(info) == b"".join(box.iter_chunks(info))
        found = box.find(info.key)
        assert found.key == info.key
        if info.subdir == "new":
            box.mark_seen(info)
    for info in box.messages():
        box.move_to(info, trash)
    assert len(trash.messages()) >= 0


MAILDIR = Harness(
    "maildir", "files left in new/ and cur/ -> Maildir.messages/find/read/mark_seen/move_to",
    _maildir, allowed=(MaildirError,),
)

# --- 11. a POP3 command: Pop3Machine, answered like the adapter ----------------

_MESSAGES = [Pop3Message("1700000000.M1P1Q1R1.host,S=20,W=22", 22, b"Subject: a\n\n.dot\nend\n"),
             Pop3Message("1700000001.M1P1Q2R2.host,S=9,W=10", 10, b"no header")]


def _pop3(data: bytes) -> None:
    mode = data[:1]
    machine = Pop3Machine(hostname="fuzz", plain_allowed=bool(mode and mode[0] & 1),
                          tls_available=bool(mode and mode[0] & 2))
    closed = False
    for piece in _chunks(data[1:] if mode else b"") + [b""]:
        machine.receive(piece)
        while (event := machine.next_event()) is not None:
            if isinstance(event, Login):
                ok = (event.user, event.password) == ("alice", "pencil")
                machine.login_done("alice@fuzz" if ok else None, _MESSAGES if ok else ())
            elif isinstance(event, StartTls):
                machine.tls_started()
            elif isinstance(event, Retrieve):
                machine.send_message(event.message.handle, event.lines)
            elif isinstance(event, Commit):
                assert set(event.deleted) <= set(_MESSAGES)
                machine.committed()
            elif isinstance(event, Close):
                closed = True
            assert len(machine._in) <= machine.max_pending
        out = machine.data_to_send()
        for line in out.split(b"\r\n")[:-1]:
            assert b"\n" not in line and b"\r" not in line
        assert len(machine._in) <= max(machine.max_pending, POP3_MAX_LINE)
        if closed:
            return


POP3 = Harness(
    "pop3", "bytes -> services.mail Pop3Machine (USER/PASS, AUTH PLAIN, STLS, RETR/TOP/DELE/QUIT)",
    _pop3, allowed=(),
)
