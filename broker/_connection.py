"""The sans-IO broker: one connection's protocol state, without any I/O.

The adapter feeds it frame bodies (``receive_frame``) and takes bytes to send
(``take_output``).  Calls from the peer come back as :class:`CallEvent`
objects: the core finds the target and the method, but never runs user code
itself, so a user method can never re-enter the parser.

State table (incoming opcodes accepted in each state)::

    state          accepts                       on
    AWAIT_HELLO    HELLO, GOODBYE                HELLO ok -> OPEN
    OPEN           everything but HELLO          GOODBYE  -> CLOSED
    CLOSED         nothing                       (any frame is ignored)
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
    NoSuchMethod,
    PBError,
    ProtocolError,
    RemoteError,
)
from ._flavors import ViewPoint, lookup_method
from ._fields import MIN_MAX_FRAME, error_body, valid_req_id
from ._framing import HEADER
from ._limits import Limits
from ._messages import FEATURES, PROTOCOL_NAME, PROTOCOL_VERSION, Op, brief as _brief
from ._references import ROOT_ID, ReferenceTables

__all__ = ["Broker", "CallEvent", "AnswerEvent", "FailureEvent", "CancelEvent",
           "HelloEvent", "GoodbyeEvent"]

AWAIT_HELLO, OPEN, CLOSED = "AWAIT_HELLO", "OPEN", "CLOSED"

_ACCEPTS = {
    AWAIT_HELLO: frozenset({Op.HELLO, Op.GOODBYE}),
    OPEN: frozenset(range(Op.CALL, Op.GOODBYE + 1)),
    CLOSED: frozenset(),
}

_pack_header = HEADER.pack
_SMALL = 64 * 1024


@functools.lru_cache(maxsize=32)
def _jelly_limits_for(limits: Limits) -> jelly.Limits:
    return limits.jelly_limits()  # validated once per Limits value, not per connection


@functools.lru_cache(maxsize=32)
def _hello_frame(max_frame: int, max_calls: int) -> bytes:
    body = jelly.dumps([Op.HELLO, PROTOCOL_NAME, PROTOCOL_VERSION, list(FEATURES), max_frame,
                        max_calls])
    return _pack_header(len(body)) + body


class CallEvent:
    __slots__ = ("req_id", "method", "func", "args", "kwargs", "answer_wanted", "perspective")

    def __init__(self, req_id, method, func, args, kwargs, answer_wanted, perspective):
        self.req_id = req_id
        self.method = method
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.answer_wanted = answer_wanted
        self.perspective = perspective


class AnswerEvent:
    __slots__ = ("req_id", "value")

    def __init__(self, req_id: int, value: Any) -> None:
        self.req_id = req_id
        self.value = value


class FailureEvent:
    __slots__ = ("req_id", "error")

    def __init__(self, req_id: int, error: BaseException) -> None:
        self.req_id = req_id
        self.error = error


class CancelEvent:
    __slots__ = ("req_id",)

    def __init__(self, req_id: int) -> None:
        self.req_id = req_id


class HelloEvent:
    __slots__ = ("features", "max_frame")

    def __init__(self, features: tuple[str, ...], max_frame: int) -> None:
        self.features = features
        self.max_frame = max_frame


class GoodbyeEvent:
    __slots__ = ("code", "reason")

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


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
    """One connection's PB state machine (no I/O)."""

    def __init__(self, *, owner: Any, make_proxy: Callable[[int], Any],
                 root: Any = None, limits: Limits,
                 unsafe_tracebacks: bool = False,
                 registry: Any = None) -> None:
        self.limits = limits
        self.refs = ReferenceTables(owner, make_proxy, limits.max_local_references,
                                    limits.max_caches)
        self.refs.on_uncached = self._uncached  # type: ignore[method-assign]
        self.refs.on_cache_miss = self.process_cache_drops  # type: ignore[method-assign]
        #: Peer caches whose last local reference died: (cache_id, count, cls, state).
        #: Appended from any thread; processed on the loop.
        self.cache_drops: collections.deque[tuple[int, int, type, dict]] = collections.deque()
        #: (cacheable, perspective, observer) whose stopped_observing is due.
        self.stopped: list[tuple[Any, Any, Any]] = []
        if root is not None:
            self.refs.set_root(root)
        self.state = AWAIT_HELLO
        self.unsafe_tracebacks = unsafe_tracebacks
        self.peer_features: tuple[str, ...] = ()
        self.peer_max_frame = limits.max_frame
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
        self.hello_sent = False

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
        refs.perspective = perspective
        refs._encoding = True
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
        refs._encoding = False
        if refs._counted is not None:
            refs._counted = None
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

    def hello(self) -> None:
        self._out.append(_hello_frame(self.limits.max_frame, self.limits.max_outstanding_calls))
        self.hello_sent = True

    def call(self, target_id: int, method: str, args: tuple, kwargs: dict,
             answer_wanted: bool = True) -> int:
        if self.state is CLOSED:
            raise DeadReference("the connection is closed")
        if answer_wanted and len(self.waiting) + len(self.given_up) >= self.call_slots:
            slots = self.call_slots
            whose = ("max_outstanding_calls" if slots == self.limits.max_outstanding_calls
                     else "the peer's limit on calls running at once")
            raise LimitExceeded(
                f"{len(self.waiting)} calls are already waiting for answers on this connection "
                f"({whose}: {slots}); await some first, or let calls wait for a slot "
                "(Limits.wait_for_call_slot=True)"
            )
        req_id = self._next_req
        self._next_req = req_id + 1
        body = self._encode([Op.CALL, req_id, target_id, method, list(args), kwargs, answer_wanted])
        self._queue(body)
        if answer_wanted:
            self.waiting.add(req_id)
        return req_id

    def forget_call(self, req_id: int) -> None:
        """Our caller gave up on ``req_id``; a late answer will be ignored."""
        self.waiting.discard(req_id)

    @property
    def free_call_slots(self) -> int:
        return self.call_slots - len(self.waiting) - len(self.given_up)

    def cancel(self, req_id: int) -> None:
        if req_id in self.waiting:
            self.waiting.discard(req_id)
            if self.state is not CLOSED:
                self.given_up.add(req_id)
                self._queue_plain([Op.CANCEL, req_id])

    def answer(self, req_id: int, value: Any, perspective: Any = None) -> None:
        if req_id not in self.running:
            return
        self.running.discard(req_id)
        if self.state is CLOSED:
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
        if self.state is CLOSED:
            return
        copy = None
        if isinstance(exc, jelly.Copyable):
            try:
                copy = self._encode_copy(exc)
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

    def _encode_copy(self, exc: BaseException) -> bytes:
        return self._encode(exc)  # type: ignore[arg-type]

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
        if self.state is not CLOSED and count > 0 and object_id != ROOT_ID:
            self._queue_plain([Op.DECREF, object_id, count])

    def cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        if self.state is not CLOSED and cache_id in self.refs.caches_out:
            self._queue(self._encode([Op.CACHE_CALL, cache_id, method, list(args), kwargs]))

    def process_cache_drops(self) -> None:
        drops = self.cache_drops
        while drops:
            cache_id, count, cls, state = drops.popleft()
            self.refs.cache_dropped(cache_id, state, cls)
            if self.state is not CLOSED:
                self._queue_plain([Op.DECACHE, cache_id, count])

    def _uncached(self, cache_id: int, entry: Any, peer_knows: bool) -> None:
        self.stopped.append((entry.obj, entry.perspective, entry.observer))
        if peer_knows and self.state is OPEN:
            self._queue_plain([Op.UNCACHE, cache_id])

    def take_stopped(self) -> list[tuple[Any, Any, Any]]:
        stopped, self.stopped = self.stopped, []
        return stopped

    def ping(self, token: int) -> None:
        if self.state is OPEN:
            self._queue_plain([Op.PING, token])

    def goodbye(self, code: str, reason: str) -> None:
        if self.state is not CLOSED:
            self._queue_plain([Op.GOODBYE, code, reason])
            self.state = CLOSED

    def close(self) -> None:
        self.state = CLOSED

    # -- input --------------------------------------------------------------

    def receive_frame(self, frame: Any) -> Any:
        """Handle one frame body; return an event for the adapter or None.

        Raises ProtocolError when the peer broke the protocol; the adapter
        then sends what is queued (a GOODBYE saying why) and closes.
        """
        if self.state is CLOSED:
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
        if op not in _ACCEPTS[self.state]:
            if 0 <= op <= Op.GOODBYE:
                raise self._violation(f"opcode {op} is not allowed in state {self.state}")
            raise self._violation(f"unknown opcode {_brief(op)}")
        if op == Op.CALL:
            return self._on_call(message)
        if op == Op.ANSWER:
            return self._on_answer(message)
        if op == Op.ERROR:
            return self._on_error(message)
        if op == Op.DECREF:
            return self._on_decref(message)
        if op == Op.CANCEL:
            return self._on_cancel(message)
        if op == Op.PING:
            self._arity(message, 2)
            try:
                pong = jelly.dumps([Op.PONG, message[1]])
            except jelly.JellyError:
                raise self._violation("a PING token must be plain data that can be echoed "
                                      "(no references, no copies this side cannot send)") from None
            self._queue(pong)
            return None
        if op == Op.PONG:
            self._arity(message, 2)
            return None
        if op == Op.CACHE_CALL:
            return self._on_cache_call(message)
        if op == Op.DECACHE:
            self._arity(message, 3)
            cache_id, count = message[1], message[2]
            if type(cache_id) is not int or type(count) is not int or count <= 0:
                raise self._violation("malformed DECACHE")
            try:
                self.refs.decache(cache_id, count)
            except ValueError as exc:
                raise self._violation(str(exc)) from None
            return None
        if op == Op.UNCACHE:
            self._arity(message, 2)
            if type(message[1]) is not int:
                raise self._violation("malformed UNCACHE")
            try:
                self.refs.uncache(message[1])
            except ValueError as exc:
                raise self._violation(str(exc)) from None
            return None
        if op == Op.HELLO:
            return self._on_hello(message)
        if op == Op.GOODBYE:
            self._arity(message, 3)
            self.state = CLOSED
            code, reason = message[1], message[2]
            return GoodbyeEvent(code if type(code) is str else _brief(code),
                                reason if type(reason) is str else _brief(reason))
        raise self._violation(f"opcode {op} is not supported by this peer")

    def _violation(self, text: str) -> ProtocolError:
        self.goodbye("protocol-error", text)
        return ProtocolError(f"the peer broke the protocol: {text}")

    def _arity(self, message: list, n: int) -> None:
        if len(message) != n:
            raise self._violation(f"opcode {message[0]} takes {n - 1} fields, got {len(message) - 1}")

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
            self.goodbye("limit-exceeded", reason)
            raise ProtocolError(f"the peer went past a limit: {reason}")
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
            error = LimitExceeded(str(exc)) if limit else InsecureJelly(str(exc))
            return FailureEvent(req_id, error)
        raise self._violation(f"refused frame: {exc}")

    def _on_hello(self, message: list) -> HelloEvent:
        if (len(message) < 5 or type(message[1]) is not str or message[1] != PROTOCOL_NAME
                or type(message[2]) is not int):
            raise self._violation("malformed HELLO")
        if message[2] != PROTOCOL_VERSION:
            version = _brief(message[2])
            self.goodbye("version", f"this peer speaks {PROTOCOL_NAME} protocol version "
                         f"{PROTOCOL_VERSION}, the other side version {version}")
            raise ProtocolError(
                f"protocol version mismatch: we speak {PROTOCOL_VERSION}, "
                f"the peer speaks {version}; upgrade one side"
            )
        features, max_frame = message[3], message[4]
        if type(features) is not list or type(max_frame) is not int:
            raise self._violation("malformed HELLO")
        if max_frame < MIN_MAX_FRAME:
            raise self._violation(f"HELLO announces max_frame={_brief(max_frame)}, below the "
                                  f"minimum of {MIN_MAX_FRAME}")
        self.peer_features = tuple(f for f in features if type(f) is str)
        self.peer_max_frame = max_frame
        # An optional sixth field: the calls the peer lets us have running.
        if len(message) > 5 and type(message[5]) is int and message[5] > 0:
            self.call_slots = min(self.limits.max_outstanding_calls, message[5])
        self._send_limit = min(self.limits.max_frame, max_frame)
        self.state = OPEN
        return HelloEvent(self.peer_features, max_frame)

    def _on_call(self, message: list) -> CallEvent | None:
        if len(message) != 7:
            self._arity(message, 7)
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
        func = lookup_method(obj, method)
        if func is None:
            if answer_wanted:
                hint = getattr(obj, "_pb_missing_method_hint", "")
                self._queue_error(req_id, "no-such-method", "broker.NoSuchMethod",
                                  f"{_describe(obj)} has no remote method {_brief(method)}{hint}")
            return None
        self.running.add(req_id)
        perspective = obj.perspective if type(obj) is ViewPoint else entry.perspective
        return CallEvent(req_id, method, func, args, kwargs, answer_wanted, perspective)

    def _on_cache_call(self, message: list) -> CallEvent | None:
        self._arity(message, 5)
        _, cache_id, method, args, kwargs = message
        if (type(cache_id) is not int or type(method) is not str or type(args) is not list
                or type(kwargs) is not dict):
            raise self._violation("malformed CACHE_CALL")
        if self.cache_drops:
            self.process_cache_drops()
        target = self.refs.cache_target(cache_id)
        if target is None:
            return None  # dropped and uncached: updates for it no longer matter
        func = lookup_method(target, method)
        if func is None:
            return None  # one-way: there is nobody to tell
        return CallEvent(None, method, func, args, kwargs, False, None)

    def _on_answer(self, message: list) -> AnswerEvent | None:
        if len(message) != 3:
            self._arity(message, 3)
        req_id = message[1]
        if type(req_id) is not int or not 0 < req_id < self._next_req:
            raise self._violation(f"ANSWER for request id {_brief(req_id)}, which was never sent")
        if req_id not in self.waiting:
            # Cancelled or timed out: a late answer is dropped, and its slot
            # is free again (the event has no future left to resolve).
            if req_id in self.given_up:
                self.given_up.discard(req_id)
                return AnswerEvent(req_id, None)
            return None
        self.waiting.discard(req_id)
        return AnswerEvent(req_id, message[2])

    def _on_error(self, message: list) -> FailureEvent | None:
        self._arity(message, 7)
        _, req_id, code, type_name, text, tb, copy = message
        if type(req_id) is not int or not 0 < req_id < self._next_req:
            raise self._violation(f"ERROR for request id {_brief(req_id)}, which was never sent")
        if type(code) is not str or type(type_name) is not str or type(text) is not str:
            raise self._violation("malformed ERROR")
        if req_id not in self.waiting:
            if req_id in self.given_up:
                self.given_up.discard(req_id)
                return AnswerEvent(req_id, None)  # frees the slot; nobody waits for it
            return None
        self.waiting.discard(req_id)
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
        self._arity(message, 3)
        object_id, count = message[1], message[2]
        if type(object_id) is not int or type(count) is not int or count <= 0:
            raise self._violation("malformed DECREF")
        try:
            self.refs.decref(object_id, count)
        except ValueError as exc:
            raise self._violation(str(exc)) from None
        return None

    def _on_cancel(self, message: list) -> CancelEvent | None:
        self._arity(message, 2)
        req_id = message[1]
        if not valid_req_id(req_id):
            raise self._violation("malformed CANCEL")
        return CancelEvent(req_id) if req_id in self.running else None


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


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _describe(obj: Any) -> str:
    if type(obj) is ViewPoint:
        obj = obj.viewable
    return type(obj).__qualname__

