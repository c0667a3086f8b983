"""Our calls on one connection: the future of each (``call_remote``), from
the CALL sent (or queued for a free slot) to the ANSWER or ERROR that
resolves it, its cancelling and timeout, and failing them all at close."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ._errors import CallTimeout
from ._events import AnswerEvent, CallSent
from ._weak import weak_method

__all__ = ["PendingCall", "Calls", "fail"]


def fail(fut: asyncio.Future, exc: BaseException) -> None:
    fut.set_exception(exc)
    # A failed call nobody awaited is the caller's business: no "exception
    # was never retrieved" from the collector for each of them.
    fut._log_traceback = False


class PendingCall(asyncio.Future):
    """The future of one call; cancelling it cancels the call remotely.

    Overriding ``cancel`` (which a cancelled awaiting task calls) avoids a
    done-callback, and so a loop turn, per call.  :class:`Calls` sets
    ``_calls`` and ``_req_id`` (None while the call waits for a slot; no
    Python ``__init__``: this is per call).

    It also speaks the coroutine protocol (``send``/``throw``/``close``), so
    that ``asyncio.create_task(ref.call_remote(...))`` and
    ``TaskGroup.create_task`` take it as they take a coroutine.
    """

    __slots__ = ("_calls", "_req_id", "_pb_awaiting")
    _calls: Calls
    _req_id: int | None

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self._calls.cancelled(self)
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


class Calls:
    """The futures of our calls on one connection, by request id.

    ``flush()`` sends what a cancel queued; ``silent_server()`` names the
    server when we dialled it and its HELLO has not come (else None), for a
    timeout's message.  Both are held weakly (the adapter owns this table).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, core: Any, *,
                 flush: Callable[[], Any], silent_server: Callable[[], str | None]) -> None:
        self.loop = loop
        self.core = core
        self.futures: dict[int, PendingCall] = {}
        self._flush = weak_method(flush)
        self._silent_server = weak_method(silent_server)

    def send(self, target: int, method: str, args: tuple, kwargs: dict,
             timeout: float | None, encoded: bytes | None = None) -> PendingCall:
        """Make the call (the caller sends the core's output); ``encoded``
        is a CALL tail jellied once for many references (broker._fanout)."""
        fut = PendingCall(loop=self.loop)
        fut._calls = self
        fut._req_id = req_id = self.core.call(target, method, args, kwargs, True, fut, encoded)
        if req_id is not None:  # else it waits for a slot, in the core's queue
            self.futures[req_id] = fut
        if timeout is not None:
            handle = self.loop.call_later(timeout, self._timed_out, fut, method, timeout)
            fut.add_done_callback(lambda f, h=handle: h.cancel())
        return fut

    def resolve(self, event: Any) -> None:
        """An AnswerEvent or FailureEvent for one of our calls."""
        fut = self.futures.pop(event.req_id, None)
        if fut is not None and not fut.done():
            if type(event) is AnswerEvent:
                fut.set_result(event.value)
            else:
                fail(fut, event.error)
        if self.core.dequeued:  # the slot it freed sent calls that waited
            for outcome in self.core.take_dequeued():
                waiting = outcome.token
                if type(outcome) is CallSent:
                    waiting._req_id = outcome.req_id
                    self.futures[outcome.req_id] = waiting
                else:
                    fail(waiting, outcome.error)  # type: ignore[union-attr]

    def cancelled(self, fut: PendingCall) -> bool:
        """Our caller gave up on ``fut``: withdraw it if it still waits for a
        slot (True: never sent), else CANCEL it remotely."""
        req_id = fut._req_id
        if req_id is None:
            self.core.unqueue(fut)
            if self.core.has_output:  # one-way calls it held back
                self._flush()
            return True
        if self.futures.pop(req_id, None) is not None:
            self.core.cancel(req_id)
            self._flush()
        return False

    def _timed_out(self, fut: PendingCall, method: str, timeout: float) -> None:
        if fut.done():
            return
        never_sent = self.cancelled(fut)
        server = self._silent_server()
        if server is not None:
            # Nothing came back at all: not a slow method, most likely not PB.
            text = (f"call {method!r}: no PB HELLO from {server} within "
                    f"{timeout} s (is this a PB server?)")
        elif never_sent:
            text = (f"call {method!r} found no free slot within {timeout} s "
                    f"({len(self.core.waiting)} calls were waiting for answers); it was not sent")
        else:
            text = f"call {method!r} got no answer within {timeout} s; it was cancelled remotely"
        fail(fut, CallTimeout(text))

    def fail_all(self, exc_factory: Callable[[], BaseException]) -> None:
        """Closing: every call still waiting fails, sent or queued."""
        futures, self.futures = self.futures, {}
        for fut in list(futures.values()) + self.core.drop_queued():
            if not fut.done():
                fail(fut, exc_factory())
