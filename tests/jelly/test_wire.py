"""The bytes of docs/jelly.md's examples, so that the spec and the code agree."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

import jelly
from jelly import _codes

from ._support import FakeContext, Remote


class Point(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "geo.Point"

    def __init__(self, x, y):
        self.x, self.y = x, y


EXAMPLES = [
    ((1, "a"), "d6 01 92 01 a1 61"),
    (frozenset(), "d4 03 90"),
    ({1, 2}, "c7 03 02 92 01 02"),
    (2**64, "c7 09 04 01 00 00 00 00 00 00 00 00"),
    (-(2**63) - 1, "c7 09 04 ff 7f ff ff ff ff ff ff ff"),
    (complex(1, 2), "d8 05 3f f0 00 00 00 00 00 00 40 00 00 00 00 00 00 00"),
    (Decimal("-1.50"), "c7 05 06 2d 31 2e 35 30"),
    (datetime(2024, 5, 6, 7, 8, 9, 10), "c7 0c 07 07 e8 05 06 07 08 09 00 00 00 0a 00"),
    (datetime(2024, 5, 6, tzinfo=timezone.utc), "c7 0d 07 07 e8 05 06 00 00 00 00 00 00 00 00 00"),
    (datetime(2024, 5, 6, tzinfo=timezone(timedelta(hours=-5), "EST")),
     "c7 18 07 07 e8 05 06 00 00 00 00 00 00 00 00 01 ff ff ff fb cf 1d cc 00 45 53 54"),
    (date(2024, 5, 6), "d6 08 07 e8 05 06"),
    (time(7, 8, 9, 10), "d7 09 07 08 09 00 00 00 0a 00"),
    (timedelta(days=-1, seconds=5), "c7 0c 0a ff ff ff ff 00 00 00 05 00 00 00 00"),
]


@pytest.mark.parametrize("value, hexdump", EXAMPLES, ids=[repr(v)[:40] for v, _ in EXAMPLES])
def test_documented_encoding(value, hexdump):
    assert jelly.dumps(value).hex(" ") == hexdump
    assert jelly.loads(bytes.fromhex(hexdump)) == value


def test_documented_copy_and_backref_encoding():
    point = Point(1, 2)
    expected = "92 c7 12 10 00 a9 67 65 6f 2e 50 6f 69 6e 74 82 a1 78 01 a1 79 02 d4 11 00"
    assert jelly.dumps([point, point]).hex(" ") == expected


def test_reference_code_is_0x20_plus_kind_with_an_argument_array():
    class Kind5(FakeContext):
        def flavor_out(self, obj):
            return 5, (42, "x")

    assert jelly.dumps(Remote("r"), context=Kind5()).hex(" ") == "d6 25 92 2a a1 78"


def test_every_code_has_a_name_and_codes_do_not_overlap():
    codes = [_codes.TUPLE, _codes.SET, _codes.FROZENSET, _codes.BIGINT, _codes.COMPLEX,
             _codes.DECIMAL, _codes.DATETIME, _codes.DATE, _codes.TIME, _codes.TIMEDELTA,
             _codes.COPY, _codes.BACKREF, *range(_codes.REFERENCE, _codes.REFERENCE_LAST + 1)]
    assert len(set(codes)) == len(codes) == len(_codes.NAMES)
    assert all(0 <= code <= 127 for code in codes)


def test_python_packer_used_for_deep_ext_levels_writes_the_same_bytes():
    from jelly import _encode

    encoder = _encode._Encoder()
    c_packer = _encode._new_packer(encoder.default, 0)
    python_packer = _encode._new_packer(encoder.default, _encode.C_PACKER_LEVELS)
    assert type(c_packer) is not type(python_packer)
    values = [None, True, -1, -33, 127, 128, 65536, 2**63, -(2**63), 2**64 - 1, 2**64, 1.5,
              "", "x" * 31, "x" * 32, "x" * 70_000, b"", b"y" * 300, [1] * 16, {}, dict.fromkeys(range(16)),
              (1, (2,)), {1, 2}, Decimal("1.5"), datetime(2020, 1, 1, tzinfo=timezone.utc), 1 + 2j]
    for value in values:
        assert c_packer.pack(value) == python_packer.pack(value), value
