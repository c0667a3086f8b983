"""Bad bytes raise DecodeError (or InsecureJelly / LimitExceeded), never
anything else, and say what was wrong."""

from __future__ import annotations

import struct

import msgpack
import pytest

import jelly


def ext(code, payload):
    return msgpack.packb(msgpack.ExtType(code, payload))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"\x92\x01", "truncated"),
        (b"\xa5abc", "truncated"),
        (b"\xc4\x10ab", "truncated"),
        (b"\xc1", "reserved"),
        (b"\x01\x02", "left over"),
        (b"\xa2\xff\xfe", "UTF-8"),
        (b"\x81\x90\x01", "unhashable"),
        (b"\x81\x80\x01", "unhashable"),
        (b"\xd4\x01", "truncated"),
        (b"\xc7\x05\x01\x91", "truncated"),
    ],
    ids=["empty", "short array", "short str", "short bin", "reserved byte", "extra data",
         "bad utf-8", "list key", "dict key", "short fixext", "short ext8"],
)
def test_malformed_msgpack_is_a_decode_error(data, message):
    with pytest.raises(jelly.DecodeError, match=message):
        jelly.loads(data)


def test_the_same_errors_are_raised_for_long_messages():
    pad = msgpack.packb("p" * 5000)[:-1]
    with pytest.raises(jelly.DecodeError, match="truncated"):
        jelly.loads(b"\x92" + msgpack.packb("p" * 5000) + b"\x92\x01")
    with pytest.raises(jelly.DecodeError, match="left over"):
        jelly.loads(msgpack.packb("p" * 5000) + b"\x00")
    assert pad  # the message above is over the tiny-message size


@pytest.mark.parametrize("code", [0, 0x0B, 0x0F, 0x12, 0x1F, 0x30, 0x7F, -2, -128])
def test_unknown_ext_code_is_insecure_jelly_naming_the_code(code):
    with pytest.raises(jelly.InsecureJelly, match=f"unknown ext code {code}"):
        jelly.loads(b"\x92\x01\xd4" + struct.pack("b", code) + b"\x00")


def test_msgpack_timestamp_is_refused_anywhere():
    stamp = msgpack.Timestamp(1, 0)
    for value in [stamp, [stamp], {"a": stamp}, {"a": [1, {"b": stamp}]}, ["p" * 5000, stamp]]:
        data = msgpack.packb(value, datetime=False)
        with pytest.raises(jelly.InsecureJelly, match="timestamp"):
            jelly.loads(data)


def test_msgpack_timestamp_inside_an_ext_payload_is_refused():
    data = ext(0x01, msgpack.packb([msgpack.Timestamp(1, 0)]))
    with pytest.raises(jelly.InsecureJelly, match="timestamp"):
        jelly.loads(data)


def test_msgpack_timestamp_as_a_map_key_is_refused():
    data = b"\x81" + msgpack.packb(msgpack.Timestamp(1, 0)) + b"\x01"
    with pytest.raises(jelly.InsecureJelly, match="timestamp"):
        jelly.loads(data)


DT = struct.pack(">HBBBBBIB", 2024, 1, 2, 3, 4, 5, 6, 0)


@pytest.mark.parametrize(
    "code, payload, message",
    [
        (0x01, msgpack.packb({"a": 1}), "must be a msgpack array"),
        (0x01, b"\x92\x01", "truncated"),
        (0x02, msgpack.packb(1), "must be a msgpack array"),
        (0x02, msgpack.packb([[1]]), "unhashable"),
        (0x03, msgpack.packb([{}]), "unhashable"),
        (0x04, b"", "empty"),
        (0x05, b"\x00" * 15, "16 bytes"),
        (0x06, b"1_000", "malformed Decimal"),
        (0x06, b" 1", "malformed Decimal"),
        (0x06, "١".encode(), "malformed Decimal"),
        (0x06, b"", "malformed Decimal"),
        (0x06, b"1e99999999999999999999", "InvalidOperation"),
        (0x07, DT[:-1], "too short"),
        (0x07, struct.pack(">HBBBBBIB", 2024, 13, 1, 0, 0, 0, 0, 0), "month"),
        (0x07, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 1_000_000, 0), "microsecond"),
        (0x07, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 2), "fold"),
        (0x07, DT + b"\x09", "time zone"),
        (0x07, DT + b"\x00\x00", "time zone"),
        (0x07, DT + b"\x01\x00", "time zone"),
        (0x07, DT + b"\x01" + struct.pack(">q", 86_400_000_000), "within a day"),
        (0x07, DT + b"\x01" + struct.pack(">q", 0) + b"\xff", "UnicodeDecodeError"),
        (0x07, DT + b"\x02Mars/Olympus", "unknown time zone"),
        (0x07, DT + b"\x02../../etc/passwd", "unknown time zone"),
        (0x07, DT + b"\x02/etc/localtime", "unknown time zone"),
        (0x07, DT + b"\x02", "unknown time zone"),
        (0x08, b"\x07\xe8\x02", "4 bytes"),
        (0x08, b"\x07\xe8\x02\x1e", "day"),
        (0x09, b"\x18\x00\x00\x00\x00\x00\x00\x00", "hour"),
        (0x09, b"\x01", "too short"),
        (0x0A, b"\x00" * 11, "12 bytes"),
        (0x0A, struct.pack(">iII", 0, 86_400, 0), "normalised"),
        (0x0A, struct.pack(">iII", 1_000_000_000, 0, 0), "days"),
    ],
    ids=["tuple of map", "short tuple", "set of int", "set of lists", "frozenset of dicts",
         "empty bigint", "short complex", "decimal underscore", "decimal space",
         "decimal arabic digit", "empty decimal", "decimal huge exponent", "short datetime",
         "month 13", "microsecond 1e6", "fold 2", "bad tz kind", "utc with data",
         "short offset", "offset of a day", "offset name not utf-8", "unknown zone",
         "zone path traversal", "absolute zone path", "empty zone key", "short date", "day 30 feb",
         "hour 24", "short time", "short timedelta", "unnormalised timedelta", "huge timedelta"],
)
def test_malformed_ext_payload_is_a_decode_error(code, payload, message):
    with pytest.raises(jelly.DecodeError, match=message):
        jelly.loads(ext(code, payload))


def test_decode_error_names_the_ext_type():
    with pytest.raises(jelly.DecodeError, match="malformed datetime ext payload"):
        jelly.loads(ext(0x07, struct.pack(">HBBBBBIB", 2024, 13, 1, 0, 0, 0, 0, 0)))


def test_decode_error_keeps_the_underlying_exception_as_its_cause():
    with pytest.raises(jelly.DecodeError) as info:
        jelly.loads(b"\xa2\xff\xfe")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_errors_are_plain_subclasses_that_other_layers_can_multiply_inherit():
    class PBError(Exception):
        pass

    for base in (jelly.DecodeError, jelly.InsecureJelly, jelly.LimitExceeded, jelly.EncodeError):
        assert issubclass(base, jelly.JellyError)
        combined = type("Combined", (PBError, base), {})
        err = combined("message")
        assert isinstance(err, jelly.JellyError) and isinstance(err, PBError)
        assert str(err) == "message"


def test_error_classes_are_distinct_and_not_value_errors():
    classes = {jelly.DecodeError, jelly.InsecureJelly, jelly.LimitExceeded, jelly.EncodeError}
    assert len(classes) == 4
    for cls in classes:
        assert not issubclass(cls, (ValueError, TypeError))
