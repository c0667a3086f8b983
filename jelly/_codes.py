"""Every msgpack ext code jelly uses, in one place.

The payload layouts are documented in ``docs/jelly.md``; the comments here
are reminders.  Codes not listed are refused with ``InsecureJelly``; msgpack's
own timestamp code (-1) is refused too.
"""

from __future__ import annotations

from ._context import MAX_REFERENCE_KIND

TUPLE = 0x01  # msgpack array of the elements
SET = 0x02  # msgpack array of the elements
FROZENSET = 0x03  # msgpack array of the elements
BIGINT = 0x04  # big-endian two's-complement bytes, minimal length
COMPLEX = 0x05  # two big-endian IEEE-754 doubles: real, imag
DECIMAL = 0x06  # ASCII text of str(value)
DATETIME = 0x07  # >HBBBBBIB (y, m, d, H, M, S, us, fold) + tz suffix
DATE = 0x08  # >HBB (y, m, d)
TIME = 0x09  # >BBBIB (H, M, S, us, fold) + tz suffix
TIMEDELTA = 0x0A  # >iII (days, seconds, microseconds)
COPY = 0x10  # msgpack uint index, msgpack str tag, then the state value
BACKREF = 0x11  # msgpack uint index of an earlier COPY in the same message
REFERENCE = 0x20  # 0x20 + kind (0..15): msgpack array of the arguments
REFERENCE_LAST = REFERENCE + MAX_REFERENCE_KIND

NAMES = {
    TUPLE: "tuple",
    SET: "set",
    FROZENSET: "frozenset",
    BIGINT: "big int",
    COMPLEX: "complex",
    DECIMAL: "Decimal",
    DATETIME: "datetime",
    DATE: "date",
    TIME: "time",
    TIMEDELTA: "timedelta",
    COPY: "copy",
    BACKREF: "copy back-reference",
}
for _kind in range(MAX_REFERENCE_KIND + 1):
    NAMES[REFERENCE + _kind] = f"reference (kind {_kind})"
del _kind

# Time zone suffix of DATETIME and TIME payloads (after the fixed part):
# nothing for a naive value, else one of these bytes and its data.
TZ_UTC = 0x00  # datetime.timezone.utc; no data
TZ_OFFSET = 0x01  # >q offset in microseconds, then optional UTF-8 name
TZ_ZONEINFO = 0x02  # UTF-8 IANA key of a zoneinfo.ZoneInfo
