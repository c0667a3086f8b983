"""The Twisted dialect over asyncio: the transport, timers and user code.

User methods run here, never in the core.  Output a receive pass produces
goes out in one write at its end; a call made from user code is written at
once.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import weakref
from typing import Any, Callable

from cred.log import get_logger

from .._errors import CallTimeout, ConnectionLost, DeadReference, PBError, ProtocolError
from .._failures import FailureLog
from .._limits import Limits
from .._references import ROOT_ID
from .._connection import Connection
from .._remote import RemoteReference
from ._core import AnswerEvent, CallEvent, FailureEvent, ReadyEvent, TwistedBroker

__all__ = ["TwistedProtocol", "TwistedConnection"]

log = get_logger("broker.twisted")

_EXIT = (KeyboardInterrupt, SystemExit)
#: Results that cannot be awaited, told apart without inspect (bench_calls:
#: twisted-client->pb, burst).
_NEVER_AWAITABLE = frozenset({str, bytes, int, float, bool, type(None), list, tuple, dict})


class TwistedProtocol(asyncio.Protocol):
    """One Twisted-dialect connection, either side."""

    def __init__(self, *, root: Any = None, limits: Limits, is_client: bool,
                 unsafe_tracebacks: bool = False, server: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.limits = limits
        self.server = server
        self._root_source = root
        self.core = TwistedBroker(owner=self, make_proxy=self._make_proxy, is_client=is_client,
                                  limits=limits, unsafe_tracebacks=unsafe_tracebacks,
                                  on_released=self._on_released)
        self.transport: asyncio.Transport | None = None
        self.peer_address: Any = None
        self.counted_source: Any = None
        self._connection = TwistedConnection(self)
        self._futures: dict[int, asyncio.Future] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._other_tasks: set[asyncio.Task] = set()
        self._ready: asyncio.Future = self.loop.create_future()
        self._closed: asyncio.Future = self.loop.create_future()
        self._close_reason: str | None = None
        self._receiving = False
        self._dead: collections.deque[tuple[str, int, int]] = collections.deque()
        self._dead_scheduled = False
        self._watchers: list[Callable[[Any], Any]] = []
        self._failures = FailureLog()
        self._handshake_timer: asyncio.TimerHandle | None = None
        #: Called with each entry the peer released: (object_id, entry).
        self.release_hooks: list[Callable[[int, Any], Any]] = []

    # -- what RemoteReference, RemoteCache and observers call -----------------------

    @property
    def connection(self) -> TwistedConnection:
        return self._connection

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self._closed.done()

    @property
    def calls_in_progress(self) -> int:
        return len(self._tasks)

    def describe(self) -> str:
        return f"Twisted-dialect connection to {self.peer_address}"

    # -- the ConnectionSide that broker.Connection asks of an adapter -------------

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def local_object_count(self) -> int:
        return sum(1 for e in self.core.refs.local.values() if not e.permanent)

    @property
    def remote_reference_count(self) -> int:
        return len(self.core.refs.live_proxies())

    def add_watcher(self, callback: Callable[[Any], Any]) -> None:
        self._watchers.append(callback)

    def remove_watcher(self, callback: Callable[[Any], Any]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)

    def handshake_error(self) -> BaseException | None:
        return self._ready.exception() if self._ready.done() else None

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def root_reference(self) -> RemoteReference:
        refs = self.core.refs
        ref = refs.remote.get(ROOT_ID)
        proxy = ref() if ref is not None else None
        if proxy is None or proxy._pb_released:
            proxy = self._make_proxy(ROOT_ID)
            refs.remote[ROOT_ID] = weakref.ref(proxy)
        proxy._pb_count += 1
        return proxy

    def add_release_hook(self, hook: Callable[[int, Any], Any]) -> None:
        self.release_hooks.append(hook)

    def logged_in(self) -> None:
        """Nothing to lift: this dialect has no login timer or stranger's write cap."""

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    def _make_proxy(self, object_id: int) -> RemoteReference:
        return RemoteReference(self, object_id)

    def send_call(self, object_id: int, name: str, args: tuple, kwargs: dict,
                  timeout: float | None) -> asyncio.Future:
        fut = self.loop.create_future()
        if not self.is_open:
            fut.set_exception(DeadReference(self._close_reason or "the connection is closed"))
            return fut
        try:
            req_id = self.core.call(object_id, name, args, kwargs)
        except PBError as exc:
            fut.set_exception(exc)
            return fut
        except Exception as exc:
            fut.set_exception(PBError(f"cannot send the arguments of {name!r}: {exc}"))
            return fut
        self._futures[req_id] = fut
        if timeout is not None:
            handle = self.loop.call_later(timeout, self._timed_out, req_id, name, timeout)
            fut.add_done_callback(lambda _f: handle.cancel())
        self._flush()
        return fut

    def send_call_only(self, object_id: int, name: str, args: tuple, kwargs: dict) -> None:
        if self.is_open:
            self.core.call(object_id, name, args, kwargs, answer_wanted=False)
            self._flush()

    def _timed_out(self, req_id: int, name: str, timeout: float) -> None:
        # Twisted PB has no way to cancel a call: the answer is dropped when it comes.
        fut = self._futures.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(CallTimeout(f"no answer to {name!r} within {timeout} s"))

    def proxy_released(self, proxy: RemoteReference) -> None:
        self.core.refs.forget_proxy(proxy._pb_id)
        if self.is_open and proxy._pb_id != ROOT_ID:
            self.core.decref(proxy._pb_id, proxy._pb_count)
            self._flush()

    def proxy_died(self, object_id: int, count: int) -> None:
        """From RemoteReference.__del__: any thread, any time."""
        if object_id != ROOT_ID:
            self._dead.append(("decref", object_id, count))
            self._schedule_dead()

    def cache_died(self, cache: Any) -> None:
        self._dead.append(("decache", cache._pb_cache_id, cache._pb_count))
        self._schedule_dead()

    def _schedule_dead(self) -> None:
        if self._dead_scheduled or self._closed.done():
            return
        self._dead_scheduled = True
        try:
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._send_dead)
            else:
                self.loop.call_soon_threadsafe(self._send_dead)
        except RuntimeError:  # the loop is closed
            pass

    def _send_dead(self) -> None:
        self._dead_scheduled = False
        refs = self.core.refs
        while self._dead:
            what, object_id, count = self._dead.popleft()
            if what == "decref":
                refs.forget_proxy(object_id)
                self.core.decref(object_id, count)
            else:
                refs.caches_in.pop(object_id, None)
                self.core.decache(object_id, count)
        self._flush()

    def send_cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        if self.is_open:
            self.core.cache_call(cache_id, method, args, kwargs)
            self._flush()

    def cache_is_held(self, cache_id: int) -> bool:
        return self.is_open and cache_id in self.core.refs.caches_out

    def _on_released(self, object_id: int, entry: Any) -> None:
        if object_id:
            self.core.remember_released(object_id, entry.obj)
        for hook in list(self.release_hooks):
            try:
                hook(object_id, entry)
            except _EXIT:
                raise
            except BaseException:
                log.exception("release hook failed", hook=repr(hook))

    # -- transport ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer_address = transport.get_extra_info("peername")
        root = self._root_source
        if root is not None:
            root_object = getattr(root, "root_object", None)
            self.core.refs.set_root(root_object(self.connection) if root_object else root)
        self.core.start()
        self._flush()
        self._handshake_timer = self.loop.call_later(self.limits.handshake_timeout,
                                                     self._handshake_timed_out)
        if self.server is not None:
            self.server._connection_made(self)

    def _handshake_timed_out(self) -> None:
        if not self._ready.done():
            self._close(ConnectionLost(
                f"no Twisted PB dialect negotiation within {self.limits.handshake_timeout} s"))

    def _flush(self) -> None:
        if self._receiving:
            return  # the receive pass writes once at its end
        data = self.core.take_output()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self._receiving = True
        try:
            events = self.core.receive_data(data)
            for event in events:
                kind = type(event)
                if kind is CallEvent:
                    self._run_call(event)
                elif kind is AnswerEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event.value)
                elif kind is FailureEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(event.error)
                elif kind is ReadyEvent:
                    if self._handshake_timer is not None:
                        self._handshake_timer.cancel()
                    if not self._ready.done():
                        self._ready.set_result(None)
            if self.core.stopped:
                self._run_stopped()
        except ProtocolError as exc:
            # Garbage: close, as Twisted does; the peer gets no traceback.
            log.info("closing a Twisted-dialect connection", peer=str(self.peer_address),
                     reason=str(exc))
            self._receiving = False
            self._close(ProtocolError(f"the peer broke the Twisted PB protocol: {exc}"))
            return
        finally:
            self._receiving = False
        self._flush()

    def _run_stopped(self) -> None:
        stopped, self.core.stopped = self.core.stopped, []
        for cacheable, perspective, observer in stopped:
            try:
                cacheable.stopped_observing(perspective, observer)
            except _EXIT:
                raise
            except BaseException:
                log.exception("stopped_observing failed", cacheable=repr(cacheable))

    # -- running calls ------------------------------------------------------------

    def _run_call(self, event: CallEvent) -> None:
        try:
            result = event.func(*event.args, **event.kwargs)
            if type(result) not in _NEVER_AWAITABLE and inspect.isawaitable(result):
                task = self.loop.create_task(self._finish(event, result))
                self._tasks[id(task)] = task
                task.add_done_callback(lambda t: self._tasks.pop(id(t), None))
                return
        except _EXIT:
            raise
        except BaseException as exc:
            self._call_failed(event, exc)
            return
        self._call_succeeded(event, result)

    async def _finish(self, event: CallEvent, awaitable: Any) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if self.is_open:
                self._call_failed(event, ConnectionLost("the call was cancelled"))
            raise
        except BaseException as exc:
            self._call_failed(event, exc)
            return
        self._call_succeeded(event, result)

    def _call_succeeded(self, event: CallEvent, result: Any) -> None:
        if event.answer_wanted:
            self.core.answer(event.req_id, result, event.perspective)
            self._flush()

    def _call_failed(self, event: CallEvent, exc: BaseException) -> None:
        self._failures.report(event.func, event.method, exc, self.describe())
        if event.answer_wanted:
            self.core.fail(event.req_id, exc)
            self._flush()

    # -- closing ----------------------------------------------------------------

    def _close(self, exc: BaseException) -> None:
        self._close_reason = str(exc)
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()
        transport = self.transport
        if transport is not None:
            self._flush()
            transport.close()
        self._lost(exc)

    def refuse(self, code: str, reason: str) -> None:
        self._close(ConnectionLost(reason))

    def start_goodbye(self, code: str, reason: str) -> None:
        # Twisted PB has no goodbye message: closing is the goodbye.
        self._close(ConnectionLost(reason))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost(ConnectionLost(self._close_reason or
                                  (f"connection lost: {exc}" if exc else "connection closed")))

    def _lost(self, exc: BaseException) -> None:
        if self._closed.done():
            return
        self.transport = None
        self.core.close()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        reason = self._close_reason or str(exc)
        if not self._ready.done():
            self._ready.set_exception(ConnectionLost(reason))
            self._ready.exception()
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(reason))
        for task in list(self._tasks.values()):
            task.cancel()
        proxies = self.core.refs.live_proxies()
        entries, caches = self.core.refs.clear()
        for entry in entries:
            self._on_released(0, entry)
        for cache_entry in caches:
            try:
                cache_entry.obj.stopped_observing(cache_entry.perspective, cache_entry.observer)
            except Exception:
                log.exception("stopped_observing failed")
        for proxy in proxies:
            for cb in proxy._pb_connection_lost():
                self._run_callback(cb, proxy)
        watchers, self._watchers = self._watchers, []
        for cb in watchers:
            self._run_callback(cb, self.connection)
        self._dead.clear()
        self._closed.set_result(reason)
        if self.server is not None:
            self.server._connection_lost(self)

    def _run_callback(self, cb: Callable[[Any], Any], arg: Any) -> None:
        try:
            result = cb(arg)
            if inspect.isawaitable(result):
                task = self.loop.create_task(result)
                self._other_tasks.add(task)
                task.add_done_callback(self._other_tasks.discard)
        except _EXIT:
            raise
        except BaseException:
            log.exception("disconnect callback failed", callback=repr(cb))


class TwistedConnection(Connection):
    """A Twisted-dialect connection as users see it: a :class:`broker.Connection`
    whose root waits for the dialect negotiation and whose login is Twisted's."""

    dialect = "twisted"
    _protocol: TwistedProtocol  # type: ignore[assignment]

    async def root(self) -> RemoteReference:
        """The peer's root object (Twisted's ``getRootObject``): it waits for
        the dialect negotiation, which Twisted cannot pipeline behind."""
        await self._protocol.wait_ready()
        return await super().root()

    async def login(self, username: str, password: str, *,  # type: ignore[override]
                    mind: Any = None, **_ignored: Any) -> RemoteReference:
        """Twisted's username/password challenge/response login."""
        from ._login import login_over

        return await login_over(self, username, password, mind)

    async def login_anonymous(self, *, mind: Any = None,  # type: ignore[override]
                              **_ignored: Any) -> RemoteReference:
        root = await self.root()
        return await root.call_remote("loginAnonymous", mind)
