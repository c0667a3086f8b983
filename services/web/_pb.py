"""The PB face of the web service.

Two cred services, both in the application's shared portal:

``web-publish``
    A personal server on another machine logs in as its account with its
    :class:`~services.web._relay.Publisher` as the *mind*; the front mounts
    it at ``/NAME.twistd/`` where NAME is the perspective the account's
    keyring granted (``web-publish:alice``), so nobody publishes under a
    name their account was not given.  When the connection drops, the
    portal calls ``detached`` and the mount disappears.

``web``
    Administrators: ``mounts()`` lists the personal servers with their
    counters, ``unmount(name)`` drops one.

The front's PB listener offers exactly these two (the login-binding rule).
"""

from __future__ import annotations

import logging
from typing import Any

import broker
import cred

from ._relay import Mount, PublishedConnector, RelayResource

__all__ = ["ADMIN_SERVICE", "PUBLISH_SERVICE", "AdminPerspective", "PublishPerspective",
           "WebAdminRealm", "WebPublishRealm"]

PUBLISH_SERVICE = "web-publish"
ADMIN_SERVICE = "web"

_log = logging.getLogger("pb.web.pb")


class PublishPerspective(broker.Perspective):
    """A personal server logged in to publish itself as ``name``."""

    def __init__(self, name: str, directory: Any) -> None:
        self.name = name
        self.directory = directory
        self._relays: dict[int, RelayResource] = {}

    def attached(self, mind: Any) -> None:
        if not isinstance(mind, broker.RemoteReference):
            _log.warning("%s logged in to publish without a publisher; nothing mounted", self.name)
            return
        connector = PublishedConnector(mind, Mount(self.name, "published"))
        old = self.directory.published.get(self.name)
        relay = self.directory.publish(self.name, connector)
        self._relays[id(mind)] = relay
        _log.info("mounted %s's personal server at /%s.twistd/%s", self.name, self.name,
                  " (replacing the previous one)" if old is not None else "")

    def detached(self, mind: Any) -> None:
        relay = self._relays.pop(id(mind), None)
        if relay is not None and self.directory.unpublish(self.name, relay):
            _log.info("unmounted %s's personal server (it went away)", self.name)

    def perspective_where(self) -> str:
        """The path the front serves this personal server at."""
        return f"/{self.name}.twistd/"


class WebPublishRealm(cred.Service):
    def __init__(self, directory: Any) -> None:
        super().__init__(PUBLISH_SERVICE)
        self.directory = directory

    def create_perspective(self, name: str) -> PublishPerspective:
        return PublishPerspective(name, self.directory)


class AdminPerspective(broker.Perspective):
    """An administrator of the front."""

    def __init__(self, name: str, front: Any) -> None:
        self.name = name
        self.front = front

    def perspective_mounts(self) -> list[dict[str, Any]]:
        """Every personal server the front knows, with its request and byte counts."""
        directory = self.front.directory
        if directory is None:
            return []
        return [mount.info() for _, mount in sorted(directory.mounts.items())]

    async def perspective_unmount(self, name: str) -> bool:
        """Drop ``name``'s mount and close the front's connection to it."""
        if not isinstance(name, str):
            raise TypeError("unmount takes a user name")
        directory = self.front.directory
        if directory is None:
            return False
        done = await directory.unmount(name)
        if done:
            _log.info("unmounted %s (asked by %s)", name, self.name)
        return done

    def perspective_stats(self) -> dict[str, Any]:
        """The HTTP server's counters."""
        return self.front.stats()


class WebAdminRealm(cred.Service):
    def __init__(self, front: Any) -> None:
        super().__init__(ADMIN_SERVICE)
        self.front = front

    def create_perspective(self, name: str) -> AdminPerspective:
        return AdminPerspective(name, self.front)
