"""What users wait for on one connection: the handshake's outcome, the close
(with its reason) and the socket's own close, which comes later after a
lingering close.  Plain futures; the adapter says when each thing happened.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

__all__ = ["Lifecycle"]


class Lifecycle:
    """The ready, closed and socket-closed futures of one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: asyncio.Future = loop.create_future()
        self._closed: asyncio.Future = loop.create_future()
        self._socket_closed: asyncio.Future = loop.create_future()
        # wait_closed() callers: woken directly once both closes are done
        # (a shield per future would cost a loop turn each).
        self._waiters: list[asyncio.Future] = []
        self._closer: asyncio.Task | None = None

    @property
    def is_ready(self) -> bool:
        """The handshake is over, one way or the other."""
        return self._ready.done()

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    def handshake_error(self) -> BaseException | None:
        """Why the handshake failed, once it has (else None)."""
        ready = self._ready
        return ready.exception() if ready.done() else None

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def ready(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def fail_ready(self, exc: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # mark retrieved: nobody may be waiting

    def closed(self, reason: str) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)
            self._wake()

    def closed_after(self, running: list[asyncio.Task], reason: str,
                     then: Callable[[], Any]) -> None:
        """Closed with ``reason``, after ``then()``, once the calls in
        ``running`` have finished cancelling: nothing of the connection
        outlives wait_closed()."""
        if not running:
            then()
            self.closed(reason)
            return

        async def finish() -> None:
            await asyncio.wait(running)
            then()
            self.closed(reason)
        self._closer = self._loop.create_task(finish())

    def socket_closed(self) -> None:
        if not self._socket_closed.done():
            self._socket_closed.set_result(None)
            self._wake()

    async def wait_closed(self) -> str:
        """Wait until closed, socket included; return why."""
        if not (self._closed.done() and self._socket_closed.done()):
            # Our own future: cancelling this wait cannot touch the others.
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter
        return self._closed.result()

    def _wake(self) -> None:
        if self._closed.done() and self._socket_closed.done():
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # a cancelled wait_closed() leaves its own behind
                    waiter.set_result(None)
