"""Running user code for one connection: the only place remote methods,
disconnect callbacks and ``stopped_observing`` are called.

The sans-IO core decides *which* call runs *when* (a ``CallEvent``, and its
E-order backlog); this module runs it, starts a task when it is async, and
feeds the outcome back to the core (``answer``/``fail``/``finished``).  It
tells the core when a started method has not taken its first step
(``first_step_pending``), so that the core holds the calls after it.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from cred.log import get_logger

from . import _eager
from ._events import CallEvent
from ._failures import FailureLog
from ._flavors import lookup_method
from ._streaming import StreamSource, is_async_iterator
from ._weak import weak_method

__all__ = ["Dispatcher", "EXIT"]

log = get_logger("broker")

#: Result types that are never awaitable nor streams (checked by exact type).
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})
#: What user code may raise that still ends the program; anything else a
#: callback raises (CancelledError from a cancelled future's result(), say)
#: is logged and must not stop the connection's own bookkeeping.
EXIT = (KeyboardInterrupt, SystemExit)


def _is_awaitable(value: Any) -> bool:
    # inspect.isawaitable consults the Awaitable ABC, which is slow for the
    # plain values most methods return.
    return asyncio.iscoroutine(value) or hasattr(type(value), "__await__")


async def _await_result(awaitable: Any) -> Any:
    return await awaitable


async def log_errors(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("callback failed", what=what)


class Dispatcher:
    """Runs the peer's calls on ``loop`` and reports them to ``core``.

    ``settled()`` is called after outcomes reached the core outside the
    adapter's receive pass (a task finished, held calls ran): the adapter
    sends them.  A call run by :meth:`run` settles within the caller's
    pass, which sends what it produced at its end.
    ``cache_pressure(True/False)`` is called when the cache updates still
    running reach ``max_outstanding_calls`` / fall back to half of it;
    ``describe()`` names the connection in log lines.  The three are held
    weakly (the adapter owns this dispatcher: no cycle).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, core: Any, *,
                 settled: Callable[[], None], cache_pressure: Callable[[bool], None],
                 describe: Callable[[], str]) -> None:
        self.loop = loop
        self.core = core
        self._settled = weak_method(settled)
        self._cache_pressure = weak_method(cache_pressure)
        self._describe = weak_method(describe)
        self._limit = core.limits.max_outstanding_calls
        #: Running async calls that want an answer, by request id.
        self.tasks: dict[int, asyncio.Task] = {}
        #: Running one-way calls, cache updates and disconnect callbacks.
        self.oneway_tasks: set[asyncio.Task] = set()
        #: Clean-ups (closing released streams) that a close waits for.
        self.cleanup_tasks: set[asyncio.Task] = set()
        #: Called with each entry the peer released: (object_id, entry).
        self.release_hooks: list[Callable[[int, Any], Any]] = []
        self._cache_tasks = 0
        self._failures: FailureLog | None = None  # made at the first failed call

    @property
    def in_progress(self) -> int:
        return len(self.tasks) + len(self.oneway_tasks)

    def run(self, event: CallEvent) -> None:
        try:
            result = lookup_method(event.target, event.method)(  # type: ignore[misc]
                *event.args, **event.kwargs)
            if type(result) not in _PLAIN and _is_awaitable(result):
                if not asyncio.iscoroutine(result):
                    result = _await_result(result)
                # Its first step runs now, in arrival order; one that never
                # waits answers in this receive pass like a plain method.
                started = _eager.start(self.loop, result)
                if not started.done:
                    self._track(started.task, event, started.first_step_ran)  # type: ignore[arg-type]
                    return
                if started.error is not None:
                    raise started.error
                result = started.value
        except EXIT:
            raise
        except BaseException as exc:
            # CancelledError too (f.result() of a cancelled future): it fails
            # this call, as a task does for an async method, not the connection.
            self._failed(event, exc)
            return
        self._succeeded(event, result)

    def cancel(self, req_id: int) -> None:
        """The peer sent CANCEL for a call of its that is running here."""
        task = self.tasks.get(req_id)
        if task is not None:
            task.cancel()

    def _run_held(self) -> None:
        """After the first step of the task that held the peer's later calls."""
        core = self.core
        core.first_step_taken()
        while True:
            event = core.next_held_call()
            if event is None:  # none left, or one just run is waiting its first step
                break
            self.run(event)
        self._settled()

    def _succeeded(self, event: CallEvent, result: Any) -> None:
        if event.answer_wanted:
            if type(result) not in _PLAIN and is_async_iterator(result):
                result = StreamSource(result)
            self.core.answer(event.req_id, result, event.perspective)
        else:
            self.core.finished(event.req_id)

    def _failed(self, event: CallEvent, exc: BaseException) -> None:
        failures = self._failures
        if failures is None:
            failures = self._failures = FailureLog()
        failures.report(lookup_method(event.target, event.method), event.method, exc,
                        self._describe())
        if event.answer_wanted:
            self.core.fail(event.req_id, exc)
        else:
            self.core.finished(event.req_id)

    def _track(self, task: asyncio.Task, event: CallEvent, first_step_ran: bool) -> None:
        if event.answer_wanted:
            self.tasks[event.req_id] = task  # type: ignore[index]
        else:
            self.oneway_tasks.add(task)
            if event.req_id is None:  # a cache update: no request id bounds it
                self._cache_tasks += 1
                if self._cache_tasks == self._limit:
                    self._cache_pressure(True)
        task.add_done_callback(lambda t, e=event: self._done(t, e))
        if not first_step_ran:
            # Later calls wait until this one has taken its first step (E-order).
            self.core.first_step_pending()
            self.loop.call_soon(self._run_held)

    def _done(self, task: asyncio.Task, event: CallEvent) -> None:
        self.tasks.pop(event.req_id, None)  # type: ignore[arg-type]
        self.oneway_tasks.discard(task)
        if event.req_id is None:
            self._cache_tasks -= 1
            if self._cache_tasks == self._limit // 2:
                self._cache_pressure(False)
        if task.cancelled():
            if event.answer_wanted:
                self._failed(event, asyncio.CancelledError(f"call {event.method!r} was cancelled"))
            else:
                self.core.finished(event.req_id)
        elif task.exception() is not None:
            self._failed(event, task.exception())  # type: ignore[arg-type]
        else:
            self._succeeded(event, task.result())
        self._settled()

    # -- other user code ------------------------------------------------------

    def run_callback(self, cb: Callable[[Any], Any], arg: Any) -> None:
        """A disconnect callback or watcher: logged if it fails; awaited in a
        task (that the close waits for) if it returns an awaitable."""
        try:
            result = cb(arg)
            if inspect.isawaitable(result):
                self.spawn(log_errors(result, "disconnect callback"), self.oneway_tasks)
        except EXIT:
            raise
        except BaseException:
            log.exception("disconnect callback failed", callback=repr(cb))

    def spawn(self, coro: Any, into: set[asyncio.Task] | None = None) -> None:
        """Run ``coro`` in a task kept in ``into`` (default: clean-ups)."""
        keep = self.cleanup_tasks if into is None else into
        task = self.loop.create_task(coro)
        keep.add(task)
        task.add_done_callback(keep.discard)

    def released(self, object_id: int, entry: Any) -> None:
        """The peer released one of our objects: a stream stops producing,
        and the release hooks hear of it."""
        if type(entry.obj) is StreamSource:
            closing = entry.obj._pb_on_release()
            if closing is not None:
                # Clean-up, not a call: closing the connection waits for it
                # but does not cancel it (a release and a close can arrive
                # in one receive pass, before this task's first step).
                self.spawn(log_errors(closing, "closing a released stream"))
        for hook in self.release_hooks:
            try:
                hook(object_id, entry)
            except EXIT:
                raise
            except BaseException:
                log.exception("release hook failed", hook=repr(hook))

    def release_all(self, entries: list[Any]) -> None:
        """Closing: every object the peer still held is released; the hooks
        are let go after (nothing more can be released)."""
        for entry in entries:
            self.released(0, entry)
        self.release_hooks = []

    def stopped_observing(self, cacheable: Any, perspective: Any, observer: Any) -> None:
        try:
            cacheable.stopped_observing(perspective, observer)
        except EXIT:
            raise
        except BaseException:
            log.exception("stopped_observing failed", cacheable=repr(cacheable))

    def close(self, watchers: list[Callable[[Any], Any]], connection: Any) -> list[asyncio.Task]:
        """The connection closed: cancel every call still running, release
        every object the peer held, stop its observers, and run the proxies'
        and ``watchers``' disconnect callbacks.  Returns what is still
        running (the close waits for it)."""
        running = list(self.tasks.values()) + list(self.oneway_tasks)
        for task in running:
            task.cancel()
        proxies, entries, caches = self.core.drop_references()
        self.release_all(entries)
        for cache_entry in caches:
            self.stopped_observing(cache_entry.obj, cache_entry.perspective, cache_entry.observer)
        for proxy in proxies:
            for cb in proxy._pb_connection_lost():
                self.run_callback(cb, proxy)
        for cb in watchers:
            self.run_callback(cb, connection)
        # Stream producers released above may have started closing too.
        return [t for t in running + list(self.oneway_tasks) + list(self.cleanup_tasks)
                if not t.done()]
