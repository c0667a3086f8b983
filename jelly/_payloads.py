"""Byte layouts of the scalar ext values (no msgpack in here).

Each ``*_to_bytes`` function is total over the exact builtin type it names
(raising ``EncodeError`` only for a time zone that cannot travel exactly);
each ``*_from_bytes`` function checks its input completely and raises
``DecodeError`` or ``LimitExceeded``, never anything else.  Nothing here is
evaluated, imported or looked up by a peer-supplied name, except the
zoneinfo key, which must be a key of the local IANA database.
"""

from __future__ import annotations

import os
import re
import struct
import zoneinfo
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal

from . import _codes
from ._errors import DecodeError, EncodeError, limit_exceeded

_DATETIME = struct.Struct(">HBBBBBIB")
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBIB")
_TIMEDELTA = struct.Struct(">iII")
_COMPLEX = struct.Struct(">dd")
_OFFSET = struct.Struct(">q")

_UTC = timezone.utc
_US_PER_DAY = 86_400_000_000

# --- integers -----------------------------------------------------------


def bigint_to_bytes(value: int) -> bytes:
    """Minimal big-endian two's-complement bytes of ``value``."""
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def bigint_from_bytes(data: bytes, max_bits: int) -> int:
    """Inverse of :func:`bigint_to_bytes`, bounded by ``max_bits``."""
    if not data:
        raise DecodeError("big int payload is empty")
    if len(data) > (max_bits + 8) // 8:
        bits = (len(data) - 1) * 8
        raise limit_exceeded(
            "max_int_bits", f"an integer of more than {bits} bits", bits, max_bits
        )
    value = int.from_bytes(data, "big", signed=True)
    bits = value.bit_length()
    if bits > max_bits:
        raise limit_exceeded("max_int_bits", f"an integer of {bits} bits", bits, max_bits)
    return value


# --- complex --------------------------------------------------------------


def complex_to_bytes(value: complex) -> bytes:
    return _COMPLEX.pack(value.real, value.imag)


def complex_from_bytes(data: bytes) -> complex:
    if len(data) != _COMPLEX.size:
        raise DecodeError(f"complex payload must be 16 bytes, got {len(data)}")
    real, imag = _COMPLEX.unpack(data)
    return complex(real, imag)


# --- Decimal ----------------------------------------------------------------

# What str(Decimal) produces, in ASCII only: no whitespace, no underscores,
# no non-ASCII digits (all of which Decimal() would otherwise accept).
_DECIMAL_RE = re.compile(
    rb"[+-]?(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac2>[0-9]+))"
    rb"(?:[eE][+-]?[0-9]{1,20})?"
    rb"|[+-]?(?:Infinity|s?NaN(?P<diag>[0-9]*))"
)


def decimal_to_bytes(value: Decimal) -> bytes:
    return str(value).encode("ascii")


def decimal_from_bytes(data: bytes, max_bits: int) -> Decimal:
    # A coefficient of max_bits bits has at most this many decimal digits.
    max_digits = max_bits * 30103 // 100000 + 1
    if len(data) > max_digits + 24:  # sign, point, exponent: at most 24 more
        raise limit_exceeded(
            "max_int_bits",
            f"a Decimal of {len(data)} characters (at most {max_digits} digits fit)",
            len(data),
            max_bits,
        )
    match = _DECIMAL_RE.fullmatch(data)
    if match is None:
        raise DecodeError(f"malformed Decimal payload {bytes(data[:40])!r}")
    digits = sum(len(match[group] or b"") for group in ("int", "frac", "frac2", "diag"))
    if digits > max_digits:
        raise limit_exceeded(
            "max_int_bits",
            f"a Decimal of {digits} digits (at most {max_digits} fit)",
            digits,
            max_bits,
        )
    return Decimal(data.decode("ascii"))


# --- time zones -------------------------------------------------------------

_ZONE_KEY_RE = re.compile(r"[A-Za-z0-9_+-]{1,40}(?:/[A-Za-z0-9_+-]{1,40}){0,3}")
_known_zones: frozenset[str] | None = None


