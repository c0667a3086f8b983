"""The front's user directory: ``/``, ``/~NAME/`` and ``/NAME.twistd/``.

Homes come from the password database, or from ``DIR/NAME`` with
``--home-base DIR`` (then the home directory's owner stands for the user).
A ``public_html`` or a ``.pb-web.sock`` is only used if the user owns it;
otherwise the front logs why and answers 404, as if it were not there.
"""

from __future__ import annotations

import html
import logging
import os
import pwd
import re
import stat
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ._core import HTTPError, Request, Resource
from ._relay import Mount, RelayResource, SocketConnector
from ._static import File

__all__ = ["Homes", "UserDirectory", "SOCKET_NAME", "PUBLIC_HTML"]

_log = logging.getLogger("pb.web.users")

SOCKET_NAME = ".pb-web.sock"
PUBLIC_HTML = "public_html"

# POSIX portable user names, as useradd accepts them.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")


def valid_user_name(name: str) -> bool:
    return bool(_NAME.match(name)) and name not in (".", "..")


@dataclass(frozen=True)
class Home:
    name: str
    path: str
    uid: int


class Homes:
    """Where users live: the password database, or ``base/NAME``."""

    def __init__(self, base: str | None = None) -> None:
        self.base = os.path.abspath(base) if base is not None else None

    def find(self, name: str) -> Home | None:
        if not valid_user_name(name):
            return None
        if self.base is not None:
            path = os.path.join(self.base, name)
            try:
                info = os.lstat(path)
            except OSError:
                return None
            if not stat.S_ISDIR(info.st_mode):
                return None
            return Home(name, path, info.st_uid)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return Home(name, entry.pw_dir, entry.pw_uid)

    def names(self) -> list[str]:
        if self.base is not None:
            try:
                return sorted(n for n in os.listdir(self.base) if valid_user_name(n))
            except OSError:
                return []
        return sorted({entry.pw_name for entry in pwd.getpwall() if valid_user_name(entry.pw_name)})


def owned_path(home: Home, name: str, want_dir: bool) -> str | None:
    """``home/name`` if it exists, is of the right kind and is owned by the
    home's user; None (and a log line saying why) otherwise."""
    path = os.path.join(home.path, name)
    try:
        info = os.stat(path) if want_dir else os.lstat(path)
    except OSError:
        return None
    kind_ok = stat.S_ISDIR(info.st_mode) if want_dir else stat.S_ISSOCK(info.st_mode)
    if not kind_ok:
        return None
    if info.st_uid != home.uid:
        _log.warning("refusing %s: it is owned by uid %d, not by %s (uid %d)",
                     path, info.st_uid, home.name, home.uid)
        return None
    return path


class _Listing(Resource):
    is_leaf = True

    def __init__(self, directory: UserDirectory) -> None:
        super().__init__()
        self.directory = directory

    def render_GET(self, request: Request) -> bytes:
        if request.postpath and request.postpath != [""]:
            raise HTTPError(404, f"no resource at {request.path}")
        rows = []
        for name in self.directory.homes.names():
            links = []
            home = self.directory.homes.find(name)
            if home is None:
                continue
            if owned_path(home, PUBLIC_HTML, True) is not None:
                links.append(f'<a href="/~{quote(name)}/">~{html.escape(name)}</a>')
            if (owned_path(home, SOCKET_NAME, False) is not None
                    or name in self.directory.published):
                links.append(f'<a href="/{quote(name)}.twistd/">{html.escape(name)}.twistd</a>')
            if links:
                rows.append(f"<li>{html.escape(name)}: {' '.join(links)}</li>")
        for name in sorted(self.directory.published):
            if self.directory.homes.find(name) is None:
                rows.append(f'<li>{html.escape(name)}: <a href="/{quote(name)}.twistd/">'
                            f"{html.escape(name)}.twistd</a></li>")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Users</title>"
                "</head>\n<body><h1>Users</h1>\n<ul>\n" + "\n".join(rows)
                + "\n</ul></body></html>\n").encode("utf-8")


