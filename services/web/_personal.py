"""``PersonalService``: a user's own web server, reached by a front over PB.

It publishes a :class:`~services.web._relay.Publisher` on a UNIX socket
(``~/.pb-web.sock`` by default) created with owner-only permissions, and/or
logs in to a front over TCP (``--publish-to``) as its account, with the
publisher as its mind, and logs in again after the connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
from typing import Any

import broker
from services import Service, get_logger

from ._asgi import ASGIResource
from ._core import Resource
from ._pb import PUBLISH_SERVICE
from ._relay import Publisher
from ._wsgi import WSGIResource

__all__ = ["PersonalService"]

_log = get_logger("pb.web.personal")


class PersonalService(Service):
    def __init__(self, name: str | None = "web", *, resource: Resource,
                 socket_path: str | None = None,
                 publish_to: tuple[str, int] | None = None, user: str | None = None,
                 password: str | None = None, publish_ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, apps: list[Resource] | None = None,
                 debug: bool = False, retry: float = 1.0, show_banner: bool = True) -> None:
        super().__init__(name)
        if socket_path is None and publish_to is None:
            raise ValueError("a personal server needs a socket path or a front to publish to")
        if publish_to is not None and (not user or password is None):
            raise ValueError("--publish-to needs --user and a password")
        self.publisher = Publisher(resource, debug=debug)
        self.socket_path = socket_path
        self.publish_to = publish_to
        self.user = user
        self.password = password
        self.publish_ssl = publish_ssl
        self.server_hostname = server_hostname
        self.apps = apps or []
        self.retry = retry
        self.show_banner = show_banner
        self.server: broker.Server | None = None
        self.connection: Any = None
        #: Set while logged in to the front (for tests and the banner).
        self.published = asyncio.Event()
        self.where: str | None = None

    async def on_start(self) -> None:
        started: list[ASGIResource] = []
        try:
            for app in self.apps:
                if isinstance(app, ASGIResource):
                    await app.startup()
                    started.append(app)
            if self.socket_path is not None:
                await self._listen()
        except BaseException:
            for app in started:
                await app.shutdown()
            raise
        if self.publish_to is not None:
            self.create_task(self._publish_loop(), name="web:publish")

    async def _listen(self) -> None:
        path = self.socket_path
        assert path is not None
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot make {path}: {directory} is not a directory")
        # Owner-only from the moment it exists: bind under a umask that
        # gives nobody else access, then make sure of the mode.
        old = os.umask(0o177)
        try:
            self.server = await broker.serve(self.publisher, path=path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        _log.info("listening", socket=path)

    async def _publish_loop(self) -> None:
        assert self.publish_to is not None
        host, port = self.publish_to
        delay = self.retry
        while True:
            try:
                perspective = await broker.login(
                    host, port, self.user or "", self.password or "",
                    service=PUBLISH_SERVICE, mind=self.publisher, ssl=self.publish_ssl,
                    server_hostname=self.server_hostname, timeout=10)
            except broker.Unauthorized:
                _log.error("the front refused the login; check the account and its "
                           "web-publish grant", front=f"{host}:{port}", user=self.user)
                await asyncio.sleep(max(delay, 5.0))
                continue
            except (OSError, broker.PBError) as exc:
                _log.warning("cannot reach the front; retrying", front=f"{host}:{port}",
                             error=str(exc) or type(exc).__name__, retry=f"{delay:g}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = self.retry
            self.connection = perspective.connection
            try:
                self.where = await perspective.call_remote("where")
                self.published.set()
                _log.info("published", front=f"{host}:{port}", path=self.where)
                await self.connection.wait_closed()
            except (broker.PBError, OSError):
                pass
            finally:
                self.published.clear()
                conn, self.connection = self.connection, None
                with contextlib.suppress(Exception):
                    await conn.close("personal server stopping")
            _log.warning("lost the front; logging in again", front=f"{host}:{port}")
            await asyncio.sleep(delay)

    async def on_stop(self) -> None:
        server, self.server = self.server, None
        try:
            if server is not None:
                remaining = self.grace_remaining()
                await server.shutdown(grace=5.0 if remaining is None else min(5.0, remaining))
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()
            conn, self.connection = self.connection, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close("personal server stopping")
            for app in self.apps:
                if isinstance(app, ASGIResource):
                    with contextlib.suppress(Exception):
                        await app.shutdown()
                elif isinstance(app, WSGIResource):
                    app.close()

    def banner(self) -> str | None:
        if not self.show_banner:
            return None
        lines = []
        if self.socket_path is not None:
            lines.append(f"web personal server: {self.socket_path}")
        if self.publish_to is not None:
            lines.append(f"web personal server publishing to {self.publish_to[0]}:"
                         f"{self.publish_to[1]} as {self.user}")
        return "\n".join(lines)
