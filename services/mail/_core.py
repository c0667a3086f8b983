"""The mail service's rules: addresses, virtual domains, mailboxes, routing
and the relay policy.  Pure: no sockets, no disk, no PB.

Routing an envelope recipient gives one of three answers:

* :class:`Local` — a mailbox of one of our domains (or that domain's
  catch-all);
* :class:`Relay` — another domain, which only an authenticated sender may
  use, and only when a smarthost is configured;
* :class:`Refuse` — with the SMTP reply to send.

The address syntax accepted is deliberately narrow (RFC 5321 dot-atoms, and
UTF-8 where SMTPUTF8 allows it): quoted local parts, ``%`` and ``!`` hacks,
source routes and second ``@`` signs are refused outright.  Each of those
forms has been used to trick servers into relaying, and none is needed by
real mail today.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "Address",
    "AddressError",
    "Domain",
    "Local",
    "MailCore",
    "Refuse",
    "Relay",
    "parse_address",
    "received_header",
]

# RFC 5321 "atext" minus the characters historic relay tricks rely on (% and !).
_ATEXT = r"A-Za-z0-9#$&'*+\-/=?^_`{|}~"
_LOCAL_ASCII = re.compile(rf"[{_ATEXT}]+(\.[{_ATEXT}]+)*\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
#: Postfix's default message_size_limit.  aiosmtpd holds a message in memory
#: while it arrives, so this times the connection cap bounds that memory.
DEFAULT_MAX_MESSAGE = 10_240_000
MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254


class AddressError(ValueError):
    """An address this server will not accept; the message says why."""


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str  # lower case, IDNA-encoded (ASCII)

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def mailbox(self) -> str:
        """The mailbox name this address is stored under: lower case."""
        return f"{self.local.lower()}@{self.domain}"


def _domain(text: str) -> str:
    if text.startswith("[") or not text:
        raise AddressError("address literals ([1.2.3.4]) are not accepted; use a domain name")
    try:
        ascii_domain = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise AddressError(f"domain {text[:40]!r} is not a valid internationalised name") from None
    ascii_domain = ascii_domain.lower().rstrip(".")
    if len(ascii_domain) > MAX_DOMAIN or not all(_LABEL.match(p) for p in ascii_domain.split(".")):
        raise AddressError(f"domain {text[:40]!r} is not a valid host name")
    return ascii_domain


def parse_address(text: str, *, utf8: bool = False) -> Address:
    """Parse a bare ``local@domain`` (no angle brackets) strictly.

    *utf8*: the sender announced SMTPUTF8, so non-ASCII local parts are
    allowed.  Raises :class:`AddressError` for anything else.
    """
    if not isinstance(text, str) or not text:
        raise AddressError("empty address")
    if len(text.encode("utf-8", "surrogateescape")) > MAX_ADDRESS:
        raise AddressError(f"address longer than {MAX_ADDRESS} octets")
    if text.count("@") != 1:
        raise AddressError("an address has exactly one '@' (no source routes or relay hacks)")
    local, _, domain = text.partition("@")
    if not local or len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL:
        raise AddressError(f"local part must be 1-{MAX_LOCAL} octets")
    if local.startswith('"'):
        raise AddressError("quoted local parts are not accepted")
    if not local.isascii():
        if not utf8:
            raise AddressError("non-ASCII local part without SMTPUTF8")
        if any(not ch.isprintable() or ch.isspace() or ch in '"%!@\\,;:<>()[]' for ch in local):
            raise AddressError("local part holds characters not allowed in an address")
        if ".." in local or local.startswith(".") or local.endswith("."):
            raise AddressError("local part has empty dot-separated parts")
        try:
            local.encode("utf-8")
        except UnicodeEncodeError:
            raise AddressError("local part is not valid UTF-8") from None
    elif not _LOCAL_ASCII.match(local):
        raise AddressError("local part holds characters not allowed here (%, !, quotes, spaces...)")
    return Address(local, _domain(domain))


def check_mailbox_name(text: str) -> Address:
    """A mailbox name as given on the command line or in a keyring:
    ``name@domain``, stored lower case."""
    address = parse_address(text, utf8=True)
    if "/" in address.local or address.local.startswith("."):
        # The local part names a directory under the domain's root.
        raise AddressError("a mailbox name may not hold '/' or start with '.'")
    return Address(address.local.lower(), address.domain)


@dataclass(frozen=True, slots=True)
class Domain:
    """A virtual domain: its Maildirs live under ``root/<local part>``; a
    ``catch_all`` local part receives mail for unknown names."""

    name: str
    root: str
    catch_all: str | None = None


@dataclass(frozen=True, slots=True)
class Local:
    mailbox: str   # name@domain, lower case
    domain: Domain
    local: str     # the directory under domain.root


@dataclass(frozen=True, slots=True)
class Relay:
    address: Address


@dataclass(frozen=True, slots=True)
class Refuse:
    reply: str


@dataclass
class MailCore:
    """Domains, known mailboxes and the relay policy.

    ``mailboxes`` is the set of ``name@domain`` that exist (the mail
    perspectives granted on some keyring, kept fresh by the service).
    ``max_recipients`` caps RCPTs per message.
    """

    domains: dict[str, Domain] = field(default_factory=dict)
    mailboxes: set[str] = field(default_factory=set)
    smarthost: tuple[str, int] | None = None
    max_recipients: int = 100
    hostname: str = "localhost"

    def add_domain(self, domain: Domain) -> None:
        self.domains[_domain(domain.name)] = domain

    def is_local_domain(self, name: str) -> bool:
        return name in self.domains

    def local_for(self, mailbox: str) -> Local | None:
        """The :class:`Local` for an existing mailbox name, else None."""
        try:
            address = check_mailbox_name(mailbox)
        except AddressError:
            return None
        domain = self.domains.get(address.domain)
        if domain is None or address.mailbox not in self.mailboxes:
            return None
        return Local(address.mailbox, domain, address.local)

    def route(self, text: str, *, authenticated: bool, utf8: bool = False) -> Local | Relay | Refuse:
        """Where mail for the RCPT address *text* goes, or the refusal."""
        try:
            address = parse_address(text, utf8=utf8)
        except AddressError as exc:
            return Refuse(f"553 5.1.3 Recipient address refused: {exc}")
        domain = self.domains.get(address.domain)
        if domain is not None:
            mailbox = address.mailbox
            if mailbox in self.mailboxes:
                return Local(mailbox, domain, address.local.lower())
            if domain.catch_all is not None:
                return Local(f"{domain.catch_all}@{domain.name}", domain, domain.catch_all)
            return Refuse("550 5.1.1 No such user here")
        if not authenticated:
            # The only answer a stranger gets for another domain: no open relay.
            return Refuse("554 5.7.1 Relay access denied: authenticate to send to other domains")
        if self.smarthost is None:
            return Refuse("550 5.7.1 This server does not relay (no smarthost configured)")
        return Relay(address)

    def check_sender(self, text: str, *, utf8: bool = False) -> str | None:
        """None if *text* is an acceptable MAIL FROM (``""`` is the null
        sender of bounces), else the refusal reply."""
        if text == "":
            return None
        try:
            parse_address(text, utf8=utf8)
        except AddressError as exc:
            return f"553 5.1.7 Sender address refused: {exc}"
        return None

    def check_own_sender(self, text: str, mailbox: str, *, utf8: bool = False) -> str | None:
        """The refusal for an authenticated sender *mailbox* using MAIL FROM
        *text*, or None: see :func:`check_own_sender_address`."""
        return check_own_sender_address(text, mailbox, utf8=utf8)


def check_own_sender_address(text: str, mailbox: str, *, utf8: bool = False) -> str | None:
    """None if the MAIL FROM *text* is *mailbox* itself (compared as stored:
    local part in lower case), or the null sender; else the 553 refusal.
    An authenticated user may send only as themselves: otherwise any account
    could relay mail forged in another user's name."""
    if text == "":
        return None  # the null sender names nobody (Postfix lets it through too)
    try:
        address = parse_address(text, utf8=utf8)
    except AddressError as exc:
        return f"553 5.1.7 Sender address refused: {exc}"
    if address.mailbox != mailbox:
        return f"553 5.7.1 Sender address <{text[:80]}> is not owned by the logged-in user {mailbox}"
    return None


def received_header(*, helo: str, peer: str, hostname: str, protocol: str,
                    recipient: str | None, queue_id: str, when: float | None = None) -> bytes:
    """The ``Received:`` trace line (RFC 5321 §4.4) this server prepends,
    with LF line ends.  HELO text is the client's: only printable ASCII of
    it is kept, so it cannot inject header lines."""
    helo = "".join(ch for ch in helo[:100] if 32 < ord(ch) < 127) or "unknown"
    stamp = formatdate(when if when is not None else time.time(), localtime=False)
    text = f"Received: from {helo} ([{peer}])\n\tby {hostname} with {protocol} id {queue_id}"
    if recipient is not None:
        text += f"\n\tfor <{recipient}>"
    return (text + f";\n\t{stamp}\n").encode("utf-8", "surrogateescape")
