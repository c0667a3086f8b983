"""What the cache fan-out benchmark's peers share: sizes, the client
commands, and the benchmark-side driver.

Each system runs one server (a Cacheable and a ``push(n)`` method that sends
``observer.call_remote("append", i)`` for i in 0..n-1 to every observer) and
:data:`CLIENT_PROCESSES` client processes with :data:`PER_CLIENT` connections
each; every connection fetches the Cacheable once and keeps its RemoteCache,
so the server has ``CLIENT_PROCESSES × PER_CLIENT`` observers.  A client's
event loop runs all the time (commands arrive on a stdin thread), so updates
are taken in as they come.

Client commands (JSON lines):

``{"op": "arm", "n": N}``   expect ``append(0)`` … ``append(N-1)`` on every cache
``{"op": "push", "n": N}``  on the first connection: ``t0 = perf_counter()``,
                            call ``push(N)``, wait for this process's caches;
                            -> ``{"t0", "t_done"}``
``{"op": "wait"}``          wait for this process's caches -> ``{"t_done"}``
``{"op": "usage"}``         CPU seconds and RSS

``t_done`` is the ``time.perf_counter()`` at which this process's last
cache saw ``append(N-1)``.  On Linux ``perf_counter`` is CLOCK_MONOTONIC, one
clock for every process on the machine, so ``max(t_done) - t0`` is the time
until the last observer got the last update.  A cache that sees an update
out of order fails the round.
"""

from __future__ import annotations

import time
from typing import Any

HOST = "127.0.0.1"
CLIENT_PROCESSES = 2
PER_CLIENT = 5
OBSERVERS = CLIENT_PROCESSES * PER_CLIENT
CHECK_N = 100
WAIT_TIMEOUT = 60.0


class Expectation:
    """One cache's progress through a round (client side, any framework)."""

    __slots__ = ("n", "seen", "done_at", "error", "on_done")

    def __init__(self, n: int, on_done: Any) -> None:
        self.n = n
        self.seen = 0
        self.done_at: float | None = None
        self.error: str | None = None
        self.on_done = on_done  # called once, when the round is over for this cache

    def append(self, i: Any) -> None:
        if self.done_at is not None:
            return
        if i != self.seen:
            self.error = f"update {i!r} arrived where {self.seen} was due"
            self.done_at = time.perf_counter()
            self.on_done()
            return
        self.seen += 1
        if self.seen == self.n:
            self.done_at = time.perf_counter()
            self.on_done()


class FanoutDriver:
    """Benchmark side: a window is whole rounds of ``n`` updates; a round is
    arm every client, ``push`` through the first, ``wait`` on the others.
    Units are updates delivered to all observers; elapsed is the sum of the
    rounds' push-to-last-delivery times."""

    def __init__(self, name: str, server: Any, clients: list[Any], n: int) -> None:
        self.name = name
        self.server = server
        self.clients = clients
        self.n = n

    def round(self, n: int) -> float:
        for c in self.clients:
            c.request({"op": "arm", "n": n})
        first = self.clients[0].request({"op": "push", "n": n}, timeout=WAIT_TIMEOUT + 5)
        done = [first["t_done"]] + [c.request({"op": "wait"}, timeout=WAIT_TIMEOUT + 5)["t_done"]
                                    for c in self.clients[1:]]
        return max(done) - first["t0"]

    def window(self, op: str, seconds: float) -> tuple[int, float]:
        n = CHECK_N if op == "check" else self.n
        units, elapsed = 0, 0.0
        clock = time.perf_counter
        started = clock()
        while True:
            elapsed += self.round(n)
            units += n
            if clock() - started >= seconds:
                return units, elapsed
