"""The asyncio adapter: owns the transport, the frame buffer and the timer.

Every protocol decision, closing included, is the sans-IO core's
(:class:`broker._core.Broker`).  The adapter feeds it frames and the time,
writes what it queued, wakes it at ``core.next_deadline()``, and turns its
events (:mod:`broker._events`) into futures resolved (:mod:`broker._pending`),
calls run (:mod:`broker._dispatch`, the only place user code is called) and
closes.  Users see a :class:`broker._connection.Connection`, which asks this
adapter only for what ``ConnectionSide`` lists.

Writes are coalesced where that is free: everything a connection's receive
pass produces (answers, PONGs, DECREFs) goes out in one write at its end.  A
message sent outside that connection's own receive pass (from user code, or
from another connection's pass) is written at once if it is the
connection's first of the loop turn, so a lone call is never delayed; later
ones in the same turn leave together when it ends (``TurnWrites``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Callable

from cred.log import get_logger

from ._core import AWAIT_HELLO, Broker
from ._events import AnswerEvent, CallEvent, CancelEvent, FailureEvent, GoodbyeEvent, HelloEvent
from ._events import TimedOut, StopLingering
from ._dispatch import Dispatcher
from ._errors import ConnectionLost, LimitExceeded, ProtocolError
from ._alarm import Alarm
from ._flow import Flow, shut_writing
from ._lifecycle import Lifecycle
from ._pending import Calls
from ._releases import Releases
from ._writes import turn_writes_for, write_out
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


class BrokerProtocol(asyncio.BufferedProtocol):
    """One connection, either side."""

    def __init__(self, *, root: Any = None, limits: Limits,
                 unsafe_tracebacks: bool = False, server: Any = None,
                 registry: Any = None, hello_with_first_message: bool = False) -> None:
        self._hello_with_first_message = hello_with_first_message
        self.loop = loop = asyncio.get_running_loop()
        self.limits = limits
        self.server = server
        self._root_source = root
        self.core = Broker(owner=self, make_proxy=self._make_proxy, limits=limits,
                           unsafe_tracebacks=unsafe_tracebacks, registry=registry,
                           on_released=self._on_released, on_stopped=self._on_stopped)
        # Before the peer's HELLO, handshake_bytes bounds the whole frame,
        # header included, however the bytes happen to arrive.
        self.reader = FrameReader(max(limits.handshake_bytes - HEADER.size, 0))
        self.transport: asyncio.Transport | None = None
        # Held weakly: the Connection holds this adapter, and users hold the
        # Connection; no cycle to break when closed.
        self._connection_ref: weakref.ref[Connection] | None = None
        self._calls = Calls(loop, self.core, flush=self._flush_soon,
                            silent_server=self._silent_server)
        self._flow = Flow(loop, limits, server_side=server is not None,
                          resumed=self._process_buffered, slow_reader=self._drop_slow_reader)
        self._dispatch = Dispatcher(loop, self.core, settled=self._flush_soon,
                                    cache_pressure=self._flow.cache_pressure,
                                    describe=self.describe)
        self._life = Lifecycle(loop)
        self._needs_login = server is not None and getattr(root, "requires_login", False)
        #: What the server counts this connection under (max_connections_per_source).
        self.counted_source: Any = None
        self._lingering: asyncio.Transport | None = None
        self._receiving = False
        self._releases = Releases(loop, self.core, flush=self._flush_soon)
        self._alarm = Alarm(loop, self._on_timer)
        self._turn = turn_writes_for(self.loop)
        self._wrote_this_turn = False
        self._watchers: list[Callable[[Any], Any]] = []
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
        # The transport is dropped (_lost) before the connection counts as closed.
        return self.transport is not None

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
        self._flow.attach(transport)
        if self._needs_login and self.limits.login_timeout is not None:
            self.core.expect_login(_monotonic(), self.limits.login_timeout)
        if self.server is not None or not self._hello_with_first_message:
            # A server's HELLO goes at once: holding it two loop turns to ride
            # with the answer to the client's first frames moved nothing
            # (bench/README.md, "Speed tricks").
            self._write_now()
        # else connect() flushes at the end of the turn it returns in, so a
        # first call made right away carries the HELLO in the same packet.
        self._alarm.arm(self.core.next_deadline())
        if self.server is not None:
            self.server._connection_made(self)

    # -- what Connection uses (broker._connection.ConnectionSide) ---------------

    @property
    def close_reason(self) -> str | None:
        return self.core.close_reason

    def handshake_error(self) -> BaseException | None:
        return self._life.handshake_error()

    async def wait_ready(self) -> None:
        await self._life.wait_ready()

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
    def calls_in_progress(self) -> int:
        return self._dispatch.in_progress

    @property
    def is_closed(self) -> bool:
        return self._life.is_closed

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
        return await self._life.wait_closed()

    def logged_in(self) -> None:
        """A login succeeded on this connection: it is no longer a stranger's."""
        self.core.logged_in()
        self._flow.trust()

    def start_goodbye(self, code: str, reason: str) -> None:
        self.core.goodbye(code, reason)
        self._close()

    # -- receiving ------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.transport is None:  # lingering after a close
            self.reader.clear()
            if self.core.discard(nbytes) and self._lingering is not None:
                self._lingering.abort()
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
        core, reader, flow = self.core, self.reader, self._flow
        try:
            while self.transport is not None and not flow.paused:
                frame = reader.next_frame()
                if frame is None:
                    # (The state first: no call on every pass once OPEN.)
                    if core.state is AWAIT_HELLO and reader.buffered > self.limits.handshake_bytes:
                        raise FrameTooLarge(reader.buffered, self.limits.handshake_bytes)
                    return
                if core.cache_drops:
                    core.process_cache_drops()
                try:
                    event = core.receive_frame(frame)
                finally:
                    frame.release()
                if event is None:
                    continue
                kind = type(event)
                if kind is CallEvent:
                    self._dispatch.run(event)
                    if core.queued_bytes > flow.cap.limit:
                        # Answers past the cap leave now rather than at the
                        # end of the pass: if the peer is not reading, the
                        # transport pauses us before the next call.
                        self._write_now()
                elif kind is AnswerEvent or kind is FailureEvent:
                    self._calls.resolve(event)
                elif kind is CancelEvent:
                    self._dispatch.cancel(event.req_id)
                elif kind is HelloEvent:
                    reader.max_frame = self.limits.max_frame
                    self._life.ready()
                    if not self._needs_login:
                        flow.trust()
                    self._alarm.arm(self.core.next_deadline())
                elif kind is GoodbyeEvent:
                    self._close()
                    return
        except FrameTooLarge as exc:
            reason = str(exc)
            if not self._life.is_ready:
                reason = handshake_refusal(exc, reader, self.limits.handshake_bytes,
                                           "the peer" if self.server is not None
                                           else f"{self._peer_name()}, which")
            core.refuse("limit-exceeded", reason)
            self._life.fail_ready(LimitExceeded(reason))
            self._close()
        except ProtocolError as exc:
            self._life.fail_ready(exc)
            self._close()

    def _process_buffered(self) -> None:
        """Reading resumed: frames that arrived before the pause."""
        if self.transport is not None and not self._flow.paused and self.reader.buffered:
            self.buffer_updated(0)

    def _peer_name(self) -> str:
        return peer_name(self.peer_address)

    def _silent_server(self) -> str | None:
        """The server we dialled, while its HELLO has not come."""
        return None if self._life.is_ready or self.server is not None else self._peer_name()

    # -- sending ------------------------------------------------------------------

    # The core refuses a call once closing (DeadReference, with close_reason).

    def send_call(self, target: int, method: str, args: tuple, kwargs: dict,
                  timeout: float | None, encoded: bytes | None = None) -> asyncio.Future:
        fut = self._calls.send(target, method, args, kwargs, timeout, encoded)
        self._flush_soon()
        return fut

    def send_call_only(self, target: int, method: str, args: tuple, kwargs: dict,
                       encoded: bytes | None = None) -> None:
        if self.core.call(target, method, args, kwargs, False, None, encoded) is not None:
            self._flush_soon()

    def _flush_soon(self) -> None:
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
        if self._flow.cap.blocked:
            self._flow.wrote()

    # -- flow control (the transport's callbacks; see broker._flow) --------------

    def pause_writing(self) -> None:
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self._flow.resume_writing()

    def _drop_slow_reader(self, reason: str) -> None:
        log.warning("closing a slow reader", connection=self.describe(), reason=reason)
        self._flow.dropping()
        self._life.fail_ready(LimitExceeded(reason))
        # Lingering bounds what the backlog may still cost: the socket is
        # aborted at the linger deadline whether the peer reads or not.
        self.refuse("limit-exceeded", reason)

    # -- releases (see broker._releases) --------------------------------------

    def proxy_died(self, object_id: int, count: int) -> None:
        """Called from RemoteReference.__del__, on any thread, at any time."""
        self._releases.proxy_died(object_id, count)

    def cache_died(self, cache: Any) -> None:
        """Called from RemoteCache.__del__, on any thread, at any time."""
        self._releases.cache_died(cache)

    def proxy_released(self, proxy: RemoteReference) -> None:
        self.core.proxy_released(proxy._pb_id, proxy._pb_count)
        if self.is_open and proxy._pb_id != ROOT_ID:
            self._releases.flush_at_end_of_turn()

    def flush_at_end_of_turn(self) -> None:
        self._releases.flush_at_end_of_turn()

    def send_cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        if self.is_open:
            self.core.cache_call(cache_id, method, args, kwargs)
            if not self._receiving:
                # Updates come in bursts (one change fanned out to every
                # observer, often many changes in one pass of another
                # connection): each connection writes its burst once, at the
                # end of the loop turn.  bench_cache.py row (1): about 2.5x.
                self._releases.flush_at_end_of_turn()

    def cache_is_held(self, cache_id: int) -> bool:
        return self.is_open and cache_id in self.core.refs.caches_out

    def _on_released(self, object_id: int, entry: Any) -> None:
        self._dispatch.released(object_id, entry)

    def _on_stopped(self, cacheable: Any, perspective: Any, observer: Any) -> None:
        # User code: run in a loop turn of its own, never inside the core.
        self.loop.call_soon(self._dispatch.stopped_observing, cacheable, perspective, observer)

    def _on_timer(self) -> None:
        """The core's next deadline (handshake, keepalive, idle, login, linger)."""
        event = self.core.handle_timeout(_monotonic())
        kind = type(event)
        if kind is TimedOut:
            self._life.fail_ready(ConnectionLost(event.reason))  # type: ignore[union-attr]
            self._close()
        elif kind is StopLingering:
            if self._lingering is not None:
                self._lingering.abort()
        else:
            if event is not None:  # a PING
                self._write_now()
            self._alarm.arm(self.core.next_deadline())

    # -- closing ------------------------------------------------------------------

    def refuse(self, code: str, reason: str) -> None:
        """Close at once with ``GOODBYE(code, reason)``, lingering so that the
        peer reads it even if it already sent more."""
        self.core.refuse(code, reason)
        self._close()

    def _close(self) -> None:
        """Close after sending what is queued (a GOODBYE saying why).

        When the core says to linger (``Broker.lingers``), shut down our
        sending side only, tear the connection down at once, and leave the
        socket to the core's linger deadline and budget (the peer's input is
        discarded until it closes too)."""
        transport = self.transport
        if transport is None:
            return
        self._write_now()
        if not (self.core.lingers and shut_writing(transport)):
            transport.close()
            return
        self.core.linger(_monotonic())
        self._lingering = transport
        self._lost()
        self._alarm.arm(self.core.next_deadline())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.core.close(f"connection lost: {exc}" if exc else "connection closed")
        if self._lingering is not None:  # the socket closed after lingering
            self._lingering = None
            self._alarm.cancel()
            if self._life.is_closed and self.server is not None:
                self.server._connection_lost(self)
        else:
            self._lost()
        self._life.socket_closed()

    def _lost(self) -> None:
        """The connection is over for its users (the socket may linger)."""
        self.transport = None
        self._flow.detach()
        self._alarm.cancel()
        reason = self.core.close_reason or "connection closed"
        self._life.fail_ready(ConnectionLost(reason))
        self._calls.fail_all(lambda: ConnectionLost(reason))
        watchers, self._watchers = self._watchers, []
        self._life.closed_after(self._dispatch.close(watchers, self.connection), reason,
                                self._finish_closed)

    def _finish_closed(self) -> None:
        if self.server is not None and self._lingering is None:
            self.server._connection_lost(self)  # else when the socket has closed
        self._releases.stop()
