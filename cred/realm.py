"""Services and the realm that routes logins to them.

A :class:`Service` (a PB service in the classic sense, not the
application-framework ``services.Service``) is a named collection of
perspectives.  :class:`ServiceRealm` holds several and answers the portal's
``request_avatar`` for a ``PerspectiveKey(identity, service, perspective)``
with ``services[service].get_perspective(perspective)``.  The keyring was
already checked by the portal; the realm only finds (or makes) the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from .errors import Unauthorized
from .interfaces import IRealm, IService
from .portal import _is_awaitable
from .perspective import PerspectiveKey

__all__ = ["Service", "ServiceRealm", "ANONYMOUS_PERSPECTIVE"]

#: The perspective name :meth:`Service.get_anonymous_perspective` uses.
ANONYMOUS_PERSPECTIVE = "anonymous"


async def _resolve(value: Any) -> Any:
    return await value if _is_awaitable(value) else value


@implementer(IService)
class Service:
    """A named set of perspectives, created on demand.

    ``perspectives`` maps names to avatar objects.  :meth:`get_perspective`
    returns the existing one or asks :meth:`create_perspective` (a hook that
    returns None by default: only perspectives put in the dict exist).
    Subclasses may make either method ``async``.  ``allow_anonymous`` lets
    anonymous logins in, to the perspective :data:`ANONYMOUS_PERSPECTIVE`.
    """

    allow_anonymous: bool = False

    def __init__(self, name: str, *, allow_anonymous: bool | None = None) -> None:
        self.name = name
        if allow_anonymous is not None:
            self.allow_anonymous = allow_anonymous
        self.perspectives: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def create_perspective(self, name: str) -> Any:
        """Make the perspective ``name`` (hook); None means there is none."""
        return None

    def get_perspective(self, name: str) -> Any:
        try:
            return self.perspectives[name]
        except KeyError:
            pass
        perspective = self.create_perspective(name)
        if perspective is None:
            raise KeyError(f"service {self.name!r} has no perspective {name!r}")
        self.perspectives[name] = perspective
        return perspective

    def get_anonymous_perspective(self, name: str | None) -> Any:
        """An anonymous login gets :data:`ANONYMOUS_PERSPECTIVE` and nothing
        else (asking for another name is refused)."""
        if not self.allow_anonymous or name not in (None, ANONYMOUS_PERSPECTIVE):
            raise KeyError("anonymous logins cannot take that perspective")
        return self.get_perspective(ANONYMOUS_PERSPECTIVE)

    def logout(self, perspective_name: str | None, avatar: Any, mind: Any) -> None:
        """Called once when a session ends (hook; does nothing)."""


def _pick_interface(avatar: Any, interfaces: tuple) -> Any:
    if not interfaces:
        return None
    for interface in interfaces:
        if interface.providedBy(avatar):
            return interface
    raise KeyError(f"{avatar!r} provides none of {interfaces!r}")


@implementer(IRealm)
class ServiceRealm:
    """Routes ``PerspectiveKey(identity, service, perspective)`` to
    ``services[service].get_perspective(perspective)``.

    Logins that name no service are refused, as are anonymous logins to a
    service without ``allow_anonymous``.  The returned ``logout`` calls the
    service's ``logout`` hook, once.
    """

    def __init__(self, *services: Any) -> None:
        self.services: dict[str, Any] = {}
        for service in services:
            self.add_service(service)

    def add_service(self, service: Any) -> None:
        if service.name in self.services:
            raise ValueError(f"a service named {service.name!r} is already in this realm")
        self.services[service.name] = service

    async def request_avatar(
        self, avatar_id: PerspectiveKey, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if not isinstance(avatar_id, PerspectiveKey) or avatar_id.service is None:
            raise KeyError("ServiceRealm only admits logins that name a service")
        service = self.services[avatar_id.service]
        if avatar_id.is_anonymous:
            if not getattr(service, "allow_anonymous", False):
                raise Unauthorized()
            avatar = await _resolve(service.get_anonymous_perspective(avatar_id.perspective))
        else:
            avatar = await _resolve(service.get_perspective(avatar_id.perspective))
        interface = _pick_interface(avatar, interfaces)
        done = False

        def logout() -> None:
            nonlocal done
            if not done:
                done = True
                service.logout(avatar_id.perspective, avatar, mind)

        return interface, avatar, logout
