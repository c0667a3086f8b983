"""The PB face: a ``mail`` perspective per mailbox.

Log in with ``service="mail", perspective="NAME@DOMAIN"`` (the keyring must
hold ``mail:NAME@DOMAIN``)::

    box = await broker.login(host, port, "alice", pw, service="mail",
                             perspective="alice@example.com", mind=mind)
    await box.call_remote("folders")                 # ["INBOX", "Trash", ...]
    await box.call_remote("list", "INBOX")           # [{"key", "size", "flags", "from", "subject", ...}]
    data = await broker.collect(await box.call_remote("fetch", "INBOX", key))
    await box.call_remote("delete", "INBOX", key)    # moves to Trash (deletes for good from Trash)
    await box.call_remote("move", "INBOX", key, "Archive")
    await box.call_remote("send", ["bob@example.org"], message_bytes)

A *mind* with ``remote_new_mail(folder, key)`` hears of each new message
while the login lasts.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
from typing import TYPE_CHECKING, Any

import broker

from ._core import Refuse, Relay, Local, received_header
from ._maildir import INBOX, TRASH, Maildir, MaildirError, check_folder_name
from ._smtp import Accepted

if TYPE_CHECKING:
    from ._server import MailService

__all__ = ["MailPerspective", "MailError"]

#: Headers read for a listing: enough for any sane header block.
HEADER_BYTES = 16 * 1024
#: Messages per listing call: with each header cut to HEADER_CHARS, a page
#: stays well inside one PB frame (4 MiB).
MAX_PAGE = 1000
HEADER_CHARS = 300


class MailError(Exception):
    """A mailbox operation was refused; the message says why and what to do."""


def _summary(maildir: Maildir, info: Any) -> dict[str, Any]:
    try:
        with open(maildir.file_of(info), "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except FileNotFoundError:
        return {}
    head = head.split(b"\n\n", 1)[0]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head + b"\n\n")

    def header(name: str) -> str:
        try:
            value = parsed.get(name)
        except Exception:  # a malformed header must not break the listing
            return ""
        return str(value)[:500] if value is not None else ""

    return {"key": info.key, "size": info.size, "flags": info.flags, "seen": "S" in info.flags,
            "from": header("From"), "to": header("To"), "subject": header("Subject"),
            "date": header("Date"), "message_id": header("Message-ID"),
            "return_path": header("Return-Path").strip("<>")}


async def _stream_file(path: Any, key: str, chunk: int = 256 * 1024) -> Any:
    # Opened on the first pull, so a stream dropped unread holds no file.
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise MailError(f"message {key!r} was moved or deleted meanwhile") from None
    try:
        while data := await asyncio.to_thread(handle.read, chunk):
            yield data
    finally:
        handle.close()


class MailPerspective(broker.Perspective):
    """What a login to ``mail:NAME@DOMAIN`` holds."""

    def __init__(self, mailbox: str, owner: MailService) -> None:
        self.mailbox = mailbox
        self.owner = owner
        self.minds: list[Any] = []

    def _root(self) -> Maildir:
        maildir = self.owner.maildir_of(self.mailbox)
        if maildir is None:
            raise MailError(f"mailbox {self.mailbox} is not served here (was its domain removed?)")
        return maildir

    def _folder(self, name: str, *, create: bool = False) -> Maildir:
        try:
            check_folder_name(name)
            return self._root().folder(name, create=create)
        except MaildirError as exc:
            raise MailError(str(exc)) from None

    # -- reading ---------------------------------------------------------------------

    @broker.expected_errors(MailError)
    async def perspective_folders(self) -> list[str]:
        """INBOX first, then every folder."""
        return await asyncio.to_thread(lambda: self._root().folders())

    @broker.expected_errors(MailError)
    async def perspective_list(self, folder: str = INBOX, start: int = 0,
                               count: int = 200) -> list[dict[str, Any]]:
        """Messages *start* to *start* + *count* (at most 1000) of *folder*,
        oldest first: key, size, flags, seen, and the From, To, Subject,
        Date, Message-ID and Return-Path (the envelope sender) headers."""
        if type(start) is not int or type(count) is not int or start < 0 or not 0 < count <= MAX_PAGE:
            raise MailError(f"list(folder, start >= 0, 0 < count <= {MAX_PAGE})")

        def work() -> list[dict[str, Any]]:
            maildir = self._folder(folder)
            page = maildir.messages()[start:start + count]
            return [s for s in (_summary(maildir, i) for i in page) if s]
        return await asyncio.to_thread(work)

    @broker.expected_errors(MailError)
    async def perspective_count(self, folder: str = INBOX) -> dict[str, int]:
        """How many messages *folder* holds, and how many are unseen."""
        def work() -> dict[str, int]:
            messages = self._folder(folder).messages()
            return {"messages": len(messages), "unseen": sum("S" not in m.flags for m in messages)}
        return await asyncio.to_thread(work)

    @broker.expected_errors(MailError)
    async def perspective_fetch(self, folder: str, key: str) -> Any:
        """The message, streamed in chunks (``broker.collect`` joins them);
        marks it seen."""
        def find() -> Any:
            maildir = self._folder(folder)
            try:
                info = maildir.find(key)
                if info.subdir == "new" or "S" not in info.flags:
                    maildir.mark_seen(info)
                    info = maildir.find(key)
            except MaildirError as exc:
                raise MailError(f"no message {key!r} in {folder}: {exc}") from None
            return maildir.file_of(info)
        return _stream_file(await asyncio.to_thread(find), key)

    # -- changing --------------------------------------------------------------------

    @broker.expected_errors(MailError)
    async def perspective_delete(self, folder: str, key: str) -> str:
        """Move the message to Trash; from Trash itself, delete it for good."""
        def work() -> str:
            maildir = self._folder(folder)
            try:
                info = maildir.find(key)
                if folder == TRASH:
                    maildir.remove(info)
                    return "deleted"
                maildir.move_to(info, self._root().folder(TRASH))
                return "moved to Trash"
            except MaildirError as exc:
                raise MailError(str(exc)) from None
        return await asyncio.to_thread(work)

    @broker.expected_errors(MailError)
    async def perspective_move(self, folder: str, key: str, target: str) -> str:
        """Move the message to the folder *target* (created if missing)."""
        def work() -> str:
            source = self._folder(folder)
            destination = self._folder(target, create=True)
            try:
                source.move_to(source.find(key), destination)
            except MaildirError as exc:
                raise MailError(str(exc)) from None
            return f"moved to {target}"
        return await asyncio.to_thread(work)

    @broker.expected_errors(MailError)
    async def perspective_send(self, recipients: list[str], message: bytes) -> str:
        """Send *message* (a whole RFC 5322 message, CRLF or LF line ends)
        as this mailbox, through the same checks as SMTP AUTH senders."""
        owner = self.owner
        if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) for r in recipients):
            raise MailError("recipients must be a non-empty list of addresses")
        if len(recipients) > owner.core.max_recipients:
            raise MailError(f"at most {owner.core.max_recipients} recipients per message")
        if not isinstance(message, bytes):
            raise MailError("the message must be bytes")
        if len(message) > owner.max_message_size:
            raise MailError(f"message larger than {owner.max_message_size} bytes")
        content = message.replace(b"\r\n", b"\n")
        if b"\r" in content:
            raise MailError("bare CR in the message; use LF or CRLF line ends")
        accepted = Accepted(sender=self.mailbox, authenticated_as=self.mailbox)
        for rcpt in recipients:
            route = owner.core.route(rcpt, authenticated=True, utf8=True)
            if isinstance(route, Refuse):
                raise MailError(f"{rcpt}: {route.reply}")
            if isinstance(route, Local):
                if route.mailbox not in {r.mailbox for r in accepted.local}:
                    accepted.local.append(route)
            elif isinstance(route, Relay):
                accepted.relay.append(str(route.address))
        header = received_header(helo="pb", peer="pb", hostname=owner.hostname, protocol="PB",
                                 recipient=recipients[0] if len(recipients) == 1 else None,
                                 queue_id="pb")
        accepted.content = header + content
        await owner.deliver(accepted)
        return f"sent to {len(recipients)} recipient(s)"

    # -- minds ------------------------------------------------------------------------

    def attached(self, mind: Any) -> None:
        if mind is not None:
            self.minds.append(mind)
            if self._notify not in self.owner.new_mail_listeners:
                self.owner.new_mail_listeners.append(self._notify)

    def detached(self, mind: Any) -> None:
        if mind in self.minds:
            self.minds.remove(mind)
        if not self.minds and self._notify in self.owner.new_mail_listeners:
            self.owner.new_mail_listeners.remove(self._notify)

    def _notify(self, mailbox: str, folder: str, key: str) -> None:
        if mailbox != self.mailbox:
            return
        for mind in list(self.minds):
            try:
                mind.call_remote_only("new_mail", folder, key)
            except broker.PBError:
                pass  # gone; detached() follows

    def __repr__(self) -> str:
        return f"<MailPerspective {self.mailbox!r}>"
