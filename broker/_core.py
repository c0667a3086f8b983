"""The sans-IO broker: one connection's protocol state, without any I/O.

The adapter feeds it frame bodies (``receive_frame``), the time
(``data_received(now)``, ``handle_timeout(now)``) and its own commands
(``call``, ``answer``, ``goodbye``...), and takes bytes to send
(``take_output``) and events (:mod:`broker._events`).  The core never runs
user code: a call from the peer comes back as a :class:`CallEvent` naming the
target and the method, so a user method can never re-enter the parser.

Every state and every transition is in ``TRANSITIONS`` below, and in
docs/protocol.md ("Connection states"); ``_enter`` is the only place the
state changes, and it refuses a transition the table does not list.  The
closing decisions are the core's too: whether to linger after our GOODBYE
(``lingers``), the linger deadline and budget, and why the connection
closed (``close_reason``).

Beside the states, the core keeps the protocol's queues: our calls waiting
for a free slot (``call_queue``; ``CallSent``/``CallNotSent`` from
``take_dequeued``), the peer's calls held for E-order (``backlog``; the
adapter says ``first_step_pending``/``first_step_taken`` and asks
``next_held_call``), and what dead proxies and caches owe the peer
(``dead_proxies``, ``cache_drops``; ``process_releases``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import traceback
from typing import Any, Callable

import msgpack

import jelly

from ._errors import (
    CallTimeout,
    ConnectionLost,
    DeadReference,
    InsecureJelly,
    LimitExceeded,
    LocalProtocolError,
    NoSuchMethod,
    PBError,
    RemoteError,
    RemoteProtocolError,
)
from ._events import (
    AnswerEvent,
    CallEvent,
    CallNotSent,
    CallSent,
    CancelEvent,
    FailureEvent,
    GoodbyeEvent,
    HelloEvent,
    SendPing,
    StopLingering,
    TimedOut,
    new_answer_event,
    new_call_event,
)
from ._fields import MIN_MAX_FRAME, error_body, valid_req_id
from ._flavors import ViewPoint
from ._framing import HEADER
from ._limits import Limits
from ._messages import FEATURES, FIELDS as _FIELDS, PROTOCOL_NAME, PROTOCOL_VERSION, Op
from ._messages import brief as _brief
from ._references import ROOT_ID, ReferenceTables

__all__ = ["Broker", "TRANSITIONS", "ACCEPTS", "AWAIT_HELLO", "OPEN", "GOODBYE_SENT",
           "GOODBYE_RECEIVED", "LINGERING", "CLOSED"]

AWAIT_HELLO = "AWAIT_HELLO"            # our HELLO is queued; the peer's has not come
OPEN = "OPEN"                          # both HELLOs seen: calls flow both ways
GOODBYE_SENT = "GOODBYE_SENT"          # we said GOODBYE (close, error, timeout)
GOODBYE_RECEIVED = "GOODBYE_RECEIVED"  # the peer said GOODBYE
LINGERING = "LINGERING"                # our sending side is shut; peer input is discarded
CLOSED = "CLOSED"                      # the transport is gone

#: The state table: (state, trigger) -> next state.  Triggers are incoming
#: opcodes ("recv HELLO"), the adapter's commands ("goodbye()") and deadlines
#: ("handshake deadline").  Anything not listed for a state is refused: an
#: incoming opcode with a RemoteProtocolError (and GOODBYE protocol-error),
#: a command with a LocalProtocolError.  docs/protocol.md repeats this table.
TRANSITIONS: dict[tuple[str, str], str] = {
    (AWAIT_HELLO, "recv HELLO"): OPEN,
    (AWAIT_HELLO, "recv GOODBYE"): GOODBYE_RECEIVED,
    (AWAIT_HELLO, "goodbye()"): GOODBYE_SENT,
    (AWAIT_HELLO, "refuse()"): GOODBYE_SENT,
    (AWAIT_HELLO, "peer broke protocol"): GOODBYE_SENT,
    (AWAIT_HELLO, "handshake deadline"): GOODBYE_SENT,
    (AWAIT_HELLO, "login deadline"): GOODBYE_SENT,
    (AWAIT_HELLO, "close()"): CLOSED,
    (OPEN, "recv GOODBYE"): GOODBYE_RECEIVED,
    (OPEN, "goodbye()"): GOODBYE_SENT,
    (OPEN, "refuse()"): GOODBYE_SENT,
    (OPEN, "peer broke protocol"): GOODBYE_SENT,
    (OPEN, "idle deadline"): GOODBYE_SENT,
    (OPEN, "login deadline"): GOODBYE_SENT,
    (OPEN, "close()"): CLOSED,
    (GOODBYE_SENT, "linger()"): LINGERING,
    (GOODBYE_SENT, "close()"): CLOSED,
    (GOODBYE_RECEIVED, "close()"): CLOSED,
    (LINGERING, "close()"): CLOSED,
    (CLOSED, "close()"): CLOSED,
}

#: Incoming opcodes each state accepts (any other is a protocol error).  In
#: the closing states every frame is ignored: the peer may not have read our
#: GOODBYE yet, and nothing it says still matters.
ACCEPTS: dict[str, frozenset[int]] = {
    AWAIT_HELLO: frozenset({Op.HELLO, Op.GOODBYE}),
    OPEN: frozenset(range(Op.CALL, Op.GOODBYE + 1)),
}

#: States in which messages are still sent (else they are dropped).
_SENDING = frozenset({AWAIT_HELLO, OPEN})

_pack_header = HEADER.pack
_packb = msgpack.Packer().pack
#: A CALL's first bytes: a 7-field array and its opcode (see _send_call).
_CALL_HEAD = b"\x97" + _packb(Op.CALL)
_SMALL = 64 * 1024
#: After a GOODBYE sent on an error, how much of the peer's input to discard,
#: and for how long, while it reads the GOODBYE (docs/protocol.md §2.5).
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0


@functools.lru_cache(maxsize=32)
def _jelly_limits_for(limits: Limits) -> jelly.Limits:
    return limits.jelly_limits()  # validated once per Limits value, not per connection


@functools.lru_cache(maxsize=32)
def _hello_frame(max_frame: int, max_calls: int) -> bytes:
    body = jelly.dumps([Op.HELLO, PROTOCOL_NAME, PROTOCOL_VERSION, list(FEATURES), max_frame,
                        max_calls])
    return _pack_header(len(body)) + body


def _ignore(*args: Any) -> None:
    return None


def _error_for(code: str, type_name: str, message: str, tb: str | None) -> PBError:
    if code == "no-such-method":
        return NoSuchMethod(message)
    if code == "no-such-object":
        return DeadReference(message)
    if code == "insecure-jelly":
        return InsecureJelly(message)
    if code == "limit-exceeded":
        return LimitExceeded(message)
    if code == "cancelled":
        return CallTimeout(message)
    if code == "shutting-down":
        return ConnectionLost(message)
    return RemoteError(type_name, message, tb)


class Broker:
    """One connection's PB state machine (no I/O).

    ``owner`` and ``make_proxy`` identify and build proxies for the peer's
    objects; ``on_released(object_id, entry)`` is called when the peer lets go
    of one of our objects, ``on_stopped(cacheable, perspective, observer)``
    when one of its observers of our caches is gone (the adapter has
    ``stopped_observing`` run later, outside the core).  All are given here,
    never assigned later.
    """

    def __init__(self, *, owner: Any, make_proxy: Callable[[int], Any], limits: Limits,
                 unsafe_tracebacks: bool = False, registry: Any = None,
                 on_released: Callable[[int, Any], Any] | None = None,
                 on_stopped: Callable[[Any, Any, Any], Any] | None = None) -> None:
        self.limits = limits
        self.refs = ReferenceTables(owner, make_proxy, limits.max_local_references,
                                    limits.max_caches, on_released=on_released,
                                    on_uncached=self._uncached,
                                    on_cache_miss=self.process_cache_drops)
        #: Peer caches whose last local reference died: (cache_id, count, cls, state).
        #: Appended from any thread; processed on the loop.
        self.cache_drops: collections.deque[tuple[int, int, type, dict]] = collections.deque()
        #: Proxies for the peer's objects that died: (object_id, count).
        #: Appended from any thread (``__del__``); processed on the loop.
        self.dead_proxies: collections.deque[tuple[int, int]] = collections.deque()
        self._on_stopped = on_stopped or _ignore
        self.state = AWAIT_HELLO
        self._sending = True  # state in _SENDING, read on every send
        self.unsafe_tracebacks = unsafe_tracebacks
        self.peer_features: tuple[str, ...] = ()
        #: What we may send: the smaller of our limit and the peer's.
        self._send_limit = limits.max_frame
        #: Calls of ours that may wait for answers at once: our limit, or the
        #: peer's running limit if its HELLO gave a smaller one.
        self.call_slots = limits.max_outstanding_calls
        self._jelly_limits = _jelly_limits_for(limits)
        self._registry = registry
        self._out: list[bytes] = []
        #: Bytes of message bodies queued since the last take_output().
        self.queued_bytes = 0
        self._next_req = 1
        #: Our calls waiting for an answer.
        self.waiting: set[int] = set()
        #: Calls we cancelled or gave up on whose answer has not come: the
        #: peer may still be running them, so each still takes a slot.
        self.given_up: set[int] = set()
        #: The peer's calls running here.
        self.running: set[int] = set()
        #: Our calls waiting for a free slot (``Limits.wait_for_call_slot``),
        #: in the order made: (token, target, method, args, kwargs,
        #: answer_wanted).  A one-way call waits behind them too (E-order).
        self.call_queue: collections.deque[tuple] = collections.deque()
        #: CallSent / CallNotSent for queued calls, until take_dequeued().
        self.dequeued: list[CallSent | CallNotSent] = []
        #: The peer's calls held back for E-order: they arrived while a call
        #: run before them had not taken its first step (an async method
        #: that could not start at once).  See first_step_pending().
        self.backlog: collections.deque[CallEvent] = collections.deque()
        self._first_step_pending = False
        # Deadlines (seconds on the adapter's monotonic clock).
        self._started: float | None = None  # set by start()
        self._last_rx = 0.0
        self._last_ping = 0.0
        self._ping_token = 0
        self._server_name: str | None = None
        self._login_due: float | None = None  # set by expect_login()
        self._linger_budget = 0
        self._linger_until: float | None = None  # set by linger()
        #: Whether our GOODBYE is followed by lingering (refuse(), a broken
        #: protocol, a deadline) or by closing at once (goodbye()).
        self._linger_wanted = False
        #: Why the connection closed or is closing (None while it is not).
        self.close_reason: str | None = None

    # -- states -------------------------------------------------------------

    def _enter(self, trigger: str) -> None:
        """The one place the state changes, by ``TRANSITIONS``."""
        new = TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise LocalProtocolError(f"{trigger} is not allowed in state {self.state}")
        self.state = new
        self._sending = new in _SENDING

    @property
    def is_open(self) -> bool:
        """Both HELLOs seen and nobody has said GOODBYE."""
        return self.state is OPEN

    # -- output -----------------------------------------------------------

    def take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        self.queued_bytes = 0
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def _encode(self, message: list, perspective: Any = None) -> bytes:
        refs = self.refs
        refs.begin_encode(perspective)
        try:
            body = jelly.dumps(message, context=refs)
        except BaseException:
            refs.end_encode(False)
            raise
        if len(body) > self._send_limit:
            refs.end_encode(False)
            raise LimitExceeded(
                f"message of {len(body)} bytes exceeds max_frame={self._send_limit}; "
                "stream bulk data instead, or raise Limits.max_frame on both sides"
            )
        refs.end_encode(True)
        return body

    def _queue(self, body: bytes) -> None:
        # Small frames are joined with their header; a large body stays a
        # separate buffer so that it is never copied again on its way out.
        size = len(body)
        self.queued_bytes += size
        if size < _SMALL:
            self._out.append(_pack_header(size) + body)
        else:
            self._out.append(_pack_header(size))
            self._out.append(body)

    def _queue_plain(self, message: list) -> None:
        self._queue(jelly.dumps(message))

    # -- commands from the adapter ---------------------------------------

    def start(self, now: float, *, server_name: str | None = None) -> None:
        """Queue our HELLO; the handshake deadline runs from ``now``.

        ``server_name`` is set on the side that dialled: it names the server
        in the reason given if no HELLO comes."""
        if self._started is not None or self.state is not AWAIT_HELLO:
            raise LocalProtocolError(f"start() is allowed once, in state {AWAIT_HELLO}")
        self._out.append(_hello_frame(self.limits.max_frame, self.limits.max_outstanding_calls))
        self._started = self._last_rx = now
        self._server_name = server_name

    def expect_login(self, now: float, timeout: float) -> None:
        """Server side, for a root that requires login: unless logged_in()
        is called within ``timeout`` seconds of ``now``, the login deadline
        closes the connection with GOODBYE("timeout")."""
        self._login_due = now + timeout

    def logged_in(self) -> None:
        """A login succeeded: the login deadline is off."""
        self._login_due = None

    def data_received(self, now: float) -> None:
        """Bytes arrived at ``now``: the peer is alive (idle and keepalive
        deadlines count from the last of these)."""
        self._last_rx = now

    def next_deadline(self) -> float | None:
        """When the core next wants ``handle_timeout`` (None: never).

        Exact: the handshake deadline, then the earliest of the keepalive
        PING (``keepalive_interval`` after the last input or PING), the
        idle close (``idle_timeout`` after the last input) and, until a
        login, the login deadline (expect_login())."""
        state = self.state
        limits = self.limits
        login = self._login_due
        if state is AWAIT_HELLO:
            started = self._started
            due = None if started is None else started + limits.handshake_timeout
            return login if due is None or (login is not None and login < due) else due
        if state is not OPEN:
            return self._linger_until if state is LINGERING else None
        due = login
        idle = limits.idle_timeout
        if idle and (due is None or self._last_rx + idle < due):
            due = self._last_rx + idle
        interval = limits.keepalive_interval
        if interval:
            ping = max(self._last_rx, self._last_ping) + interval
            if due is None or ping < due:
                due = ping
        return due

    def handle_timeout(self, now: float) -> SendPing | TimedOut | StopLingering | None:
        """Act on every deadline due at ``now``: queue a PING, or a GOODBYE
        (the state becomes GOODBYE_SENT), or end the lingering.  Early calls
        do nothing."""
        state = self.state
        limits = self.limits
        if state is LINGERING:
            due = self._linger_until
            return StopLingering() if due is not None and now >= due else None
        if (state is AWAIT_HELLO and self._started is not None
                and now >= self._started + limits.handshake_timeout):
            seconds = limits.handshake_timeout
            if self._server_name is not None:
                reason = (f"no PB HELLO from {self._server_name} within {seconds} s "
                          "(is this a PB server?)")
            else:
                reason = f"the peer did not complete the handshake within {seconds} s"
            self._say_goodbye("timeout", reason, "handshake deadline")
            return TimedOut(reason, True)
        if state is not OPEN and state is not AWAIT_HELLO:
            return None
        login = self._login_due
        if login is not None and now >= login:
            reason = (f"the peer did not log in within {limits.login_timeout} s "
                      "(login_timeout)")
            self._say_goodbye("timeout", reason, "login deadline")
            return TimedOut(reason, False)
        if state is not OPEN:
            return None
        silent = now - self._last_rx
        idle = limits.idle_timeout
        if idle and silent >= idle:
            reason = f"the peer was silent for {silent:.1f} s (idle_timeout={idle})"
            self._say_goodbye("timeout", reason, "idle deadline")
            return TimedOut(reason, False)
        interval = limits.keepalive_interval
        if interval and now - max(self._last_rx, self._last_ping) >= interval:
            self._last_ping = now
            self._ping_token += 1
            self._queue_plain([Op.PING, self._ping_token])
            return SendPing(self._ping_token)
        return None

    def call(self, target_id: int, method: str, args: tuple, kwargs: dict,
             answer_wanted: bool = True, token: Any = None,
             encoded: bytes | None = None) -> int | None:
        """Send a CALL and return its request id; or, when every slot is
        taken and ``Limits.wait_for_call_slot`` is set (or calls already
        wait), queue it and return None: it goes out, in order, as answers
        free slots (a ``CallSent(token, req_id)`` from take_dequeued())."""
        if not self._sending:
            raise DeadReference(self.close_reason or "the connection is closed")
        if self.call_queue or (answer_wanted and len(self.waiting) + len(self.given_up)
                                >= self.call_slots):
            if self.limits.wait_for_call_slot:
                self.call_queue.append((token, target_id, method, args, kwargs, answer_wanted))
                return None
            if answer_wanted:
                slots = self.call_slots
                whose = ("max_outstanding_calls" if slots == self.limits.max_outstanding_calls
                         else "the peer's limit on calls running at once")
                raise LimitExceeded(
                    f"{len(self.waiting)} calls are already waiting for answers on this "
                    f"connection ({whose}: {slots}); await some first, or let calls wait "
                    "for a slot (Limits.wait_for_call_slot=True)"
                )
        return self._send_call(target_id, method, args, kwargs, answer_wanted, encoded)

    def _send_call(self, target_id: int, method: str, args: tuple, kwargs: dict,
                   answer_wanted: bool, encoded: bytes | None = None) -> int:
        req_id = self._next_req
        self._next_req = req_id + 1
        if encoded is None:
            body = self._encode([Op.CALL, req_id, target_id, method, list(args), kwargs,
                                 answer_wanted])
        else:
            # The call's tail, jellied once for many connections
            # (broker._fanout): only the request id and target are ours.
            body = _CALL_HEAD + _packb(req_id) + _packb(target_id) + encoded
            if len(body) > self._send_limit:
                raise LimitExceeded(f"message of {len(body)} bytes exceeds "
                                    f"max_frame={self._send_limit}")
        self._queue(body)
        if answer_wanted:
            self.waiting.add(req_id)
        return req_id

    def _send_queued(self) -> None:
        """Send the calls waiting for a slot, as far as slots allow."""
        queue = self.call_queue
        while queue and self._sending:
            token, target, method, args, kwargs, answer_wanted = queue[0]
            if answer_wanted and self.free_call_slots <= 0:
                return
            queue.popleft()
            try:
                req_id = self._send_call(target, method, args, kwargs, answer_wanted)
            except Exception as exc:  # an argument that cannot be sent, say
                if answer_wanted:
                    self.dequeued.append(CallNotSent(token, exc))
                continue
            if answer_wanted:
                self.dequeued.append(CallSent(token, req_id))

    def take_dequeued(self) -> list[CallSent | CallNotSent]:
        """What became of queued calls since the last look (in order)."""
        dequeued, self.dequeued = self.dequeued, []
        return dequeued

    def unqueue(self, token: Any) -> bool:
        """Withdraw a call still waiting for a slot (never sent); False if
        it is not waiting."""
        for entry in self.call_queue:
            if entry[0] is token:
                self.call_queue.remove(entry)
                self._send_queued()  # one-way calls it held back may go now
                return True
        return False

    def drop_queued(self) -> list[Any]:
        """Closing: the tokens of the calls that never got a slot."""
        tokens = [entry[0] for entry in self.call_queue if entry[5]]
        self.call_queue.clear()
        return tokens

    # -- E-order of the peer's calls ------------------------------------------

    def first_step_pending(self) -> None:
        """The call just run started a task whose first step has not run
        yet: the peer's later calls are held until first_step_taken()."""
        self._first_step_pending = True

    def first_step_taken(self) -> None:
        self._first_step_pending = False

    def next_held_call(self) -> CallEvent | None:
        """The next held call to run now: None when none is held, or while
        a call run since is waiting for its own first step."""
        if self._first_step_pending or not self.backlog:
            return None
        return self.backlog.popleft()

    def _hold(self, event: CallEvent) -> CallEvent | None:
        """Hold ``event`` behind an earlier call that has not started yet."""
        if self._first_step_pending or self.backlog:
            self.backlog.append(event)
            return None
        return event

    @property
    def free_call_slots(self) -> int:
        return self.call_slots - len(self.waiting) - len(self.given_up)

    def cancel(self, req_id: int) -> None:
        """Our caller gave up on ``req_id``: CANCEL it; its slot stays taken
        until the peer answers."""
        if req_id in self.waiting:
            self.waiting.discard(req_id)
            if self._sending:
                self.given_up.add(req_id)
                self._queue_plain([Op.CANCEL, req_id])

    def answer(self, req_id: int, value: Any, perspective: Any = None) -> None:
        if req_id not in self.running:
            return
        self.running.discard(req_id)
        if not self._sending:
            return
        try:
            body = self._encode([Op.ANSWER, req_id, value], perspective)
        except (jelly.JellyError, PBError) as exc:
            self._queue_error(req_id, "limit-exceeded" if isinstance(exc, jelly.LimitExceeded)
                              else "remote-error", type(exc), f"could not send the result: {exc}")
            return
        self._queue(body)

    def fail(self, req_id: int, exc: BaseException) -> None:
        if req_id not in self.running:
            return
        self.running.discard(req_id)
        if not self._sending:
            return
        copy = None
        if isinstance(exc, jelly.Copyable):
            try:
                copy = self._encode(exc)  # type: ignore[arg-type]
            except (jelly.JellyError, PBError):
                copy = None
        tb = None
        if self.unsafe_tracebacks:
            tb = "".join(traceback.format_exception(exc))
        code = "remote-error"
        if isinstance(exc, NoSuchMethod):
            code = "no-such-method"
        elif isinstance(exc, asyncio.CancelledError):
            code = "cancelled"
        self._queue_error(req_id, code, type(exc), _text_of(exc), tb, copy)

    def finished(self, req_id: int) -> None:
        """A one-way call finished (there is nothing to send)."""
        self.running.discard(req_id)

    def _queue_error(self, req_id: int, code: str, exc_type: type | str, message: str,
                     tb: str | None = None, copy: bytes | None = None) -> None:
        if isinstance(exc_type, type):
            type_name = exc_type.__qualname__
            module = exc_type.__module__
            if module.startswith("broker._"):
                module = "broker"  # the public name, not the private module
            if module not in ("builtins", "__main__"):
                type_name = f"{module}.{type_name}"
        else:
            type_name = exc_type
        self._queue(error_body(req_id, code, type_name, message, tb, copy, self._send_limit))

    def decref(self, object_id: int, count: int) -> None:
        # The root is never counted: the peer may not even have one.
        if self._sending and count > 0 and object_id != ROOT_ID:
            self._queue_plain([Op.DECREF, object_id, count])

    def proxy_died(self, object_id: int, count: int) -> bool:
        """Any thread: a proxy for the peer's object ``object_id`` died
        holding ``count`` references.  True when the adapter must have the
        loop call process_releases() (the root is never counted)."""
        if object_id == ROOT_ID:
            return False
        self.dead_proxies.append((object_id, count))
        return True

    def cache_died(self, cache: Any) -> None:
        """Any thread: our copy of the peer's cache ``cache`` died; it is
        kept as a zombie (its state) until the peer says UNCACHE, and a
        DECACHE goes at the next process_releases()."""
        state = dict(cache.__dict__)
        del state["_pb_finalized"]  # the zombie made from it is alive
        self.cache_drops.append((cache._pb_cache_id, cache._pb_count, type(cache), state))

    def proxy_released(self, object_id: int, count: int) -> None:
        """A proxy was released explicitly: DECREF what it held."""
        self.refs.forget_proxy(object_id)
        self.decref(object_id, count)

    def process_releases(self) -> None:
        """On the loop: DECREF for dead proxies, DECACHE for dropped caches."""
        dead = self.dead_proxies
        refs = self.refs
        while dead:
            object_id, count = dead.popleft()
            refs.forget_proxy(object_id)
            self.decref(object_id, count)
        if self.cache_drops:
            self.process_cache_drops()

    def cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        if self._sending and cache_id in self.refs.caches_out:
            self._queue(self._encode([Op.CACHE_CALL, cache_id, method, list(args), kwargs]))

    def process_cache_drops(self) -> None:
        drops = self.cache_drops
        while drops:
            cache_id, count, cls, state = drops.popleft()
            self.refs.cache_dropped(cache_id, state, cls)
            if self._sending:
                self._queue_plain([Op.DECACHE, cache_id, count])

    def _uncached(self, cache_id: int, entry: Any, peer_knows: bool) -> None:
        self._on_stopped(entry.obj, entry.perspective, entry.observer)
        if peer_knows and self.state is OPEN:
            self._queue_plain([Op.UNCACHE, cache_id])

    def goodbye(self, code: str, reason: str) -> None:
        """Queue ``GOODBYE(code, reason)``; from then on nothing is sent and
        every incoming frame is ignored, and the adapter closes at once
        (``lingers`` is False).  Nothing to do once closing."""
        if self._sending:
            self._say_goodbye(code, reason, "goodbye()", linger=False)

    def refuse(self, code: str, reason: str) -> None:
        """As goodbye(), for a fault (a refused connection, a limit, a slow
        reader): the adapter then lingers, so that the peer reads the
        GOODBYE even if it has sent more."""
        if self._sending:
            self._say_goodbye(code, reason, "refuse()")

    def _say_goodbye(self, code: str, reason: str, trigger: str, *, linger: bool = True,
                     told: str | None = None) -> None:
        self._queue_plain([Op.GOODBYE, code, reason])
        self._enter(trigger)
        self._linger_wanted = linger
        self.close_reason = reason if told is None else told

    @property
    def lingers(self) -> bool:
        """Whether the adapter should linger (linger()) rather than close
        the transport at once: we said GOODBYE on a fault, and the peer may
        still be sending (closing a socket with unread input resets it, which
        can destroy the GOODBYE before the peer reads it)."""
        return self.state is GOODBYE_SENT and self._linger_wanted

    def linger(self, now: float, budget: int | None = None,
               seconds: float | None = None) -> None:
        """After our GOODBYE: our sending side is shut, and up to ``budget``
        bytes of the peer's input (default LINGER_BYTES) are discarded while
        it reads the GOODBYE, for at most ``seconds`` (default LINGER_SECONDS)
        after ``now``; then handle_timeout() says StopLingering."""
        self._enter("linger()")
        self._linger_budget = LINGER_BYTES if budget is None else budget
        self._linger_until = now + (LINGER_SECONDS if seconds is None else seconds)

    def discard(self, nbytes: int) -> bool:
        """Input that came while LINGERING; True once past the budget (the
        adapter then aborts the transport)."""
        self._linger_budget -= nbytes
        return self._linger_budget < 0

    def close(self, reason: str = "connection closed") -> None:
        """The transport is gone; held calls of the peer never start, and
        nothing is owed to it any more.  ``reason`` is the close_reason
        unless a GOODBYE either way already gave one."""
        self._enter("close()")
        self._linger_until = None
        if self.close_reason is None:
            self.close_reason = reason
        self.backlog.clear()
        self.dead_proxies.clear()

    def drop_references(self) -> tuple[list[Any], list[Any], list[Any]]:
        """Closing: every reference either way is let go.  Returns the
        proxies for the peer's objects still alive, the entries of ours it
        held, and the caches of ours it observed (the adapter tells their
        owners)."""
        proxies = self.refs.live_proxies()
        entries, caches = self.refs.clear()
        self.cache_drops.clear()
        self._on_stopped = _ignore  # nothing is observed any more; no cycle left
        return proxies, entries, caches

    # -- input --------------------------------------------------------------

    def receive_frame(self, frame: Any) -> Any:
        """Handle one frame body; return an event for the adapter or None.

        Raises RemoteProtocolError when the peer broke the protocol; the
        adapter then sends what is queued (a GOODBYE saying why) and closes.
        In the closing states every frame is ignored.
        """
        accepted = ACCEPTS.get(self.state)
        if accepted is None:
            return None
        try:
            message = jelly.loads(frame, context=self.refs, limits=self._jelly_limits,
                                  registry=self._registry)
        except (jelly.InsecureJelly, jelly.LimitExceeded) as exc:
            return self._refuse_frame(frame, exc)
        except jelly.JellyError as exc:
            raise self._violation(f"undecodable frame: {exc}") from None
        if type(message) is not list or not message or type(message[0]) is not int:
            raise self._violation("a message must be an array starting with an opcode")
        op = message[0]
        if op not in accepted:
            if 0 <= op <= Op.GOODBYE:
                raise self._violation(f"opcode {op} is not allowed in state {self.state}")
            raise self._violation(f"unknown opcode {_brief(op)}")
        # The arity of every opcode is checked here, once (_messages.FIELDS);
        # each handler checks the types of its fields.
        fields = len(message) - 1
        if fields != _FIELDS[op]:
            if op != Op.HELLO:
                raise self._violation(f"opcode {op} takes {_FIELDS[op]} fields, got {fields}")
            if fields < _FIELDS[op]:  # a HELLO may carry more fields than we know
                raise self._violation("malformed HELLO")
        return _HANDLERS[op](self, message)

    def _on_ping(self, message: list) -> None:
        try:
            pong = jelly.dumps([Op.PONG, message[1]])
        except jelly.JellyError:
            raise self._violation("a PING token must be plain data that can be echoed "
                                  "(no references, no copies this side cannot send)") from None
        self._queue(pong)
        return None

    def _on_pong(self, message: list) -> None:
        return None

    def _on_decache(self, message: list) -> None:
        cache_id, count = message[1], message[2]
        if type(cache_id) is not int or type(count) is not int or count <= 0:
            raise self._violation("malformed DECACHE")
        try:
            self.refs.decache(cache_id, count)
        except ValueError as exc:
            raise self._violation(str(exc)) from None
        return None

    def _on_uncache(self, message: list) -> None:
        if type(message[1]) is not int:
            raise self._violation("malformed UNCACHE")
        try:
            self.refs.uncache(message[1])
        except ValueError as exc:
            raise self._violation(str(exc)) from None
        return None

    def _on_goodbye(self, message: list) -> GoodbyeEvent:
        self._enter("recv GOODBYE")
        code, reason = message[1], message[2]
        event = GoodbyeEvent(code if type(code) is str else _brief(code),
                             reason if type(reason) is str else _brief(reason))
        self.close_reason = f"the peer closed the connection ({event.code}): {event.reason}"
        return event

    def _violation(self, text: str, code: str = "protocol-error",
                   told: str | None = None) -> RemoteProtocolError:
        """Queue GOODBYE(code, text) and return the error to raise; its
        message, also the close_reason, is ``told`` if given."""
        if told is None:
            told = f"the peer broke the protocol: {text}" if code == "protocol-error" else text
        self._say_goodbye(code, text, "peer broke protocol", told=told)
        return RemoteProtocolError(told)

    def _refuse_frame(self, frame: Any, exc: Exception) -> Any:
        """A frame decoded to something we refuse.  If it was a call, answer
        that call with an error and keep the connection; otherwise it is a
        protocol violation."""
        envelope = None
        if self.state is OPEN:
            # Past msgpack's nesting cap the envelope is read a Python step
            # per value (about 0.2 us): bounded, like the decode itself, by
            # max_objects; twice, so that a chain of max_objects containers
            # with a value beside each is still answered.
            envelope = _envelope(frame, 2 * self.limits.max_objects)
        if envelope is _TOO_COSTLY:
            most = self.limits.max_objects
            reason = (f"refused frame: {exc}; and its CALL is nested past msgpack's cap of "
                      f"1024 levels, with more than {2 * most} values (twice "
                      f"max_objects={most}) before answer_wanted: too many to read its envelope")
            raise self._violation(reason, "limit-exceeded", f"the peer went past a limit: {reason}")
        if envelope is None:
            raise self._violation(f"refused frame: {exc}")
        op, req_id, fields, answer_wanted = envelope
        limit = isinstance(exc, jelly.LimitExceeded)
        if op == Op.CALL and fields == 7 and answer_wanted is not None:
            if answer_wanted:
                # Named as the broker's own errors (docs/protocol.md §2.2),
                # not as the serializer's private classes.
                self._queue_error(req_id, "limit-exceeded" if limit else "insecure-jelly",
                                  LimitExceeded if limit else InsecureJelly, str(exc))
            return None
        if op in (Op.ANSWER, Op.ERROR) and req_id in self.waiting:
            # The answer holds something we refuse: that call fails, the
            # connection stays.
            self.waiting.discard(req_id)
            if self.call_queue:
                self._send_queued()
            error = LimitExceeded(str(exc)) if limit else InsecureJelly(str(exc))
            return FailureEvent(req_id, error)
        raise self._violation(f"refused frame: {exc}")

    def _on_hello(self, message: list) -> HelloEvent:
        if (type(message[1]) is not str or message[1] != PROTOCOL_NAME
                or type(message[2]) is not int):
            raise self._violation("malformed HELLO")
        if message[2] != PROTOCOL_VERSION:
            version = _brief(message[2])
            raise self._violation(f"this peer speaks {PROTOCOL_NAME} protocol version "
                                  f"{PROTOCOL_VERSION}, the other side version {version}",
                                  "version",
                                  f"protocol version mismatch: we speak {PROTOCOL_VERSION}, "
                                  f"the peer speaks {version}; upgrade one side")
        features, max_frame = message[3], message[4]
        if type(features) is not list or type(max_frame) is not int:
            raise self._violation("malformed HELLO")
        if max_frame < MIN_MAX_FRAME:
            raise self._violation(f"HELLO announces max_frame={_brief(max_frame)}, below the "
                                  f"minimum of {MIN_MAX_FRAME}")
        self.peer_features = tuple(f for f in features if type(f) is str)
        # An optional sixth field: the calls the peer lets us have running.
        if len(message) > 5 and type(message[5]) is int and message[5] > 0:
            self.call_slots = min(self.limits.max_outstanding_calls, message[5])
        self._send_limit = min(self.limits.max_frame, max_frame)
        self._enter("recv HELLO")
        return HelloEvent(self.peer_features, max_frame)

    def _on_call(self, message: list) -> CallEvent | None:
        _, req_id, target, method, args, kwargs, answer_wanted = message
        if (not valid_req_id(req_id) or type(target) is not int or type(method) is not str
                or type(args) is not list or type(kwargs) is not dict
                or type(answer_wanted) is not bool):
            raise self._violation("malformed CALL")
        if req_id in self.running:
            raise self._violation(f"CALL reuses request id {_brief(req_id)}, which is still running")
        if len(self.running) >= self.limits.max_outstanding_calls:
            if answer_wanted:
                self._queue_error(req_id, "limit-exceeded", "broker.LimitExceeded",
                                  f"{len(self.running)} calls are already running for this "
                                  f"connection (max_outstanding_calls="
                                  f"{self.limits.max_outstanding_calls})")
            return None
        entry = self.refs.local.get(target)
        if entry is None:
            if answer_wanted:
                self._queue_error(req_id, "no-such-object", "broker.DeadReference",
                                  f"object id {_brief(target)} is not held by this connection")
            return None
        obj = entry.obj
        if not _has_method(obj, method):
            if answer_wanted:
                hint = getattr(obj, "_pb_missing_method_hint", "")
                self._queue_error(req_id, "no-such-method", "broker.NoSuchMethod",
                                  f"{_describe(obj)} has no remote method {_brief(method)}{hint}")
            return None
        self.running.add(req_id)
        perspective = obj.perspective if type(obj) is ViewPoint else entry.perspective
        event = new_call_event(req_id, obj, method, args, kwargs, answer_wanted, perspective)
        if self._first_step_pending or self.backlog:
            return self._hold(event)
        return event

    def _on_cache_call(self, message: list) -> CallEvent | None:
        _, cache_id, method, args, kwargs = message
        if (type(cache_id) is not int or type(method) is not str or type(args) is not list
                or type(kwargs) is not dict):
            raise self._violation("malformed CACHE_CALL")
        if self.cache_drops:
            self.process_cache_drops()
        target = self.refs.cache_target(cache_id)
        if target is None:
            return None  # dropped and uncached: updates for it no longer matter
        if not _has_method(target, method):
            return None  # one-way: there is nobody to tell
        return self._hold(new_call_event(None, target, method, args, kwargs, False, None))

    def _on_answer(self, message: list) -> AnswerEvent | None:
        req_id = message[1]
        if type(req_id) is not int or not 0 < req_id < self._next_req:
            raise self._violation(f"ANSWER for request id {_brief(req_id)}, which was never sent")
        if req_id not in self.waiting:
            # Cancelled or timed out: a late answer is dropped, and its slot
            # is free again (the event has no future left to resolve).
            if req_id in self.given_up:
                self.given_up.discard(req_id)
                if self.call_queue:
                    self._send_queued()
                return AnswerEvent(req_id, None)
            return None
        self.waiting.discard(req_id)
        if self.call_queue:
            self._send_queued()
        return new_answer_event(req_id, message[2])

    def _on_error(self, message: list) -> FailureEvent | AnswerEvent | None:
        _, req_id, code, type_name, text, tb, copy = message
        if type(req_id) is not int or not 0 < req_id < self._next_req:
            raise self._violation(f"ERROR for request id {_brief(req_id)}, which was never sent")
        if type(code) is not str or type(type_name) is not str or type(text) is not str:
            raise self._violation("malformed ERROR")
        if req_id not in self.waiting:
            if req_id in self.given_up:
                self.given_up.discard(req_id)
                if self.call_queue:
                    self._send_queued()
                return AnswerEvent(req_id, None)  # frees the slot; nobody waits for it
            return None
        self.waiting.discard(req_id)
        if self.call_queue:
            self._send_queued()
        error: BaseException | None = None
        if type(copy) is bytes:
            try:
                error = jelly.loads(copy, context=self.refs, limits=self._jelly_limits,
                                    registry=self._registry)
            except jelly.JellyError:
                error = None
            if not isinstance(error, BaseException):
                error = None
        if error is None:
            error = _error_for(code, type_name, text, tb if type(tb) is str else None)
        return FailureEvent(req_id, error)

    def _on_decref(self, message: list) -> None:
        object_id, count = message[1], message[2]
        if type(object_id) is not int or type(count) is not int or count <= 0:
            raise self._violation("malformed DECREF")
        try:
            self.refs.decref(object_id, count)
        except ValueError as exc:
            raise self._violation(str(exc)) from None
        return None

    def _on_cancel(self, message: list) -> CancelEvent | None:
        req_id = message[1]
        if not valid_req_id(req_id):
            raise self._violation("malformed CANCEL")
        if req_id not in self.running:
            return None
        for event in self.backlog:
            if event.req_id == req_id:  # held, never started: answered here
                self.backlog.remove(event)
                if event.answer_wanted:
                    self.fail(req_id, asyncio.CancelledError(
                        f"call {event.method!r} was cancelled"))
                else:
                    self.finished(req_id)
                return None
        return CancelEvent(req_id)