def _tz_to_bytes(tz: tzinfo | None, owner: object) -> bytes:
    if tz is None:
        return b""
    if tz is _UTC:
        return bytes((_codes.TZ_UTC,))
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        micros = (offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds
        name = tz.tzname(None)
        suffix = b"" if name == timezone(offset).tzname(None) else name.encode("utf-8", "surrogatepass")
        return bytes((_codes.TZ_OFFSET,)) + _OFFSET.pack(micros) + suffix
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return bytes((_codes.TZ_ZONEINFO,)) + tz.key.encode("utf-8")
    raise EncodeError(
        f"cannot send {type(owner).__name__} {owner!r}: its tzinfo "
        f"{type(tz).__module__}.{type(tz).__qualname__} cannot travel exactly "
        "(only datetime.timezone and keyed zoneinfo.ZoneInfo can); convert it, "
        "e.g. value.astimezone(datetime.timezone.utc)"
    )


def _zone_exists(key: str) -> bool:
    for root in zoneinfo.TZPATH:
        if os.path.isfile(os.path.join(root, key)):
            return True
    global _known_zones
    if _known_zones is None:
        _known_zones = frozenset(zoneinfo.available_timezones())
    return key in _known_zones


def _tz_from_bytes(data: bytes) -> tzinfo | None:
    if not data:
        return None
    kind = data[0]
    if kind == _codes.TZ_UTC and len(data) == 1:
        return _UTC
    if kind == _codes.TZ_OFFSET and len(data) >= 9:
        (micros,) = _OFFSET.unpack_from(data, 1)
        if not -_US_PER_DAY < micros < _US_PER_DAY:
            raise DecodeError(f"time zone offset {micros} us is not within a day")
        offset = timedelta(microseconds=micros)
        if len(data) == 9:
            return timezone(offset)
        return timezone(offset, bytes(data[9:]).decode("utf-8"))
    if kind == _codes.TZ_ZONEINFO:
        key = bytes(data[1:]).decode("ascii")
        if _ZONE_KEY_RE.fullmatch(key) is None or not _zone_exists(key):
            raise DecodeError(f"unknown time zone key {key[:60]!r} (not in this host's tz database)")
        return zoneinfo.ZoneInfo(key)
    raise DecodeError(f"malformed time zone suffix {bytes(data[:12]).hex()}")


# --- date and time --------------------------------------------------------------


def datetime_to_bytes(value: datetime) -> bytes:
    return _DATETIME.pack(
        value.year, value.month, value.day, value.hour, value.minute,
        value.second, value.microsecond, value.fold,
    ) + _tz_to_bytes(value.tzinfo, value)


def datetime_from_bytes(data: bytes) -> datetime:
    if len(data) < _DATETIME.size:
        raise DecodeError(f"datetime payload too short ({len(data)} bytes)")
    y, mo, d, h, mi, s, us, fold = _DATETIME.unpack_from(data)
    tz = _tz_from_bytes(data[_DATETIME.size:])
    return datetime(y, mo, d, h, mi, s, us, tzinfo=tz, fold=fold)


def date_to_bytes(value: date) -> bytes:
    return _DATE.pack(value.year, value.month, value.day)


def date_from_bytes(data: bytes) -> date:
    if len(data) != _DATE.size:
        raise DecodeError(f"date payload must be 4 bytes, got {len(data)}")
    return date(*_DATE.unpack(data))


def time_to_bytes(value: time) -> bytes:
    return _TIME.pack(
        value.hour, value.minute, value.second, value.microsecond, value.fold
    ) + _tz_to_bytes(value.tzinfo, value)


def time_from_bytes(data: bytes) -> time:
    if len(data) < _TIME.size:
        raise DecodeError(f"time payload too short ({len(data)} bytes)")
    h, mi, s, us, fold = _TIME.unpack_from(data)
    tz = _tz_from_bytes(data[_TIME.size:])
    return time(h, mi, s, us, tzinfo=tz, fold=fold)


def timedelta_to_bytes(value: timedelta) -> bytes:
    return _TIMEDELTA.pack(value.days, value.seconds, value.microseconds)


def timedelta_from_bytes(data: bytes) -> timedelta:
    if len(data) != _TIMEDELTA.size:
        raise DecodeError(f"timedelta payload must be 12 bytes, got {len(data)}")
    days, seconds, micros = _TIMEDELTA.unpack(data)
    if seconds >= 86_400 or micros >= 1_000_000:
        raise DecodeError("timedelta payload is not normalised")
    return timedelta(days, seconds, micros)
