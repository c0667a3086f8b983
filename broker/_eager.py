"""Start an ``async def`` remote method at once, inside the task that owns it.

A task created the usual way runs its coroutine's first step on a later
loop turn, and its result reaches a done-callback a turn after that: an
async method that never waits would answer two turns late, and calls that
arrive meanwhile would have to queue to keep E-order.  Starting the
coroutine eagerly, with its task already current (so ``asyncio.timeout``,
``TaskGroup`` and ``current_task`` work), answers such a method in the same
receive pass as a plain one, and any method's first step runs in the order
its call arrived.

bench/README.md, "Speed tricks": with an ``async def`` echo, a plain task
instead costs +14 % CPU per sequential call and +98 % per call with 100 in
flight (no bench_calls row calls an async method).

Python 3.12 does this natively (``Task(eager_start=True)``).  On 3.11 the
task wraps the coroutine in a small generator that takes over after the
first step, which this module runs itself under ``_enter_task``.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any, Coroutine, Generator

__all__ = ["start"]


class Started:
    """What :func:`start` did: ``task`` still running (``done`` False), or
    the coroutine already finished with ``value`` or ``error``.
    ``first_step_ran`` is False only when the coroutine could not be started
    eagerly (3.11, called from inside another task)."""

    __slots__ = ("task", "done", "value", "error", "first_step_ran")

    def __init__(self, task: asyncio.Task | None, done: bool, value: Any = None,
                 error: BaseException | None = None, first_step_ran: bool = True) -> None:
        self.task = task
        self.done = done
        self.value = value
        self.error = error
        self.first_step_ran = first_step_ran


if sys.version_info >= (3, 12):

    def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Started:
        task = asyncio.Task(coro, loop=loop, eager_start=True)
        if not task.done():
            return Started(task, False)
        try:  # raises the method's exception, or CancelledError
            return Started(None, True, task.result())
        except BaseException as exc:
            return Started(None, True, error=exc)

else:
    from asyncio.tasks import _enter_task, _leave_task

    class _Handoff:
        __slots__ = ("finished", "waiting_on")

        def __init__(self) -> None:
            self.finished = False
            self.waiting_on: Any = None

    def _rest(coro: Coroutine[Any, Any, Any], handoff: _Handoff) -> Generator[Any, Any, Any]:
        """The task's coroutine: after the eager first step, drive ``coro``
        exactly as the task would have (sends, throws, close)."""
        try:
            yield  # primed before the task exists; the task's first step resumes here
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            if handoff.finished:
                return None
            waiting_on = handoff.waiting_on
            if waiting_on is not None and hasattr(waiting_on, "cancel"):
                # Cancelled before its first step: cancel what the coroutine
                # waits on, as Task.cancel() does, and let it unwind from there.
                waiting_on.cancel()
            else:
                try:
                    handoff.waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
        if handoff.finished:
            return None
        to_yield = handoff.waiting_on
        handoff.waiting_on = None
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value

    def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Started:
        if asyncio.current_task(loop) is not None:
            # Called from inside a task (an in-memory pair driven by a
            # test, say): the first step cannot run here; start normally.
            return Started(loop.create_task(coro), False, first_step_ran=False)
        handoff = _Handoff()
        rest = _rest(coro, handoff)
        next(rest)
        context = contextvars.copy_context()
        task = loop.create_task(rest, context=context)  # type: ignore[arg-type]
        _enter_task(loop, task)
        try:
            waiting_on = context.run(coro.send, None)
        except StopIteration as stop:
            handoff.finished = True
            return Started(None, True, stop.value)
        except (KeyboardInterrupt, SystemExit):
            handoff.finished = True
            raise
        except BaseException as exc:
            handoff.finished = True
            return Started(None, True, error=exc)
        finally:
            _leave_task(loop, task)
        handoff.waiting_on = waiting_on
        return Started(task, False)