# First bytes of a msgpack int.
_INT_FIRST = frozenset(range(0x80)) | frozenset(range(0xCC, 0xD4)) | frozenset(range(0xE0, 0x100))


#: What _envelope returns when reading the envelope would cost too much.
_TOO_COSTLY: Any = "too costly"


def _envelope(frame: Any, budget: int) -> tuple[int, int, int, bool | None] | None:
    """``(opcode, req_id, fields, answer_wanted)`` of a frame jelly refused,
    read without building any other value of it: it may have been refused
    for its size.  ``answer_wanted`` is None unless the message is a CALL
    of 7 fields and the last is a bool.  None if the frame is not
    ``[op, int, ...]``; ``_TOO_COSTLY`` if a CALL's ``answer_wanted`` lies
    past more than ``budget`` values that only a walk in Python can step over
    (see :func:`_walk`)."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(frame), 1))
    try:
        unpacker.feed(frame)
        fields = unpacker.read_array_header()
        if fields < 3 or frame[unpacker.tell()] >= 0x80:  # op: a positive fixint
            return None
        op = unpacker.unpack()
        if frame[unpacker.tell()] not in _INT_FIRST:
            return None
        req_id = unpacker.unpack()
        answer_wanted = None
        if op == Op.CALL and fields == 7:
            end = _skip(unpacker, frame, 4, budget)  # target, method, args, kwargs
            if end is _TOO_COSTLY:
                return end
            last = frame[end]
            if last in (0xC2, 0xC3):
                answer_wanted = last == 0xC3
        return op, req_id, fields, answer_wanted
    except Exception:
        return None


def _skip(unpacker: msgpack.Unpacker, frame: Any, count: int, budget: int) -> Any:
    """Position after ``count`` more values of ``frame``; raises on malformed bytes."""
    for left in range(count, 0, -1):
        start = unpacker.tell()
        try:
            unpacker.skip()
        except msgpack.StackError:
            # msgpack's C skip keeps a stack entry per open container and
            # gives up past 1024 of them: a CALL nested that deep is still
            # answered from its envelope (protocol.md section 2.2).
            return _walk(frame, start, left, budget)
    return unpacker.tell()


# Total bytes of the values whose size their first byte gives (nil, bool,
# int, float, fixext); bytes that carry a length (str, bin, ext 8/16/32), as
# (width of the length, bytes between it and the payload); and array and map
# headers, as (width of the count, values per counted item).
_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
          0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),
          0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _walk(frame: Any, pos: int, count: int, budget: int) -> Any:
    """Position after ``count`` values from ``pos``, found with no stack at
    all: a container's items just join the values still to step over.

    One Python step per value (about 0.2 us), so at most ``budget`` steps:
    past them ``_TOO_COSTLY``.  Raises ValueError on bytes that are not
    msgpack."""
    end = len(frame)
    pending = count
    while pending:
        if budget <= 0:
            return _TOO_COSTLY
        if pos >= end:
            raise ValueError("truncated frame")
        budget -= 1
        pending -= 1
        first = frame[pos]
        if first < 0x80 or first >= 0xE0:  # positive and negative fixint
            pos += 1
        elif first < 0x90:  # fixmap
            pending += 2 * (first - 0x80)
            pos += 1
        elif first < 0xA0:  # fixarray
            pending += first - 0x90
            pos += 1
        elif first < 0xC0:  # fixstr
            pos += 1 + first - 0xA0
        elif first in _FIXED:
            pos += _FIXED[first]
        elif first in _COUNTED:
            width, per = _COUNTED[first]
            pending += per * int.from_bytes(frame[pos + 1:pos + 1 + width], "big")
            pos += 1 + width
        elif first in _SIZED:
            width, gap = _SIZED[first]
            size = int.from_bytes(frame[pos + 1:pos + 1 + width], "big")
            pos += 1 + width + gap + size
        else:
            raise ValueError(f"type byte {first:#04x} is not msgpack")
    if pos >= end:  # answer_wanted must still follow
        raise ValueError("truncated frame")
    return pos


def _has_method(obj: Any, name: str) -> bool:
    """Whether ``lookup_method(obj, name)`` finds a method (without binding it)."""
    cls = type(obj.viewable) if type(obj) is ViewPoint else type(obj)
    methods = getattr(cls, "_pb_methods", None)
    return methods is not None and name in methods


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _describe(obj: Any) -> str:
    if type(obj) is ViewPoint:
        obj = obj.viewable
    return type(obj).__qualname__


#: The handler of each incoming opcode (arity already checked).
_HANDLERS: dict[int, Callable[[Broker, list], Any]] = {
    Op.HELLO: Broker._on_hello,
    Op.CALL: Broker._on_call,
    Op.ANSWER: Broker._on_answer,
    Op.ERROR: Broker._on_error,
    Op.DECREF: Broker._on_decref,
    Op.CACHE_CALL: Broker._on_cache_call,
    Op.DECACHE: Broker._on_decache,
    Op.UNCACHE: Broker._on_uncache,
    Op.CANCEL: Broker._on_cancel,
    Op.PING: Broker._on_ping,
    Op.PONG: Broker._on_pong,
    Op.GOODBYE: Broker._on_goodbye,
}
