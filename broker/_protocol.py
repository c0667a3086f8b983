"""The asyncio adapter: owns the transport, the frame buffer, the timers, and
the running of user code (the only place user methods are called).

Every protocol decision is the sans-IO core's (:class:`broker._core.Broker`):
the adapter feeds it frames and the time, writes what it queued, arms one
timer at ``core.next_deadline()``, and turns its events
(:mod:`broker._events`) into futures resolved, calls run and closes.  Users
see a :class:`broker._connection.Connection`, which asks this adapter only
for what ``ConnectionSide`` lists.

Writes are coalesced where that is free: everything a connection's receive
pass produces (answers, PONGs, DECREFs) goes out in one write at its end.  A
message sent outside that connection's own receive pass (from user code, or
from another connection's pass) is written at once, so a lone call is never
delayed and no connection's writes wait on another's.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import time
import weakref
from typing import Any, Callable

from cred.log import get_logger

from ._core import GOODBYE_SENT, LINGERING, Broker
from ._events import (
    AnswerEvent,
    CallEvent,
    CancelEvent,
    FailureEvent,
    GoodbyeEvent,
    HelloEvent,
    TimedOut,
)
from ._flavors import lookup_method
from . import _eager
from ._failures import FailureLog
from ._errors import CallTimeout, ConnectionLost, DeadReference, LimitExceeded, ProtocolError
from ._framing import HEADER, FrameReader, FrameTooLarge, describe_foreign
from ._limits import Limits
from ._references import ROOT_ID
from ._connection import Connection
from ._remote import RemoteReference
from ._streaming import StreamSource, is_async_iterator

__all__ = ["BrokerProtocol"]

log = get_logger("broker")

_LARGE = 64 * 1024
# The liveness stamp is taken on every receive; loop.time() is a Python-level
# wrapper around the same clock.
_monotonic = time.monotonic


def _can_write_eof(transport: Any) -> bool:
    try:
        return bool(transport.can_write_eof())
    except NotImplementedError:
        return False


def _is_awaitable(value: Any) -> bool:
    # inspect.isawaitable consults the Awaitable ABC, which is slow for the
    # plain values most methods return.
    return asyncio.iscoroutine(value) or hasattr(type(value), "__await__")

_CHUNK = 512 * 1024
#: After closing on an error, how long (seconds) and how much input (bytes)
#: to discard while waiting for the peer to read our GOODBYE and close.
_LINGER = 2.0
_LINGER_BYTES = 4 * 1024 * 1024
#: Why reading from the peer is paused (bits of ``_reading_paused``).
_FOR_CACHE_UPDATES = 1  # async observe_* updates reached max_outstanding_calls
_FOR_WRITES = 2         # the peer is not reading what we send it
#: Result types that are never awaitable nor streams (checked by exact type).
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})
#: What user code may raise that still ends the program; anything else a
#: callback raises (CancelledError from a cancelled future's result(), say)
#: is logged and must not stop the connection's own bookkeeping.
_EXIT = (KeyboardInterrupt, SystemExit)


class BrokerProtocol(asyncio.BufferedProtocol):
    """One connection, either side."""

    def __init__(self, *, root: Any = None, limits: Limits,
                 unsafe_tracebacks: bool = False, server: Any = None,
                 registry: Any = None, hello_with_first_message: bool = False) -> None:
        self._hello_with_first_message = hello_with_first_message
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.limits = limits
        self.server = server
        self._root_source = root
        self.core = Broker(owner=self, make_proxy=self._make_proxy, limits=limits,
                           unsafe_tracebacks=unsafe_tracebacks, registry=registry,
                           on_released=self._on_released)
        # Before the peer's HELLO, handshake_bytes bounds the whole frame,
        # header included, however the bytes happen to arrive.
        self.reader = FrameReader(max(limits.handshake_bytes - HEADER.size, 0))
        self.transport: asyncio.Transport | None = None
        self._connection: Connection | None = Connection(self)
        self._connection_after: weakref.ref[Connection] | None = None
        self._futures: dict[int, asyncio.Future] = {}
        #: Calls waiting for a slot: (future or None for a one-way call, target,
        #: method, args, kwargs), in the order they were made.
        self._call_queue: collections.deque[tuple] = collections.deque()
        self._tasks: dict[int, asyncio.Task] = {}
        self._oneway_tasks: set[asyncio.Task] = set()
        self._cleanup_tasks: set[asyncio.Task] = set()
        self._cache_tasks = 0  # async observe_* updates still running
        self._reading_paused = 0  # _FOR_* bits; 0 while reading
        # Server side only: the cap on bytes queued for a peer that does not
        # read (smaller until it has logged in), and the timers that drop it.
        self._write_cap = limits.preauth_write_buffer
        self._write_blocked = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._needs_login = server is not None and getattr(root, "requires_login", False)
        self._login_timer: asyncio.TimerHandle | None = None
        self._failures: FailureLog | None = None  # made at the first failed call
        #: What the server counts this connection under (max_connections_per_source).
        self.counted_source: Any = None
        self._ready: asyncio.Future = self.loop.create_future()
        self._closed: asyncio.Future = self.loop.create_future()
        #: Set once the socket itself is closed (after any lingering).
        self._transport_closed: asyncio.Future = self.loop.create_future()
        # wait_closed() callers: woken directly once both of the above are
        # done (a shield per future would cost a loop turn each).
        self._close_waiters: list[asyncio.Future] = []
        self._lingering: asyncio.Transport | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._receiving = False
        self._defer_sync = False
        self._backlog: collections.deque[CallEvent] = collections.deque()
        # Appended on any thread (from __del__), drained on the loop: a deque,
        # so an append racing the drain is never lost.
        self._dead_proxies: collections.deque[tuple[int, int]] = collections.deque()
        self._dead_scheduled = False
        self._end_of_turn_flush = False
        self._watchers: list[Callable[[Any], Any]] = []
        self._close_reason: str | None = None
        #: Wakes the core at its next deadline (handshake, keepalive, idle).
        self._timer: asyncio.TimerHandle | None = None
        self.peer_address: Any = None
        #: Called with each entry the peer released: (object_id, entry).
        self.release_hooks: list[Callable[[int, Any], Any]] = []

    # -- plumbing -------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """This connection as users see it: the same object for as long as
        anybody holds it (the protocol lets go of it once closed)."""
        conn = self._connection
        if conn is None:
            conn = self._connection_after() if self._connection_after is not None else None
            if conn is None:
                conn = Connection(self)
                self._connection_after = weakref.ref(conn)
        return conn

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self._closed.done()

    def describe(self) -> str:
        return f"connection to {self.peer_address}" if self.peer_address else "connection"

    def _make_proxy(self, object_id: int) -> RemoteReference:
        return RemoteReference(self, object_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No TCP_NODELAY here: asyncio's and uvloop's TCP transports set it
        # themselves, and a second setsockopt is a syscall per connection.
        self.transport = transport  # type: ignore[assignment]
        self.peer_address = transport.get_extra_info("peername")
        root = self._root_source
        if root is not None:
            root_object = getattr(root, "root_object", None)
            self.core.refs.set_root(root_object(self.connection) if root_object else root)
        self.core.start(_monotonic(),
                        server_name=None if self.server is not None else self._peer_name())
        if self.server is not None:
            self._set_write_cap(self._write_cap)
            if self._needs_login and self.limits.login_timeout is not None:
                self._login_timer = self.loop.call_later(self.limits.login_timeout,
                                                         self._login_timed_out)
            # A client's first frames are usually on their way: the HELLO
            # goes out with the answer to them if they arrive within the
            # next loop turn, else on its own right after.
            self.loop.call_soon(self.loop.call_soon, self._flush_hello)
        elif not self._hello_with_first_message:
            self._write_now()
        # else connect() flushes at the end of the turn it returns in, so a
        # first call made right away carries the HELLO in the same packet.
        self._arm_timer()
        if self.server is not None:
            self.server._connection_made(self)

    def _flush_hello(self) -> None:
        if self.is_open:
            self._write_now()

    # -- what Connection uses (broker._connection.ConnectionSide) ---------------

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    def handshake_error(self) -> BaseException | None:
        """Why the handshake failed, once it has (else None)."""
        ready = self._ready
        return ready.exception() if ready.done() else None

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def root_reference(self) -> RemoteReference:
        """A counted proxy for the peer's root object."""
        refs = self.core.refs
        ref = refs.remote.get(ROOT_ID)
        proxy = ref() if ref is not None else None
        if proxy is None or proxy._pb_released:
            proxy = self._make_proxy(ROOT_ID)
            refs.remote[ROOT_ID] = weakref.ref(proxy)
        proxy._pb_count += 1
        return proxy

    @property
    def local_object_count(self) -> int:
        return sum(1 for e in self.core.refs.local.values() if not e.permanent)

    @property
    def remote_reference_count(self) -> int:
        return len(self.core.refs.live_proxies())

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    def add_watcher(self, callback: Callable[[Any], Any]) -> None:
        self._watchers.append(callback)

    def remove_watcher(self, callback: Callable[[Any], Any]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)

    def add_release_hook(self, hook: Callable[[int, Any], Any]) -> None:
        """``hook(object_id, entry)`` runs when the peer releases one of our objects."""
        self.release_hooks.append(hook)

    async def wait_closed(self) -> str:
        """Wait until closed, socket included; return why."""
        if not (self._closed.done() and self._transport_closed.done()):
            # Our own future: cancelling this wait cannot touch the protocol's.
            waiter = self.loop.create_future()
            self._close_waiters.append(waiter)
            await waiter
        return self._closed.result()

    # -- receiving ------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.transport is None:
            self._discard(nbytes)
            return
        self.reader.buffer_updated(nbytes)
        self.core.data_received(_monotonic())
        self._receiving = True
        try:
            self._process()
        finally:
            self._receiving = False
        if self.core.has_output:
            self._write_now()

    def data_received(self, data: bytes) -> None:  # for transports without buffers
        self.reader.feed(data)
        self.buffer_updated(0)

    def _process(self) -> None:
        core, reader = self.core, self.reader
        try:
            while self.transport is not None and not self._reading_paused:
                frame = reader.next_frame()
                if frame is None:
                    if not self._ready.done() and reader.buffered > self.limits.handshake_bytes:
                        raise FrameTooLarge(reader.buffered, self.limits.handshake_bytes)
                    return
                if core.cache_drops:
                    core.process_cache_drops()
                try:
                    event = core.receive_frame(frame)
                finally:
                    frame.release()
                if core.stopped:
                    self._run_stopped()
                if event is None:
                    continue
                kind = type(event)
                if kind is CallEvent:
                    if self._defer_sync or self._backlog:
                        # An async method started just before is waiting for
                        # its first step; queue this call behind it so that
                        # calls start in the order sent.
                        self._backlog.append(event)
                    else:
                        self._run_call(event)
                        if core.queued_bytes > self._write_cap:
                            # Answers past the cap leave now rather than at
                            # the end of the pass: if the peer is not reading,
                            # the transport pauses us before the next call.
                            self._write_now()
                elif kind is AnswerEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event.value)
                    if self._call_queue:
                        self._send_queued()
                elif kind is FailureEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        _fail(fut, event.error)
                    if self._call_queue:
                        self._send_queued()
                elif kind is CancelEvent:
                    task = self._tasks.get(event.req_id)
                    if task is not None:
                        task.cancel()
                    else:
                        self._cancel_waiting_call(event.req_id)
                elif kind is HelloEvent:
                    reader.max_frame = self.limits.max_frame
                    if not self._ready.done():
                        self._ready.set_result(None)
                    if self.server is not None and not self._needs_login:
                        self._raise_write_cap()
                    self._arm_timer()
                elif kind is GoodbyeEvent:
                    self._close_reason = f"the peer closed the connection ({event.code}): {event.reason}"
                    self._abort(linger=False)
                    return
        except FrameTooLarge as exc:
            reason = str(exc)
            if not self._ready.done():
                reason = self._handshake_refusal(exc)
            self._close_reason = reason
            core.goodbye("limit-exceeded", reason)
            self._fail_ready(LimitExceeded(reason))
            self._abort()
        except ProtocolError as exc:
            self._close_reason = str(exc)
            self._fail_ready(exc)
            self._abort()

    def _handshake_refusal(self, exc: FrameTooLarge) -> str:
        limit = self.limits.handshake_bytes
        if exc.limit != self.reader.max_frame:  # whole frames, none of them a HELLO
            return f"the peer sent more than handshake_bytes={limit} bytes before its HELLO"
        # The length header itself is out of range: most likely not PB at all
        # (an HTTP request's "GET " reads as a frame of 1.2 GB).
        head = self.reader.peek(16)
        who = "the peer" if self.server is not None else f"{self._peer_name()}, which"
        return (f"the first bytes {who} sent ({head[:HEADER.size]!r}) are not a PB frame "
                f"header: they announce a frame of {exc.size} bytes, more than a HELLO may "
                f"take (handshake_bytes={limit}, header included); {describe_foreign(head)}")

    def _peer_name(self) -> str:
        address = self.peer_address
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            return f"{host}:{address[1]}"
        return str(address or "the server")

    def _no_hello(self, seconds: float) -> str:
        return f"no PB HELLO from {self._peer_name()} within {seconds} s (is this a PB server?)"

    # -- running calls ----------------------------------------------------------

    def _drain_backlog(self) -> None:
        """Runs after the first step of the task that set ``_defer_sync``."""
        self._defer_sync = False
        backlog = self._backlog
        while backlog and self.transport is not None:
            self._run_call(backlog.popleft())
            if self._defer_sync:
                return  # that call started a task; the next drain follows its first step

    def _cancel_waiting_call(self, req_id: int) -> None:
        """CANCEL for a call still in the backlog: it never starts."""
        for event in self._backlog:
            if event.req_id == req_id:
                self._backlog.remove(event)
                if event.answer_wanted:
                    self.core.fail(req_id, asyncio.CancelledError(
                        f"call {event.method!r} was cancelled"))
                else:
                    self.core.finished(req_id)
                return

    def _run_call(self, event: CallEvent) -> None:
        try:
            result = lookup_method(event.target, event.method)(  # type: ignore[misc]
                *event.args, **event.kwargs)
            if type(result) not in _PLAIN and _is_awaitable(result):
                if not asyncio.iscoroutine(result):
                    result = self._await_result(result)
                # Its first step runs now, in arrival order; one that never
                # waits answers in this receive pass like a plain method.
                started = _eager.start(self.loop, result)
                if not started.done:
                    self._track(started.task, event, started.first_step_ran)  # type: ignore[arg-type]
                    return
                if started.error is not None:
                    raise started.error
                result = started.value
        except _EXIT:
            raise
        except BaseException as exc:
            # CancelledError too (f.result() of a cancelled future): it fails
            # this call, as a task does for an async method, not the connection.
            self._call_failed(event, exc)
            return
        self._call_succeeded(event, result)

    def _call_succeeded(self, event: CallEvent, result: Any) -> None:
        if event.answer_wanted:
            if type(result) not in _PLAIN and is_async_iterator(result):
                result = StreamSource(result)
            self.core.answer(event.req_id, result, event.perspective)
        else:
            self.core.finished(event.req_id)
        self._flush_soon()

    def _call_failed(self, event: CallEvent, exc: BaseException) -> None:
        failures = self._failures
        if failures is None:
            failures = self._failures = FailureLog()
        failures.report(lookup_method(event.target, event.method), event.method, exc,
                        self.describe())
        if event.answer_wanted:
            self.core.fail(event.req_id, exc)
        else:
            self.core.finished(event.req_id)
        self._flush_soon()

    def _track(self, task: asyncio.Task, event: CallEvent, first_step_ran: bool) -> None:
        if event.answer_wanted:
            self._tasks[event.req_id] = task
        else:
            self._oneway_tasks.add(task)
            if event.req_id is None:  # a cache update: no request id bounds it
                self._cache_tasks += 1
                if self._cache_tasks >= self.limits.max_outstanding_calls:
                    self._pause_reading(_FOR_CACHE_UPDATES)
        task.add_done_callback(lambda t, e=event: self._call_done(t, e))
        if not first_step_ran:
            # Later calls wait until this one has taken its first step (E-order).
            self._defer_sync = True
            self.loop.call_soon(self._drain_backlog)

    def _pause_reading(self, why: int) -> None:
        """Back-pressure: read nothing more from the peer until every reason
        (``_FOR_*``) given here has been taken back by :meth:`_resume_reading`."""
        was = self._reading_paused
        self._reading_paused = was | why
        if was or self.transport is None:
            return
        try:
            self.transport.pause_reading()
        except (NotImplementedError, RuntimeError):
            pass  # frames then wait in our buffer instead of the kernel's

    def _resume_reading(self, why: int) -> None:
        self._reading_paused &= ~why
        if self._reading_paused or self.transport is None:
            return
        try:
            self.transport.resume_reading()
        except (NotImplementedError, RuntimeError):
            pass
        # Frames that arrived before the pause are still buffered.
        self.loop.call_soon(self._process_buffered)

    def _process_buffered(self) -> None:
        if self.transport is not None and not self._reading_paused and self.reader.buffered:
            self.buffer_updated(0)

    @staticmethod
    async def _await_result(awaitable: Any) -> Any:
        return await awaitable

    def _call_done(self, task: asyncio.Task, event: CallEvent) -> None:
        self._tasks.pop(event.req_id, None)
        self._oneway_tasks.discard(task)
        if event.req_id is None:
            self._cache_tasks -= 1
            if (self._reading_paused & _FOR_CACHE_UPDATES
                    and self._cache_tasks <= self.limits.max_outstanding_calls // 2):
                self._resume_reading(_FOR_CACHE_UPDATES)
        if task.cancelled():
            if event.answer_wanted:
                self._call_failed(event, asyncio.CancelledError(f"call {event.method!r} was cancelled"))
            else:
                self.core.finished(event.req_id)
        elif task.exception() is not None:
            self._call_failed(event, task.exception())  # type: ignore[arg-type]
        else:
            self._call_succeeded(event, task.result())

    @property
    def calls_in_progress(self) -> int:
        return len(self._tasks) + len(self._oneway_tasks)

    # -- sending ------------------------------------------------------------------

    def send_call(self, target: int, method: str, args: tuple, kwargs: dict,
                  timeout: float | None) -> asyncio.Future:
        if not self.is_open:
            raise DeadReference(self._close_reason or "the connection is closed")
        core = self.core
        fut = _PendingCall(loop=self.loop)
        fut._protocol = self
        if (self._call_queue or core.free_call_slots <= 0) and self.limits.wait_for_call_slot:
            # Every slot is taken: the call waits its turn here (in order,
            # behind those already waiting) instead of failing.
            fut._req_id = None
            self._call_queue.append((fut, target, method, args, kwargs))
        else:
            fut._req_id = req_id = core.call(target, method, args, kwargs, True)
            self._futures[req_id] = fut
            self._flush_soon()
        if timeout is not None:
            handle = self.loop.call_later(timeout, self._call_timed_out, fut, method, timeout)
            fut.add_done_callback(lambda f, h=handle: h.cancel())
        return fut

    def send_call_only(self, target: int, method: str, args: tuple, kwargs: dict) -> None:
        if not self.is_open:
            raise DeadReference(self._close_reason or "the connection is closed")
        if self._call_queue:  # behind the calls waiting for a slot: E-order
            self._call_queue.append((None, target, method, args, kwargs))
            return
        self.core.call(target, method, args, kwargs, False)
        self._flush_soon()

    def _send_queued(self) -> None:
        """Send the calls that were waiting for a slot, as far as slots allow."""
        queue, core = self._call_queue, self.core
        while queue and self.is_open:
            fut, target, method, args, kwargs = queue[0]
            if fut is not None and core.free_call_slots <= 0:
                break
            queue.popleft()
            try:
                req_id = core.call(target, method, args, kwargs, fut is not None)
            except Exception as exc:  # an argument that cannot be sent, say
                if fut is not None:
                    _fail(fut, exc)
                continue
            if fut is not None:
                fut._req_id = req_id
                self._futures[req_id] = fut
        self._flush_soon()

    def _call_cancelled(self, fut: _PendingCall) -> None:
        req_id = fut._req_id
        if req_id is None:
            self._unqueue(fut)
        elif self._futures.pop(req_id, None) is not None:
            self.core.cancel(req_id)
            self._flush_soon()
            if self._call_queue:
                self._send_queued()

    def _unqueue(self, fut: _PendingCall) -> None:
        for entry in self._call_queue:
            if entry[0] is fut:
                self._call_queue.remove(entry)
                return

    def _call_timed_out(self, fut: _PendingCall, method: str, timeout: float) -> None:
        if fut.done():
            return
        req_id = fut._req_id
        if not self._ready.done() and self.server is None:
            # Nothing came back at all: not a slow method, most likely not PB.
            if req_id is None:
                self._unqueue(fut)
            else:
                self._futures.pop(req_id, None)
                self.core.cancel(req_id)
            _fail(fut, CallTimeout(f"call {method!r}: {self._no_hello(timeout)}"))
            return
        if req_id is None:
            self._unqueue(fut)
            _fail(fut, CallTimeout(
                f"call {method!r} found no free slot within {timeout} s "
                f"({len(self.core.waiting)} calls were waiting for answers); it was not sent"))
            return
        self._futures.pop(req_id, None)
        self.core.cancel(req_id)
        _fail(fut, CallTimeout(
            f"call {method!r} got no answer within {timeout} s; it was cancelled remotely"))
        self._flush_soon()
        if self._call_queue:
            self._send_queued()

    def _flush_soon(self) -> None:
        if self.core.stopped:
            self._run_stopped()
        if self._receiving:
            return  # the end of the receive pass writes everything at once
        # A message sent outside a receive pass goes out now: a lone call is
        # never delayed, and a burst costs one small write per call, which
        # measured cheaper than scheduling a flush per loop turn.
        self._write_now()

    def _write_now(self) -> None:
        out = self.core.take_output()
        transport = self.transport
        if transport is None or not out:
            return
        if len(out) == 1:
            transport.write(out[0])
            return
        # Join the small frames; write large bodies on their own (joining
        # would copy them).  On Python 3.11 writelines() joins everything.
        small: list[bytes] = []
        for chunk in out:
            if len(chunk) < _LARGE:
                small.append(chunk)
                continue
            if small:
                transport.write(b"".join(small) if len(small) > 1 else small[0])
                small = []
            # Hand the transport at most 512 KiB at a time: larger writes
            # measured several times slower here (the kernel takes part of
            # the buffer and the transport copies the rest).
            view = memoryview(chunk)
            for start in range(0, len(view), _CHUNK):
                transport.write(view[start:start + _CHUNK])
        if small:
            transport.write(b"".join(small) if len(small) > 1 else small[0])
        if self._write_blocked:
            self._check_write_backlog(transport)

    # -- a peer that does not read (server side) ------------------------------------

    def pause_writing(self) -> None:
        """The transport holds more than our cap for this peer: stop reading
        from it, so that it makes us produce nothing more, and give it
        ``write_stall_timeout`` seconds to catch up."""
        if self.server is None or self._write_blocked:
            return  # a client's backlog is its own application's doing
        self._write_blocked = True
        self._pause_reading(_FOR_WRITES)
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._write_stalled)

    def resume_writing(self) -> None:
        if not self._write_blocked:
            return
        self._write_blocked = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._resume_reading(_FOR_WRITES)

    def _write_stalled(self) -> None:
        self._stall_timer = None
        transport = self.transport
        if transport is None or not self._write_blocked:
            return
        queued = transport.get_write_buffer_size()
        if queued <= self._write_cap:  # draining, if slowly: another period
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._write_stalled)
            return
        self._drop_slow_reader(
            f"the peer left {queued} bytes unread for {self.limits.write_stall_timeout} s "
            f"(the cap is {self._write_cap} bytes: "
            f"{'max_write_buffer' if self._write_cap == self.limits.max_write_buffer else 'preauth_write_buffer'})")

    def _check_write_backlog(self, transport: Any) -> None:
        # While paused only our own side (a server pushing to observers, a
        # long answer) still writes; past twice the cap and a frame that is
        # no longer a stall to wait out.
        queued = transport.get_write_buffer_size()
        if queued > 2 * self._write_cap + self.limits.max_frame:
            self._drop_slow_reader(f"{queued} bytes are queued for a peer that is not reading "
                                   f"(more than twice the cap of {self._write_cap} bytes)")

    def _drop_slow_reader(self, reason: str) -> None:
        log.warning("closing a slow reader", connection=self.describe(), reason=reason)
        self._write_blocked = False  # no second check from the close's own write
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._close_reason = reason
        self.core.goodbye("limit-exceeded", reason)
        self._fail_ready(LimitExceeded(reason))
        # Lingering bounds what the backlog may still cost: the socket is
        # aborted after _LINGER seconds whether the peer reads or not.
        self._abort()

    def _raise_write_cap(self) -> None:
        limit = self.limits.max_write_buffer
        if self._write_cap != limit and self.transport is not None:
            self._set_write_cap(limit)

    def _set_write_cap(self, limit: int) -> None:
        self._write_cap = limit
        try:
            self.transport.set_write_buffer_limits(high=limit)  # type: ignore[union-attr]
        except (AttributeError, NotImplementedError):
            pass  # an in-memory transport (broker.testing): nothing queues

    # -- logging in (server side) -----------------------------------------------------

    def logged_in(self) -> None:
        """A login succeeded on this connection: it is no longer a stranger's."""
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        self._raise_write_cap()

    def _login_timed_out(self) -> None:
        self._login_timer = None
        if not self.is_open:
            return
        self._close_reason = (f"the peer did not log in within {self.limits.login_timeout} s "
                              f"(login_timeout)")
        self.core.goodbye("timeout", self._close_reason)
        self._fail_ready(ConnectionLost(self._close_reason))
        self._abort()

    # -- references -------------------------------------------------------------

    def proxy_died(self, object_id: int, count: int) -> None:
        """Called from RemoteReference.__del__, on any thread, at any time."""
        if object_id == ROOT_ID:
            return  # never counted, so nothing to tell (its table slot is reused)
        self._dead_proxies.append((object_id, count))
        self._schedule_releases()

    def _schedule_releases(self) -> None:
        """Have the loop send what dead proxies and caches owe the peer."""
        if not self._dead_scheduled and not self._closed.done():
            self._dead_scheduled = True
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._send_decrefs)
            else:
                self.loop.call_soon_threadsafe(self._send_decrefs)

    def proxy_released(self, proxy: RemoteReference) -> None:
        self.core.refs.forget_proxy(proxy._pb_id)
        if self.is_open and proxy._pb_id != ROOT_ID:
            self.core.decref(proxy._pb_id, proxy._pb_count)
            # Nobody waits for a DECREF: it rides with whatever this loop
            # turn sends next (often the call that follows the release).
            self.flush_at_end_of_turn()

    def flush_at_end_of_turn(self) -> None:
        """Send what is queued when this loop turn is done, unless something
        sent before then takes it along."""
        if not self._end_of_turn_flush:
            self._end_of_turn_flush = True
            self.loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._end_of_turn_flush = False
        if self.is_open:
            self._flush_soon()

    def _send_decrefs(self) -> None:
        self._dead_scheduled = False
        dead = self._dead_proxies
        refs = self.core.refs
        while dead:
            object_id, count = dead.popleft()
            refs.forget_proxy(object_id)
            self.core.decref(object_id, count)
        if self.core.cache_drops:
            self.core.process_cache_drops()
        if self.core.stopped:
            self._run_stopped()
        if self.is_open:
            self._flush_soon()

    def send_cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        if self.is_open:
            self.core.cache_call(cache_id, method, args, kwargs)
            if self.core.stopped:
                self._run_stopped()
            if not self._receiving:
                # Updates come in bursts (one change fanned out to every
                # observer, often many changes in one pass of another
                # connection): each connection writes its burst once, at the
                # end of the loop turn.  bench_cache.py row (1): about 2.5x.
                self.flush_at_end_of_turn()

    def cache_is_held(self, cache_id: int) -> bool:
        return self.is_open and cache_id in self.core.refs.caches_out

    def cache_died(self, cache: Any) -> None:
        """Called from RemoteCache.__del__, on any thread, at any time."""
        state = dict(cache.__dict__)
        del state["_pb_finalized"]  # the zombie made from it is alive
        self.core.cache_drops.append((cache._pb_cache_id, cache._pb_count, type(cache), state))
        self._schedule_releases()

    def _run_stopped(self) -> None:
        for cacheable, perspective, observer in self.core.take_stopped():
            self.loop.call_soon(self._stopped_observing, cacheable, perspective, observer)

    @staticmethod
    def _stopped_observing(cacheable: Any, perspective: Any, observer: Any) -> None:
        try:
            cacheable.stopped_observing(perspective, observer)
        except _EXIT:
            raise
        except BaseException:
            log.exception("stopped_observing failed", cacheable=repr(cacheable))

    def _on_released(self, object_id: int, entry: Any) -> None:
        if type(entry.obj) is StreamSource:
            closing = entry.obj._pb_on_release()
            if closing is not None:
                # Clean-up, not a call: closing the connection waits for it
                # but does not cancel it (a release and a close can arrive
                # in one receive pass, before this task's first step).
                task = self.loop.create_task(_log_errors(closing, "closing a released stream"))
                self._cleanup_tasks.add(task)
                task.add_done_callback(self._cleanup_tasks.discard)
        for hook in self.release_hooks:
            try:
                hook(object_id, entry)
            except _EXIT:
                raise
            except BaseException:
                log.exception("release hook failed", hook=repr(hook))

    # -- timers -------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Wake at the core's next deadline.  A timer already due no later
        stays (it finds nothing due, and re-arms): input, which moves the
        idle and keepalive deadlines, never touches the timer."""
        due = self.core.next_deadline()
        timer = self._timer
        if due is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        when = self.loop.time() + (due - _monotonic())
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.is_open:
            return
        event = self.core.handle_timeout(_monotonic())
        if type(event) is TimedOut:
            self._close_reason = event.reason
            self._write_now()
            if event.handshake:
                self._fail_ready(ConnectionLost(event.reason))
            self._abort()
            return
        if event is not None:  # a PING
            self._write_now()
        self._arm_timer()

    # -- closing ------------------------------------------------------------------

    def _fail_ready(self, exc: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # mark retrieved: nobody may be waiting

    def _abort(self, linger: bool = True) -> None:
        """Close after sending what is queued (a GOODBYE saying why).

        Closing a TCP socket that still holds unread input makes the kernel
        send a reset, which can destroy the GOODBYE before the peer reads
        it.  So unless the peer is closing anyway, shut down our sending
        side, tear the connection down at once, and discard what the peer
        still sends until it closes too (at most ``_LINGER`` seconds or
        ``_LINGER_BYTES``) before closing the socket.
        """
        transport = self.transport
        if transport is None:
            return
        self._write_now()
        if (not linger or self.core.state is not GOODBYE_SENT or not _can_write_eof(transport)
                or transport.is_closing()):
            transport.close()
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.core.linger(_LINGER_BYTES)
        self._lingering = transport
        self._linger_timer = self.loop.call_later(_LINGER, transport.abort)
        self._lost(None)

    def _discard(self, nbytes: int) -> None:
        """Input that arrives while lingering after a close."""
        self.reader.clear()
        if self.core.discard(nbytes) and self._lingering is not None:
            self._lingering.abort()

    def refuse(self, code: str, reason: str) -> None:
        """Close at once with ``GOODBYE(code, reason)``, lingering so that the
        peer reads it even if it already sent more."""
        self._close_reason = reason
        if self.transport is not None:
            self.core.goodbye(code, reason)
            self._abort()

    def start_goodbye(self, code: str, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None:
            self.core.goodbye(code, reason)
            self._write_now()
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._lingering is not None:  # the socket closed after lingering
            self._lingering = None
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            self.core.close()
            if self._closed.done() and self.server is not None:
                self.server._connection_lost(self)
            self._transport_closed.set_result(None)
            self._wake_close_waiters()
            return
        self._lost(exc)
        if not self._transport_closed.done():
            self._transport_closed.set_result(None)
            self._wake_close_waiters()

    def _lost(self, exc: BaseException | None) -> None:
        if self.core.state is not LINGERING:  # else closed when the socket is
            self.core.close()
        self.transport = None
        for timer in (self._timer, self._login_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._login_timer = self._stall_timer = None
        reason = self._close_reason or (f"connection lost: {exc}" if exc else "connection closed")
        if not self._ready.done():
            self._fail_ready(ConnectionLost(reason))
        futures, self._futures = self._futures, {}
        pending = list(futures.values())
        queue = self._call_queue
        if queue:
            pending += [entry[0] for entry in queue if entry[0] is not None]
            queue.clear()
        for fut in pending:
            if not fut.done():
                _fail(fut, ConnectionLost(reason))
        # Calls still waiting for their turn never start: their peer is gone.
        self._backlog.clear()
        running = list(self._tasks.values()) + list(self._oneway_tasks)
        for task in running:
            task.cancel()
        proxies = self.core.refs.live_proxies()
        entries, caches = self.core.refs.clear()
        for entry in entries:
            self._on_released(0, entry)
        for cache_entry in caches:
            self._stopped_observing(cache_entry.obj, cache_entry.perspective, cache_entry.observer)
        self.core.cache_drops.clear()
        for proxy in proxies:
            for cb in proxy._pb_connection_lost():
                self._run_callback(cb, proxy)
        watchers, self._watchers = self._watchers, []
        for cb in watchers:
            self._run_callback(cb, self.connection)
        self._dead_proxies.clear()
        # Stream producers released above may have started closing too.
        running = [t for t in running + list(self._oneway_tasks) + list(self._cleanup_tasks)
                   if not t.done()]
        if running:
            # The connection counts as closed once the calls it was running
            # have finished cancelling: nothing of it outlives wait_closed().
            self._closer = self.loop.create_task(self._finish_close(running, reason))
        else:
            self._finish_closed(reason)

    async def _finish_close(self, running: list[asyncio.Task], reason: str) -> None:
        await asyncio.wait(running)
        self._finish_closed(reason)

    def _finish_closed(self, reason: str) -> None:
        if self.server is not None and self._lingering is None:
            self.server._connection_lost(self)  # else when the socket has closed
        if not self._closed.done():
            self._closed.set_result(reason)
            self._wake_close_waiters()

    def _wake_close_waiters(self) -> None:
        if self._closed.done() and self._transport_closed.done():
            waiters, self._close_waiters = self._close_waiters, []
            for waiter in waiters:
                if not waiter.done():  # a cancelled wait_closed() leaves its own behind
                    waiter.set_result(None)
            self._unlink()

    def _unlink(self) -> None:
        """Closed for good: drop the links that make this protocol, its
        core, its reference tables and its Connection a cycle, so they go as
        soon as nobody holds them rather than at the next cyclic collection
        (about 20 µs a login, measured, when every login is a connection)."""
        refs = self.core.refs
        refs.owner = refs._make_proxy = None
        refs._on_released = refs._on_uncached = refs._on_cache_miss = _ignore
        self.release_hooks = []
        conn = self._connection
        if conn is not None:
            self._connection_after = weakref.ref(conn)
            self._connection = None

    def _run_callback(self, cb: Callable[[Any], Any], arg: Any) -> None:
        try:
            result = cb(arg)
            if inspect.isawaitable(result):
                task = self.loop.create_task(_log_errors(result, "disconnect callback"))
                self._oneway_tasks.add(task)
                task.add_done_callback(self._oneway_tasks.discard)
        except _EXIT:
            raise
        except BaseException:
            log.exception("disconnect callback failed", callback=repr(cb))


def _ignore(*args: Any) -> None:
    return None


async def _log_errors(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("callback failed", what=what)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    fut.set_exception(exc)
    # A failed call nobody awaited is the caller's business: no "exception
    # was never retrieved" from the collector for each of them.
    fut._log_traceback = False


class _PendingCall(asyncio.Future):
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
    _protocol: BrokerProtocol
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
