"""What the sans-IO core tells its adapter: one frozen dataclass per event.

Every event is plain data.  A :class:`CallEvent` names the target object and
the method; the adapter looks the method up and runs it, so user code never
runs inside the core and can never re-enter the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Event", "CallEvent", "AnswerEvent", "FailureEvent", "CancelEvent", "HelloEvent",
           "GoodbyeEvent", "SendPing", "TimedOut", "StopLingering", "CallSent", "CallNotSent",
           "new_call_event", "new_answer_event"]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Run ``method`` of ``target`` with ``args``/``kwargs``.

    ``req_id`` is None for a CACHE_CALL (an update to a cache copy): nobody
    is told its outcome.  ``perspective`` is whom the call runs for (the
    logged-in perspective behind a Viewable), else None."""

    req_id: int | None
    target: Any
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    answer_wanted: bool
    perspective: Any


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """Our call ``req_id`` was answered with ``value`` (None, and nobody
    waits, when it was a call we had given up on: its slot is free again)."""

    req_id: int
    value: Any


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """Our call ``req_id`` failed with ``error``."""

    req_id: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class CancelEvent:
    """The peer cancelled its call ``req_id``, which is running here."""

    req_id: int


@dataclass(frozen=True, slots=True)
class HelloEvent:
    """The peer's HELLO was accepted: the connection is OPEN."""

    features: tuple[str, ...]
    max_frame: int


@dataclass(frozen=True, slots=True)
class GoodbyeEvent:
    """The peer said GOODBYE: the connection is CLOSED."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendPing:
    """A deadline passed: the core queued a PING (output is waiting)."""

    token: int


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A deadline passed: the core queued ``GOODBYE("timeout", reason)`` and
    is CLOSED; the adapter sends the output and closes the transport.
    ``handshake`` tells a missing HELLO from a silent open connection."""

    reason: str
    handshake: bool


@dataclass(frozen=True, slots=True)
class StopLingering:
    """The lingering after our GOODBYE has lasted its time: the adapter
    aborts the transport (the core closes when told close())."""


@dataclass(frozen=True, slots=True)
class CallSent:
    """A call of ours that waited for a free slot has been sent as ``req_id``
    (see ``Broker.take_dequeued``); ``token`` is what the adapter gave
    ``Broker.call`` for it."""

    token: Any
    req_id: int


@dataclass(frozen=True, slots=True)
class CallNotSent:
    """A call of ours that waited for a free slot could not be sent
    (an argument that cannot be encoded, say): it fails with ``error``."""

    token: Any
    error: BaseException


Event = (CallEvent | AnswerEvent | FailureEvent | CancelEvent | HelloEvent | GoodbyeEvent
         | SendPing | TimedOut | StopLingering | CallSent | CallNotSent)


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    return tuple(cls.__dict__[name].__set__ for name in names)


# The events made once per call, built by setting their slots directly: a
# frozen dataclass's __init__ goes through object.__setattr__ for each field,
# about twice the cost (bench_calls row (1), sequential; see bench/README.md).
_new = object.__new__
_CALL = _slot_setters(CallEvent, "req_id", "target", "method", "args", "kwargs",
                      "answer_wanted", "perspective")
_ANSWER = _slot_setters(AnswerEvent, "req_id", "value")


def new_call_event(req_id: int | None, target: Any, method: str, args: list[Any],
                   kwargs: dict[str, Any], answer_wanted: bool, perspective: Any,
                   _r: Any = _CALL[0], _t: Any = _CALL[1], _m: Any = _CALL[2], _a: Any = _CALL[3],
                   _k: Any = _CALL[4], _w: Any = _CALL[5], _p: Any = _CALL[6]) -> CallEvent:
    """``CallEvent(...)``, made faster (the same frozen object)."""
    event = _new(CallEvent)
    _r(event, req_id)
    _t(event, target)
    _m(event, method)
    _a(event, args)
    _k(event, kwargs)
    _w(event, answer_wanted)
    _p(event, perspective)
    return event


def new_answer_event(req_id: int, value: Any,
                     _r: Any = _ANSWER[0], _v: Any = _ANSWER[1]) -> AnswerEvent:
    """``AnswerEvent(req_id, value)``, made faster (the same frozen object)."""
    event = _new(AnswerEvent)
    _r(event, req_id)
    _v(event, value)
    return event
