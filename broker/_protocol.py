"""The asyncio adapter: owns the transport, the frame buffer, flow control
and the timers.

Every protocol decision is the sans-IO core's (:class:`broker._core.Broker`):
the handshake, the deadlines (login included), the call-slot queue, the
E-order backlog, DECREF/DECACHE.  The adapter feeds it frames and the time,
writes what it queued (:mod:`broker._writes`), arms one timer at
``core.next_deadline()``, and turns its events (:mod:`broker._events`) into
futures resolved (:mod:`broker._pending`), calls run (:mod:`broker._dispatch`,
the only place user code is called) and closes.  Users see a
:class:`broker._connection.Connection`, which asks this adapter only for
what ``ConnectionSide`` lists.

Writes are coalesced where that is free: everything a connection's receive
pass produces (answers, PONGs, DECREFs) goes out in one write at its end.  A
message sent outside that connection's own receive pass (from user code, or
from another connection's pass) is written at once if it is the
connection's first of the loop turn, so a lone call is never delayed; later
ones in the same turn leave together when it ends (``TurnWrites``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any, Callable

from cred.log import get_logger

from ._core import GOODBYE_SENT, LINGERING, Broker
from ._events import (
    AnswerEvent,
    CallEvent,
    CallSent,
    CancelEvent,
    FailureEvent,
    GoodbyeEvent,
    HelloEvent,
    TimedOut,
)
from ._dispatch import Dispatcher
from ._pending import PendingCall, fail
from ._errors import CallTimeout, ConnectionLost, DeadReference, LimitExceeded, ProtocolError
from ._writes import WriteCap, turn_writes_for, write_out
from ._framing import HEADER, FrameReader, FrameTooLarge, handshake_refusal, peer_name
from ._limits import Limits
from ._references import ROOT_ID
from ._connection import Connection
from ._remote import RemoteReference

__all__ = ["BrokerProtocol"]

log = get_logger("broker")

# The liveness stamp is taken on every receive; loop.time() is a Python-level
# wrapper around the same clock.
_monotonic = time.monotonic


def _can_write_eof(transport: Any) -> bool:
    try:
        return bool(transport.can_write_eof())
    except NotImplementedError:
        return False


#: After closing on an error, how long (seconds) and how much input (bytes)
#: to discard while waiting for the peer to read our GOODBYE and close.
_LINGER = 2.0
_LINGER_BYTES = 4 * 1024 * 1024
#: Why reading from the peer is paused (bits of ``_reading_paused``).
_FOR_CACHE_UPDATES = 1  # async observe_* updates reached max_outstanding_calls
_FOR_WRITES = 2         # the peer is not reading what we send it


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
        # Held weakly: the Connection holds this adapter, and users hold the
        # Connection; no cycle to break when closed.
        self._connection_ref: weakref.ref[Connection] | None = None
        #: Our calls waiting for their answer, by request id.
        self._futures: dict[int, asyncio.Future] = {}
        self._dispatch = Dispatcher(self.loop, self.core, settled=self._flush_soon,
                                    cache_pressure=self._cache_pressure,
                                    describe=self.describe)
        self._tasks = self._dispatch.tasks
        self._reading_paused = 0  # _FOR_* bits; 0 while reading
        # Server side only: the cap on bytes queued for a peer that does not
        # read (smaller until it has logged in), and the timers that drop it.
        self._cap = WriteCap(limits)
        self._stall_timer: asyncio.TimerHandle | None = None
        self._needs_login = server is not None and getattr(root, "requires_login", False)
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
        self._dead_scheduled = False
        self._end_of_turn_flush = False
        self._turn = turn_writes_for(self.loop)
        self._wrote_this_turn = False
        self._watchers: list[Callable[[Any], Any]] = []
        self._close_reason: str | None = None
        #: Wakes the core at its next deadline (handshake, keepalive, idle, login).
        self._timer: asyncio.TimerHandle | None = None
        self.peer_address: Any = None

    # -- plumbing -------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """This connection as users see it: the same object for as long as
        anybody holds it (held weakly here)."""
        ref = self._connection_ref
        conn = ref() if ref is not None else None
        if conn is None:
            conn = Connection(self)
            self._connection_ref = weakref.ref(conn)
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
            self._cap.apply(transport)
            if self._needs_login and self.limits.login_timeout is not None:
                self.core.expect_login(_monotonic(), self.limits.login_timeout)
        if self.server is not None or not self._hello_with_first_message:
            # A server's HELLO goes at once: holding it two loop turns to ride
            # with the answer to the client's first frames moved nothing
            # (bench/README.md, "Speed tricks").
            self._write_now()
        # else connect() flushes at the end of the turn it returns in, so a
        # first call made right away carries the HELLO in the same packet.
        self._arm_timer()
        if self.server is not None:
            self.server._connection_made(self)

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
        return self.core.refs.root_proxy(self._make_proxy)

    @property
    def local_object_count(self) -> int:
        return self.core.refs.held_by_peer()

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
        self._dispatch.release_hooks.append(hook)

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
                    self._dispatch.run(event)
                    if core.stopped:
                        self._run_stopped()
                    if core.queued_bytes > self._cap.limit:
                        # Answers past the cap leave now rather than at the
                        # end of the pass: if the peer is not reading, the
                        # transport pauses us before the next call.
                        self._write_now()
                elif kind is AnswerEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event.value)
                    if core.dequeued:
                        self._dequeued()
                elif kind is FailureEvent:
                    fut = self._futures.pop(event.req_id, None)
                    if fut is not None and not fut.done():
                        fail(fut, event.error)
                    if core.dequeued:
                        self._dequeued()
                elif kind is CancelEvent:
                    self._dispatch.cancel(event.req_id)
                elif kind is HelloEvent:
                    reader.max_frame = self.limits.max_frame
                    if not self._ready.done():
                        self._ready.set_result(None)
                    if self.server is not None and not self._needs_login:
                        self._cap.trust(self.transport)
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
        return handshake_refusal(exc, self.reader, self.limits.handshake_bytes,
                                 "the peer" if self.server is not None
                                 else f"{self._peer_name()}, which")

    def _peer_name(self) -> str:
        return peer_name(self.peer_address)

    # -- flow control -------------------------------------------------------------

    def _cache_pressure(self, high: bool) -> None:
        """Async cache updates still running reached max_outstanding_calls
        (stop reading), or fell back to half of it (read again)."""
        if high:
            self._pause_reading(_FOR_CACHE_UPDATES)
        elif self._reading_paused & _FOR_CACHE_UPDATES:
            self._resume_reading(_FOR_CACHE_UPDATES)

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

    @property
    def calls_in_progress(self) -> int:
        return self._dispatch.in_progress

    # -- sending ------------------------------------------------------------------

    def send_call(self, target: int, method: str, args: tuple, kwargs: dict,
                  timeout: float | None, encoded: bytes | None = None) -> asyncio.Future:
        if not self.is_open:
            raise DeadReference(self._close_reason or "the connection is closed")
        fut = PendingCall(loop=self.loop)
        fut._protocol = self
        fut._req_id = req_id = self.core.call(target, method, args, kwargs, True, fut, encoded)
        if req_id is not None:  # else it waits for a slot, in the core's queue
            self._futures[req_id] = fut
            self._flush_soon()
        if timeout is not None:
            handle = self.loop.call_later(timeout, self._call_timed_out, fut, method, timeout)
            fut.add_done_callback(lambda f, h=handle: h.cancel())
        return fut

    def send_call_only(self, target: int, method: str, args: tuple, kwargs: dict,
                       encoded: bytes | None = None) -> None:
        if not self.is_open:
            raise DeadReference(self._close_reason or "the connection is closed")
        if self.core.call(target, method, args, kwargs, False, None, encoded) is not None:
            self._flush_soon()

    def _dequeued(self) -> None:
        """Calls that waited for a slot were sent (or could not be)."""
        for outcome in self.core.take_dequeued():
            fut = outcome.token
            if type(outcome) is CallSent:
                fut._req_id = outcome.req_id
                self._futures[outcome.req_id] = fut
            else:
                fail(fut, outcome.error)  # type: ignore[union-attr]

    def _call_cancelled(self, fut: PendingCall) -> bool:
        """Our caller gave up on ``fut``: withdraw it if it still waits for a
        slot (True: never sent), else CANCEL it remotely."""
        req_id = fut._req_id
        if req_id is None:
            self.core.unqueue(fut)
            if self.core.has_output:  # one-way calls it held back
                self._flush_soon()
            return True
        if self._futures.pop(req_id, None) is not None:
            self.core.cancel(req_id)
            self._flush_soon()
        return False

    def _call_timed_out(self, fut: PendingCall, method: str, timeout: float) -> None:
        if fut.done():
            return
        never_sent = self._call_cancelled(fut)
        if not self._ready.done() and self.server is None:
            # Nothing came back at all: not a slow method, most likely not PB.
            text = (f"call {method!r}: no PB HELLO from {self._peer_name()} within "
                    f"{timeout} s (is this a PB server?)")
        elif never_sent:
            text = (f"call {method!r} found no free slot within {timeout} s "
                    f"({len(self.core.waiting)} calls were waiting for answers); it was not sent")
        else:
            text = f"call {method!r} got no answer within {timeout} s; it was cancelled remotely"
        fail(fut, CallTimeout(text))

    def _flush_soon(self) -> None:
        if self.core.stopped:
            self._run_stopped()
        if self._receiving or self._wrote_this_turn:
            return  # the end of the receive pass, or of this turn, writes it
        # The first message of a turn goes out now, so a lone call is never
        # delayed; the rest of a burst waits for the end of the turn
        # (broker._writes.TurnWrites).
        self._write_now()
        self._turn.note(self)

    def _turn_done(self) -> None:
        if self.transport is not None and self.core.has_output:
            self._write_now()

    def _write_now(self) -> None:
        out = self.core.take_output()
        transport = self.transport
        if transport is None or not out:
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            write_out(transport, out)
        if self._cap.blocked:
            reason = self._cap.overflow(transport)
            if reason is not None:
                self._drop_slow_reader(reason)

    # -- a peer that does not read (server side) ------------------------------------

    def pause_writing(self) -> None:
        """The transport holds more than our cap for this peer: stop reading
        from it, so that it makes us produce nothing more, and give it
        ``write_stall_timeout`` seconds to catch up."""
        if self.server is None or self._cap.blocked:
            return  # a client's backlog is its own application's doing
        self._cap.blocked = True
        self._pause_reading(_FOR_WRITES)
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._write_stalled)

    def resume_writing(self) -> None:
        if not self._cap.blocked:
            return
        self._cap.blocked = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._resume_reading(_FOR_WRITES)

    def _write_stalled(self) -> None:
        self._stall_timer = None
        transport = self.transport
        if transport is None or not self._cap.blocked:
            return
        reason = self._cap.stalled(transport)
        if reason is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout,
                                                     self._write_stalled)
        else:
            self._drop_slow_reader(reason)

    def _drop_slow_reader(self, reason: str) -> None:
        log.warning("closing a slow reader", connection=self.describe(), reason=reason)
        self._cap.blocked = False  # no second check from the close's own write
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._close_reason = reason
        self.core.goodbye("limit-exceeded", reason)
        self._fail_ready(LimitExceeded(reason))
        # Lingering bounds what the backlog may still cost: the socket is
        # aborted after _LINGER seconds whether the peer reads or not.
        self._abort()

    # -- logging in (server side) -----------------------------------------------------

    def logged_in(self) -> None:
        """A login succeeded on this connection: it is no longer a stranger's."""
        self.core.logged_in()
        if self.transport is not None:
            self._cap.trust(self.transport)

    # -- references -------------------------------------------------------------

    def proxy_died(self, object_id: int, count: int) -> None:
        """Called from RemoteReference.__del__, on any thread, at any time."""
        if self.core.proxy_died(object_id, count):
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
        self.core.proxy_released(proxy._pb_id, proxy._pb_count)
        if self.is_open and proxy._pb_id != ROOT_ID:
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
        self._turn = turn_writes_for(self.loop)
        self._wrote_this_turn = False
        if self.is_open:
            self._flush_soon()

    def _send_decrefs(self) -> None:
        self._dead_scheduled = False
        self.core.process_releases()
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
            self.loop.call_soon(self._dispatch.stopped_observing, cacheable, perspective,
                                observer)

    def _on_released(self, object_id: int, entry: Any) -> None:
        self._dispatch.released(object_id, entry)

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
        for timer in (self._timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._stall_timer = None
        reason = self._close_reason or (f"connection lost: {exc}" if exc else "connection closed")
        if not self._ready.done():
            self._fail_ready(ConnectionLost(reason))
        futures, self._futures = self._futures, {}
        for fut in list(futures.values()) + self.core.drop_queued():
            if not fut.done():
                fail(fut, ConnectionLost(reason))
        dispatch = self._dispatch
        running = dispatch.cancel_all()
        proxies = self.core.refs.live_proxies()
        entries, caches = self.core.refs.clear()
        dispatch.release_all(entries)
        for cache_entry in caches:
            dispatch.stopped_observing(cache_entry.obj, cache_entry.perspective,
                                       cache_entry.observer)
        self.core.cache_drops.clear()
        for proxy in proxies:
            for cb in proxy._pb_connection_lost():
                dispatch.run_callback(cb, proxy)
        watchers, self._watchers = self._watchers, []
        for cb in watchers:
            dispatch.run_callback(cb, self.connection)
        # Stream producers released above may have started closing too.
        running = dispatch.unfinished(running)
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
