"""The asyncio side of the mail service: listeners, delivery, the relay
queue's loop, and the service object that owns them all.

:class:`MailService` starts, in order: the cred service ``mail`` in the
application's realm, the ``--user`` accounts, the list of existing
mailboxes, a clean-up of stale ``tmp/`` files, the relay queue, the SMTP
listener (aiosmtpd's protocol with :mod:`._smtp`'s policy), the POP3
listener (:class:`Pop3Protocol` feeding :mod:`._pop3`'s machine) and the PB
face.  It stops them in reverse; connections are its own and are closed.

Logins over SMTP AUTH and POP3 go through the application's portal as
``service="mail"`` with the mailbox as the perspective, so they share the
portal's throttle and its one refusal for every failure.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import ssl as _ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cred
from services import Service, ensure_account, ensure_service_name, get_logger

from ._core import DEFAULT_MAX_MESSAGE, AddressError, Domain, Local, MailCore, check_mailbox_name
from ._maildir import Maildir, MaildirError
from ._pop3 import Close, Commit, Login, Pop3Machine, Pop3Message, Retrieve, StartTls
from ._personal import PersonalRouter
from ._queue import DEFAULT_QUEUE_MAX_BYTES, QueueRunner, RelayQueue
from ._smtp import DEFAULT_DATA_TIMEOUT, Accepted, MailSMTP, SmtpPolicy, is_loopback

__all__ = ["MailService", "SERVICE_NAME", "Pop3Protocol"]

#: The cred service name: keyrings hold ``mail:NAME@DOMAIN``.
SERVICE_NAME = "mail"

_log = get_logger("pb.mail")

#: RFC 1939 §3: an autologout timer must be at least 10 minutes.
MIN_AUTOLOGOUT = 600.0


class MailService(Service):
    """SMTP in, Maildir storage, POP3 out, relay, for the given domains.

    ``domains`` is a list of :class:`~._core.Domain`; ``users`` a list of
    ``(mailbox, password)`` to create at start (demo convenience).  A port
    of None turns that listener off; 0 picks a free port (see ``smtp_port``
    and ``pop3_port`` once started).
    """

    def __init__(
        self,
        name: str | None = "mail",
        *,
        portal: Any,
        domains: Iterable[Domain],
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        smtp_port: int | None = 2525,
        pop3_port: int | None = 1110,
        pb_port: int | None = None,
        pb_socket: str | None = None,
        smarthost: tuple[str, int] | None = None,
        smarthost_tls: _ssl.SSLContext | None = None,
        smarthost_login: tuple[str, str] | None = None,
        personal_sockets: dict[str, str] | None = None,
        users: Iterable[tuple[str, str]] = (),
        allow_plain_auth: bool = False,
        tls: _ssl.SSLContext | None = None,
        hostname: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        max_recipients: int = 100,
        command_timeout: float = 300.0,
        autologout: float = MIN_AUTOLOGOUT,
        fsync: bool = True,
        retry_base: float = 60.0,
        retry_max: float = 3600.0,
        give_up: float = 5 * 86400.0,
        max_connections: int = 256,
        max_connections_per_host: int = 32,
        grace: float = 10.0,
        service_name: str = SERVICE_NAME,
        queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
        data_timeout: float = DEFAULT_DATA_TIMEOUT,
    ) -> None:
        super().__init__(name)
        from services import account_store

        self.portal = portal
        self.store = account_store(portal)
        self.host = host
        self.smtp_port = smtp_port
        self.pop3_port = pop3_port
        self.pb_port = pb_port
        self.pb_socket = pb_socket
        self.pb_server: Any = None
        self.users = list(users)
        self.allow_plain_auth = allow_plain_auth
        self.tls = tls
        self.hostname = hostname or socket.getfqdn() or "localhost"
        self.max_message_size = max_message_size
        self.command_timeout = command_timeout
        self.autologout = autologout
        self.fsync = fsync
        self.grace = grace
        self.service_name = service_name
        self.data_dir = Path(data_dir)
        self.core = MailCore(smarthost=smarthost, max_recipients=max_recipients,
                             hostname=self.hostname)
        for domain in domains:
            self.core.add_domain(domain)
        self.retry = (retry_base, retry_max, give_up)
        self.smarthost_tls = smarthost_tls
        self.smarthost_login = smarthost_login
        self.realm_service = _MailRealmService(service_name, self)
        self.queue: RelayQueue | None = None
        self.runner: QueueRunner | None = None
        self.queue_max_bytes = queue_max_bytes
        self.data_timeout = data_timeout
        self.policy = SmtpPolicy(self.core, self.deliver, self._smtp_login, hostname=self.hostname,
                                 refresh=self.maybe_refresh, relay_room=self._relay_room)
        self._servers: list[asyncio.Server] = []
        self._smtp_protocols: set[MailSMTP] = set()
        self._pop3_protocols: set[Pop3Protocol] = set()
        self._locks: dict[str, int] = {}
        self._maildirs: dict[Path, Maildir] = {}
        self.smtp_gate = ConnectionGate(max_connections, max_connections_per_host)
        self.pop3_gate = ConnectionGate(max_connections, max_connections_per_host)
        self._last_refresh = 0.0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Called with (mailbox, folder, key) after each local delivery (the PB face's minds).
        self.new_mail_listeners: list[Callable[[str, str, str], None]] = []
        #: Delivery to personal servers (see _personal.py); None: Maildir only.
        self.personal: PersonalRouter | None = (
            PersonalRouter(personal_sockets) if personal_sockets else None)
        self.delivered = 0
        #: Whether the listeners take connections: from the moment they open
        #: (still "starting" for the Service, but ready for mail) until stop.
        self.accepting = False

    # -- lifecycle ---------------------------------------------------------------

    async def on_start(self) -> None:
        realm = self.portal.realm
        if self.service_name in realm.services:
            raise RuntimeError(f"the application's realm already has a cred service "
                               f"{self.service_name!r}; run one mail service per application")
        for domain in self.core.domains.values():
            Path(domain.root).mkdir(mode=0o700, parents=True, exist_ok=True)
        await ensure_service_name(self.store, self.service_name)
        for mailbox, password in self.users:
            await ensure_account(self.store, mailbox, password, [(self.service_name, mailbox)])
        await self.refresh_mailboxes()
        removed = await asyncio.to_thread(self._clean_all_tmp)
        if removed:
            _log.info("removed stale tmp files", count=removed)
        realm.add_service(self.realm_service)
        try:
            if self.core.smarthost is not None:
                self.queue = await asyncio.to_thread(RelayQueue, self.data_dir / "mail-queue",
                                                     fsync=self.fsync, max_bytes=self.queue_max_bytes)
                base, cap, give_up = self.retry
                self.runner = QueueRunner(self.queue, self.core.smarthost, bounce=self._bounce,
                                          hostname=self.hostname, retry_base=base, retry_max=cap,
                                          give_up=give_up, tls=self.smarthost_tls,
                                          login=self.smarthost_login)
                self.create_task(self.runner.run(), name="mail relay queue")
            loop = asyncio.get_running_loop()
            self.accepting = True
            if self.smtp_port is not None:
                server = await loop.create_server(self._smtp_factory, self.host, self.smtp_port)
                self._servers.append(server)
                self.smtp_port = server.sockets[0].getsockname()[1]
            if self.pop3_port is not None:
                server = await loop.create_server(self._pop3_factory, self.host, self.pop3_port)
                self._servers.append(server)
                self.pop3_port = server.sockets[0].getsockname()[1]
            if self.pb_port is not None or self.pb_socket is not None:
                import broker

                if self.pb_socket is not None:
                    self.pb_server = await broker.serve(self.portal, path=self.pb_socket,
                                                        services={self.service_name})
                else:
                    self.pb_server = await broker.serve(self.portal, self.host, self.pb_port,
                                                        services={self.service_name})
                    self.pb_port = self.pb_server.port or self.pb_port
        except BaseException:
            self.accepting = False
            await self._close_listeners()
            if realm.services.get(self.service_name) is self.realm_service:
                del realm.services[self.service_name]
            await asyncio.to_thread(self.store.close)  # reopens on next use, as after a stop
            raise
        _log.info("listening", smtp=self.smtp_port, pop3=self.pop3_port,
                  domains=",".join(sorted(self.core.domains)))

    async def on_stop(self) -> None:
        self.accepting = False
        try:
            for server in self._servers:
                server.close()  # stop accepting; connections stay until below
            # Messages being stored finish and get their 250 (within the grace period).
            await self._idle.wait()
        finally:
            await self._close_listeners()
            if self.personal is not None:
                await self.personal.close()
            services = self.portal.realm.services
            if services.get(self.service_name) is self.realm_service:
                del services[self.service_name]
            await asyncio.to_thread(self.store.close)

    async def _close_listeners(self) -> None:
        pb_server, self.pb_server = self.pb_server, None
        if pb_server is not None:
            try:
                remaining = self.grace_remaining()
                await pb_server.shutdown(grace=min(self.grace, remaining) if remaining is not None
                                         else self.grace)
            finally:
                pb_server.close()
                await pb_server.wait_closed()
        for protocol in list(self._smtp_protocols):
            if protocol.transport is not None:
                protocol.transport.close()
        for protocol in list(self._pop3_protocols):
            protocol.close()
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        # aiosmtpd's connection tasks end when their transport closes.
        for protocol in list(self._smtp_protocols):
            task = getattr(protocol, "_handler_coroutine", None)
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._smtp_protocols.clear()

    def banner(self) -> str | None:
        parts = []
        if self.smtp_port is not None:
            parts.append(f"smtp://{self.host}:{self.smtp_port}")
        if self.pop3_port is not None:
            parts.append(f"pop3://{self.host}:{self.pop3_port}")
        if self.pb_socket is not None:
            parts.append(f"pb+unix://{self.pb_socket}")
        elif self.pb_port is not None:
            parts.append(f"pb://{self.host}:{self.pb_port}")
        return "mail: " + " ".join(parts) + " for " + ", ".join(sorted(self.core.domains))

    # -- mailboxes ------------------------------------------------------------------

    def maildir(self, local: Local) -> Maildir:
        """The Maildir of *local*, made once (its directories are created on
        first delivery, in a worker thread)."""
        path = Path(local.domain.root) / local.local
        box = self._maildirs.get(path)
        if box is None:
            box = self._maildirs[path] = Maildir(path, create=False, fsync=self.fsync)
        return box

    @staticmethod
    def _store(box: Maildir, content: bytes) -> str:
        try:
            return box.deliver(content)
        except MaildirError:
            # First delivery, or the directory was removed: make it and retry
            # once.  Not only when it is missing now: a concurrent first
            # delivery may have made it since this one failed (create() then
            # waits for that one to finish making it durable).
            box.create()
            return box.deliver(content)

    def maildir_of(self, mailbox: str) -> Maildir | None:
        local = self.core.local_for(mailbox)
        return None if local is None else self.maildir(local)

    def _scan_keyrings(self) -> set[str]:
        found: set[str] = set()
        for user in self.store.users():
            for service, perspective in self.store.keyring(user):
                if service != self.service_name:
                    continue
                try:
                    found.add(check_mailbox_name(perspective).mailbox)
                except AddressError:
                    _log.warning("keyring grant is not a usable mailbox name", user=user,
                                 grant=f"{service}:{perspective}")
        return found

    async def refresh_mailboxes(self) -> None:
        """Re-read which mailboxes exist (the ``mail:`` grants on keyrings)."""
        self._last_refresh = time.monotonic()
        self.core.mailboxes = await asyncio.to_thread(self._scan_keyrings)

    async def maybe_refresh(self) -> bool:
        """Refresh at most once a second (for a RCPT to a name not seen yet)."""
        if time.monotonic() - self._last_refresh < 1.0:
            return False
        await self.refresh_mailboxes()
        return True

    def _clean_all_tmp(self) -> int:
        removed = 0
        for domain in self.core.domains.values():
            root = Path(domain.root)
            for child in root.iterdir() if root.is_dir() else ():
                if (child / "tmp").is_dir():
                    box = Maildir(child, create=False)
                    removed += box.clean_tmp()
                    for folder in box.folders()[1:]:
                        removed += box.folder(folder, create=False).clean_tmp()
        return removed

    # -- delivery ------------------------------------------------------------------------

    async def deliver(self, accepted: Accepted) -> None:
        """Store *accepted* for every recipient; returns once it is all on
        disk (and so may be answered 250).  Raises on failure."""
        self._in_flight += 1
        self._idle.clear()
        try:
            # RFC 5321 4.4: the final delivery records the reverse path.
            content = (b"Return-Path: <" + accepted.sender.encode("utf-8", "surrogateescape")
                       + b">\n" + accepted.content) if accepted.local else b""
            for local in accepted.local:
                key = None
                if self.personal is not None:
                    key = await self.personal.deliver(local.mailbox, content)
                if key is None:
                    key = await asyncio.to_thread(self._store, self.maildir(local), content)
                self.delivered += 1
                for listener in list(self.new_mail_listeners):
                    try:
                        listener(local.mailbox, "INBOX", key)
                    except Exception:
                        _log.exception("new-mail listener failed")
            if accepted.relay:
                assert self.queue is not None and self.runner is not None
                qid = await asyncio.to_thread(self.queue.enqueue, accepted.sender,
                                              accepted.relay, accepted.content)
                _log.info("queued for relay", id=qid, recipients=len(accepted.relay))
                self.runner.wake()
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _relay_room(self, size: int) -> bool:
        return self.queue is None or self.queue.has_room(size)

    async def _bounce(self, sender: str, dsn: bytes) -> None:
        local = self.core.local_for(sender)
        if local is not None:
            await self.deliver(Accepted(sender="", local=[local], content=dsn))
        elif self.queue is not None:
            # Bounces carry the null sender, so they can never bounce in turn.
            await asyncio.to_thread(self.queue.enqueue, "", [sender], dsn)

    # -- logins -------------------------------------------------------------------------

    async def mailbox_for(self, user: str) -> str | None:
        """The mailbox a login name stands for: itself if the account's
        keyring holds ``mail:<name>``, else the account's only mail
        mailbox.  None otherwise (the login then fails in the portal)."""
        try:
            keyring = await self.store.get_keyring(user)
        except Exception:
            return None
        boxes = sorted(p for s, p in (keyring or ()) if s == self.service_name)
        if user in boxes:
            return user
        return boxes[0] if len(boxes) == 1 else None

    async def login(self, user: str, password: str, source: str | None) -> str | None:
        """Check a plain login (SMTP AUTH, POP3); return the mailbox or None."""
        mailbox = await self.mailbox_for(user)
        # An unknown name still goes through the portal: same throttle, same time, same answer.
        perspective = mailbox if mailbox is not None else "-@invalid"
        try:
            result = await self.portal.login(
                cred.UsernamePassword(user, password), None,
                service=self.service_name, perspective=perspective,
                offered={self.service_name}, source=source,
            )
        except cred.Unauthorized:
            return None
        result.logout()
        return mailbox

    async def _smtp_login(self, user: str, password: str, source: str) -> str | None:
        return await self.login(user, password, source)

    # -- listeners --------------------------------------------------------------------------

    def _smtp_factory(self) -> MailSMTP:
        return _ServiceSMTP(
            self,
            self.policy,
            allow_plain_auth=self.allow_plain_auth,
            data_timeout=self.data_timeout,
            data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="Perspective Broker mail",
            tls_context=self.tls,
            timeout=self.command_timeout,
            auth_require_tls=True,
            # Per connection: a few AUTH attempts (each one is throttled by the
            # portal too) and little junk; mail itself is not limited.
            command_call_limit={"AUTH": 10, "STARTTLS": 3, "EHLO": 50, "HELO": 50, "VRFY": 20,
                                "HELP": 20, "NOOP": 1000, "*": 1_000_000},
            loop=asyncio.get_running_loop(),
        )

    def _pop3_factory(self) -> Pop3Protocol:
        return Pop3Protocol(self)

    # POP3 maildrop locks: one session per mailbox, in this process and others.

    def lock_maildrop(self, maildir: Maildir) -> bool:
        key = str(maildir.path)
        if key in self._locks:
            return False
        fd = os.open(maildir.path / ".pop3.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._locks[key] = fd
        return True

    def unlock_maildrop(self, maildir: Maildir) -> None:
        fd = self._locks.pop(str(maildir.path), None)
        if fd is not None:
            os.close(fd)  # closing releases the flock


class ConnectionGate:
    """Caps connections on one listener: ``total`` at once, ``per_host``
    from one address, so one client cannot take every slot."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self._hosts: dict[str, int] = {}
        self._count = 0

    def admit(self, host: str) -> bool:
        if self._count >= self.total or self._hosts.get(host, 0) >= self.per_host:
            return False
        self._count += 1
        self._hosts[host] = self._hosts.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        self._count -= 1
        left = self._hosts.get(host, 1) - 1
        if left:
            self._hosts[host] = left
        else:
            self._hosts.pop(host, None)


