"""Login throttling: exponential back-off per account and per source, sans-IO.

The portal asks :meth:`Throttle.delay_for` before it answers a login, waits
that long, then reports the outcome with :meth:`Throttle.failure` or
:meth:`Throttle.success`.  The delay depends only on the name *given* and
the source address, never on whether the account exists, so it reveals
nothing; and it is applied to successes as well as failures, so waiting it
out is the only way to learn the answer.

After the ``free_failures``-th consecutive failure on a key, the key is
blocked until ``last_failure + base_delay * factor ** k`` (capped at
``max_delay``), ``k`` counting failures beyond the free ones from zero.
A key is forgotten ``expire_after`` seconds after its last failure, and the
table never holds more than ``max_entries`` keys (the least recently failed
go first).  A success clears the account's key but not the source's, so a
valid login cannot launder a source that is guessing at other accounts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Throttle"]


@dataclass
class _Entry:
    failures: int
    last_failure: float


class Throttle:
    def __init__(
        self,
        base_delay: float = 0.25,
        factor: float = 2.0,
        max_delay: float = 30.0,
        *,
        free_failures: int = 0,
        expire_after: float = 900.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if base_delay < 0 or max_delay < 0 or factor < 1:
            raise ValueError("need base_delay >= 0, max_delay >= 0 and factor >= 1")
        if max_entries < 1 or expire_after <= 0 or free_failures < 0:
            raise ValueError("need max_entries >= 1, expire_after > 0 and free_failures >= 0")
        self.base_delay = base_delay
        self.factor = factor
        self.max_delay = max_delay
        self.free_failures = free_failures
        self.expire_after = expire_after
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, Hashable], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _keys(account: str | None, source: Hashable | None) -> list[tuple[str, Hashable]]:
        keys: list[tuple[str, Hashable]] = []
        if account is not None:
            keys.append(("account", account))
        if source is not None:
            keys.append(("source", source))
        return keys

    def _penalty(self, failures: int) -> float:
        excess = failures - self.free_failures
        if excess <= 0:
            return 0.0
        # exponent capped so the float never overflows
        return min(self.max_delay, self.base_delay * self.factor ** min(excess - 1, 64))

    def _live(self, key: tuple[str, Hashable], now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_failure >= self.expire_after:
            del self._entries[key]
            return None
        return entry

    def delay_for(self, account: str | None, source: Hashable | None = None) -> float:
        """Seconds to wait before answering a login for ``account`` (the name
        as given, known or not) from ``source`` (e.g. the peer's host)."""
        now = self._clock()
        delay = 0.0
        for key in self._keys(account, source):
            entry = self._live(key, now)
            if entry is not None:
                delay = max(delay, entry.last_failure + self._penalty(entry.failures) - now)
        return max(0.0, delay)

    def failure(self, account: str | None, source: Hashable | None = None) -> None:
        """Record a failed login."""
        now = self._clock()
        for key in self._keys(account, source):
            entry = self._live(key, now)
            if entry is None:
                self._make_room(now)
                entry = self._entries[key] = _Entry(0, now)
            entry.failures += 1
            entry.last_failure = now
            self._entries.move_to_end(key)

    def success(self, account: str | None, source: Hashable | None = None) -> None:
        """Record a successful login: the account's back-off is cleared."""
        if account is not None:
            self._entries.pop(("account", account), None)

    def _make_room(self, now: float) -> None:
        # oldest failures first: drop what has expired, then what is oldest
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.last_failure >= self.expire_after or len(self._entries) >= self.max_entries:
                del self._entries[key]
            else:
                break
