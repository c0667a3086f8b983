"""The Twisted dialect's sans-IO broker: bytes in, events and bytes out.

States::

    NEGOTIATING  the server offers its dialects (we offer only b"pb"), the
                 client answers with the one it picked; then both say
                 ["version", 6]
    OPEN         message, answer, error, decref, cachemessage, decache,
                 uncache, version, didNotUnderstand
    CLOSED       nothing (input is ignored)

References reuse the native :class:`~broker._references.ReferenceTables`.
Twisted counts one send per ``remote`` it writes and expects one ``decref``
per reference it received; our tables count sends the same way, so a
``decref`` from a Twisted peer is a decrement by one, and when one of our
proxies dies we send one ``decref`` per time its id arrived.  The peer's
root is named ``b"root"`` on the wire, our ``ROOT_ID`` inside.
"""

from __future__ import annotations

import collections
import traceback
import weakref
from typing import Any, Callable

from .._errors import InsecureJelly, LimitExceeded, PBError, ProtocolError, RemoteError
from .._flavors import ViewPoint, lookup_method
from .._limits import Limits
from .._messages import brief
from .._references import CACHE, CACHED, LCACHE, LOCAL, REMOTE, ROOT_ID, ReferenceTables
from ._banana import BananaError, Decoder, encode
from ._jelly import PLAIN, Jellier, failure_state, unjelly

__all__ = ["TwistedBroker", "CallEvent", "AnswerEvent", "FailureEvent", "ReadyEvent",
           "PB_VERSION"]

PB_VERSION = 6
ROOT_NAME = b"root"
#: Released ids remembered for a late ``local`` (see TwistedBroker.released).
_RELEASED_KEPT = 1024
NEGOTIATING, OPEN, CLOSED = "NEGOTIATING", "OPEN", "CLOSED"


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


class ReadyEvent:
    __slots__ = ()


