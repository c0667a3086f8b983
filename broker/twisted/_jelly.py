"""Twisted's jelly: values as s-expressions of lists, ints, floats and bytes.

What travels, as a Twisted peer of the Python 3 era sends it::

    None            [b"None"]
    True / False    [b"boolean", b"true" | b"false"]
    str             [b"unicode", utf-8 bytes]
    bytes, int, float   themselves
    list / tuple    [b"list" | b"tuple", item, ...]
    set, frozenset  [b"set" | b"frozenset", item, ...]
    dict            [b"dictionary", [key, value], ...]
    shared/cyclic   [b"reference", n, value] first, [b"dereference", n] after
    Referenceable   [b"remote", id]     (an object of the sender's)
    RemoteReference [b"local", id]      (the receiver's own object coming home)
    Cacheable       [class name, id, state] the first time, [b"cached", id] after
    RemoteCache     [b"lcache", id]     (the receiver's Cacheable coming home)
    Copyable        [class name, state]

A class name is only ever looked up in ``jelly.twisted_registry`` (copies,
filled by ``jelly.register_copy(name, cls, dialect="twisted")``) and
``broker.register_cache`` (caches): never imported.  Twisted's
``twisted.spread.pb.CopyableFailure`` becomes :class:`broker.RemoteError`.
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any, Protocol

import jelly
from jelly._copyable import blank_instance, restore, state_for
from jelly._registry import twisted_registry

from .._caching import Cacheable, RemoteCache
from .._errors import InsecureJelly, PBError, RemoteError
from .._flavors import Referenceable, Viewable
from .._messages import brief
from .._remote import RemoteReference

__all__ = ["Jellier", "unjelly", "FAILURE_TAG", "failure_state", "PLAIN"]

#: The class name Twisted gives the failures it sends.
FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"
_FAILURE_TAGS = frozenset({FAILURE_TAG, b"twisted.python.failure.Failure"})


class Context(Protocol):
    """What the connection provides to (un)jelly its flavored objects."""

    def out_remote(self, obj: Any) -> list: ...
    def out_local(self, ref: RemoteReference) -> list: ...
    def out_cache(self, obj: Cacheable) -> list: ...
    def out_lcache(self, cache: RemoteCache) -> list: ...
    def in_remote(self, object_id: Any) -> Any: ...
    def in_local(self, object_id: Any) -> Any: ...
    def in_cache(self, tag: str, cache_id: Any, state: Any) -> Any: ...
    def in_cached(self, cache_id: Any) -> Any: ...
    def in_lcache(self, cache_id: Any) -> Any: ...


# -- jellying ------------------------------------------------------------------

_ATOMS = {list: b"list", tuple: b"tuple", set: b"set", frozenset: b"frozenset"}


def _as_itself(value: Any) -> Any:
    return value


#: Values that jelly to themselves or to one fixed form, by exact type.  The
#: broker sends these without a Jellier or the reference tables (the answer
#: to most calls is one; bench_calls: twisted-client->pb, seq and burst).
PLAIN: dict[type, Any] = {
    str: lambda v: [b"unicode", v.encode("utf-8", "surrogatepass")],
    bytes: _as_itself,
    int: _as_itself,
    float: _as_itself,
    type(None): lambda v: [b"None"],
    bool: lambda v: [b"boolean", b"true" if v else b"false"],
}


class Jellier:
    """Jellies one message's values; shared containers become
    reference/dereference pairs, as Twisted writes them."""

    __slots__ = ("ctx", "perspective", "_seen", "_done", "_cooked", "_wrap", "_next_ref",
                 "_keep")

    def __init__(self, ctx: Context, perspective: Any = None) -> None:
        self.ctx = ctx
        self.perspective = perspective
        self._seen: dict[int, list] = {}     # id(container) -> its s-expression
        self._done: set[int] = set()
        self._cooked: dict[int, list] = {}   # id -> [b"dereference", n]
        self._wrap: dict[int, int] = {}      # cycles found while still being built
        self._next_ref = 1
        self._keep: list[Any] = []           # so that no id() is reused meanwhile

    def jelly(self, value: Any) -> Any:
        kind = type(value)
        plain = PLAIN.get(kind)
        if plain is not None:
            return plain(value)
        atom = _ATOMS.get(kind)
        if atom is not None or kind is dict:
            return self._container(value, atom)
        return self._other(value)

    def _container(self, value: Any, atom: bytes | None) -> list:
        key = id(value)
        sexp = self._seen.get(key)
        if sexp is not None:
            return self._back_reference(key, sexp)
        sexp = [atom] if atom is not None else [b"dictionary"]
        self._seen[key] = sexp
        self._keep.append(value)
        jelly_ = self.jelly
        # Text, ints, floats and bytes are jellied here, not through a call
        # each: they are most of what containers hold (bench_calls:
        # twisted-client->pb, dicts).
        if atom is None:
            for k, v in value.items():
                kind = type(k)
                if kind is str:
                    k = [b"unicode", k.encode("utf-8", "surrogatepass")]
                elif kind is not int and kind is not bytes:
                    k = jelly_(k)
                kind = type(v)
                if kind is str:
                    v = [b"unicode", v.encode("utf-8", "surrogatepass")]
                elif kind is not int and kind is not float and kind is not bytes:
                    v = jelly_(v)
                sexp.append([k, v])
        else:
            for item in value:
                kind = type(item)
                if kind is str:
                    sexp.append([b"unicode", item.encode("utf-8", "surrogatepass")])
                elif kind is int or kind is float or kind is bytes:
                    sexp.append(item)
                else:
                    sexp.append(jelly_(item))
        self._done.add(key)
        refid = self._wrap.pop(key, None)
        if refid is not None:  # referred to from inside itself
            sexp[:] = [b"reference", refid, list(sexp)]
        return sexp

    def _back_reference(self, key: int, sexp: list) -> list:
        cooked = self._cooked.get(key)
        if cooked is not None:
            return cooked
        refid = self._next_ref
        self._next_ref += 1
        if key in self._done:
            sexp[:] = [b"reference", refid, list(sexp)]
        else:
            self._wrap[key] = refid
        cooked = self._cooked[key] = [b"dereference", refid]
        return cooked

    def _other(self, value: Any) -> Any:
        ctx = self.ctx
        if isinstance(value, RemoteReference):
            return ctx.out_local(value)
        if isinstance(value, (Referenceable, Viewable)):
            return ctx.out_remote(value)
        if isinstance(value, Cacheable):
            out = ctx.out_cache(value)
            if len(out) == 3:  # the first send carries the state
                out[2] = self.jelly(out[2])
            return out
        if isinstance(value, RemoteCache):
            return ctx.out_lcache(value)
        if isinstance(value, jelly.Copyable):
            state = state_for(value, self.perspective)
            return [type(value).copy_tag.encode("utf-8"), self.jelly(state)]
        if isinstance(value, decimal.Decimal) and value.is_finite():
            sign, digits, exponent = value.as_tuple()
            number = int("".join(map(str, digits)) or "0")
            return [b"decimal", -number if sign else number, exponent]
        if type(value) is datetime.datetime and value.tzinfo is None:
            return [b"datetime", " ".join(map(str, (
                value.year, value.month, value.day, value.hour, value.minute, value.second,
                value.microsecond))).encode()]
        if type(value) is datetime.date:
            return [b"date", f"{value.year} {value.month} {value.day}".encode()]
        if type(value) is datetime.timedelta:
            return [b"timedelta", f"{value.days} {value.seconds} {value.microseconds}".encode()]
        raise PBError(f"{type(value).__qualname__} objects cannot be sent to a Twisted PB peer; "
                      "make the class Copyable (with a copy_tag the peer registered), "
                      "Referenceable or Cacheable")


def failure_state(type_name: str, message: str, traceback_text: str | None,
                  parents: list[str]) -> list:
    """A ``CopyableFailure`` s-expression, as Twisted's own broker writes it."""
    items = {
        "type": type_name.encode("utf-8"),
        "value": message,
        "traceback": traceback_text or "Traceback unavailable\n",
        "parents": parents,
        "tb": None, "frames": [], "stack": [], "count": 0, "pickled": 1,
        "captureVars": False, "cleanFailure": 1,
    }
    jellier = Jellier(None)  # type: ignore[arg-type]
    return [FAILURE_TAG, jellier.jelly(items)]


