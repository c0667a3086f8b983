"""The event loop behind the blocking facade.

One loop runs on one daemon thread, shared by every blocking connection in
the process.  It is started by the first blocking call and stopped by
:func:`shutdown` (registered with :mod:`atexit`, so a script that forgets is
still cleaned up): open connections say GOODBYE and close, remaining tasks
are cancelled and awaited, async generators and the default executor are
shut down, and the loop is closed.  A later blocking call starts a new loop.

Callers on any thread hand coroutines over with
:func:`asyncio.run_coroutine_threadsafe` and wait for the result.  The loop
thread itself must never wait like that (it would wait for itself), so
:func:`run` refuses to be called from it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run", "shutdown", "in_loop_thread", "register_closer", "unregister_closer"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_atexit_registered = False
# Coroutine functions that close something open on the loop (a connection);
# shutdown() runs them all before stopping the loop.
_closers: dict[int, Callable[[], Coroutine[Any, Any, Any]]] = {}

#: How long shutdown() waits for connections to close and tasks to finish.
SHUTDOWN_TIMEOUT = 5.0


def _thread_main(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    # The loop's default executor (asyncio.to_thread: a login's key
    # derivation) is made here so that _drain() can shut it down itself.
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="pb-clients-executor")
    loop.set_default_executor(executor)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
    finally:
        try:
            _drain(loop, executor)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _drain(loop: asyncio.AbstractEventLoop,
           executor: concurrent.futures.ThreadPoolExecutor) -> None:
    """Cancel and await what is left, like asyncio.run() does on its way out."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    # Not loop.shutdown_default_executor(): it joins the executor from a new
    # thread, and from Python 3.12 no thread may start once the interpreter
    # is exiting, which is when atexit runs shutdown() (a script that never
    # called it got a RuntimeError traceback on its way out).  Nothing is
    # left on the loop to keep running meanwhile, so this thread can wait.
    executor.shutdown(wait=True)


def _get_loop_locked() -> asyncio.AbstractEventLoop:
    """The running loop, started if need be; the caller holds ``_lock``."""
    global _loop, _thread, _atexit_registered
    if _loop is not None and _thread is not None and _thread.is_alive():
        return _loop
    loop = asyncio.new_event_loop()
    started = threading.Event()
    thread = threading.Thread(target=_thread_main, args=(loop, started),
                              name="pb-clients-loop", daemon=True)
    thread.start()
    started.wait()
    _loop, _thread = loop, thread
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    return loop


def in_loop_thread() -> bool:
    """True when called on the facade's own loop thread."""
    thread = _thread
    return thread is not None and thread.ident == threading.get_ident()


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the loop thread and wait for its result.

    If the wait is interrupted (KeyboardInterrupt) or ``timeout`` passes,
    the coroutine is cancelled before the exception propagates.
    """
    if in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a blocking clients call was made on the clients event loop thread, where it "
            "would wait for itself; callbacks (minds, Referenceables, disconnect callbacks) "
            "run on that thread, so use the async API there: `await ref.call_remote(...)`"
        )
    # Find the loop and hand it the coroutine under the lock shutdown() takes
    # to retire a loop: a shutdown() from another thread then comes either
    # before (and this call starts a fresh loop) or after (and ends this call
    # like any other), never in between, where the loop would close under it.
    with _lock:
        loop = _get_loop_locked()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"no result within {timeout} s") from None
    except BaseException:
        future.cancel()
        raise


def register_closer(key: int, closer: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    _closers[key] = closer


def unregister_closer(key: int) -> None:
    _closers.pop(key, None)


async def _close_all() -> None:
    closers = list(_closers.values())
    _closers.clear()
    if closers:
        await asyncio.gather(*(closer() for closer in closers), return_exceptions=True)


def shutdown(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Close every blocking connection and stop the loop thread.

    Safe to call more than once, and from an ``atexit`` handler; a blocking
    call made afterwards starts a fresh loop.  Must not be called from the
    loop thread itself.
    """
    global _loop, _thread
    if in_loop_thread():
        raise RuntimeError("clients.shutdown() cannot be called from the clients loop thread")
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
    if loop is None or thread is None:
        return
    if thread.is_alive() and not loop.is_closed():
        future = asyncio.run_coroutine_threadsafe(_close_all(), loop)
        try:
            future.result(timeout)
        except BaseException:
            future.cancel()
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass
        thread.join(timeout)
