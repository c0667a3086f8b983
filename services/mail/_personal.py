"""Delivery to personal servers: the seeds' plan of mail handed over PB to
a process the user runs, which stores it as that user.

The user runs ``pb run mail --personal`` (by default on ``~/.pb-mail.sock``
and into ``~/Maildir``): :class:`PersonalService` publishes a
:class:`PersonalDelivery` root whose ``deliver(mailbox, message)`` stores
the message durably (the same tmp → fsync → rename → fsync as the server)
and answers with its key.  The socket is created with mode 0600 by default;
``--socket-mode 0660`` lets a group (the mail server's) connect.  Being
able to connect to it is the permission to deliver; it accepts mail only
for the mailboxes it was started for.

The server side (:class:`PersonalRouter`) knows which mailbox has a
personal socket (``--personal-socket NAME@DOMAIN=PATH``).  For those it
calls the personal server, and only when that answered does the SMTP
client get its 250.  If the personal server is down, slow or refuses, the
message goes to the server's own Maildir instead, so mail is never held up
by it.  (A personal server that stored the message but died before
answering makes that a second copy: at least once, never zero.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import broker
from services import Service, get_logger

from ._core import DEFAULT_MAX_MESSAGE, AddressError, check_mailbox_name
from ._maildir import Maildir

__all__ = ["DEFAULT_SOCKET", "PersonalDelivery", "PersonalRouter", "PersonalService"]

DEFAULT_SOCKET = "~/.pb-mail.sock"
DEFAULT_MAILDIR = "~/Maildir"

_log = get_logger("pb.mail.personal")


class PersonalDelivery(broker.Root):
    """What the mail server reaches on a personal socket."""

    def __init__(self, maildir: Maildir, mailboxes: set[str], max_size: int) -> None:
        self.maildir = maildir
        self.mailboxes = mailboxes
        self.max_size = max_size
        self.delivered = 0

    @broker.expected_errors(TypeError, ValueError)
    async def remote_deliver(self, mailbox: str, message: bytes) -> str:
        """Store *message* (LF line ends, trace header included) for *mailbox*."""
        if not isinstance(mailbox, str) or not isinstance(message, bytes):
            raise TypeError("deliver(mailbox: str, message: bytes)")
        if self.mailboxes and mailbox.lower() not in self.mailboxes:
            raise ValueError(f"this personal server takes mail for {sorted(self.mailboxes)}, not {mailbox!r}")
        if len(message) > self.max_size:
            raise ValueError(f"message larger than {self.max_size} bytes")
        key = await asyncio.to_thread(self.maildir.deliver, message)
        self.delivered += 1
        return key


class PersonalService(Service):
    """``pb run mail --personal``: a :class:`PersonalDelivery` on a UNIX socket."""

    def __init__(self, name: str | None = "mail", *, socket_path: str = DEFAULT_SOCKET,
                 maildir: str = DEFAULT_MAILDIR, mailboxes: list[str] = (), socket_mode: int = 0o600,
                 max_message_size: int = DEFAULT_MAX_MESSAGE, grace: float = 10.0) -> None:
        super().__init__(name)
        self.socket_path = str(Path(socket_path).expanduser())
        self.maildir_path = Path(maildir).expanduser()
        self.mailboxes = {m.lower() for m in mailboxes}
        self.socket_mode = socket_mode
        self.max_message_size = max_message_size
        self.grace = grace
        self.server: broker.Server | None = None
        self.root: PersonalDelivery | None = None

    async def on_start(self) -> None:
        maildir = await asyncio.to_thread(Maildir, self.maildir_path)
        removed = await asyncio.to_thread(maildir.clean_tmp)
        if removed:
            _log.info("removed stale tmp files", count=removed)
        self.root = PersonalDelivery(maildir, self.mailboxes, self.max_message_size)
        if os.path.exists(self.socket_path):
            # A socket left by a process that died; a live one answers connect().
            try:
                conn = await broker.connect(path=self.socket_path, timeout=2)
            except (OSError, broker.PBError):
                os.unlink(self.socket_path)
            else:
                await conn.close()
                raise RuntimeError(f"{self.socket_path} is in use by a running personal server; "
                                   f"stop it first or give --socket another path")
        old = os.umask(0o177)  # the socket exists with 0600 from the start, never wider
        try:
            self.server = await broker.serve(self.root, path=self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, self.socket_mode)
        _log.info("listening", socket=self.socket_path, maildir=str(self.maildir_path))

    async def on_stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        try:
            remaining = self.grace_remaining()
            await server.shutdown(grace=self.grace if remaining is None else min(self.grace, remaining))
        finally:
            server.close()
            await server.wait_closed()

    def banner(self) -> str | None:
        return f"mail (personal): pb+unix://{self.socket_path} into {self.maildir_path}"


class PersonalRouter:
    """The server's side: hand mail for some mailboxes to their personal servers."""

    def __init__(self, sockets: dict[str, str], *, timeout: float = 10.0,
                 connect_timeout: float = 1.0) -> None:
        self.sockets: dict[str, str] = {}
        for mailbox, path in sockets.items():
            try:
                name = check_mailbox_name(mailbox).mailbox
            except AddressError as exc:
                raise ValueError(f"--personal-socket {mailbox}: {exc}") from None
            self.sockets[name] = str(Path(path).expanduser())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.handed = 0
        self.fallbacks = 0
        self._connections: dict[str, Any] = {}

    async def deliver(self, mailbox: str, content: bytes) -> str | None:
        """The key the personal server stored it under, or None (then the
        caller stores it in the server's Maildir)."""
        path = self.sockets.get(mailbox)
        if path is None:
            return None
        try:
            conn = self._connections.get(path)
            if conn is None or not conn.is_open:
                conn = await broker.connect(path=path, timeout=self.connect_timeout)
                self._connections[path] = conn
            root = await conn.root()
            key = await root.call_remote("deliver", mailbox, content, timeout=self.timeout)
        except (OSError, broker.PBError, asyncio.TimeoutError) as exc:
            self.fallbacks += 1
            _log.info("personal server unavailable; storing in the server's Maildir",
                      mailbox=mailbox, error=repr(exc))
            await self._drop(path)
            return None
        if not isinstance(key, str):
            self.fallbacks += 1
            return None
        self.handed += 1
        return key

    async def _drop(self, path: str) -> None:
        conn = self._connections.pop(path, None)
        if conn is not None:
            try:
                await conn.close()
            except (OSError, broker.PBError):
                pass

    async def close(self) -> None:
        for path in list(self._connections):
            await self._drop(path)