class TwistedBroker:
    """One Twisted-dialect connection's state, no I/O."""

    def __init__(self, *, owner: Any, make_proxy: Callable[[int], Any], is_client: bool,
                 limits: Limits, unsafe_tracebacks: bool = False,
                 on_released: Callable[[int, Any], Any] | None = None) -> None:
        self.limits = limits
        self.is_client = is_client
        self.unsafe_tracebacks = unsafe_tracebacks
        self.refs = ReferenceTables(owner, make_proxy, limits.max_local_references,
                                    limits.max_caches, on_released=on_released,
                                    on_uncached=self._uncached)
        self.decoder = Decoder(max_bytes=min(limits.max_frame, limits.handshake_bytes),
                               max_depth=limits.max_depth, max_items=limits.max_items,
                               max_objects=limits.max_objects)
        self.state = NEGOTIATING
        self._out: list[bytes] = []
        self._next_req = 1
        self.waiting: set[int] = set()
        self.running: set[int] = set()
        #: (cacheable, perspective, observer) whose stopped_observing is due.
        self.stopped: list[tuple[Any, Any, Any]] = []
        #: Objects the peer released lately, weakly, by id.  A Twisted broker
        #: sends the decref for a reference it got as an argument *before*
        #: the answer that returns it home as ``local``; ids are never
        #: reused, so the id still names the object while it lives.
        self.released: collections.OrderedDict[int, weakref.ref] = collections.OrderedDict()

    # -- output -------------------------------------------------------------

    def start(self) -> None:
        if not self.is_client:
            self._out.append(encode([b"pb"], vocabulary=False))

    def take_output(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def _send(self, expression: list) -> None:
        data = encode(expression)
        if len(data) > self.limits.max_frame:
            raise LimitExceeded(f"a message of {len(data)} bytes is past "
                                f"max_frame={self.limits.max_frame}")
        self._out.append(data)

    def _jellied(self, value: Any, perspective: Any = None) -> Any:
        plain = PLAIN.get(type(value))
        if plain is not None:  # no container, no flavor: no reference tables
            return plain(value)
        refs = self.refs
        refs.begin_encode(perspective)
        ok = False
        try:
            result = Jellier(self, perspective).jelly(value)
            ok = True
            return result
        finally:
            refs.end_encode(ok)
            refs.perspective = None

    def call(self, object_id: int, method: str, args: tuple, kwargs: dict,
             answer_wanted: bool = True, perspective: Any = None) -> int:
        """Queue a ``message``; return its request id."""
        if self.state is not OPEN:
            raise PBError("the connection is not open")
        if answer_wanted and len(self.waiting) >= self.limits.max_outstanding_calls:
            raise LimitExceeded(
                f"{len(self.waiting)} calls are already waiting for answers "
                f"(max_outstanding_calls={self.limits.max_outstanding_calls})")
        req_id = self._next_req
        self._next_req += 1
        target = ROOT_NAME if object_id == ROOT_ID else object_id
        message = [b"message", req_id, target, method.encode("utf-8"), int(answer_wanted),
                   self._jellied(tuple(args), perspective), self._jellied(dict(kwargs), perspective)]
        self._send(message)
        if answer_wanted:
            self.waiting.add(req_id)
        return req_id

    def cache_call(self, cache_id: int, method: str, args: tuple, kwargs: dict) -> None:
        entry = self.refs.caches_out.get(cache_id)
        if self.state is not OPEN or entry is None:
            return
        req_id = self._next_req
        self._next_req += 1
        self._send([b"cachemessage", req_id, cache_id, method.encode("utf-8"), 0,
                    self._jellied(tuple(args), entry.perspective),
                    self._jellied(dict(kwargs), entry.perspective)])

    def answer(self, req_id: int, value: Any, perspective: Any = None) -> None:
        self.running.discard(req_id)
        if self.state is not OPEN:
            return
        try:
            self._send([b"answer", req_id, self._jellied(value, perspective)])
        except Exception as exc:  # the result cannot travel: say so instead
            self.fail(req_id, exc)

    def fail(self, req_id: int, exc: BaseException) -> None:
        self.running.discard(req_id)
        if self.state is not OPEN:
            return
        kind = type(exc)
        name = _type_name(kind)
        if isinstance(exc, RemoteError):
            name, message = exc.remote_type, exc.remote_message
        else:
            message = str(exc)
        tb = None
        if self.unsafe_tracebacks and exc.__traceback__ is not None:
            tb = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
        parents = [_type_name(k) for k in kind.__mro__ if k is not object]
        self._send([b"error", req_id, failure_state(name, message, tb, parents)])

    def decref(self, object_id: int, count: int) -> None:
        if self.state is OPEN and object_id != ROOT_ID:
            message = encode([b"decref", object_id])
            self._out.extend([message] * count)

    def decache(self, cache_id: int, count: int) -> None:
        if self.state is OPEN:
            self._out.extend([encode([b"decache", cache_id])] * count)

    def _uncached(self, cache_id: int, entry: Any, peer_knows: bool) -> None:
        self.stopped.append((entry.obj, entry.perspective, entry.observer))
        if peer_knows and self.state is OPEN:
            self._send([b"uncache", cache_id])

    def close(self) -> None:
        self.state = CLOSED

    # -- jelly context --------------------------------------------------------

    def out_remote(self, obj: Any) -> list:
        kind, args = self.refs.flavor_out(obj)
        return [b"remote", args[0]]

    def out_local(self, ref: Any) -> list:
        kind, args = self.refs.flavor_out(ref)
        return [b"local", ROOT_NAME if args[0] == ROOT_ID else args[0]]

    def out_cache(self, obj: Any) -> list:
        kind, args = self.refs.flavor_out(obj)
        if kind == CACHED:
            return [b"cached", args[0]]
        cache_id, tag, state = args
        return [tag.encode("utf-8"), cache_id, state]

    def out_lcache(self, cache: Any) -> list:
        kind, args = self.refs.flavor_out(cache)
        return [b"lcache", args[0]]

    def _object_id(self, value: Any) -> int:
        if value == ROOT_NAME:
            return ROOT_ID
        if type(value) is not int or value <= 0:
            raise InsecureJelly(f"bad object id {brief(value)}")
        return value

    def in_remote(self, object_id: Any) -> Any:
        return self.refs.flavor_in(REMOTE, (self._object_id(object_id),))

    def in_local(self, object_id: Any) -> Any:
        object_id = self._object_id(object_id)
        if object_id == ROOT_ID:
            entry = self.refs.local.get(ROOT_ID)
            if entry is None:
                raise InsecureJelly("the peer named our root, and we publish none")
            return entry.obj
        if object_id not in self.refs.local:
            ref = self.released.get(object_id)
            obj = ref() if ref is not None else None
            if obj is not None:
                return obj.viewable if type(obj) is ViewPoint else obj
        return self.refs.flavor_in(LOCAL, (object_id,))

    def remember_released(self, object_id: int, obj: Any) -> None:
        try:
            self.released[object_id] = weakref.ref(obj)
        except TypeError:
            return  # no weak references: it cannot come home after its decref
        if len(self.released) > _RELEASED_KEPT:
            self.released.popitem(last=False)

    def in_cache(self, tag: str, cache_id: Any, state: Any) -> Any:
        return self.refs.flavor_in(CACHE, (self._object_id(cache_id), tag, state))

    def in_cached(self, cache_id: Any) -> Any:
        return self.refs.flavor_in(CACHED, (self._object_id(cache_id),))

    def in_lcache(self, cache_id: Any) -> Any:
        return self.refs.flavor_in(LCACHE, (self._object_id(cache_id),))

    # -- input ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes; return events.  Raises :class:`ProtocolError` (the
        connection must close) for anything a peer must not send."""
        if self.state is CLOSED:
            return []
        events: list[Any] = []
        expressions = self.decoder.feed(data)
        if self.state is NEGOTIATING and expressions:
            # The decoder stopped after the negotiation's one expression.
            events.append(self._negotiate(expressions[0]))
            expressions = self.decoder.feed(b"")
        for expression in expressions:
            if self.state is CLOSED:
                break
            try:
                event = self._expression(expression)
            except ProtocolError:
                raise
            except Exception as exc:  # a malformed message is the peer's fault
                raise ProtocolError(f"bad {brief(expression, 60)}: {exc}") from None
            if event is not None:
                events.append(event)
        return events

    def _expression(self, expression: Any) -> Any:
        if self.state is NEGOTIATING:
            return self._negotiate(expression)
        if type(expression) is not list or not expression or type(expression[0]) is not bytes:
            raise ProtocolError(f"a Twisted PB message must be a list naming a command, "
                                f"not {brief(expression)}")
        command, args = expression[0], expression[1:]
        handler = _COMMANDS.get(command)
        if handler is None:
            self._send([b"didNotUnderstand", command])
            return None
        return handler(self, args)

    def _negotiate(self, expression: Any) -> Any:
        if self.is_client:
            if type(expression) is not list or b"pb" not in expression:
                raise ProtocolError(f"the server offers dialects {brief(expression)}; we speak "
                                    "only b'pb' (is this a Twisted PB server?)")
            self._out.append(encode(b"pb", vocabulary=False))
        elif expression != b"pb":
            raise ProtocolError(f"the client chose dialect {brief(expression)}, which we did not offer")
        self.state = OPEN
        self.decoder.vocabulary = True
        self.decoder.max_bytes = self.limits.max_frame
        self._send([b"version", PB_VERSION])
        return ReadyEvent()

    def _version(self, args: list) -> None:
        if args != [PB_VERSION]:
            raise ProtocolError(f"the peer speaks PB version {brief(args)}, we speak {PB_VERSION}")

    def _unjelly(self, sexp: Any) -> Any:
        return unjelly(sexp, self)

    def _message(self, args: list, cache: bool = False) -> Any:
        if len(args) != 6:
            raise ProtocolError(f"malformed message {brief(args)}")
        req_id, object_id, method, answer_wanted, net_args, net_kwargs = args
        if type(req_id) is not int or type(method) is not bytes:
            raise ProtocolError(f"malformed message {brief(args)}")
        answer_wanted = bool(answer_wanted)
        try:
            name = method.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"method name {brief(method)} is not UTF-8") from None
        if answer_wanted and len(self.running) >= self.limits.max_outstanding_calls:
            self.fail(req_id, LimitExceeded(
                f"this side is already running {len(self.running)} calls of yours "
                f"(max_outstanding_calls={self.limits.max_outstanding_calls})"))
            return None
        perspective = None
        try:
            if cache:
                target = self.refs.cache_target(self._object_id(object_id))
            else:
                entry = self.refs.local.get(self._object_id(object_id))
                target = entry.obj if entry is not None else None
                perspective = entry.perspective if entry is not None else None
            if target is None:
                raise PBError(f"invalid object id {brief(object_id)}")
            func = lookup_method(target, name)
            if func is None:
                what = type(target.viewable if type(target) is ViewPoint else target).__qualname__
                raise PBError(f"{what} has no remote method {name!r}")
            call_args = _plain_args(net_args)
            if call_args is None:
                call_args = self._unjelly(net_args)
            if net_kwargs == _NO_KWARGS:  # what Twisted sends for no keywords
                call_kwargs = {}
            else:
                call_kwargs = self._unjelly(net_kwargs)
                if type(call_kwargs) is not dict:
                    raise InsecureJelly("message keyword arguments must be a dictionary")
                call_kwargs = {(k.decode("utf-8") if type(k) is bytes else k): v
                               for k, v in call_kwargs.items()}
                if not all(type(k) is str for k in call_kwargs):
                    raise InsecureJelly("keyword argument names must be text")
            if type(call_args) is not tuple:
                raise InsecureJelly("message arguments must be a tuple")
        except (PBError, ValueError) as exc:
            if answer_wanted:
                self.fail(req_id, exc)
            return None
        except Exception as exc:  # a registered class refused its state, say
            if answer_wanted:
                self.fail(req_id, _refused(exc))
            return None
        if answer_wanted:
            self.running.add(req_id)
        return CallEvent(req_id, name, func, call_args, call_kwargs, answer_wanted, perspective)

    def _answer(self, args: list) -> Any:
        if len(args) != 2 or args[0] not in self.waiting:
            raise ProtocolError(f"answer to a call that is not waiting: {brief(args)}")
        self.waiting.discard(args[0])
        try:
            value = self._unjelly(args[1])
        except Exception as exc:
            return FailureEvent(args[0], _refused(exc))
        return AnswerEvent(args[0], value)

    def _error(self, args: list) -> Any:
        if len(args) != 2 or args[0] not in self.waiting:
            raise ProtocolError(f"error for a call that is not waiting: {brief(args)}")
        self.waiting.discard(args[0])
        try:
            value = self._unjelly(args[1])
        except Exception as exc:
            return FailureEvent(args[0], _refused(exc))
        if isinstance(value, BaseException):
            return FailureEvent(args[0], value)
        if type(value) is bytes:
            value = value.decode("utf-8", "replace")
        return FailureEvent(args[0], RemoteError("twisted.spread.pb.Error", brief(value, 2000)
                                                 if not isinstance(value, str) else value))

    def _decref(self, args: list) -> None:
        if len(args) != 1:
            raise ProtocolError(f"malformed decref {brief(args)}")
        object_id = self._object_id(args[0])
        try:
            self.refs.decref(object_id, 1)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    def _decache(self, args: list) -> None:
        if len(args) != 1:
            raise ProtocolError(f"malformed decache {brief(args)}")
        try:
            self.refs.decache(self._object_id(args[0]), 1)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    def _uncache(self, args: list) -> None:
        if len(args) != 1:
            raise ProtocolError(f"malformed uncache {brief(args)}")
        try:
            self.refs.uncache(self._object_id(args[0]))
        except ValueError:
            pass  # Twisted uncaches what it never lost track of; nothing to undo here


_NO_KWARGS = [b"dictionary"]


def _plain_args(sexp: Any) -> tuple | None:
    """A message's arguments when they are all plain values (ints, floats,
    bytes, text), without an unjellier; None for anything else."""
    if type(sexp) is not list or not sexp or sexp[0] != b"tuple":
        return None
    args = []
    for item in sexp[1:]:
        kind = type(item)
        if kind is list:
            if len(item) != 2 or item[0] != b"unicode" or type(item[1]) is not bytes:
                return None
            try:
                item = item[1].decode("utf-8")
            except UnicodeDecodeError:
                return None  # the unjellier says what is wrong with it
        args.append(item)
    return tuple(args)


def _type_name(kind: type) -> str:
    module = kind.__module__
    if module.startswith("broker._"):  # our errors by their public names
        module = "broker"
    return f"{module}.{kind.__qualname__}"


def _refused(exc: Exception) -> PBError:
    return exc if isinstance(exc, PBError) else InsecureJelly(str(exc))


_COMMANDS: dict[bytes, Callable[[TwistedBroker, list], Any]] = {
    b"version": TwistedBroker._version,
    b"message": TwistedBroker._message,
    b"cachemessage": lambda self, args: self._message(args, cache=True),
    b"answer": TwistedBroker._answer,
    b"error": TwistedBroker._error,
    b"decref": TwistedBroker._decref,
    b"decache": TwistedBroker._decache,
    b"uncache": TwistedBroker._uncache,
    b"didNotUnderstand": lambda self, args: None,
}
