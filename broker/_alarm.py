"""One loop timer kept at a deadline on the monotonic clock: the adapter's
wake-up at the sans-IO core's ``next_deadline()``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from ._weak import weak_method

__all__ = ["Alarm"]


class Alarm:
    """Calls ``callback()`` at the deadline last given to :meth:`arm`.

    The callback is held weakly (the adapter owns this object: no cycle).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
        self._loop = loop
        self._callback = weak_method(callback)
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, due: float | None) -> None:
        """Ring at ``due`` (``time.monotonic()`` seconds; None: never).  A
        timer already due no later stays: it rings early, the core finds
        nothing due, and the adapter arms again.  So input, which moves the
        idle and keepalive deadlines later, never touches the timer."""
        handle = self._handle
        if due is None:
            self.cancel()
            return
        when = self._loop.time() + (due - time.monotonic())
        if handle is not None:
            if handle.when() <= when:
                return
            handle.cancel()
        self._handle = self._loop.call_at(when, self._ring)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ring(self) -> None:
        self._handle = None
        self._callback()
