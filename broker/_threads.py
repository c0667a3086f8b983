"""Remote methods that block, run in a bounded thread pool.

A remote method runs on the event loop, so one that blocks (a database
driver, file work, a CPU-heavy function) stalls every connection of the
process while it runs.  Marked with :func:`in_thread` — or all the methods
of a class, with ``pb_in_thread = True`` on it — it runs in a worker
thread instead, and the connection gets its answer when the thread is done.
The pool is bounded (``DEFAULT_WORKERS`` threads, or the executor given to
:func:`use_thread_pool`): calls past it wait for a free thread, in order.

The marking is read when the class is created (see ``_flavors``), so
methods that are not marked cost nothing more per call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["in_thread", "use_thread_pool", "DEFAULT_WORKERS"]

F = TypeVar("F", bound=Callable[..., Any])

#: Threads in the default pool.
DEFAULT_WORKERS = 16

_pool: concurrent.futures.Executor | None = None
_pool_lock = threading.Lock()


def in_thread(method: F) -> F:
    """Run this remote method in the broker's thread pool, not on the event
    loop: for methods that block.  The method must be a plain ``def`` (a
    coroutine function already gives the loop back while it waits)."""
    if inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__} is async: in_thread is for methods that "
                        "block (an async method already lets other connections run)")
    method.pb_in_thread = True  # type: ignore[attr-defined]
    return method


def use_thread_pool(executor: concurrent.futures.Executor) -> None:
    """Run ``in_thread`` methods in ``executor`` from now on (a
    ``ThreadPoolExecutor`` of your own size, say)."""
    global _pool
    with _pool_lock:
        _pool = executor


def _thread_pool() -> concurrent.futures.Executor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(
                    DEFAULT_WORKERS, thread_name_prefix="pb-in-thread")
            pool = _pool
    return pool


class InThread:
    """An exposed method that runs in the pool (what the exposure table
    holds instead of the function)."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"{func.__qualname__} is async; pb_in_thread is for methods that "
                            "block")
        self.func = func

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        bound = self.func.__get__(obj, owner)

        @functools.wraps(self.func)
        def run(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(_thread_pool(), functools.partial(bound, *args, **kwargs))

        run.__self__ = obj  # type: ignore[attr-defined]  # for the failure log's "Class.method"
        return run


def exposed(value: Any, class_wide: bool) -> Any:
    """``value`` as the exposure table should hold it."""
    func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
    if class_wide and inspect.iscoroutinefunction(func):
        return value  # async methods of an in-thread class stay on the loop
    if class_wide or getattr(func, "pb_in_thread", False):
        if isinstance(value, (staticmethod, classmethod)):
            raise TypeError(f"{func.__qualname__}: in_thread applies to plain methods")
        return InThread(value)
    return value