# -- unjellying ----------------------------------------------------------------

class _Pending:
    """A reference whose value is still being built (a cycle through a tuple)."""

    __slots__ = ()


_PENDING = _Pending()


def unjelly(sexp: Any, ctx: Context) -> Any:
    """Turn one s-expression into values; raises :class:`InsecureJelly` for
    anything malformed or not registered."""
    return _Unjellier(ctx).unjelly(sexp)


def _text(value: Any, what: str) -> str:
    if type(value) is not bytes:
        raise InsecureJelly(f"{what} must be a byte string, not {brief(value)}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InsecureJelly(f"{what} is not UTF-8: {brief(value)}") from None


class _Unjellier:
    __slots__ = ("ctx", "refs")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.refs: dict[Any, Any] = {}

    def unjelly(self, sexp: Any) -> Any:
        if type(sexp) is not list:
            return sexp
        if not sexp:
            raise InsecureJelly("an empty list is not jelly")
        head = sexp[0]
        if head == b"unicode" and len(sexp) == 2 and type(sexp[1]) is bytes:
            # Text is most of what arrives: decoded here rather than through
            # its handler (bench_calls: twisted-client->pb, dicts); bad
            # UTF-8 goes on to the handler, which says what is wrong.
            try:
                return sexp[1].decode("utf-8")
            except UnicodeDecodeError:
                pass
        handler = _HANDLERS.get(head)
        if handler is not None:
            return handler(self, sexp)
        return self._named(sexp)

    def _items(self, sexp: list) -> list:
        unjelly = self.unjelly
        return [unjelly(item) for item in sexp[1:]]

    def _list(self, sexp: list, into: list | None = None) -> list:
        out = into if into is not None else []
        unjelly = self.unjelly
        for item in sexp[1:]:
            out.append(unjelly(item))
        return out

    def _dict(self, sexp: list, into: dict | None = None) -> dict:
        out = into if into is not None else {}
        unjelly = self.unjelly
        for pair in sexp[1:]:
            if type(pair) is not list or len(pair) != 2:
                raise InsecureJelly(f"a dictionary item must be a [key, value] pair, not {brief(pair)}")
            key = pair[0]
            if type(key) is list:
                key = unjelly(key)
            value = pair[1]
            try:
                out[key] = unjelly(value) if type(value) is list else value
            except TypeError:
                raise InsecureJelly(f"unhashable dictionary key {brief(key)}") from None
        return out

    def _hashables(self, sexp: list, kind: type) -> Any:
        try:
            return kind(self._items(sexp))
        except TypeError:
            raise InsecureJelly(f"unhashable item in a {kind.__name__}") from None

    def _reference(self, sexp: list) -> Any:
        if len(sexp) != 3 or type(sexp[1]) is not int:
            raise InsecureJelly(f"malformed reference {brief(sexp)}")
        refid, body = sexp[1], sexp[2]
        if refid in self.refs:
            raise InsecureJelly(f"reference {refid} defined twice")
        # Mutable containers exist before their items, so a cycle through
        # them resolves; anything else is known only once built.
        if type(body) is list and body and body[0] == b"list":
            value: Any = []
            self.refs[refid] = value
            return self._list(body, value)
        if type(body) is list and body and body[0] == b"dictionary":
            value = {}
            self.refs[refid] = value
            return self._dict(body, value)
        self.refs[refid] = _PENDING
        value = self.unjelly(body)
        self.refs[refid] = value
        return value

    def _dereference(self, sexp: list) -> Any:
        if len(sexp) != 2:
            raise InsecureJelly(f"malformed dereference {brief(sexp)}")
        value = self.refs.get(sexp[1], _PENDING)
        if value is _PENDING:
            raise InsecureJelly(f"dereference {brief(sexp[1])} names nothing known yet "
                                "(a cycle through an immutable value is not supported)")
        return value

    def _one(self, sexp: list) -> Any:
        if len(sexp) != 2:
            raise InsecureJelly(f"malformed {brief(sexp[0])} {brief(sexp)}")
        return sexp[1]

    def _named(self, sexp: list) -> Any:
        """A class name: a registered copy or cache, or a Twisted failure."""
        head = sexp[0]
        if type(head) is not bytes:
            raise InsecureJelly(f"jelly type must be a byte string, not {brief(head)}")
        if head in _FAILURE_TAGS and len(sexp) == 2:
            return _failure(self.unjelly(sexp[1]))
        name = _text(head, "a class name")
        if len(sexp) == 3:
            from .._caching import cache_class

            if cache_class(name) is not None:
                return self.ctx.in_cache(name, sexp[1], self.unjelly(sexp[2]))
        if len(sexp) != 2:
            raise InsecureJelly(f"refusing jelly type {name[:100]!r}: not a registered copy "
                                "or cache of the Twisted dialect")
        cls = twisted_registry.lookup(name)  # InsecureJelly if unregistered
        obj = blank_instance(cls, name)
        state = self.unjelly(sexp[1])
        if isinstance(state, dict):
            # Twisted 3-era peers may key state by bytes; attributes are text.
            state = {k.decode("utf-8", "replace") if type(k) is bytes else k: v
                     for k, v in state.items()}
        restore(obj, state, name)
        return obj


def _failure(state: Any) -> RemoteError:
    if not isinstance(state, dict):
        return RemoteError("twisted.python.failure.Failure", brief(state, 200))

    def text(key: str) -> str:
        value = state.get(key, state.get(key.encode()))
        if type(value) is bytes:
            return value.decode("utf-8", "replace")
        return "" if value is None else str(value)

    traceback_text = text("traceback")
    if traceback_text.strip() in ("", "Traceback unavailable"):
        traceback_text = None  # type: ignore[assignment]
    return RemoteError(text("type") or "twisted.python.failure.Failure", text("value"),
                       traceback_text)


def _unicode(u: _Unjellier, sexp: list) -> str:
    return _text(u._one(sexp), "a unicode value")


def _boolean(u: _Unjellier, sexp: list) -> bool:
    value = u._one(sexp)
    if value == b"true":
        return True
    if value == b"false":
        return False
    raise InsecureJelly(f"malformed boolean {brief(sexp)}")


def _decimal(u: _Unjellier, sexp: list) -> decimal.Decimal:
    if len(sexp) != 3 or type(sexp[1]) is not int or type(sexp[2]) is not int:
        raise InsecureJelly(f"malformed decimal {brief(sexp)}")
    if abs(sexp[2]) > 10_000:
        raise InsecureJelly("decimal exponent out of range")
    return decimal.Decimal(sexp[1]).scaleb(sexp[2])


def _timeish(kind: Any, count: int) -> Any:
    def build(u: _Unjellier, sexp: list) -> Any:
        fields = _text(u._one(sexp), "a date/time").split()
        if len(fields) != count or not all(f.lstrip("-").isdigit() and len(f) < 12 for f in fields):
            raise InsecureJelly(f"malformed {kind.__name__} {brief(sexp)}")
        try:
            return kind(*map(int, fields))
        except (ValueError, OverflowError) as exc:
            raise InsecureJelly(f"bad {kind.__name__}: {exc}") from None
    return build


def _flavor(method: str) -> Any:
    def build(u: _Unjellier, sexp: list) -> Any:
        return getattr(u.ctx, method)(u._one(sexp))
    return build


_HANDLERS: dict[bytes, Any] = {
    b"None": lambda u, s: None,
    b"unicode": _unicode,
    b"boolean": _boolean,
    b"list": lambda u, s: u._list(s),
    b"tuple": lambda u, s: tuple(u._items(s)),
    b"set": lambda u, s: u._hashables(s, set),
    b"frozenset": lambda u, s: u._hashables(s, frozenset),
    b"dictionary": lambda u, s: u._dict(s),
    b"reference": _Unjellier._reference,
    b"dereference": _Unjellier._dereference,
    b"decimal": _decimal,
    b"datetime": _timeish(datetime.datetime, 7),
    b"date": _timeish(datetime.date, 3),
    b"timedelta": lambda u, s: _timedelta(u, s),
    b"remote": _flavor("in_remote"),
    b"local": _flavor("in_local"),
    b"cached": _flavor("in_cached"),
    b"lcache": _flavor("in_lcache"),
}


def _timedelta(u: _Unjellier, sexp: list) -> datetime.timedelta:
    fields = _text(u._one(sexp), "a timedelta").split()
    try:
        days, seconds, micro = (int(f) for f in fields if len(f) < 12)
        return datetime.timedelta(days=days, seconds=seconds, microseconds=micro)
    except (ValueError, OverflowError):
        raise InsecureJelly(f"malformed timedelta {brief(sexp)}") from None
