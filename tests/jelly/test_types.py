"""Every supported type round-trips exactly: same type, same value."""

from __future__ import annotations

import enum
import zoneinfo
from collections import OrderedDict
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest

import jelly

from ._support import round_trip, same

UTC = timezone.utc
PLUS_5_30 = timezone(timedelta(hours=5, minutes=30))
NAMED = timezone(timedelta(hours=-3), "BRT")
ODD = timezone(timedelta(microseconds=-1))
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")

VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative fixint": -32,
    "int64 min": -(2**63),
    "uint64 max": 2**64 - 1,
    "just past uint64": 2**64,
    "just past int64 min": -(2**63) - 1,
    "huge int": 3**5000,
    "huge negative int": -(7**3000),
    "float": 1.5,
    "negative zero": -0.0,
    "inf": float("inf"),
    "minus inf": float("-inf"),
    "nan": float("nan"),
    "str": "héllo ✓",
    "empty str": "",
    "bytes": b"\x00\xff",
    "list": [1, "a", None],
    "empty list": [],
    "tuple": (1, "a", (2, 3)),
    "empty tuple": (),
    "one tuple": (1,),
    "dict": {"a": 1, "b": [2]},
    "dict with int keys": {1: "a", -5: "b", 2**70: "big"},
    "dict with tuple keys": {(1, 2): "a", (1, (2, 3)): "b", (): "empty"},
    "dict with frozenset keys": {frozenset({1, 2}): 1, frozenset(): 2},
    "dict with mixed keys": {None: 0, True: 1, 2.5: 2, b"b": 3, "s": 4},
    "set": {1, "a", (2, 3)},
    "empty set": set(),
    "frozenset": frozenset({1, frozenset({2})}),
    "empty frozenset": frozenset(),
    "naive datetime": datetime(2024, 2, 29, 23, 59, 58, 999_999),
    "utc datetime": datetime(2024, 1, 1, tzinfo=UTC),
    "offset datetime": datetime(1999, 12, 31, 12, 0, tzinfo=PLUS_5_30),
    "named offset datetime": datetime(2000, 6, 1, tzinfo=NAMED),
    "microsecond offset datetime": datetime(2000, 6, 1, tzinfo=ODD),
    "zoneinfo datetime": datetime(2024, 7, 14, 12, 0, tzinfo=PARIS),
    "zoneinfo fold datetime": datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=NEW_YORK),
    "min datetime": datetime.min,
    "max datetime": datetime.max,
    "date": date(2024, 2, 29),
    "min date": date.min,
    "time": time(23, 59, 59, 1),
    "utc time": time(1, 2, 3, tzinfo=UTC),
    "offset time": time(1, 2, tzinfo=PLUS_5_30),
    "fold time": time(1, 2, fold=1),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "max timedelta": timedelta.max,
    "min timedelta": timedelta.min,
    "decimal": Decimal("123.4500"),
    "decimal exponent": Decimal("-1.5E-300"),
    "decimal negative zero": Decimal("-0"),
    "decimal nan": Decimal("NaN"),
    "decimal negative signalling nan with payload": Decimal("-sNaN123"),
    "decimal infinity": Decimal("Infinity"),
    "decimal minus infinity": Decimal("-Infinity"),
    "complex": complex(1.5, -2),
    "complex with nan": complex(float("nan"), -0.0),
    "nested": [{"a": ({1, 2}, frozenset({(3, 4)}))}, [[[]]], {(1,): {2: [3]}}],
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_value_round_trips_with_its_exact_type(value):
    assert same(round_trip(value), value)


def test_nan_stays_nan_and_negative_zero_keeps_its_sign():
    assert repr(round_trip(-0.0)) == "-0.0"
    assert repr(round_trip(float("nan"))) == "nan"


def test_zoneinfo_comes_back_as_the_same_zone_object():
    value = round_trip(datetime(2024, 1, 1, tzinfo=PARIS))
    assert value.tzinfo is PARIS


def test_utc_comes_back_as_the_utc_singleton():
    assert round_trip(datetime(2024, 1, 1, tzinfo=UTC)).tzinfo is UTC


def test_offset_zone_keeps_its_name():
    assert round_trip(time(1, tzinfo=NAMED)).tzinfo.tzname(None) == "BRT"


def test_plain_data_is_exactly_what_msgpack_writes():
    value = [{"id": 1, "name": "x", "score": 1.5, "blob": b"\x00", "ok": None}, True, -1]
    assert jelly.dumps(value) == msgpack.packb(value, use_bin_type=True)


def test_loads_accepts_bytes_bytearray_and_memoryview():
    data = jelly.dumps([1, (2,)])
    for buffer in (data, bytearray(data), memoryview(data)):
        assert jelly.loads(buffer) == [1, (2,)]


def test_loads_accepts_a_memoryview_slice_of_a_bigger_buffer():
    frames = bytearray(b"\x00\x00" + jelly.dumps([1, (2,), "x" * 300]) + b"\xff\xff")
    assert jelly.loads(memoryview(frames)[2:-2]) == [1, (2,), "x" * 300]
    with pytest.raises(jelly.DecodeError, match="truncated"):
        jelly.loads(memoryview(frames)[2:5])


