"""RemoteReference: this side's handle on an object of the peer's."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

import jelly

from ._errors import DeadReference

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["RemoteReference"]


class RemoteReference(jelly.Flavored):
    """A reference to an object on the other side of a connection.

    Calls are visibly remote: ``await ref.call_remote("name", *args)`` runs
    the peer object's ``remote_name`` (or ``perspective_name`` / ``view_name``,
    depending on its flavor).  The call is sent when ``call_remote`` is
    called, so calls made one after another start remotely in that order.

    When the last Python reference to this object goes away (or on
    ``await ref.release()``) the peer is told, and may free its object.
    """

    __slots__ = ("_pb_owner", "_pb_id", "_pb_count", "_pb_released", "_pb_watchers",
                 "__weakref__")

    def __init__(self, owner: Any, object_id: int) -> None:
        self._pb_owner = owner
        self._pb_id = object_id
        self._pb_count = 0
        self._pb_released = False
        self._pb_watchers: list[Callable[[RemoteReference], Any]] | None = None

    def call_remote(self, name: str, /, *args: Any, timeout: float | None = None,
                    **kwargs: Any) -> asyncio.Future[Any]:
        """Call the remote method ``name``; await the result.

        ``timeout`` (seconds) bounds the wait: past it the call fails with
        ``CallTimeout`` and the peer is told to cancel it.  Cancelling the
        awaiting task cancels the call remotely too.
        """
        if self._pb_released:
            raise self._dead()
        return self._pb_owner.send_call(self._pb_id, name, args, kwargs, timeout)

    def call_remote_only(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``name`` without wanting an answer: nothing is sent back, and
        errors raised remotely are only logged there."""
        if self._pb_released:
            raise self._dead()
        self._pb_owner.send_call_only(self._pb_id, name, args, kwargs)

    def _dead(self) -> DeadReference:
        owner = self._pb_owner
        if not owner.is_open:
            # Closing a connection releases its proxies; say why it closed.
            return DeadReference(f"{self!r} cannot be used: "
                                 f"{owner.close_reason or 'the connection is closed'}")
        return DeadReference(f"{self!r} was released")

    async def release(self) -> None:
        """Tell the peer we are done with its object now, rather than when this
        proxy is garbage-collected.  Later calls raise ``DeadReference``."""
        if not self._pb_released:
            self._pb_released = True
            self._pb_owner.proxy_released(self)

    def notify_on_disconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """Run ``callback(ref)`` once when the connection is lost."""
        if self._pb_watchers is None:
            self._pb_watchers = []
        self._pb_watchers.append(callback)

    def dont_notify_on_disconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        if self._pb_watchers and callback in self._pb_watchers:
            self._pb_watchers.remove(callback)

    def _pb_connection_lost(self) -> list[Callable[[RemoteReference], Any]]:
        """The connection closed: this proxy is dead.  Returns the callbacks
        registered with ``notify_on_disconnect``, for the adapter to run."""
        self._pb_released = True
        watchers, self._pb_watchers = self._pb_watchers, None
        return watchers or []

    @property
    def connection(self) -> Connection:
        """The ``Connection`` this reference lives on."""
        return self._pb_owner.connection

    @property
    def is_alive(self) -> bool:
        return not self._pb_released and self._pb_owner.is_open

    async def __aenter__(self) -> RemoteReference:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Close the connection this reference lives on: ``async with me:``
        for the perspective :func:`broker.login` returned, as
        ``with clients.login(...)`` does."""
        connection = self.connection
        if connection is not None:
            await connection.close()

    def __repr__(self) -> str:
        return f"<RemoteReference id={self._pb_id} on {self._pb_owner.describe()}>"

    def __del__(self) -> None:
        if self._pb_released:
            return
        # Gone from here on: telling the loop (from another thread, perhaps)
        # may release the GIL while the loop can still reach this proxy
        # through its weak table, and it must not hand it out again.
        self._pb_released = True
        if self._pb_count:
            try:
                self._pb_owner.proxy_died(self._pb_id, self._pb_count)
            except Exception:  # interpreter shutdown, closed loop: nothing to tell
                pass
