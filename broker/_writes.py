"""Writing a core's output to a transport, and the cap on what may wait for
a peer that does not read (server side).  No timers here: the adapter arms
them and asks these for the decisions."""

from __future__ import annotations

import weakref
from typing import Any

from ._limits import Limits

__all__ = ["write_out", "WriteCap", "TurnWrites", "turn_writes_for"]

_LARGE = 64 * 1024
_CHUNK = 512 * 1024


def write_out(transport: Any, out: list[bytes]) -> None:
    """Write ``out`` (``Broker.take_output()``, several buffers): small
    frames joined, large bodies on their own (joining would copy them)."""
    # On Python 3.11 writelines() joins everything, large bodies too.
    small: list[bytes] = []
    for chunk in out:
        if len(chunk) < _LARGE:
            small.append(chunk)
            continue
        if small:
            transport.write(b"".join(small) if len(small) > 1 else small[0])
            small = []
        # Hand the transport at most 512 KiB at a time: larger writes
        # measured several times slower here (the kernel takes part of
        # the buffer and the transport copies the rest).
        view = memoryview(chunk)
        for start in range(0, len(view), _CHUNK):
            transport.write(view[start:start + _CHUNK])
    if small:
        transport.write(b"".join(small) if len(small) > 1 else small[0])


class WriteCap:
    """How many bytes may wait for the peer: ``preauth_write_buffer`` until
    it has logged in (or at once, for a root that needs no login), then
    ``max_write_buffer``.  ``blocked`` while the transport says it holds
    more than that."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.limit = limits.preauth_write_buffer
        self.blocked = False

    def apply(self, transport: Any, limit: int | None = None) -> None:
        """Have ``transport`` pause us past ``limit`` (default: the current one)."""
        if limit is not None:
            self.limit = limit
        try:
            transport.set_write_buffer_limits(high=self.limit)
        except (AttributeError, NotImplementedError):
            pass  # an in-memory transport (broker.testing): nothing queues

    def trust(self, transport: Any) -> None:
        """The peer logged in (or needs no login): the larger cap."""
        if self.limit != self.limits.max_write_buffer:
            self.apply(transport, self.limits.max_write_buffer)

    def overflow(self, transport: Any) -> str | None:
        """While blocked, after a write of our own: why to drop the peer,
        or None.  Only our side (a server pushing to observers, a long
        answer) still writes then; past twice the cap and a frame it is no
        longer a stall to wait out."""
        queued = transport.get_write_buffer_size()
        if queued > 2 * self.limit + self.limits.max_frame:
            return (f"{queued} bytes are queued for a peer that is not reading "
                    f"(more than twice the cap of {self.limit} bytes)")
        return None

    def stalled(self, transport: Any) -> str | None:
        """``write_stall_timeout`` after blocking: why to drop the peer, or
        None while it drains (if slowly: another period)."""
        queued = transport.get_write_buffer_size()
        if queued <= self.limit:
            return None
        which = ("max_write_buffer" if self.limit == self.limits.max_write_buffer
                 else "preauth_write_buffer")
        return (f"the peer left {queued} bytes unread for {self.limits.write_stall_timeout} s "
                f"(the cap is {self.limit} bytes: {which})")


class TurnWrites:
    """The connections of one event loop that wrote at once in this loop
    turn.  A connection's first message of a turn goes out immediately (a
    lone call is never delayed); what it queues later in the same turn waits
    here and leaves in one write when the turn is done, so a burst made in
    one turn (a fan-out, many calls started together) costs one write per
    connection instead of one per message.  One callback per loop turn
    serves every connection."""

    __slots__ = ("loop", "wrote", "scheduled")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        #: Adapters that wrote this turn; each has ``_wrote_this_turn`` set
        #: and a ``_turn_done()`` to call when the turn ends.
        self.wrote: list[Any] = []
        self.scheduled = False

    def note(self, protocol: Any) -> None:
        """``protocol`` just wrote at once: hold its next writes until the
        turn ends."""
        protocol._wrote_this_turn = True
        self.wrote.append(protocol)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self.scheduled = False
        wrote, self.wrote = self.wrote, []
        for protocol in wrote:
            protocol._wrote_this_turn = False
            protocol._turn_done()


_turn_writes: "weakref.WeakKeyDictionary[Any, TurnWrites]" = weakref.WeakKeyDictionary()


def turn_writes_for(loop: Any) -> TurnWrites:
    """The one :class:`TurnWrites` of ``loop``."""
    turn = _turn_writes.get(loop)
    if turn is None:
        turn = _turn_writes[loop] = TurnWrites(loop)
    return turn