def _peer_host(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


class _ServiceSMTP(MailSMTP):
    """A connection of the service's SMTP listener: counted, capped, closed at stop."""

    def __init__(self, service: MailService, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._service = service
        self._admitted: str | None = None
        self._turned_away = False

    def connection_made(self, transport: Any) -> None:
        service = self._service
        if self._original_transport is None:  # not the STARTTLS re-entry
            host = _peer_host(transport)
            if not service.accepting or not service.smtp_gate.admit(host):
                self._turned_away = True
                # A client connecting while the listener opens used to be told
                # "too many connections"; say what is true.
                transport.write(b"421 4.7.0 Too many connections; try again later\r\n"
                                if service.accepting else
                                b"421 4.3.2 Service not available; try again later\r\n")
                transport.close()
                return
            self._admitted = host
            service._smtp_protocols.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return
        super().connection_lost(error)
        if self._admitted is not None:
            self._service.smtp_gate.release(self._admitted)
            self._admitted = None
        self._service._smtp_protocols.discard(self)


class _MailRealmService(cred.Service):
    """The cred service ``mail``: one perspective per mailbox (the portal
    has checked the keyring)."""

    def __init__(self, name: str, owner: MailService) -> None:
        super().__init__(name)
        self.owner = owner

    def create_perspective(self, name: str) -> Any:
        from ._pb import MailPerspective

        if self.owner.core.local_for(name) is None:
            # Granted but not (yet) seen, or for a domain this server does not serve.
            try:
                address = check_mailbox_name(name)
            except AddressError:
                return None
            if address.domain not in self.owner.core.domains:
                return None
            self.owner.core.mailboxes.add(address.mailbox)
        return MailPerspective(name, self.owner)


class Pop3Protocol(asyncio.Protocol):
    """One POP3 connection: bytes in and out, timers, TLS and the maildrop,
    around a :class:`~._pop3.Pop3Machine`."""

    def __init__(self, service: MailService) -> None:
        self.service = service
        self.transport: Any = None
        self.machine: Pop3Machine | None = None
        self.maildir: Maildir | None = None
        self.peer: str | None = None
        self._wake = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self._admitted = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        service = self.service
        peer = transport.get_extra_info("peername")
        self.peer = _peer_host(transport)
        if not service.accepting or not service.pop3_gate.admit(self.peer):
            transport.write(b"-ERR [SYS/TEMP] too many connections; try again later\r\n")
            transport.close()
            self._closed = True
            return
        self._admitted = True
        service._pop3_protocols.add(self)
        self.machine = Pop3Machine(hostname=service.hostname,
                                   plain_allowed=service.allow_plain_auth and is_loopback(peer),
                                   tls_available=service.tls is not None)
        self._touch()
        self._task = service.create_task(self._run(), name=f"pop3 {self.peer}")
        self._wake.set()

    def data_received(self, data: bytes) -> None:
        if self.machine is not None:
            self.machine.receive(data)
            if b"\n" in data:
                self._touch()  # only whole lines count as activity: trickled bytes do not
            self._wake.set()

    def eof_received(self) -> bool | None:
        if self.machine is not None:
            self.machine.receive(b"")
            self._wake.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._admitted:
            self._admitted = False
            self.service.pop3_gate.release(self.peer)
        self.service._pop3_protocols.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.machine is not None:
            self.machine.receive(b"")
        self._can_write.set()
        self._wake.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _touch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.service.autologout, self._autologout)

    def _autologout(self) -> None:
        # RFC 1939 §3: an autologout does not enter UPDATE; nothing is deleted.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"-ERR autologout: idle for too long\r\n")
            self.transport.close()

    async def _flush(self) -> None:
        assert self.machine is not None
        data = self.machine.data_to_send()
        if data and not self._closed:
            self.transport.write(data)
            await self._can_write.wait()

    async def _run(self) -> None:
        machine = self.machine
        assert machine is not None
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                while (event := machine.next_event()) is not None:
                    await self._flush()
                    if isinstance(event, Close):
                        self._closed = True
                        break
                    await self._handle(event)
                await self._flush()
        finally:
            if self.maildir is not None:
                self.service.unlock_maildrop(self.maildir)
                self.maildir = None
            self.close()

    async def _handle(self, event: Any) -> None:
        machine = self.machine
        assert machine is not None
        service = self.service
        if isinstance(event, Login):
            mailbox = await service.login(event.user, event.password, self.peer)
            maildir = service.maildir_of(mailbox) if mailbox is not None else None
            if maildir is None:
                machine.login_done(None)
                return
            await asyncio.to_thread(maildir.create)
            if not service.lock_maildrop(maildir):
                machine.login_done(None, in_use=True)
                return
            self.maildir = maildir
            infos = await asyncio.to_thread(maildir.messages)
            machine.login_done(mailbox, [Pop3Message(i.key, i.wire_size, i) for i in infos])
        elif isinstance(event, Retrieve):
            assert self.maildir is not None
            try:
                content = await asyncio.to_thread(self.maildir.read, event.message.handle)
            except MaildirError:
                machine.message_gone()
                return
            machine.send_message(content, event.lines)
        elif isinstance(event, StartTls):
            await self._flush()
            try:
                transport = await asyncio.get_running_loop().start_tls(
                    self.transport, self, service.tls, server_side=True)
            except (OSError, _ssl.SSLError, ConnectionError) as exc:
                _log.info("POP3 STLS failed", peer=self.peer, error=repr(exc))
                machine.tls_failed()
                return
            if transport is None:
                machine.tls_failed()
                return
            self.transport = transport
            machine.tls_started()
        elif isinstance(event, Commit):
            assert self.maildir is not None
            maildir = self.maildir
            ok = True

            def apply() -> None:
                nonlocal ok
                for message in event.deleted:
                    try:
                        maildir.remove(message.handle)
                    except OSError:
                        ok = False
                for message in event.retrieved:
                    if message.handle.subdir == "new":
                        maildir.mark_seen(message.handle)

            await asyncio.to_thread(apply)
            machine.committed(ok)
