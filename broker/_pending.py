"""The future of one of our calls (``RemoteReference.call_remote``)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["PendingCall", "fail"]


def fail(fut: asyncio.Future, exc: BaseException) -> None:
    fut.set_exception(exc)
    # A failed call nobody awaited is the caller's business: no "exception
    # was never retrieved" from the collector for each of them.
    fut._log_traceback = False


class PendingCall(asyncio.Future):
    """The future of one call; cancelling it cancels the call remotely.

    Overriding ``cancel`` (which a cancelled awaiting task calls) avoids a
    done-callback, and so a loop turn, per call.  The creator sets
    ``_protocol`` and ``_req_id`` (None while the call waits for a slot; no
    Python ``__init__``: this is per call).

    It also speaks the coroutine protocol (``send``/``throw``/``close``), so
    that ``asyncio.create_task(ref.call_remote(...))`` and
    ``TaskGroup.create_task`` take it as they take a coroutine.
    """

    __slots__ = ("_protocol", "_req_id", "_pb_awaiting")
    _protocol: Any  # the adapter: _call_cancelled(future)
    _req_id: int | None

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self._protocol._call_cancelled(self)
        return super().cancel(msg)

    def _awaiting(self) -> Any:
        try:
            return self._pb_awaiting
        except AttributeError:
            awaiting = self._pb_awaiting = self.__await__()
            return awaiting

    def send(self, value: Any) -> Any:
        return self._awaiting().send(value)

    def throw(self, *exc_info: Any) -> Any:
        return self._awaiting().throw(*exc_info)

    def close(self) -> None:
        self._awaiting().close()
