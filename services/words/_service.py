"""The words service: the chat, its store, a PB listener and the IRC listeners."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from pathlib import Path
from typing import Any

import broker
from services import Service, account_store, ensure_account, ensure_service_name, get_logger, stop_serving

from ._core import (
    DEFAULT_MAX_GROUPS,
    DEFAULT_MAX_GROUPS_PER_USER,
    DEFAULT_MAX_MESSAGE,
    DEFAULT_SCROLLBACK,
    Chat,
)
from ._admin import ADMIN_SERVICE, AdminCredService, AdminSite
from ._irc import IRCWorld
from ._pb import SERVICE_NAME, PBFace
from ._server import IRCLimits, IRCServer
from ._store import FILE_NAME, WordsStore

__all__ = ["WordsService", "DEFAULT_PB_PORT", "DEFAULT_IRC_PORT", "DEFAULT_IRC_TLS_PORT"]

DEFAULT_PB_PORT = 8787
DEFAULT_IRC_PORT = 6667
DEFAULT_IRC_TLS_PORT = 6697

_log = get_logger("pb.words")


def _url(scheme: str, host: str, port: Any) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class WordsService(Service):
    """One chat, reachable over PB (cred service ``words``) and IRC.

    ``pb_port``/``irc_port`` None leaves that face out; ``pb_socket`` puts
    the PB face on a UNIX socket instead of TCP.  The IRC TLS port opens
    only with ``tls_cert`` (and ``tls_key``, unless the key is in the
    certificate file).  State: ``<data_dir>/words.sqlite3``.
    """

    def __init__(
        self,
        name: str | None = "words",
        *,
        portal: Any,
        data_dir: str | Path,
        host: str = "127.0.0.1",
        pb_port: int | None = DEFAULT_PB_PORT,
        pb_socket: str | None = None,
        irc_port: int | None = DEFAULT_IRC_PORT,
        irc_tls_port: int = DEFAULT_IRC_TLS_PORT,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        scrollback: int = DEFAULT_SCROLLBACK,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_groups: int = DEFAULT_MAX_GROUPS,
        max_groups_per_user: int = DEFAULT_MAX_GROUPS_PER_USER,
        irc_limits: IRCLimits | None = None,
        server_name: str = "words",
        motd: list[str] | None = None,
        users: list[tuple[str, str]] | None = None,
        grace: float = 10.0,
        service_name: str = SERVICE_NAME,
        web_admin: bool = True,
        admin_path: str = "/words/",
        admins: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(name)
        self.portal = portal
        self.store = account_store(portal)  # the accounts (stop_serving closes it)
        self.data_dir = Path(data_dir)
        self.host = host
        self.pb_port = pb_port
        self.pb_socket = pb_socket
        self.irc_port = irc_port
        self.irc_tls_port: int | None = irc_tls_port if tls_cert else None
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.scrollback = scrollback
        self.max_message = max_message
        self.max_groups = max_groups
        self.max_groups_per_user = max_groups_per_user
        self.irc_limits = irc_limits or IRCLimits()
        self.server_name = server_name
        self.motd = motd or []
        self.users = list(users or [])
        self.grace = grace
        self.service_name = service_name
        self.web_admin = web_admin
        self.admin_path = admin_path
        self.admins = list(admins or [])
        self.admin_site: AdminSite | None = None
        self.admin_realm: AdminCredService | None = None
        self._mounted_on: Any = None
        self.chat: Chat | None = None
        self.words_store: WordsStore | None = None
        self.face: PBFace | None = None
        self.realm_service: Any = None
        self.server: broker.Server | None = None
        self.irc: IRCServer | None = None

    def _tls_context(self) -> _ssl.SSLContext:
        context = _ssl.create_default_context(_ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert or "", self.tls_key)
        except (OSError, _ssl.SSLError) as exc:
            raise RuntimeError(f"cannot load the IRC TLS certificate {self.tls_cert} "
                               f"(key {self.tls_key or 'in the same file'}): {exc}") from None
        return context

    async def on_start(self) -> None:
        realm = self.portal.realm
        if self.service_name in realm.services:
            raise RuntimeError(f"the application's realm already has a cred service "
                               f"{self.service_name!r}; run one words service per application")
        context = self._tls_context() if self.irc_tls_port is not None else None
        store = WordsStore(self.data_dir / FILE_NAME, scrollback=self.scrollback)
        chat = Chat(scrollback=self.scrollback, max_message=self.max_message,
                    max_groups=self.max_groups, max_groups_per_user=self.max_groups_per_user)
        try:
            await asyncio.to_thread(store.open)
            groups = await asyncio.to_thread(store.load, chat)
        except BaseException:
            await asyncio.to_thread(store.close)
            raise
        store.attach(chat)
        self.words_store, self.chat = store, chat
        self.face = PBFace(chat, self.service_name)
        self.realm_service = self.face.cred_service
        try:
            await ensure_service_name(self.store, self.service_name)
            for user, password in self.users:
                created = await ensure_account(self.store, user, password,
                                               [(self.service_name, None)])
                _log.info("account created" if created else "account password reset",
                          user=user, grant=f"{self.service_name}:{user}")
            realm.add_service(self.realm_service)
            if self.pb_socket is not None:
                self.server = await broker.serve(self.portal, path=self.pb_socket,
                                                 services={self.service_name})
            elif self.pb_port is not None:
                self.server = await broker.serve(self.portal, self.host, self.pb_port,
                                                 services={self.service_name})
                self.pb_port = self.server.port or self.pb_port
            if self.irc_port is not None:
                world = IRCWorld(chat, server_name=self.server_name, motd=self.motd)
                self.irc = IRCServer(world, self.portal, service_name=self.service_name,
                                     limits=self.irc_limits)
                self.irc_port = await self.irc.listen(self.host, self.irc_port)  # type: ignore[assignment]
                if context is not None and self.irc_tls_port is not None:
                    self.irc_tls_port = await self.irc.listen(  # type: ignore[assignment]
                        self.host, self.irc_tls_port, ssl=context)
            if self.web_admin:
                await self._mount_admin()
        except BaseException:
            await self._close_all()
            raise
        _log.info("started", groups=groups, pb=self.pb_address, irc=self.irc_address,
                  irc_tls=self.irc_tls_address)

    async def _mount_admin(self) -> None:
        """Add the admin pages to the application's web front, if it has one."""
        from services.web import find_web_service

        web = find_web_service(self)
        for user, password in self.admins:
            await ensure_account(self.store, user, password, [(ADMIN_SERVICE, None)])
            _log.info("administrator account ready", user=user)
        if web is None:
            if self.admins:
                _log.info("no web front in this application: no web administration")
            return
        await ensure_service_name(self.store, ADMIN_SERVICE)
        realm = self.portal.realm
        if ADMIN_SERVICE not in realm.services:
            self.admin_realm = AdminCredService()
            realm.add_service(self.admin_realm)
        self.admin_site = AdminSite(self, self.admin_path)
        web.mount_resource(self.admin_path, self.admin_site.resource())
        self._mounted_on = web
        _log.info("web administration mounted", path=self.admin_site.mount)

    def _unmount_admin(self) -> None:
        web, self._mounted_on = self._mounted_on, None
        site, self.admin_site = self.admin_site, None
        if web is not None and site is not None:
            web.unmount_resource(site.mount)
            site.close()
        if self.admin_realm is not None:
            services = self.portal.realm.services
            if services.get(ADMIN_SERVICE) is self.admin_realm:
                del services[ADMIN_SERVICE]
            self.admin_realm = None

    def end_sessions(self, user: str, reason: str) -> int:
        """End every PB and IRC session of *user* and take the user out of
        the rooms (an account deleted by an administrator); returns how many
        sessions were ended."""
        chat = self.chat
        if chat is None:
            return 0
        sessions = chat.sessions_of(user)
        for session in sessions:
            session.end(reason)
        for group in chat.groups_of(user):
            chat.remove_member(group.name, user, reason)
        return len(sessions)

    @property
    def pb_address(self) -> str | None:
        if self.pb_socket is not None:
            return f"pb+unix://{self.pb_socket}"
        return None if self.pb_port is None else _url("pb", self.host, self.pb_port)

    @property
    def irc_address(self) -> str | None:
        return None if self.irc_port is None else _url("irc", self.host, self.irc_port)

    @property
    def irc_tls_address(self) -> str | None:
        return None if self.irc_tls_port is None else _url("ircs", self.host, self.irc_tls_port)

    async def _close_all(self) -> None:
        self._unmount_admin()
        irc, self.irc = self.irc, None
        server, self.server = self.server, None
        try:
            if irc is not None:
                remaining = self.grace_remaining()
                await irc.close(grace=min(self.grace, 2.0 if remaining is None else remaining))
        finally:
            try:
                await stop_serving(self, server)
            finally:
                store, self.words_store = self.words_store, None
                if store is not None:
                    await asyncio.to_thread(store.close)
                    if store.error is not None:
                        _log.error("some chat changes could not be saved",
                                   error=str(store.error))

    async def on_stop(self) -> None:
        await self._close_all()

    def banner(self) -> str:
        faces = [a for a in (self.pb_address, self.irc_address, self.irc_tls_address) if a]
        if self._mounted_on is not None and self.admin_site is not None:
            faces.append(self._mounted_on.url.rstrip("/") + self.admin_site.mount)
        return f"{self.service_name}: " + " ".join(faces)
