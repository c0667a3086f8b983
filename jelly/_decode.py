"""msgpack bytes -> value: the decoder.

The fast path is one ``msgpack.unpackb`` call: plain lists, dicts, strings
and numbers are built in C; only ext values reach Python, through
:meth:`_Decoder.ext_hook`, which decodes each payload with a nested
``unpackb`` call.  Around that call:

* the size of the message is checked first, and msgpack's own per-container
  limits (``max_str_len`` ... ``max_ext_len``) are set from :class:`Limits`
  so that oversized headers are refused before allocation;
* nesting depth is checked afterwards by :func:`._depth.measure`, but only
  when the message could be too deep at all (see :func:`_may_be_deep`);
* in a message longer than ``max_objects`` bytes, every list, map and ext
  value is counted as msgpack builds it (``list_hook``, ``object_hook``,
  ``ext_hook``), so that a message of millions of empty lists is refused
  after ``max_objects`` of them, not after all were built;
* the number of values whose hash a peer can force to collide is counted;
  past ``max_composite_keys`` the fast decode is abandoned and the message is
  decoded again in *safe mode*, where maps are built from pairs only after
  checking their keys (see ``docs/jelly.md``, "Composite keys");
* every error becomes ``DecodeError``, ``InsecureJelly`` or ``LimitExceeded``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any

import msgpack
from msgpack import ExtraData, FormatError, StackError

from . import _codes, _payloads
from ._context import JellyContext
from ._copyable import blank_instance, restore
from ._references import check_context, reference_in
from ._depth import SCALARS, measure
from ._errors import DecodeError, InsecureJelly, JellyError, limit_exceeded
from ._limits import DEFAULT_LIMITS, Limits
from ._registry import Registry, default_registry

__all__ = ["loads"]

_unpackb = msgpack.unpackb

# Bytes that can start a container or an ext value: a message whose count of
# them is at most max_depth cannot be nested deeper than max_depth.
_OPENERS = set(range(0x80, 0xA0)) | {0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}
_OPENERS |= {0xDC, 0xDD, 0xDE, 0xDF}
_NOT_OPENERS = bytes(b for b in range(256) if b not in _OPENERS)
_COUNT_OPENERS_UP_TO = 4096

# Key types whose hashes a peer cannot make collide in bulk: str and bytes
# use randomised SipHash, the datetime family hashes its bytes with it too,
# and a 64-bit int or a float has only a handful of values per hash.
_SAFE_KEY_TYPES = frozenset(
    {str, bytes, float, bool, type(None), datetime, date, time, timedelta}
)
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

_EXCEEDS = re.compile(r"(\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
_LIMIT_OF = {
    "str": ("max_str_len", "a str of {} bytes"),
    "bin": ("max_bin_len", "a bytes value of {} bytes"),
    "array": ("max_items", "an array of {} items"),
    "map": ("max_items", "a map of {} entries"),
    "ext": ("max_size", "an ext value of {} bytes"),
}
_UINT_SIZES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}

# How many hashable composite values of one message, or keys of one map or
# set, may share a single hash value.  Distinct values with equal 64-bit
# hashes do not happen by chance, and equal keys cannot appear twice in a
# dict jelly encoded, so more than this is a collision attack: building a
# dict of m colliding keys costs m*m/2 comparisons (4096 of them take about
# 0.4 s), while 64 groups of 64 cost a few milliseconds.
MAX_SAME_HASH = 64
_EMPTY: dict[int, int] = {}  # shared, never mutated
_is_flat = SCALARS.issuperset  # of an iterable of types


class _Unsafe(BaseException):
    """Internal: too many composite values for the fast path; decode again safely."""


def _is_safe_key(key: object) -> bool:
    kind = type(key)
    if kind in _SAFE_KEY_TYPES:
        return True
    return kind is int and _INT_MIN <= key <= _INT_MAX  # type: ignore[operator]


def _translate(exc: Exception, limits: Limits) -> JellyError:
    """Turn an exception from msgpack (or a hook's Python code) into a JellyError."""
    if isinstance(exc, StackError):
        err = limit_exceeded(
            "max_depth", "a nesting depth past msgpack's own cap of 1024",
            None, limits.max_depth,
        )
        if limits.max_depth >= 1024:
            err.args = (
                "a nesting depth past msgpack's own cap of 1024 levels per message "
                "or ext payload; max_depth cannot raise it",
            )
        return err
    if isinstance(exc, ExtraData):
        return DecodeError("malformed message: bytes left over after the value")
    if isinstance(exc, FormatError):
        return DecodeError("malformed message: reserved msgpack type byte 0xc1")
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(f"malformed message: a str is not valid UTF-8 ({exc.reason})")
    if isinstance(exc, RecursionError):
        return DecodeError("message nested too deeply for the Python stack")
    text = str(exc)
    match = _EXCEEDS.search(text) if isinstance(exc, ValueError) else None
    if match is not None:
        claimed = int(match[1])
        name, description = _LIMIT_OF[match[2]]
        maximum = getattr(limits, name)
        if claimed > maximum:
            return limit_exceeded(name, description.format(claimed), claimed, maximum)
        return DecodeError(
            f"truncated message: {description.format(claimed)} announced, "
            "but fewer bytes remain"
        )
    if "incomplete input" in text:
        return DecodeError("truncated message: it ends inside a value")
    return DecodeError(f"malformed message: {type(exc).__name__}: {text[:200]}")


def _read_uint(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise DecodeError("truncated ext header: expected an unsigned int")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = _UINT_SIZES.get(first)
    if size is None:
        raise DecodeError(f"ext header: expected an unsigned int, got type byte {first:#04x}")
    end = pos + 1 + size
    if end > len(buf):
        raise DecodeError("truncated ext header: unsigned int cut short")
    return int.from_bytes(buf[pos + 1 : end], "big"), end


def _read_str(buf: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(buf):
        raise DecodeError("truncated ext header: expected a str")
    first = buf[pos]
    if 0xA0 <= first <= 0xBF:
        size, pos = first - 0xA0, pos + 1
    elif first == 0xD9 and pos + 2 <= len(buf):
        size, pos = buf[pos + 1], pos + 2
    elif first == 0xDA and pos + 3 <= len(buf):
        size, pos = int.from_bytes(buf[pos + 1 : pos + 3], "big"), pos + 3
    else:
        raise DecodeError(f"ext header: expected a str, got type byte {first:#04x}")
    end = pos + size
    if end > len(buf):
        raise DecodeError("truncated ext header: str cut short")
    return buf[pos:end].decode("utf-8"), end


def _may_be_deep(data: bytes, max_depth: int) -> bool:
    """False when ``data`` certainly decodes within ``max_depth`` (and has no ext -1)."""
    if 0xFF in data:  # msgpack's timestamp ext (-1) needs this byte: look
        return True
    n = len(data)
    if n <= max_depth:
        return False
    if n <= _COUNT_OPENERS_UP_TO:
        return len(data.translate(None, _NOT_OPENERS)) > max_depth
    return True


class _Decoder:
    """Per-message state of one ``loads`` call.

    Class attributes are the initial values, so that ``__init__`` sets only
    what every call needs; a plain message never touches the rest.
    """

    nesting = 0  # ext payloads being decoded, outermost first
    composites = 0  # values with peer-controllable hashes seen so far
    safe = False  # decoding again in safe mode
    copies: list | None = None  # COPY instances by index
    done: set | None = None  # indices whose state has been restored
    next_copy = 0  # index the next COPY must carry
    refs: list | None = None  # results of flavor_in, in call order
    next_ref = 0
    hashes: dict[int, int] | None = None  # hash -> how many composite values had it
    recorded: dict[int, int] = _EMPTY  # id -> depth of ext-made containers
    hidden = 0  # the greatest depth recorded for a tuple (see _depth._walk)
    keep: list | None = None  # keeps recorded objects alive (ids stay unique)
    counting = False  # lists, maps and ext values are counted against max_objects
    left = 0  # how many more of them this message may build (when counting)

    def __init__(self, context: Any, registry: Registry, limits: Limits, track: bool) -> None:
        self.context = context
        self.registry = registry
        self.limits = limits
        self.track = track
        self.small = limits._small  # payloads up to this long need no limit arguments

    def unpack(self, buf: Any) -> Any:
        """Decode one msgpack value with this decoder's hooks and limits."""
        n = len(buf)
        try:
            if n <= self.small:
                return _unpackb(buf, ext_hook=self.ext_hook, strict_map_key=False)
            limits = self.limits
            kwargs = {}
            if n > limits._small:
                kwargs = {
                    "max_str_len": min(limits.max_str_len, n),
                    "max_bin_len": min(limits.max_bin_len, n),
                    "max_array_len": min(limits.max_items, n),
                    "max_map_len": min(limits.max_items, n // 2),
                    "max_ext_len": n,
                }
            if self.counting:
                # A Python call per container, paid only by messages longer
                # than max_objects bytes: a 4 MiB bytes value holds 3, a list
                # of 10,000 small dicts about 10,000 (+30% decode time), and
                # 4 million empty lists are refused after max_objects calls.
                # Counting the bytes that could open one instead (translate)
                # costs 0.4-1.8 ms per MiB, 10-50x the decode of bench_calls'
                # "(4a) echo of 1 MiB bytes" row.
                kwargs["list_hook"] = self.count
                if self.safe:
                    kwargs["object_pairs_hook"] = self.count_pairs
                else:
                    kwargs["object_hook"] = self.count
                return _unpackb(buf, ext_hook=self.count_ext, strict_map_key=False, **kwargs)
            if self.safe:
                kwargs["object_pairs_hook"] = self.pairs_hook
            return _unpackb(buf, ext_hook=self.ext_hook, strict_map_key=False, **kwargs)
        except JellyError:
            raise
        except Exception as exc:
            raise _translate(exc, self.limits) from exc

    def ext_hook(self, code: int, data: bytes) -> Any:
        handler = _HANDLERS.get(code)
        if handler is None:
            raise InsecureJelly(
                f"refusing unknown ext code {code}: jelly builds only the types "
                "listed in docs/jelly.md"
            )
        nesting = self.nesting + 1
        if nesting > self.limits.max_depth:
            raise limit_exceeded(
                "max_depth", f"ext values nested {nesting} deep", nesting,
                self.limits.max_depth,
            )
        self.nesting = nesting
        try:
            value = handler(self, code, data)
        except JellyError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"malformed {_codes.NAMES[code]} ext payload: {type(exc).__name__}: {exc}"
            ) from exc
        self.nesting = nesting - 1
        return value

    def count_objects(self) -> None:
        """Count lists, maps and ext values from now on (see :meth:`count`)."""
        self.counting = True
        self.left = self.limits.max_objects
        self.small = -1  # always take the path that passes the counting hooks

    def count(self, value: Any) -> Any:
        """msgpack's list_hook and object_hook while counting: one object more."""
        left = self.left - 1
        if left < 0:
            maximum = self.limits.max_objects
            raise limit_exceeded(
                "max_objects",
                f"a message of more than {maximum} lists, maps and ext values",
                maximum + 1,
                maximum,
            )
        self.left = left
        return value

    def count_pairs(self, pairs: list[tuple[Any, Any]]) -> dict:
        return self.pairs_hook(self.count(pairs))

    def count_ext(self, code: int, data: bytes) -> Any:
        self.count(None)
        return self.ext_hook(code, data)

    def pairs_hook(self, pairs: list[tuple[Any, Any]]) -> dict:
        """Safe mode's map builder: check the keys before hashing them into a dict."""
        if len(pairs) > MAX_SAME_HASH:
            self.check_keys([key for key, _ in pairs], "map")
        return dict(pairs)

    def check_keys(self, keys: list, where: str) -> None:
        """Refuse too many hash-collidable keys, or keys that collide."""
        risky = [key for key in keys if not _is_safe_key(key)]
        maximum = self.limits.max_composite_keys
        if len(risky) > maximum:
            raise limit_exceeded(
                "max_composite_keys",
                f"a {where} with {len(risky)} keys of hash-collidable types",
                len(risky),
                maximum,
            )
        if len(risky) > MAX_SAME_HASH:
            counts: dict[int, int] = {}
            for key in risky:
                code = hash(key)
                counts[code] = counts.get(code, 0) + 1
            worst = max(counts.values())
            if worst > MAX_SAME_HASH:
                raise InsecureJelly(
                    f"refusing a {where} in which {worst} keys share one hash value "
                    f"(at most {MAX_SAME_HASH} may): its keys were crafted to collide"
                )

    def composite(self, value: object) -> None:
        """Count a value whose hash a peer could choose (fast path only).

        Past ``max_composite_keys`` such values, or ``MAX_SAME_HASH`` with
        one hash, the fast decode stops and the message is decoded again in
        safe mode, where each map and set is checked before it is built.
        """
        if self.safe:
            return
        count = self.composites = self.composites + 1
        if count > self.limits.max_composite_keys:
            raise _Unsafe
        try:
            code = hash(value)
        except Exception:  # unhashable: it cannot be a key
            return
        hashes = self.hashes
        if hashes is None:
            hashes = self.hashes = {}
        same = hashes.get(code, 0) + 1
        if same > MAX_SAME_HASH:
            raise _Unsafe
        hashes[code] = same

    def record(self, value: object, contents: Any, minimum: int = 0) -> None:
        """Measure ``contents``, what ext value ``value`` was built from (a
        list or a dict), and remember it as the depth of ``value`` for the
        measures of the values around it."""
        kind = type(contents)
        if kind is list and _is_flat(map(type, contents)):
            depth = 1
        elif kind is dict and _is_flat(map(type, contents.values())) and _is_flat(
            map(type, contents)
        ):
            depth = 1
        else:
            depth = measure(contents, self.limits.max_depth, self.recorded, True)
        if self.keep is None:
            self.recorded = {}
            self.keep = []
        if depth < minimum:
            depth = minimum
        self.recorded[id(value)] = depth
        self.keep.append(value)  # so that no other object can take its id
        if type(value) is tuple and depth > self.hidden:
            self.hidden = depth

    def items(self, code: int, data: bytes) -> list:
        items = self.unpack(data)
        if type(items) is not list:
            raise DecodeError(f"{_codes.NAMES[code]} payload must be a msgpack array")
        return items

    def restart_safe(self) -> None:
        """Prepare to decode the same message again in safe mode.

        Copies made so far are reused by index (so a copy's state is restored
        once) and flavor_in results are replayed in order (so the context
        sees each reference once).
        """
        self.safe = True
        self.small = -1  # always take the path that passes object_pairs_hook
        if self.counting:
            self.left = self.limits.max_objects  # the second pass counts afresh
        self.nesting = 0
        self.next_copy = 0
        self.next_ref = 0


# --- ext handlers: (decoder, code, payload) -> value --------------------------


def _tuple(dec: _Decoder, code: int, data: bytes) -> tuple:
    items = dec.unpack(data)
    if type(items) is not list:
        raise DecodeError("tuple payload must be a msgpack array")
    value = tuple(items)
    if dec.track:
        dec.record(value, items)
    dec.composite(value)
    return value


def _set(dec: _Decoder, code: int, data: bytes) -> set | frozenset:
    items = dec.items(code, data)
    if dec.safe and len(items) > MAX_SAME_HASH:
        dec.check_keys(items, _codes.NAMES[code])
    value = set(items) if code == _codes.SET else frozenset(items)
    if dec.track:
        dec.record(value, items)
    if code == _codes.FROZENSET:
        dec.composite(value)
    return value


def _bigint(dec: _Decoder, code: int, data: bytes) -> int:
    value = _payloads.bigint_from_bytes(data, dec.limits.max_int_bits)
    dec.composite(value)
    return value


def _complex(dec: _Decoder, code: int, data: bytes) -> complex:
    value = _payloads.complex_from_bytes(data)
    dec.composite(value)
    return value


def _decimal(dec: _Decoder, code: int, data: bytes) -> Any:
    value = _payloads.decimal_from_bytes(data, dec.limits.max_int_bits)
    dec.composite(value)
    return value


def _datetime(dec: _Decoder, code: int, data: bytes) -> datetime:
    return _payloads.datetime_from_bytes(data)


def _date(dec: _Decoder, code: int, data: bytes) -> date:
    return _payloads.date_from_bytes(data)


def _time(dec: _Decoder, code: int, data: bytes) -> time:
    return _payloads.time_from_bytes(data)


def _timedelta(dec: _Decoder, code: int, data: bytes) -> timedelta:
    return _payloads.timedelta_from_bytes(data)


def _copy(dec: _Decoder, code: int, data: bytes) -> Any:
    index, pos = _read_uint(data, 0)
    tag, pos = _read_str(data, pos)
    if index != dec.next_copy:
        raise DecodeError(f"copy index {index} out of order (expected {dec.next_copy})")
    dec.next_copy = index + 1
    if dec.copies is None:
        dec.copies = []
        dec.done = set()
    copies = dec.copies
    if index < len(copies):  # decoding again in safe mode: same object
        obj = copies[index]
    else:
        obj = blank_instance(dec.registry.lookup(tag), tag)
        copies.append(obj)
    # Recorded before its state is decoded, so that a cycle back to it resolves.
    state = dec.unpack(memoryview(data)[pos:])
    if index not in dec.done:
        restore(obj, state, tag)
        dec.done.add(index)
    if dec.track:
        dec.record(obj, state, 1)
    dec.composite(obj)
    return obj


def _backref(dec: _Decoder, code: int, data: bytes) -> Any:
    index, pos = _read_uint(data, 0)
    if pos != len(data):
        raise DecodeError("copy back-reference payload has bytes after the index")
    if index >= dec.next_copy:
        raise DecodeError(
            f"back-reference to copy {index}, which this message has not sent yet"
        )
    # Not counted as composite: it is an object already counted, and the
    # same object as a key again costs an identity check, not a collision.
    return dec.copies[index]  # type: ignore[index]


def _reference(dec: _Decoder, code: int, data: bytes) -> Any:
    kind = code - _codes.REFERENCE
    context = check_context(dec.context, kind)
    items = dec.items(code, data)
    if dec.refs is None:
        dec.refs = []
    refs = dec.refs
    if dec.next_ref < len(refs):  # decoding again in safe mode: replay
        obj = refs[dec.next_ref]
    else:
        obj = reference_in(context, kind, tuple(items))
        refs.append(obj)
    dec.next_ref += 1
    if dec.track:
        dec.record(obj, items)
    dec.composite(obj)
    return obj


_HANDLERS = {
    _codes.TUPLE: _tuple,
    _codes.SET: _set,
    _codes.FROZENSET: _set,
    _codes.BIGINT: _bigint,
    _codes.COMPLEX: _complex,
    _codes.DECIMAL: _decimal,
    _codes.DATETIME: _datetime,
    _codes.DATE: _date,
    _codes.TIME: _time,
    _codes.TIMEDELTA: _timedelta,
    _codes.COPY: _copy,
    _codes.BACKREF: _backref,
}
for _code in range(_codes.REFERENCE, _codes.REFERENCE_LAST + 1):
    _HANDLERS[_code] = _reference
del _code


class _HasExt(BaseException):
    """Internal: the hook-less tiny path met an ext value."""


def _tiny_ext_hook(code: int, data: bytes) -> Any:
    raise _HasExt


def loads(
    data: bytes | bytearray | memoryview,
    *,
    context: JellyContext | None = None,
    limits: Limits | None = None,
    registry: Registry | None = None,
) -> Any:
    """Decode one jelly message.

    ``context`` resolves references (``Flavored`` objects on the sending
    side); without one a reference is refused.  ``limits`` defaults to
    :data:`DEFAULT_LIMITS`, ``registry`` to :data:`default_registry`.

    Raises :class:`DecodeError` for malformed bytes, :class:`InsecureJelly`
    for anything the receiver refuses to build and :class:`LimitExceeded`
    when a limit is hit -- and nothing else for any input bytes.
    """
    if limits is None:
        limits = DEFAULT_LIMITS
    if type(data) is not bytes:
        if isinstance(data, memoryview):
            data = data.tobytes()  # the checks below need bytes methods
        elif not isinstance(data, bytearray):
            raise TypeError(
                f"loads() needs bytes, bytearray or memoryview, not {type(data).__name__}"
            )
    if len(data) <= limits._tiny and 0xFF not in data:
        # Too short to be too deep or too big, and no timestamp ext: try it
        # as plain data, with no decoder state at all.  Anything else (an
        # ext value, an int map key, an error) is left to the full path.
        try:
            return _unpackb(data, ext_hook=_tiny_ext_hook)
        except (Exception, _HasExt):
            pass
    n = len(data)
    if n > limits.max_size:
        raise limit_exceeded("max_size", f"a message of {n} bytes", n, limits.max_size)
    track = _may_be_deep(data, limits.max_depth)
    decoder = _Decoder(
        context, default_registry if registry is None else registry, limits, track
    )
    if n > limits.max_objects:
        # Else it cannot hold more objects than bytes, and is not counted:
        # every message of bench_jelly.py and all but the bytes rows of
        # bench_calls.py decode exactly as before.
        decoder.count_objects()
    try:
        value = decoder.unpack(data)
    except _Unsafe:
        decoder.restart_safe()
        value = decoder.unpack(data)
    if track:
        measure(value, limits.max_depth, decoder.recorded, False, decoder.hidden)
    return value
