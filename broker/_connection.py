"""``Connection``: one live connection as users see it (both sides have one).

It talks to its adapter only through :class:`ConnectionSide`, the few
operations listed there; it never touches the adapter's futures, lists or
reference tables.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import cred

from ._errors import DeadReference
from ._remote import RemoteReference

__all__ = ["Connection", "ConnectionSide"]


class ConnectionSide(Protocol):
    """What a :class:`Connection` asks of the I/O adapter behind it."""

    @property
    def is_open(self) -> bool: ...
    @property
    def is_closed(self) -> bool: ...
    @property
    def close_reason(self) -> str | None: ...
    @property
    def peer_address(self) -> Any: ...
    @property
    def local_object_count(self) -> int: ...
    @property
    def remote_reference_count(self) -> int: ...
    @property
    def calls_in_progress(self) -> int: ...
    def handshake_error(self) -> BaseException | None: ...
    async def wait_ready(self) -> None: ...
    def root_reference(self) -> RemoteReference: ...
    def add_watcher(self, callback: Callable[[Any], Any]) -> None: ...
    def remove_watcher(self, callback: Callable[[Any], Any]) -> None: ...
    def add_release_hook(self, hook: Callable[[int, Any], Any]) -> None: ...
    def logged_in(self) -> None: ...
    def start_goodbye(self, code: str, reason: str) -> None: ...
    async def wait_closed(self) -> str: ...


class Connection:
    """A live connection, as users see it (both sides have one)."""

    def __init__(self, protocol: ConnectionSide) -> None:
        self._protocol = protocol

    async def root(self) -> RemoteReference:
        """The peer's root object.

        This does not wait for the peer's HELLO: a first call is pipelined
        behind ours, so connect-and-call costs one round trip.  A failed
        handshake fails the call (or raises here, if already known).
        """
        proto = self._protocol
        error = proto.handshake_error()
        if error is not None:
            raise error
        if not proto.is_open:
            raise DeadReference(proto.close_reason or "the connection is closed")
        return proto.root_reference()

    async def wait_ready(self) -> None:
        await self._protocol.wait_ready()

    @property
    def is_open(self) -> bool:
        return self._protocol.is_open

    @property
    def peer_address(self) -> Any:
        return self._protocol.peer_address

    @property
    def local_object_count(self) -> int:
        """How many of our objects the peer currently holds (root excluded)."""
        return self._protocol.local_object_count

    @property
    def remote_reference_count(self) -> int:
        """How many live proxies we hold for the peer's objects."""
        return self._protocol.remote_reference_count

    @property
    def calls_in_progress(self) -> int:
        return self._protocol.calls_in_progress

    def notify_on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        """Run ``callback(connection)`` once when the connection closes."""
        if self._protocol.is_closed:
            raise DeadReference("the connection is already closed")
        self._protocol.add_watcher(callback)

    on_disconnect = notify_on_disconnect

    def dont_notify_on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        self._protocol.remove_watcher(callback)

    async def login(self, username: str, password: str, *, service: str | None = None,
                    perspective: str | None = None, mind: Any = None,
                    cache: cred.ClientCache | None = None) -> RemoteReference:
        """Log in through the peer's portal; return the perspective reference.

        Raises ``Unauthorized`` (one message for every cause).  One connection
        may hold several logins.  ``cache`` holds the client's derived keys and
        tickets (default: ``cred.default_client_cache``).
        """
        from ._login import login_over

        return await login_over(self, username, password, service=service,
                                perspective=perspective, mind=mind, cache=cache)

    async def login_anonymous(self, *, service: str | None = None,
                              perspective: str | None = None,
                              mind: Any = None) -> RemoteReference:
        """Log in without credentials, where the service allows it."""
        from ._login import login_anonymous_over

        return await login_anonymous_over(self, service=service, perspective=perspective,
                                          mind=mind)

    async def close(self, reason: str = "closed by the application") -> None:
        """Say GOODBYE and close; pending calls on both sides fail with ``reason``."""
        self._protocol.start_goodbye("normal", reason)
        await self.wait_closed()

    async def wait_closed(self) -> str:
        """Wait until the connection is closed (its socket too); return why."""
        return await self._protocol.wait_closed()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__name__} {state} peer={self.peer_address}>"
