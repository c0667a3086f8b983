"""value -> msgpack bytes: the encoder.

Plain data (None, bool, exact int within 64 bits, float, str, bytes, list,
dict) is written by msgpack's C packer in one ``Packer.pack`` call with
``strict_types=True``; everything else reaches :meth:`_Encoder.default`,
which returns an ``ExtType`` whose payload it packs with a nested packer.
Encoders (each with its packers) are pooled, so a call allocates nothing
but its output.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Callable

from msgpack import ExtType, Packer
from msgpack.fallback import Packer as PythonPacker

from . import _codes, _payloads
from ._context import Flavored, JellyContext
from ._copyable import Copyable, state_for
from ._errors import EncodeError, JellyError
from ._references import reference_out

__all__ = ["dumps"]

# Ext values nested inside each other (tuples in tuples, copies in copies,
# ...).  Each level packs its payload with a packer of its own.  msgpack's C
# packer recurses in C up to 1024 levels, so C packers nested without end
# could overflow the C stack; past C_PACKER_LEVELS levels the pure-Python
# packer (same bytes, slower) takes over, whose recursion Python bounds
# with RecursionError.  Real values rarely nest ext values that deep.
MAX_EXT_NESTING = 200
C_PACKER_LEVELS = 8
# Encoders are pooled (bench/README.md, "Speed tricks": without the pools
# bench_calls' sequential row costs +40 % CPU per call, 1 MiB +78 %).
_POOL_SIZE = 8
_POOL_MAX_OUTPUT = 1 << 20  # a packer whose buffer grew past this is "large"
#: Large packers kept for reuse: making one costs a fresh multi-MiB buffer
#: (page faults, and a realloc copy while packing), which dominated the cost
#: of sending 1 MiB values.  Bounded so idle memory stays small.
_LARGE_POOL_SIZE = 2
_LARGE_POOL_MAX_OUTPUT = 16 << 20

_BUILTINS = (
    bool, int, float, complex, str, bytes, bytearray, memoryview, list, tuple,
    dict, set, frozenset, Decimal, datetime, date, time, timedelta,
)


class _Nesting(Exception):
    """Internal: MAX_EXT_NESTING reached; dumps() explains why."""


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _refuse(obj: object) -> EncodeError:
    cls = type(obj)
    for base in _BUILTINS:
        if isinstance(obj, base):
            return EncodeError(
                f"cannot send {_name(cls)}: it is a subclass of {base.__name__} and "
                f"would arrive as a plain {base.__name__}, losing its class; send "
                f"{base.__name__}(value) instead, or make {cls.__qualname__} a "
                "Copyable and register it on the receiving side"
            )
    return EncodeError(
        f"cannot send {_name(cls)}: jelly sends plain data, registered Copyable "
        "objects and (on a broker connection) Flavored objects; make it a "
        "Copyable, or send its data"
    )


#: Packs a COPY's index and tag (plain values: the hook is never reached, so
#: one C packer serves every encoder).  Headers written by hand, with the
#: tag's cached, measured no faster (bench/README.md, "Speed tricks").
_pack_plain = Packer(use_bin_type=True).pack
_tuple_new = tuple.__new__


def _ext(code: int, data: bytes) -> ExtType:
    """``ExtType(code, data)`` without its Python-level argument checks
    (bench/README.md, "Speed tricks": bench_jelly's graph row, +7 % with
    ``ExtType(code, data)``)."""
    return _tuple_new(ExtType, (code, data))


def _new_packer(default: Callable[[Any], Any], level: int = 0) -> Packer:
    cls = Packer if level < C_PACKER_LEVELS else PythonPacker
    return cls(default=default, strict_types=True, use_bin_type=True, datetime=False)


class _Encoder:
    """The state of one ``dumps`` call, and its packers (one per ext level)."""

    __slots__ = ("context", "packers", "level", "copies", "keep", "grown")

    def __init__(self) -> None:
        self.context: JellyContext | None = None
        #: Set once this encoder packed a large message: msgpack never
        #: shrinks a packer's buffer, so it stays large.
        self.grown = False
        self.packers = [_new_packer(self.default)]
        self.level = 0
        self.copies: dict[int, int] | None = None
        self.keep: list | None = None

    def nested(self, value: Any) -> bytes:
        """Pack ``value`` as an ext payload, with this encoder's hook."""
        level = self.level + 1
        if level > MAX_EXT_NESTING:
            raise _Nesting
        packers = self.packers
        if level == len(packers):
            packers.append(_new_packer(self.default, level))
        self.level = level
        try:
            return packers[level].pack(value)
        finally:
            self.level = level - 1

    def default(self, obj: Any) -> ExtType:
        handler = _HANDLERS.get(type(obj))
        if handler is not None:
            return handler(self, obj)
        if isinstance(obj, Copyable):
            return self.copy(obj)
        if isinstance(obj, Flavored):
            return self.flavor(obj)
        raise _refuse(obj)

    def copy(self, obj: Copyable) -> ExtType:
        copies = self.copies
        if copies is None:
            copies = self.copies = {}
            self.keep = []
        index = copies.get(id(obj))
        if index is not None:
            return _ext(_codes.BACKREF, _pack_plain(index))
        index = copies[id(obj)] = len(copies)
        self.keep.append(obj)  # type: ignore[union-attr]  # ids stay unique
        context = self.context
        state = state_for(obj, None if context is None else context.perspective)
        return _ext(_codes.COPY, _pack_plain(index) + _pack_plain(type(obj).copy_tag)
                    + self.nested(state))

    def flavor(self, obj: Flavored) -> ExtType:
        kind, args = reference_out(self.context, obj)
        return _ext(_codes.REFERENCE + kind, self.nested(list(args)))


