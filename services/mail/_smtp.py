"""SMTP in: aiosmtpd's protocol machine with this service's policy.

aiosmtpd (a well-kept library) parses SMTP; the policy lives in
:class:`SmtpPolicy`, its *handler*, which asks :class:`~._core.MailCore`
for every decision and hands accepted mail to a *sink* (the service's
delivery: Maildir, personal server or relay queue).  :class:`MailSMTP`
adjusts the protocol object per connection:

* plain-text ``AUTH`` is offered only over TLS, or on loopback when the
  operator passed ``--allow-plain-auth``;
* the per-command size limits are the connection's own (aiosmtpd keeps them
  in a class attribute that every EHLO on every connection adds to);
* aiosmtpd only takes ``<CR><LF>.<CR><LF>`` as the end of DATA, so bare
  ``<LF>.<LF>`` or ``<CR>.<LF>`` never end a message here; a message that
  holds a bare CR or LF anywhere is refused (Postfix's
  ``smtpd_forbid_bare_newline = reject``), because a server downstream that
  reads them as line ends would see a second, smuggled message;
* the null reverse path ``MAIL FROM:<>`` (bounces) is accepted;
* errors inside the handler become a 451 (try later), never a traceback
  text on the wire.

* the message text after ``DATA`` is read in blocks by this module's
  :class:`~._data.DataReader`, not a line at a time by aiosmtpd (whose
  per-line loop was half the server's CPU per message); it keeps
  aiosmtpd's rules and answers: ``SIZE`` enforced while reading (the data
  is dropped, not buffered, once over), the 1001-octet text line limit, and
  only ``<CR><LF>.<CR><LF>`` ends the text.

What aiosmtpd still does and this module relies on: the commands, ``SIZE``
advertised, the 512-octet command line limit, a timeout reset on each
command, ``8BITMIME``, ``SMTPUTF8``, and throwing away anything a client
pipelined after ``STARTTLS`` (aiosmtpd >= 1.4.6).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import ipaddress
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from cred.log import get_logger

from ._data import TOO_LONG, TOO_MUCH, DataReader
from ._core import Local, MailCore, Refuse, Relay, received_header

__all__ = ["DEFAULT_DATA_TIMEOUT", "Accepted", "MailSMTP", "SmtpPolicy", "has_bare_line_end", "is_loopback"]

log = get_logger("pb.mail.smtp")


#: (user, password, peer host) -> the mailbox the login holds, or None if refused.
Authenticator = Callable[[str, str, str], Awaitable[str | None]]


def has_bare_line_end(data: bytes) -> bool:
    """True if *data* holds a CR not followed by LF, or an LF without a CR."""
    # Three C-speed counts: a regex with look-behind took 0.3 ms per 10 KiB
    # message, a tenth of the server's CPU per message (bench_mail).
    pairs = data.count(b"\r\n")
    return data.count(b"\n") != pairs or data.count(b"\r") != pairs


def is_loopback(peer: Any) -> bool:
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    if not isinstance(host, str):
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class Accepted:
    """A message the policy accepted, for the sink: ``local`` recipients
    (mailboxes) and ``relay`` ones (addresses), ``content`` with LF line
    ends and the Received: header already in front."""

    sender: str
    local: list[Local] = field(default_factory=list)
    relay: list[str] = field(default_factory=list)
    content: bytes = b""
    authenticated_as: str | None = None


#: RFC 3463 4.3.1: "mail system full", a temporary refusal the client retries later.
QUEUE_FULL = "452 4.3.1 Insufficient system storage: the relay queue is full; try again later"


#: Bytes asked of each socket read (see MailSMTP.connection_made).
RECV_SIZE = 64 * 1024

#: RFC 5321 4.5.3.2.5: a server waits 3 minutes for each block of message data.
DEFAULT_DATA_TIMEOUT = 180.0


class MailSMTP(SMTP):
    """aiosmtpd's SMTP with the per-connection adjustments described above.

    ``data_timeout``: while the message text arrives, the connection is
    dropped (421 4.4.2) once no byte came for that long; each arrival
    restarts the clock.  aiosmtpd alone arms its command timeout once at
    ``DATA``, which cuts off a big message that is still flowing and lets a
    stalled one hold the connection for the whole command timeout.
    """

    def __init__(self, handler: SmtpPolicy, *, allow_plain_auth: bool = False,
                 data_timeout: float = DEFAULT_DATA_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._data_timeout = data_timeout
        # Set while the text of a DATA is arriving: data_received feeds it.
        self._data_reader: DataReader | None = None
        self._data_done: asyncio.Future[None] | None = None
        # The idle deadline, and when the armed timer fires (None: none armed).
        self._deadline = 0.0
        self._timer_at: float | None = None
        # The class-level dict is shared by every connection; give this one its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._allow_plain_auth = allow_plain_auth
        self._auth_on_loopback = False

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:
            peer = transport.get_extra_info("peername")
            self._auth_on_loopback = self._allow_plain_auth and is_loopback(peer)
            # aiosmtpd reads this flag at AUTH and EHLO time.
            self._auth_require_tls = not self._auth_on_loopback
            if isinstance(getattr(transport, "max_size", None), int):
                # asyncio's selector transport receives into a fresh 256 KiB
                # buffer per read: past malloc's mmap threshold, so every read
                # paid mmap, mremap, munmap and page faults (strace of
                # bench_mail: 12 such calls a message).  64 KiB stays on the heap.
                transport.max_size = RECV_SIZE
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own DATA reads the text a line at a time; this one takes
        # it in blocks (see _data.py).  The checks before the 354 and the
        # answers after the text are aiosmtpd's.
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(line_limit=self.line_length_limit, size_limit=self.data_size_limit)
        done = self.loop.create_future()
        self._data_reader, self._data_done = reader, done
        self._reset_timeout(self._data_timeout)
        try:
            # What the stream reader already holds (the client may send the
            # text without waiting for the 354) is the start of the text.
            # Its size is only in the private buffer, which aiosmtpd itself
            # reaches into at STARTTLS; read() then takes it whole and
            # resumes a transport paused because it was large.
            held = len(self._reader._buffer)  # type: ignore[attr-defined]
            if held:
                self._feed_data(await self._reader.read(held))
            await done
        finally:
            self._data_reader = self._data_done = None
            if self.transport is not None:
                self._reset_timeout()
        if reader.state == TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif reader.state == TOO_MUCH:
            await self.push("552 Error: Too much mail data")
        else:
            original = reader.content()
            self.envelope.original_content = original
            if not self._decode_data:
                self.envelope.content = original
            elif self.enable_SMTPUTF8:
                self.envelope.content = original.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    self.envelope.content = original.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
            return
        self._set_post_data_state()

    def data_received(self, data: bytes) -> None:
        if self._data_reader is None:
            super().data_received(data)
            return
        self._reset_timeout(self._data_timeout)
        self._feed_data(data)

    def _feed_data(self, data: bytes) -> None:
        """Message text for the DATA reader; the bytes after its end go back
        to the stream reader, where aiosmtpd reads the next command."""
        assert self._data_reader is not None and self._data_done is not None
        leftover = self._data_reader.feed(data)
        if leftover is None:
            return
        # Storing the message is ours to time, not the client's.
        self._data_reader = None
        self._reset_timeout()
        if not self._data_done.done():
            self._data_done.set_result(None)
        if leftover:
            super().data_received(leftover)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels and re-arms a loop timer on every command, and
        # the DATA reader restarts the clock on every block: seven timers a
        # message in bench_mail.  Here only the deadline moves; the one
        # armed timer is replaced only when the deadline comes earlier, and
        # when it fires early it sets itself again for the deadline.
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        if self._timer_at is None or deadline < self._timer_at:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._arm_timer()

    def _arm_timer(self) -> None:
        self._timer_at = self._deadline
        self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer_at = None
        if self.loop.time() < self._deadline:
            self._arm_timer()
        else:
            self._timeout_cb()

    def _timeout_cb(self) -> None:
        if self._data_reader is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"421 4.4.2 Timeout waiting for message data; closing\r\n")
        super()._timeout_cb()

    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 §4: no AUTH inside a transaction.  Allowed, it would let a
        # client give any MAIL FROM first and gain the right to relay after.
        if self.envelope is not None and self.envelope.mail_from:
            await self.push("503 5.5.1 AUTH is not allowed during a mail transaction")
            return
        await super().smtp_AUTH(arg)

    async def smtp_EHLO(self, hostname: str) -> None:
        # Each EHLO starts from the base limits, not from the previous EHLO's.
        self.command_size_limits.clear()
        await super().smtp_EHLO(hostname)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        stripped = arg.lstrip()
        if stripped.startswith("<>"):
            rest = stripped[2:]
            if rest and not rest.startswith(" "):
                return None, None
            return _NULL_SENDER, rest.strip()
        simple = _SIMPLE_PATH.match(stripped)
        if simple is not None:
            # The common <dot-atom@host.name>: what the stdlib parser would
            # return, without its cost (a quarter of the server's Python time
            # per message in bench_mail before this).
            local = simple.group(1)
            if self.local_part_limit and len(local) > self.local_part_limit:
                return None, None
            return f"{local}@{simple.group(2)}", stripped[simple.end():]
        try:
            return super()._getaddr(arg)
        except Exception:
            # The stdlib parser aiosmtpd uses fails on some malformed
            # addresses with whatever it trips on ("<@" is an IndexError,
            # "<a@[b.c>" an AttributeError; found by the smtp fuzz harness):
            # a syntax error (501/553), not a 451 and a logged traceback.
            return None, None


# <local@domain> with a dot-atom local part and a domain of letter, digit
# and hyphen labels, then the parameters after blanks; anything else (quoted
# parts, source routes, literals, UTF-8, a comment after the path) goes to
# the stdlib parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?![ \t]*\()[ \t]*")

# aiosmtpd treats an empty address as a syntax error; this marker stands for
# "<>" until the policy's MAIL hook turns it back into "".
_NULL_SENDER = "\x00null"


class SmtpPolicy:
    """The aiosmtpd handler: this server's answers to MAIL, RCPT, DATA and AUTH.

    *sink* stores an :class:`Accepted` message durably (raising on
    failure); *authenticate* (user, password, peer host) returns the
    mailbox the login holds, or None when refused.
    """

    def __init__(self, core: MailCore, sink: Callable[[Accepted], Awaitable[None]],
                 authenticate: Authenticator, *, hostname: str,
                 refresh: Callable[[], Awaitable[bool]] | None = None,
                 relay_room: Callable[[int], bool] | None = None) -> None:
        self.core = core
        #: (bytes) -> whether the relay queue can take that much more; None: no queue.
        self.relay_room = relay_room
        self.refresh = refresh
        self.sink = sink
        self.authenticate = authenticate
        self.hostname = hostname
        self.received = 0

    # -- envelope ----------------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        utf8 = "SMTPUTF8" in mail_options
        if address == _NULL_SENDER:
            address = ""
        refusal = self.core.check_sender(address, utf8=utf8)
        if refusal is None and session.authenticated:
            refusal = self.core.check_own_sender(address, session.auth_data, utf8=utf8)
        if refusal is not None:
            log.info("sender refused", peer=_host(session), sender=address[:80], reply=refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.routes = []  # type: ignore[attr-defined]
        # aiosmtpd's "is there a sender yet" test is on truthiness; "<>" must count.
        if address == "":
            envelope.mail_from = _NullSender()
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        routes: list = getattr(envelope, "routes", [])
        if len(routes) >= self.core.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.core.max_recipients} per message)"
        route = self.core.route(address, authenticated=bool(session.authenticated),
                                utf8=envelope.smtp_utf8)
        if isinstance(route, Refuse) and route.reply.startswith("550 5.1.1") and self.refresh:
            # Perhaps granted since the last look at the keyrings (rate-limited inside).
            if await self.refresh():
                route = self.core.route(address, authenticated=bool(session.authenticated),
                                        utf8=envelope.smtp_utf8)
        if isinstance(route, Refuse):
            log.info("recipient refused", peer=_host(session), rcpt=address[:80], reply=route.reply)
            return route.reply
        if isinstance(route, Relay) and self.relay_room is not None and not self.relay_room(1):
            log.warning("relay queue full", peer=_host(session))
            return QUEUE_FULL
        routes.append(route)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    # -- data ----------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if has_bare_line_end(raw):
            return ("550 5.5.2 Message refused: bare CR or LF in the data "
                    "(send lines ending in CRLF)")
        routes: list = getattr(envelope, "routes", [])
        sender = str(envelope.mail_from)
        accepted = Accepted(sender=sender,
                            authenticated_as=session.auth_data if session.authenticated else None)
        seen: set[str] = set()
        for route in routes:
            if isinstance(route, Local):
                if route.mailbox not in seen:  # two RCPTs for one mailbox: one copy
                    seen.add(route.mailbox)
                    accepted.local.append(route)
            elif isinstance(route, Relay):
                accepted.relay.append(str(route.address))
        recipient = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        # RFC 3848 / 6531 protocol names: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPA...
        protocol = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP"
        if session.ssl is not None:
            protocol += "S"
        if session.authenticated:
            protocol += "A"
        # Unique, not secret (it is in the header and the reply); secrets'
        # getrandom call was a visible cost per message.
        queue_id = f"{random.getrandbits(64):016x}"
        header = _received(self, session, protocol, recipient, queue_id)
        # Stored with LF line ends (the Maildir convention); there is no bare CR or LF.
        accepted.content = header + raw.replace(b"\r\n", b"\n")
        if accepted.relay and self.relay_room is not None and not self.relay_room(len(accepted.content)):
            log.warning("relay queue full", peer=_host(session), size=len(accepted.content))
            return QUEUE_FULL
        await self.sink(accepted)
        self.received += 1
        return f"250 2.0.0 OK queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session failed", error=repr(error), exc_info=error)
        return "451 4.3.0 Local error, message not accepted; try again later"

    # -- AUTH ------------------------------------------------------------------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            blob = _b64(args[1])
            if blob is None:
                return AuthResult(success=False, handled=False,
                                  message="501 5.5.2 AUTH PLAIN data is not base64")
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 AUTH PLAIN wants authzid NUL user NUL password")
        authzid, user, password = parts
        if authzid and authzid != user:
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        return await self._login(server, user, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            user = await server.challenge_auth(server.AuthLoginUsernameChallenge)
            if not isinstance(user, bytes):
                return AuthResult(success=False, handled=True)
        else:
            user = _b64(args[1])
            if user is None:
                return AuthResult(success=False, handled=False,
                                  message="501 5.5.2 AUTH LOGIN data is not base64")
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._login(server, user, password)

    async def _login(self, server: SMTP, user: bytes, password: bytes) -> AuthResult:
        try:
            name, secret = user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        mailbox = await self.authenticate(name, secret, _host(server.session))
        if mailbox is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=mailbox)


class _NullSender(str):
    """The null reverse path: the empty string, but true, because aiosmtpd
    checks ``if envelope.mail_from`` to see whether MAIL was given."""

    def __new__(cls) -> _NullSender:
        return super().__new__(cls, "")

    def __bool__(self) -> bool:
        return True


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _host(session: Session | None) -> str:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def _received(policy: SmtpPolicy, session: Session, protocol: str, recipient: str | None,
              queue_id: str) -> bytes:
    return received_header(helo=session.host_name or "unknown", peer=_host(session),
                           hostname=policy.hostname, protocol=protocol,
                           recipient=recipient, queue_id=queue_id)
