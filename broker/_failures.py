"""Remote methods that raise: which failures are logged, and how often.

A method that raises sends its caller a ``RemoteError`` with the type and
message, and without the traceback unless the server allows it; so the
server logs the traceback, with the method, the object and the peer.  It
does not log what the method declared as part of its interface:

* an exception that travels as itself (a registered copyable error),
* one listed with :func:`expected_errors` on the method,
* the broker's own errors (``NoSuchMethod``, ``Unauthorized``, ...), which
  say what the caller did wrong, and a cancelled call.

Each connection may log a burst of ``BURST`` failures, then one every
``REFILL`` seconds; the failures it was not allowed to log are counted and
the count is reported with the next one that is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jelly
from cred.log import get_logger

from ._errors import PBError

__all__ = ["expected_errors", "FailureLog"]

log = get_logger("broker.calls")

F = TypeVar("F", bound=Callable[..., Any])

#: Failures one connection may log at once, then one per REFILL seconds.
BURST = 10
REFILL = 6.0


def expected_errors(*types: type[BaseException]) -> Callable[[F], F]:
    """Declare the exceptions a remote method raises as part of its
    interface (a lookup that finds nothing, a refused order): its caller
    still gets them as ``RemoteError``, but the server does not log them
    as crashes::

        @broker.expected_errors(KeyError, ValueError)
        def remote_price(self, item): ...
    """
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"expected_errors() takes exception classes, not {kind!r}")

    def mark(method: F) -> F:
        method.pb_expected_errors = types  # type: ignore[attr-defined]
        return method

    return mark


def is_expected(func: Any, exc: BaseException) -> bool:
    if isinstance(exc, (PBError, asyncio.CancelledError, jelly.Copyable)):
        return True
    declared = getattr(func, "pb_expected_errors", None)
    return declared is not None and isinstance(exc, declared)


class FailureLog:
    """One connection's allowance for logging failed calls (a token bucket)."""

    __slots__ = ("tokens", "stamp", "unlogged")

    def __init__(self) -> None:
        self.tokens = float(BURST)
        self.stamp = time.monotonic()
        self.unlogged = 0

    def report(self, func: Any, method: str, exc: BaseException, peer: str) -> None:
        if is_expected(func, exc):
            return
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.stamp) / REFILL)
        self.stamp = now
        if self.tokens < 1:
            self.unlogged += 1
            return
        self.tokens -= 1
        skipped, self.unlogged = self.unlogged, 0
        target = getattr(func, "__self__", None)
        where = type(target).__qualname__ if target is not None else "?"
        more = {"unlogged": skipped} if skipped else {}
        log.error("remote method raised", method=f"{where}.{getattr(func, '__name__', method)}",
                  error=type(exc).__qualname__, message=_text(exc), peer=peer, **more,
                  exc_info=(type(exc), exc, exc.__traceback__))


def _text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "<unprintable>"
    return text if len(text) <= 200 else text[:200] + "..."