def _tuple(enc: _Encoder, obj: tuple) -> ExtType:
    return _ext(_codes.TUPLE, enc.nested(list(obj)))


def _set(enc: _Encoder, obj: set) -> ExtType:
    return _ext(_codes.SET, enc.nested(list(obj)))


def _frozenset(enc: _Encoder, obj: frozenset) -> ExtType:
    return _ext(_codes.FROZENSET, enc.nested(list(obj)))


def _int(enc: _Encoder, obj: int) -> ExtType:
    # Only ints outside msgpack's 64-bit range get here.
    return _ext(_codes.BIGINT, _payloads.bigint_to_bytes(obj))


_HANDLERS: dict[type, Callable[[_Encoder, Any], ExtType]] = {
    tuple: _tuple,
    set: _set,
    frozenset: _frozenset,
    int: _int,
    complex: lambda enc, obj: _ext(_codes.COMPLEX, _payloads.complex_to_bytes(obj)),
    Decimal: lambda enc, obj: _ext(_codes.DECIMAL, _payloads.decimal_to_bytes(obj)),
    datetime: lambda enc, obj: _ext(_codes.DATETIME, _payloads.datetime_to_bytes(obj)),
    date: lambda enc, obj: _ext(_codes.DATE, _payloads.date_to_bytes(obj)),
    time: lambda enc, obj: _ext(_codes.TIME, _payloads.time_to_bytes(obj)),
    timedelta: lambda enc, obj: _ext(_codes.TIMEDELTA, _payloads.timedelta_to_bytes(obj)),
}


def _find_cycle(root: Any) -> list[str] | None:
    """Type names along a cycle through plain containers in ``root``, if any.

    Copies are not entered: their identity is kept on the wire, so a cycle
    through a copy is fine.
    """
    on_path: set[int] = set()
    finished: set[int] = set()
    path: list[Any] = []
    stack: list[Any] = [iter((root,))]
    while stack:
        for item in stack[-1]:
            kind = type(item)
            if kind is dict:
                children = [*item.keys(), *item.values()]
            elif kind in (list, tuple, set, frozenset):
                children = list(item)
            else:
                continue
            key = id(item)
            if key in on_path:
                start = next(i for i, node in enumerate(path) if node is item)
                return [type(node).__name__ for node in path[start:]] + [kind.__name__]
            if key in finished:
                continue
            on_path.add(key)
            path.append(item)
            stack.append(iter(children))
            break
        else:
            stack.pop()
            if path:
                done = path.pop()
                on_path.discard(id(done))
                finished.add(id(done))
    return None


def _too_deep(value: Any, exc: BaseException) -> EncodeError:
    cycle = _find_cycle(value)
    if cycle is not None:
        return EncodeError(
            "cannot send a value that contains a reference cycle through plain "
            f"containers ({' -> '.join(cycle)}): jelly keeps identity only for "
            "Copyable objects, so break the cycle or put a Copyable on it"
        )
    return EncodeError(
        "cannot send a value nested this deeply: msgpack allows about a thousand "
        "levels of lists and dicts, and jelly fewer once tuples, sets and copies "
        f"nest (at most {MAX_EXT_NESTING} of those)"
    )


def _translate(value: Any, exc: Exception) -> EncodeError:
    if isinstance(exc, (_Nesting, RecursionError)) or (
        isinstance(exc, ValueError) and "recursion limit" in str(exc)
    ):
        return _too_deep(value, exc)
    if isinstance(exc, UnicodeEncodeError):
        return EncodeError(
            f"cannot send a str that is not valid Unicode ({exc.reason}): it holds "
            "a lone surrogate, which UTF-8 cannot encode"
        )
    return EncodeError(f"cannot encode value: {type(exc).__name__}: {exc}")


_pool: list[_Encoder] = []
_large_pool: list[_Encoder] = []


def dumps(value: Any, *, context: JellyContext | None = None) -> bytes:
    """Encode ``value`` as one jelly message.

    ``context`` is the connection: it turns ``Flavored`` objects into
    references and gives copies the perspective they are sent to.  Raises
    :class:`EncodeError` for anything that cannot be sent.
    """
    # A grown encoder first: it packs small messages as well as any, and a
    # large message packed by a small one would grow it (a realloc copy).
    if _large_pool:
        encoder = _large_pool.pop()
    elif _pool:
        encoder = _pool.pop()
    else:
        encoder = _Encoder()
    encoder.context = context
    try:
        data = encoder.packers[0].pack(value)
    except JellyError:
        raise
    except Exception as exc:
        raise _translate(value, exc) from exc
    # Only reached on success: an encoder that failed is dropped, not reused.
    if encoder.copies is not None:
        encoder.copies = encoder.keep = None
    encoder.context = None
    size = len(data)
    if size > _POOL_MAX_OUTPUT:
        encoder.grown = True
    if not encoder.grown:
        if len(_pool) < _POOL_SIZE:
            _pool.append(encoder)
    elif size <= _LARGE_POOL_MAX_OUTPUT and len(_large_pool) < _LARGE_POOL_SIZE:
        _large_pool.append(encoder)
    return data
