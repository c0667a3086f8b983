"""Login throttling: exponential back-off per account and per source, sans-IO.

The sequential schedule: after the ``free_failures``-th consecutive failure
on a key, the key is blocked until ``last_failure + base_delay * factor **
k`` (capped at ``max_delay``), ``k`` counting failures beyond the free ones
from zero.  The keys are the account name *given* (known or not, so the
delay reveals nothing) and the source address; a login waits for the later
of the two.

Attempts in flight count too, so that concurrency buys nothing.  The portal
asks :meth:`Throttle.delay_for`, waits, asks again, and the moment the
answer is 0 it calls :meth:`Throttle.start` (with no ``await`` between the
two), which returns an :class:`Attempt`.  A started attempt is counted as
if it had already failed: the next attempt on its keys may start only
``penalty(failures + attempts in flight)`` after the latest start.  So N
attempts sent at once start one by one, exactly as far apart as N attempts
sent one after another, each waiting for the previous failure, would.  The
portal then reports how the attempt ended:

* :meth:`Attempt.failure` — counted as a failure (a wrong proof, a
  challenge never answered);
* :meth:`Attempt.success` — the account's key is cleared (its back-off and
  its other attempts' reservations); on the source's key the attempt is
  taken back, as if it had never been made, but the source's failures stay,
  so a valid login cannot launder a source that is guessing at other
  accounts;
* :meth:`Attempt.release` — taken back on every key, uncounted (the account
  store failed: the server's fault, not the client's).

The delay is applied to successes as well as failures, so waiting it out is
the only way to learn the answer.  :meth:`Throttle.failure` and
:meth:`Throttle.success` record outcomes of logins that never started an
attempt (a malformed message refused before any wait, a replayed proof).

A key's failures are forgotten ``expire_after`` seconds after the last
one (and so is an attempt still in flight after that long), and the table
never holds more than ``max_entries`` keys (the least recently used go
first).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["Throttle", "Attempt"]

_Key = tuple[str, Hashable]


class _Entry:
    __slots__ = ("failures", "last_failure", "running")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = -math.inf
        #: attempt serial -> start time, in the order they started
        self.running: dict[int, float] = {}


class Attempt:
    """A login attempt in flight (from :meth:`Throttle.start`).  The first
    of :meth:`failure`, :meth:`success` and :meth:`release` counts; later
    calls do nothing."""

    __slots__ = ("_throttle", "_serial", "_account", "_source", "done")

    def __init__(self, throttle: Throttle, serial: int, account: str | None,
                 source: Hashable | None) -> None:
        self._throttle = throttle
        self._serial = serial
        self._account = account
        self._source = source
        self.done = False

    def failure(self) -> None:
        """The attempt failed: it stays counted, as a failure."""
        if not self.done:
            self.done = True
            self._throttle._failed(self._account, self._source, self._serial)

    def success(self) -> None:
        """The attempt logged in: the account's key is cleared and the
        source's reservation taken back (its failures stay)."""
        if not self.done:
            self.done = True
            throttle = self._throttle
            if self._account is not None:
                throttle._entries.pop(("account", self._account), None)
            throttle._withdraw(self._serial, throttle._keys(None, self._source))

    def release(self) -> None:
        """Take the attempt back uncounted (the server's fault)."""
        if not self.done:
            self.done = True
            throttle = self._throttle
            throttle._withdraw(self._serial, throttle._keys(self._account, self._source))


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
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._serials = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _keys(account: str | None, source: Hashable | None) -> list[_Key]:
        keys: list[_Key] = []
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

    def _next_start(self, entry: _Entry) -> float:
        """When the key's next attempt may start: its penalty after the last
        failure, and after the latest attempt in flight, each of which counts
        as the failure it may turn out to be."""
        when = entry.last_failure + self._penalty(entry.failures) if entry.failures else -math.inf
        if entry.running:
            latest = entry.running[next(reversed(entry.running))]
            when = max(when, latest + self._penalty(entry.failures + len(entry.running)))
        return when

    def _live(self, key: _Key, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.failures and now - entry.last_failure >= self.expire_after:
            entry.failures = 0
            entry.last_failure = -math.inf
        running = entry.running
        while running:
            # An attempt that has not ended in expire_after seconds must not
            # hold its keys for ever (the portal ends every attempt it starts).
            oldest = next(iter(running))
            if now - running[oldest] < self.expire_after:
                break
            del running[oldest]
        if not entry.failures and not running:
            del self._entries[key]
            return None
        return entry

    def _entry(self, key: _Key, now: float) -> _Entry:
        entry = self._live(key, now)
        if entry is None:
            self._make_room(now)
            entry = self._entries[key] = _Entry()
        self._entries.move_to_end(key)
        return entry

    def delay_for(self, account: str | None, source: Hashable | None = None) -> float:
        """Seconds to wait before a login for ``account`` (the name as given,
        known or not) from ``source`` (e.g. the peer's host) may start."""
        now = self._clock()
        delay = 0.0
        for key in self._keys(account, source):
            entry = self._live(key, now)
            if entry is not None:
                delay = max(delay, self._next_start(entry) - now)
        return delay

    def start(self, account: str | None, source: Hashable | None = None) -> Attempt:
        """Start an attempt now (call it when :meth:`delay_for` says 0, with
        no ``await`` in between); report its end on the returned
        :class:`Attempt`."""
        now = self._clock()
        serial = next(self._serials)
        for key in self._keys(account, source):
            self._entry(key, now).running[serial] = now
        return Attempt(self, serial, account, source)

    def failure(self, account: str | None, source: Hashable | None = None) -> None:
        """Record a failed login that started no attempt."""
        self._failed(account, source, None)

    def success(self, account: str | None, source: Hashable | None = None) -> None:
        """Record a successful login that started no attempt: the account's
        back-off is cleared."""
        if account is not None:
            self._entries.pop(("account", account), None)

    def _failed(self, account: str | None, source: Hashable | None, serial: int | None) -> None:
        now = self._clock()
        for key in self._keys(account, source):
            entry = self._entry(key, now)
            entry.running.pop(serial, None)
            entry.failures += 1
            entry.last_failure = now

    def _withdraw(self, serial: int, keys: list[_Key]) -> None:
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry.running.pop(serial, None) is not None:
                if not entry.failures and not entry.running:
                    del self._entries[key]  # nothing left to remember

    def _make_room(self, now: float) -> None:
        # least recently used first: drop what has expired, then what is oldest
        while self._entries:
            key = next(iter(self._entries))
            if self._live(key, now) is None:
                continue
            if len(self._entries) < self.max_entries:
                break
            del self._entries[key]
