"""Interrupt typed code that holds the event loop for too long.

A manhole evaluation runs on the server's loop, so code that blocks without
awaiting (``time.sleep(60)``, a busy loop, blocking I/O) stops every other
connection, and the admin's Ctrl-C cannot even be read: the loop that would
receive it is the one that is stuck.  So a watchdog thread does the
interrupting instead.  Each stretch of typed code that runs without yielding
to the loop is *guarded*; one that is still running after ``limit`` seconds
gets :class:`EvaluationBlocked` raised inside it, the way a debugger's
interrupt reaches a running thread (``PyThreadState_SetAsyncExc``).

An asynchronous exception is only noticed between bytecodes, so a thread
sitting in one long C call (``time.sleep``, ``socket.recv``) would not see
it until that call returns.  When the loop runs in the main thread, the
watchdog therefore also sends it a signal of its own (a real-time signal no
one else uses): the call fails with EINTR, Python runs the signal's (empty)
handler, and the pending exception is raised from there.

The guard and the watchdog meet under one lock: the watchdog only raises
into code that is still guarded, and leaving the guard withdraws an
exception that was raised too late to be seen, so nothing ever lands in the
event loop's own code.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["DEFAULT_BLOCK_LIMIT", "EvaluationBlocked", "Watchdog"]

#: Seconds a manhole evaluation may hold the loop without awaiting.
DEFAULT_BLOCK_LIMIT = 5.0



def _set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Make *thread_id* raise *exc_type* at its next bytecode (None withdraws it)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None)


# A real-time signal, so that no program's SIGUSR1/SIGUSR2 is taken over.
_WAKE_SIGNAL: int | None = (signal.SIGRTMIN + 7) if hasattr(signal, "SIGRTMIN") else None


class EvaluationBlocked(KeyboardInterrupt):
    """Typed code held the event loop longer than the manhole allows."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (
            "the code held the server's event loop without awaiting for longer than "
            "the manhole's block_limit, so the manhole interrupted it; use "
            "`await asyncio.to_thread(f)` for slow synchronous work",)))


def _ignore(signum: int, frame: Any) -> None:
    """The wake signal's handler: running it is the point (see above)."""


class Watchdog:
    """Raise :class:`EvaluationBlocked` in code guarded for longer than
    *limit* seconds (0 turns the watchdog off)."""

    def __init__(self, limit: float = DEFAULT_BLOCK_LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"the block limit must be 0 (off) or more seconds, not {limit}")
        self.limit = limit
        self._lock = threading.Condition()
        self._thread_id: int | None = None  # the guarded thread, while guarded
        self._deadline = 0.0
        self._fired = False
        self._stopped = False
        self._worker: threading.Thread | None = None
        self._previous_handler: Any = None
        self._signal_installed = False

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog thread (and, in the main thread, the wake signal)."""
        if self.limit == 0 or self._worker is not None:
            return
        if _WAKE_SIGNAL is not None and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(_WAKE_SIGNAL, _ignore)
            self._signal_installed = True
        self._stopped = False
        self._worker = threading.Thread(target=self._watch, name="pb-manhole-watchdog",
                                        daemon=True)
        self._worker.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None
        if self._signal_installed and threading.current_thread() is threading.main_thread():
            signal.signal(_WAKE_SIGNAL, self._previous_handler)  # type: ignore[arg-type]
            self._signal_installed = False

    # -- guarding -------------------------------------------------------------

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Guard the code in the ``with`` block (one stretch between awaits)."""
        if self._worker is None:
            yield
            return
        with self._lock:
            self._thread_id = threading.get_ident()
            self._deadline = time.monotonic() + self.limit
            self._fired = False
            self._lock.notify_all()
        try:
            yield
        finally:
            with self._lock:
                thread_id, self._thread_id = self._thread_id, None
                if self._fired and thread_id is not None:
                    # Raised after the code had finished: withdraw it, so that
                    # it cannot surface in the loop's own code.
                    _set_async_exc(thread_id, None)

    @property
    def fired(self) -> bool:
        """True if the last guarded stretch was interrupted."""
        return self._fired

    # -- the watchdog thread ------------------------------------------------------

    def _watch(self) -> None:
        with self._lock:
            while not self._stopped:
                if self._thread_id is None or self._fired:
                    self._lock.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._lock.wait(remaining)
                    continue
                self._fired = True
                _set_async_exc(self._thread_id, EvaluationBlocked)
                if self._signal_installed:
                    signal.pthread_kill(self._thread_id, _WAKE_SIGNAL)  # type: ignore[arg-type]
