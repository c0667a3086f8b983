"""Sending what this side owes the peer when its proxies and cache copies
die or are released: DECREF and DECACHE, decided by the core
(``Broker.process_releases``), sent from the loop.

A proxy or a cache copy dies in ``__del__``, on any thread, at any time; its
debt is queued in the core, and one loop callback per burst sends it.  An
explicit release needs no answer, so its DECREF rides with whatever this
loop turn sends next (:meth:`Releases.flush_at_end_of_turn`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from ._weak import weak_method

__all__ = ["Releases"]


class Releases:
    """Schedules the sending of one connection's releases on its loop.

    ``flush()`` sends what the core queued, if the connection is still open;
    it is held weakly (the adapter owns this object: no cycle).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, core: Any, *,
                 flush: Callable[[], Any]) -> None:
        self.loop = loop
        self.core = core
        self._loop_thread = threading.get_ident()
        self._flush = weak_method(flush)
        self._scheduled = False
        self._end_of_turn = False
        self._stopped = False

    def proxy_died(self, object_id: int, count: int) -> None:
        """Any thread: a proxy for the peer's object died holding ``count``."""
        if self.core.proxy_died(object_id, count):
            self._schedule()

    def cache_died(self, cache: Any) -> None:
        """Any thread: our copy of one of the peer's caches died."""
        self.core.cache_died(cache)
        self._schedule()

    def stop(self) -> None:
        """The connection is closed: nothing more is owed."""
        self._stopped = True

    def _schedule(self) -> None:
        if not self._scheduled and not self._stopped:
            self._scheduled = True
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._send)
            else:
                self.loop.call_soon_threadsafe(self._send)

    def _send(self) -> None:
        self._scheduled = False
        self.core.process_releases()
        self._flush()

    def flush_at_end_of_turn(self) -> None:
        """Send what is queued when this loop turn is done, unless something
        sent before then takes it along."""
        if not self._end_of_turn:
            self._end_of_turn = True
            self.loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self._end_of_turn = False
        self._flush()
