"""Flow control for one connection: reading paused for any of several
reasons at once, and, server side, the cap on bytes waiting for a peer that
does not read (:class:`broker._writes.WriteCap`) with the timer that drops
such a peer.  The adapter owns one :class:`Flow` and hands it the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ._limits import Limits
from ._weak import weak_method
from ._writes import WriteCap

__all__ = ["Flow", "FOR_CACHE_UPDATES", "FOR_WRITES", "shut_writing"]

#: Why reading from the peer is paused (bits of ``Flow.paused``).
FOR_CACHE_UPDATES = 1  # async observe_* updates reached max_outstanding_calls
FOR_WRITES = 2         # the peer is not reading what we send it


class Flow:
    """Back-pressure on one transport.

    ``resumed()`` is called (in a later loop turn) when reading resumes, so
    that frames buffered before the pause are handled; ``slow_reader(reason)``
    when a peer that does not read must be dropped.  Both are held weakly
    (the adapter owns this object: no cycle).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits, *, server_side: bool,
                 resumed: Callable[[], Any], slow_reader: Callable[[str], Any]) -> None:
        self.loop = loop
        self.limits = limits
        self.server_side = server_side
        self.cap = WriteCap(limits)
        self.paused = 0  # FOR_* bits; 0 while reading
        self.transport: Any = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._resumed = weak_method(resumed)
        self._slow_reader = weak_method(slow_reader)

    def attach(self, transport: Any) -> None:
        self.transport = transport
        if self.server_side:
            self.cap.apply(transport)

    def detach(self) -> None:
        """The transport is gone (or handed over to lingering)."""
        self.transport = None
        self._stop_stall_timer()

    def trust(self) -> None:
        """The peer logged in (or needs no login): the larger write cap."""
        if self.server_side and self.transport is not None:
            self.cap.trust(self.transport)

    # -- reading ---------------------------------------------------------------

    def cache_pressure(self, high: bool) -> None:
        """Async cache updates still running reached max_outstanding_calls
        (stop reading), or fell back to half of it (read again)."""
        if high:
            self.pause(FOR_CACHE_UPDATES)
        elif self.paused & FOR_CACHE_UPDATES:
            self.resume(FOR_CACHE_UPDATES)

    def pause(self, why: int) -> None:
        """Read nothing more from the peer until every reason (``FOR_*``)
        given here has been taken back by :meth:`resume`."""
        was = self.paused
        self.paused = was | why
        if was or self.transport is None:
            return
        try:
            self.transport.pause_reading()
        except (NotImplementedError, RuntimeError):
            pass  # frames then wait in our buffer instead of the kernel's

    def resume(self, why: int) -> None:
        self.paused &= ~why
        if self.paused or self.transport is None:
            return
        try:
            self.transport.resume_reading()
        except (NotImplementedError, RuntimeError):
            pass
        # Frames that arrived before the pause are still buffered.
        self.loop.call_soon(self._resumed)

    # -- a peer that does not read (server side) ---------------------------------

    def pause_writing(self) -> None:
        """The transport holds more than our cap for this peer: stop reading
        from it, so that it makes us produce nothing more, and give it
        ``write_stall_timeout`` seconds to catch up."""
        if not self.server_side or self.cap.blocked:
            return  # a client's backlog is its own application's doing
        self.cap.blocked = True
        self.pause(FOR_WRITES)
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._stalled)

    def resume_writing(self) -> None:
        if not self.cap.blocked:
            return
        self.cap.blocked = False
        self._stop_stall_timer()
        self.resume(FOR_WRITES)

    def wrote(self) -> None:
        """After a write of ours while blocked: drop a peer far past the cap."""
        if self.cap.blocked and self.transport is not None:
            reason = self.cap.overflow(self.transport)
            if reason is not None:
                self._slow_reader(reason)

    def dropping(self) -> None:
        """The slow reader is being dropped: no second check from the
        close's own write, and no stall timer."""
        self.cap.blocked = False
        self._stop_stall_timer()

    def _stalled(self) -> None:
        self._stall_timer = None
        if self.transport is None or not self.cap.blocked:
            return
        reason = self.cap.stalled(self.transport)
        if reason is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._stalled)
        else:
            self._slow_reader(reason)

    def _stop_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None


def shut_writing(transport: Any) -> bool:
    """Shut ``transport``'s sending side and leave it reading, for a
    lingering close; False if it cannot be done (the caller closes it)."""
    try:
        if transport.is_closing() or not transport.can_write_eof():
            return False
        transport.write_eof()
    except (NotImplementedError, OSError, RuntimeError):
        return False
    return True