class UserDirectory(Resource):
    """The front's root: the user list, ``~NAME`` and ``NAME.twistd``.

    ``published`` maps names to the relays of personal servers that logged in
    (``--publish-to``); ``mounts`` has the counters of every personal server
    the front has relayed to.  ``fallback`` (a ``File`` for ``--static``)
    answers any other path.
    """

    def __init__(self, homes: Homes, *, relay_timeout: float = 30.0,
                 prefer_personal: bool = False, fallback: Resource | None = None) -> None:
        super().__init__()
        self.homes = homes
        self.relay_timeout = relay_timeout
        self.prefer_personal = prefer_personal
        self.fallback = fallback
        self.published: dict[str, RelayResource] = {}
        self.mounts: dict[str, Mount] = {}
        self._sockets: dict[str, RelayResource] = {}
        self._recent: dict[str, tuple[RelayResource, float]] = {}
        self.listing = _Listing(self)

    def get_child(self, segment: str, request: Request) -> Resource | None:
        if segment == "":
            return self.listing
        if segment.startswith("~"):
            name = segment[1:]
            if self.prefer_personal and name in self.published:
                return self.published[name]
            home = self.homes.find(name)
            if home is None:
                return None
            public = owned_path(home, PUBLIC_HTML, True)
            return File(public) if public is not None else None
        if segment.endswith(".twistd"):
            name = segment[:-len(".twistd")]
            if name in self.published:
                return self.published[name]
            return self._socket_relay(name)
        if self.fallback is not None:
            return _Fallback(self.fallback)
        return None

    #: Seconds a relay found for a user is used without looking the user's
    #: home up again (a lookup per request measured ~7% of the front's time).
    RECHECK = 1.0

    def _socket_relay(self, name: str) -> Resource | None:
        now = time.monotonic()
        found = self._recent.get(name)
        if found is not None and found[1] > now and self._sockets.get(name) is found[0]:
            return found[0]
        home = self.homes.find(name)
        if home is None:
            self._recent.pop(name, None)
            return None
        path = os.path.join(home.path, SOCKET_NAME)
        relay = self._sockets.get(name)
        if relay is None or relay.connector.path != path or relay.connector.owner_uid != home.uid:
            mount = self.mounts.get(name)
            if mount is None or mount.kind != "socket":
                mount = Mount(name, "socket")
                self.mounts[name] = mount
            relay = RelayResource(SocketConnector(path, home.uid, mount),
                                  timeout=self.relay_timeout)
            self._sockets[name] = relay
        self._recent[name] = (relay, now + self.RECHECK)
        return relay

    def publish(self, name: str, connector: Any) -> RelayResource:
        """Mount a personal server that logged in (``--publish-to``)."""
        relay = RelayResource(connector, timeout=self.relay_timeout)
        self.published[name] = relay
        self.mounts[name] = connector.mount
        return relay

    def unpublish(self, name: str, relay: RelayResource | None = None) -> bool:
        current = self.published.get(name)
        if current is None or (relay is not None and current is not relay):
            return False
        del self.published[name]
        if self.mounts.get(name) is current.mount:
            del self.mounts[name]
        return True

    async def unmount(self, name: str) -> bool:
        """Drop a personal server's mount and close the front's connection to it."""
        found = False
        relay = self.published.get(name)
        if relay is not None:
            found = True
            self.unpublish(name)
            await relay.connector.close()
        relay = self._sockets.pop(name, None)
        if relay is not None:
            found = True
            self.mounts.pop(name, None)
            await relay.connector.close()
        return found

    async def close(self) -> None:
        for relay in list(self._sockets.values()) + list(self.published.values()):
            await relay.connector.close()
        self._sockets.clear()


class _Fallback(Resource):
    """Hands a path the user directory does not know to the static site,
    from the segment it was found at."""

    is_leaf = True

    def __init__(self, resource: Resource) -> None:
        super().__init__()
        self.resource = resource

    async def render(self, request: Request) -> Any:
        from ._core import traverse
        # Put back the segment the directory consumed to find us.
        request.postpath.insert(0, request.prepath.pop())
        request.raw_postpath.insert(0, request.raw_prepath.pop())
        resource = traverse(self.resource, request)
        return await resource.render(request)
