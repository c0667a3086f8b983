"""``WebService``: the HTTP listener (static site or user front) as a service.

It owns the :class:`HTTPServer`, the ASGI lifespans of the applications it
serves, and, for a front that accepts personal servers from other machines
or administrators, a PB listener that offers only ``web-publish`` and
``web`` (the login-binding rule: no other service of the shared portal is
reachable through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import time
from typing import Any

import broker
from services import Service, ensure_service_name, get_logger

from ._asgi import ASGIResource
from ._core import Resource
from ._http import HTTPLimits
from ._mounts import MountedRoot
from ._pb import ADMIN_SERVICE, PUBLISH_SERVICE, WebAdminRealm, WebPublishRealm
from ._server import HTTPServer
from ._users import UserDirectory
from ._wsgi import WSGIResource

__all__ = ["WebService", "find_web_service"]

_log = get_logger("pb.web")


def _host_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"


class WebService(Service):
    """Serves ``resource`` over HTTP on ``host:port``.

    ``directory`` is the :class:`UserDirectory` when this is a user front;
    with ``pb_port`` set (and a ``portal``), personal servers can publish
    themselves and administrators can log in through PB.

    Other services of the same application can add pages to the site with
    :meth:`mount_resource` (``/words/`` for the chat service's web admin).
    They find this service through the application: ``pb run web`` names it
    ``web``, so ``application.services["web"]``, or, whatever its name and
    from any service of the tree, :func:`find_web_service` (``None`` when
    the application serves no web)::

        class WordsService(Service):
            async def on_start(self) -> None:
                web = find_web_service(self)
                if web is not None:
                    web.mount_resource("/words/", WordsAdmin(self))

            async def on_stop(self) -> None:
                web = find_web_service(self)
                if web is not None:
                    web.unmount_resource("/words/")

    Every service is built before any starts, so looking it up from
    ``on_start`` works whichever of the two plug-ins was named first.
    """

    def __init__(self, name: str | None = "web", *, resource: Resource,
                 host: str = "127.0.0.1", port: int = 8080,
                 ssl: _ssl.SSLContext | None = None, limits: HTTPLimits | None = None,
                 debug: bool = False, directory: UserDirectory | None = None,
                 portal: Any = None, pb_host: str = "127.0.0.1", pb_port: int | None = None,
                 pb_ssl: _ssl.SSLContext | None = None, apps: list[Resource] | None = None,
                 grace: float = 10.0, show_banner: bool = True) -> None:
        super().__init__(name)
        self.resource = resource
        self._root = MountedRoot(resource)
        self.host = host
        self.port = port
        self.ssl = ssl
        self.limits = limits or HTTPLimits()
        self.debug = debug
        self.directory = directory
        self.portal = portal
        self.pb_host = pb_host
        self.pb_port = pb_port
        self.pb_ssl = pb_ssl
        self.apps = apps or []
        self.grace = grace
        self.show_banner = show_banner
        self.http: HTTPServer | None = None
        self.pb_server: broker.Server | None = None
        self._realms: list[Any] = []
        self.started_at: float | None = None

    def mount_resource(self, path: str, resource: Resource) -> None:
        """Serve ``resource`` (a tree: traversal goes on below it) under
        ``path``, a prefix such as ``"/words/"`` or ``"/admin/words/"``.

        Works before the service starts and while it runs (the next request
        sees it).  A mount shadows whatever the site had under that prefix;
        the longest mounted prefix wins.  ``/words`` redirects to
        ``/words/``, and ``/words/`` asks the tree for its ``""`` child, or
        renders the tree's root if it has none.  Raises ``ValueError`` for
        ``/``, a malformed prefix or one already mounted.  An ASGI
        application's lifespan is the caller's to run (``ASGIResource.startup``).
        """
        prefix = self._root.mount(path, resource)
        _log.info("mounted", path="/" + "/".join(prefix) + "/",
                  resource=type(resource).__name__)

    def unmount_resource(self, path: str) -> bool:
        """Stop serving what :meth:`mount_resource` put at ``path``; False if
        nothing was mounted there.  Requests already running finish."""
        removed = self._root.unmount(path)
        if removed is not None:
            _log.info("unmounted", path=path)
        return removed is not None

    @property
    def mounted_paths(self) -> list[str]:
        """The prefixes mounted with :meth:`mount_resource`, sorted."""
        return sorted("/" + "/".join(prefix) + "/" for prefix in self._root.mounts)

    @property
    def url(self) -> str:
        return _host_url("https" if self.ssl else "http", self.host, self.port)

    def stats(self) -> dict[str, Any]:
        http = self.http
        return {"requests": http.requests if http else 0,
                "connections": http.connections if http else 0,
                "mounts": len(self.directory.mounts) if self.directory else 0,
                "uptime": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0}

    async def on_start(self) -> None:
        started_apps: list[ASGIResource] = []
        try:
            for app in self.apps:
                if isinstance(app, ASGIResource):
                    await app.startup()
                    started_apps.append(app)
            self.http = HTTPServer(self._root, limits=self.limits, debug=self.debug)
            address = await self.http.listen(self.host, self.port, ssl=self.ssl)
            self.port = address[1]
            if self.pb_port is not None:
                await self._start_pb()
        except BaseException:
            if self.http is not None:
                await self.http.close()
                self.http = None
            for app in started_apps:
                await app.shutdown()
            self._leave_realm()
            raise
        self.started_at = time.monotonic()
        _log.info("listening", url=self.url,
                  mode="users" if self.directory is not None else "site")

    async def _start_pb(self) -> None:
        from services import account_store

        if self.portal is None or self.directory is None:
            raise ValueError("the web PB listener needs the user front (--users) and a portal")
        realm = self.portal.realm
        for cred_name in (PUBLISH_SERVICE, ADMIN_SERVICE):
            if cred_name in realm.services:
                raise RuntimeError(f"the application's realm already has a cred service "
                                   f"{cred_name!r}; run one web front per application")
        store = account_store(self.portal)
        for cred_name in (PUBLISH_SERVICE, ADMIN_SERVICE):
            await ensure_service_name(store, cred_name)
        self._realms = [WebPublishRealm(self.directory), WebAdminRealm(self)]
        for realm_service in self._realms:
            realm.add_service(realm_service)
        self.pb_server = await broker.serve(self.portal, self.pb_host, self.pb_port,
                                            ssl=self.pb_ssl,
                                            services={PUBLISH_SERVICE, ADMIN_SERVICE})
        self.pb_port = self.pb_server.port or self.pb_port
        _log.info("PB listening", address=f"{self.pb_host}:{self.pb_port}",
                  services=f"{PUBLISH_SERVICE},{ADMIN_SERVICE}")

    def _leave_realm(self) -> None:
        if self.portal is None:
            return
        services = self.portal.realm.services
        for realm_service in self._realms:
            if services.get(realm_service.name) is realm_service:
                del services[realm_service.name]
        self._realms = []

    async def on_stop(self) -> None:
        http, self.http = self.http, None
        pb_server, self.pb_server = self.pb_server, None
        try:
            remaining = self.grace_remaining()
            grace = self.grace if remaining is None else min(self.grace, remaining)
            if http is not None:
                await http.close(grace=grace)
            if pb_server is not None:
                await pb_server.shutdown(grace=min(grace, 1.0))
        finally:
            if http is not None:
                await http.close()
            if pb_server is not None:
                pb_server.close()
                await pb_server.wait_closed()
            self._leave_realm()
            if self.directory is not None:
                await self.directory.close()
            for app in self.apps:
                if isinstance(app, ASGIResource):
                    with contextlib.suppress(Exception):
                        await app.shutdown()
                elif isinstance(app, WSGIResource):
                    app.close()
            if self.portal is not None and self.pb_port is not None:
                from services import account_store
                await asyncio.to_thread(account_store(self.portal).close)

    def banner(self) -> str | None:
        if not self.show_banner:
            return None
        lines = [f"web: {self.url}"]
        if self.pb_server is not None:
            lines.append(f"web PB (publish, admin): pb://{self.pb_host}:{self.pb_port}")
        return "\n".join(lines)


def find_web_service(where: Any, name: str | None = None) -> WebService | None:
    """The :class:`WebService` among the application's top-level services:
    the one called ``name`` if given, else the first one; None if none.

    ``where`` is the :class:`Application`, or any service in its tree (the
    lookup climbs ``parent`` links to the top first).
    """
    while getattr(where, "parent", None) is not None:
        where = where.parent
    services = getattr(where, "services", None)
    if services is None:  # a bare MultiService at the top
        services = {child.name: child for child in where} if hasattr(where, "__iter__") else {}
    if name is not None:
        found = services.get(name)
        return found if isinstance(found, WebService) else None
    for service in services.values():
        if isinstance(service, WebService):
            return service
    return None