def test_loads_rejects_a_non_buffer_argument_with_type_error():
    with pytest.raises(TypeError):
        jelly.loads("not bytes")  # type: ignore[arg-type]


def test_bytearray_arrives_as_bytes_because_the_c_packer_writes_it_natively():
    # msgpack's C packer writes bytearray and memoryview as bin before any
    # hook could see them; jelly documents this instead of slowing every
    # message down to look for them.
    assert round_trip(bytearray(b"ab")) == b"ab"
    assert type(round_trip(bytearray(b"ab"))) is bytes
    assert round_trip(memoryview(b"cd")) == b"cd"


def test_shared_plain_containers_arrive_as_separate_copies():
    inner = [1]
    left, right = round_trip([inner, inner])
    assert left == right and left is not right


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Number(float):
    pass


@pytest.mark.parametrize(
    "value, base",
    [
        (Color.RED, "int"),
        (Name("x"), "str"),
        (Number(1.0), "float"),
        (OrderedDict(a=1), "dict"),
        (type("Row", (tuple,), {})((1,)), "tuple"),
        (type("Stamp", (datetime,), {})(2020, 1, 1), "datetime"),
    ],
    ids=["IntEnum", "str subclass", "float subclass", "OrderedDict", "tuple subclass", "datetime subclass"],
)
def test_builtin_subclass_is_refused_instead_of_losing_its_class(value, base):
    with pytest.raises(jelly.EncodeError, match=f"subclass of {base}") as info:
        jelly.dumps([value])
    assert type(value).__qualname__ in str(info.value)


def test_builtin_subclass_nested_in_a_dict_key_is_refused():
    with pytest.raises(jelly.EncodeError, match="IntEnum|Color"):
        jelly.dumps({Color.RED: 1})


def test_arbitrary_object_is_refused_with_the_fix_in_the_message():
    with pytest.raises(jelly.EncodeError, match="builtins.object.*Copyable"):
        jelly.dumps({"x": object()})


def test_function_is_refused():
    with pytest.raises(jelly.EncodeError, match="builtins.function"):
        jelly.dumps(len if False else (lambda: None))


def test_foreign_tzinfo_is_refused_with_a_conversion_hint():
    class Fixed(timezone.__base__):  # a tzinfo subclass that is not timezone
        def utcoffset(self, dt):
            return timedelta(hours=1)

    with pytest.raises(jelly.EncodeError, match="tzinfo.*astimezone"):
        jelly.dumps(datetime(2024, 1, 1, tzinfo=Fixed()))


def test_zoneinfo_without_a_key_is_refused():
    with open(zoneinfo.TZPATH[0] + "/Europe/Paris", "rb") as f:
        keyless = zoneinfo.ZoneInfo.from_file(f)
    with pytest.raises(jelly.EncodeError, match="ZoneInfo"):
        jelly.dumps(datetime(2024, 1, 1, tzinfo=keyless))


def test_str_with_a_lone_surrogate_is_refused():
    with pytest.raises(jelly.EncodeError, match="surrogate"):
        jelly.dumps(["\ud800"])


def test_list_cycle_is_refused_and_called_a_cycle():
    looped: list = []
    looped.append(looped)
    with pytest.raises(jelly.EncodeError, match="cycle through plain containers"):
        jelly.dumps(looped)


def test_dict_cycle_is_refused():
    looped: dict = {}
    looped["self"] = looped
    with pytest.raises(jelly.EncodeError, match="cycle.*dict -> dict"):
        jelly.dumps(looped)


def test_cycle_through_a_tuple_is_refused():
    holder: list = []
    cycle = (holder,)
    holder.append(cycle)
    with pytest.raises(jelly.EncodeError, match="cycle.*tuple -> list -> tuple"):
        jelly.dumps(cycle)


def test_very_deep_acyclic_list_is_refused_as_too_deep_not_as_a_cycle():
    value: list = []
    for _ in range(2000):
        value = [value]
    with pytest.raises(jelly.EncodeError, match="nested this deeply"):
        jelly.dumps(value)


def test_very_deep_tuple_nesting_is_refused_as_too_deep():
    value: tuple = ()
    for _ in range(300):
        value = (value,)
    with pytest.raises(jelly.EncodeError, match="nested this deeply"):
        jelly.dumps(value)


def test_deep_plain_nesting_between_many_tuples_raises_instead_of_crashing():
    # Each tuple gets a packer of its own; C packers nested without end could
    # overflow the C stack with ~1000 C frames each.
    value: object = 1
    for _ in range(60):
        for _ in range(900):
            value = [value]
        value = (value,)
    with pytest.raises(jelly.EncodeError, match="nested this deeply"):
        jelly.dumps(value)


def test_encoder_is_reusable_after_an_error():
    with pytest.raises(jelly.EncodeError):
        jelly.dumps([object()])
    assert jelly.loads(jelly.dumps([(1,), {2}])) == [(1,), {2}]
