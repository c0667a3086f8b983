"""Each limit: at the edge the message decodes, one past it LimitExceeded."""

from __future__ import annotations

import gc
import struct
import tracemalloc
from datetime import date
from decimal import Decimal

import msgpack
import pytest

import jelly

from ._support import FakeContext, Remote, same


class Box(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.limits.Box"

    def __init__(self, content):
        self.content = content


@pytest.fixture
def registry(registry):
    registry.register(Box)
    return registry


def assert_limit(data, limits, name, **kwargs):
    with pytest.raises(jelly.LimitExceeded) as info:
        jelly.loads(data, limits=limits, **kwargs)
    err = info.value
    assert err.limit == name
    assert f"{name}=" in str(err) and f"Limits({name}=...)" in str(err)
    return err


# --- Limits itself ------------------------------------------------------------------


def test_defaults_are_documented_values():
    limits = jelly.DEFAULT_LIMITS
    assert limits == jelly.Limits()
    assert limits.max_size == 16 * 1024 * 1024
    assert limits.max_depth == 64
    assert limits.max_items == 100_000
    assert limits.max_str_len == limits.max_bin_len == limits.max_size
    assert limits.max_int_bits == 65_536
    assert limits.max_composite_keys == 4096
    assert limits.max_objects == 100_000


def test_string_and_bytes_limits_follow_max_size_unless_given():
    limits = jelly.Limits(max_size=1000, max_bin_len=10)
    assert limits.max_str_len == 1000 and limits.max_bin_len == 10


def test_limits_are_frozen():
    with pytest.raises(AttributeError):
        jelly.DEFAULT_LIMITS.max_depth = 1  # type: ignore[misc]


@pytest.mark.parametrize("field", ["max_size", "max_depth", "max_items", "max_str_len",
                                   "max_bin_len", "max_int_bits", "max_composite_keys",
                                   "max_objects"])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_limits_must_be_positive_ints(field, bad):
    with pytest.raises(ValueError, match=field):
        jelly.Limits(**{field: bad})


# --- max_size ------------------------------------------------------------------------


def test_max_size_edge():
    data = jelly.dumps("x" * 97)  # 2 header bytes + 97
    assert len(data) == 99
    assert jelly.loads(data, limits=jelly.Limits(max_size=99)) == "x" * 97
    err = assert_limit(data, jelly.Limits(max_size=98), "max_size")
    assert (err.value, err.maximum) == (99, 98)


def test_max_size_is_checked_before_anything_else():
    garbage = b"\xc1" * 1000
    assert_limit(garbage, jelly.Limits(max_size=999), "max_size")


# --- max_depth -------------------------------------------------------------------------


def nested_lists(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_tuples(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


PAD = "p" * 5000  # makes a message long enough for the full depth walk


@pytest.mark.parametrize(
    "build",
    [
        lambda d: nested_lists(d),
        lambda d: nested_lists(d - 1, {"leaf": 1}),
        lambda d: nested_lists(d - 1, {}),
        lambda d: [PAD, nested_lists(d - 1)],
        lambda d: [PAD, nested_lists(d - 2, {"a": 1})],
        lambda d: nested_tuples(d),
        lambda d: [PAD, nested_tuples(d - 1)],
        lambda d: nested_lists(d // 2, nested_tuples(d - d // 2)),
        lambda d: nested_tuples(d // 2, nested_lists(d - d // 2)),
        lambda d: [PAD, nested_tuples(d // 2, nested_lists(d - d // 2 - 2, {"k": "v"}))],
        lambda d: {(): nested_lists(d - 1)},
        lambda d: [PAD, {nested_tuples(d - 2): 1}],
        lambda d: nested_lists(d - 1, frozenset({1})),
        lambda d: [PAD, nested_lists(d - 4, {frozenset({nested_tuples(1)})})],
    ],
    ids=["lists", "lists+dict leaf", "lists+empty dict", "long lists", "long lists+dict leaf",
         "tuples", "long tuples", "lists of tuples", "tuples of lists",
         "long tuples of lists of dict", "dict value", "long tuple key", "frozenset leaf",
         "long set of frozenset of tuple"],
)
@pytest.mark.parametrize("max_depth", [5, 64])
def test_max_depth_edge(build, max_depth):
    limits = jelly.Limits(max_depth=max_depth)
    at_edge = jelly.dumps(build(max_depth))
    assert same(jelly.loads(at_edge, limits=limits), jelly.loads(at_edge, limits=jelly.Limits(max_depth=999)))
    err = assert_limit(jelly.dumps(build(max_depth + 1)), limits, "max_depth")
    assert err.maximum == max_depth


def test_max_depth_counts_copies_as_containers(registry):
    limits = jelly.Limits(max_depth=6)
    # Box -> state dict (the copy counts as the dict) -> list -> Box -> dict -> list -> 1
    ok = Box([Box([1])])
    assert jelly.loads(jelly.dumps([PAD, ok]), limits=jelly.Limits(max_depth=5), registry=registry)
    assert_limit(jelly.dumps([PAD, [ok]]), jelly.Limits(max_depth=5), "max_depth", registry=registry)
    assert jelly.loads(jelly.dumps([ok]), limits=limits, registry=registry)


def test_a_shared_copy_counts_where_it_appears(registry):
    inner = Box([[1]])  # depth 3
    value = [PAD, inner, [[inner]]]  # second occurrence at depth 3 + 3
    assert jelly.loads(jelly.dumps(value), limits=jelly.Limits(max_depth=6), registry=registry)
    assert_limit(jelly.dumps(value), jelly.Limits(max_depth=5), "max_depth", registry=registry)


def test_a_cycle_back_into_a_copy_counts_as_a_leaf(registry):
    box = Box(None)
    box.content = [box]
    copy = jelly.loads(jelly.dumps([PAD, box]), limits=jelly.Limits(max_depth=3), registry=registry)
    assert copy[1].content[0] is copy[1]


def test_deep_ext_nesting_is_refused_before_it_recurses():
    data = msgpack.packb(1)
    for _ in range(5000):  # 5000 tuples, each the only item of the next
        data = msgpack.packb(msgpack.ExtType(0x01, b"\x91" + data))
    err = assert_limit(data, jelly.DEFAULT_LIMITS, "max_depth")
    assert err.value == 65


def test_nesting_past_msgpacks_own_cap_is_limit_exceeded():
    data = b"\x91" * 1100 + b"\x01"
    assert_limit(data, jelly.DEFAULT_LIMITS, "max_depth")
    with pytest.raises(jelly.LimitExceeded, match="msgpack's own cap.*cannot raise it"):
        jelly.loads(data, limits=jelly.Limits(max_depth=5000))


# --- max_items ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [list, lambda n: dict.fromkeys(range(n)), tuple, set, frozenset,
     lambda n: [PAD, list(range(n))], lambda n: (PAD, tuple(range(n)))],
    ids=["list", "map", "tuple", "set", "frozenset", "long list", "long tuple"],
)
def test_max_items_edge(build):
    limits = jelly.Limits(max_items=20)

    def make(n):
        value = build(n) if not isinstance(build, type) else build(range(n))
        return jelly.dumps(value)

    assert jelly.loads(make(20), limits=limits) is not None
    err = assert_limit(make(21), limits, "max_items")
    assert (err.value, err.maximum) == (21, 20)


def test_max_items_is_checked_from_the_header_before_allocation():
    header_only = b"\xdd\x7f\xff\xff\xff"  # array32 claiming 2**31 - 1 items
    assert_limit(header_only + b"\x00" * 100, jelly.Limits(max_items=1000), "max_items")


def test_header_claiming_more_than_the_message_holds_is_truncation_not_a_limit():
    with pytest.raises(jelly.DecodeError, match="truncated"):
        jelly.loads(b"\xdc\x03\xe8" + b"\x01" * 200)  # 1000 items announced, 200 present


# --- max_str_len / max_bin_len ------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "in list", "in tuple", "as key"])
def test_max_str_len_edge(where):
    def wrap(text):
        return {"top": text, "in list": [1, text], "in tuple": (1, text), "as key": {text: 1}}[where]

    limits = jelly.Limits(max_str_len=10)
    assert jelly.loads(jelly.dumps(wrap("é" * 5)), limits=limits) == wrap("é" * 5)  # 10 bytes
    err = assert_limit(jelly.dumps(wrap("a" * 11)), limits, "max_str_len")
    assert (err.value, err.maximum) == (11, 10)


@pytest.mark.parametrize("where", ["top", "in list", "in frozenset"])
def test_max_bin_len_edge(where):
    def wrap(blob):
        return {"top": blob, "in list": [blob], "in frozenset": frozenset({blob})}[where]

    limits = jelly.Limits(max_bin_len=10)
    assert jelly.loads(jelly.dumps(wrap(b"b" * 10)), limits=limits) == wrap(b"b" * 10)
    assert_limit(jelly.dumps(wrap(b"b" * 11)), limits, "max_bin_len")


# --- max_int_bits --------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_max_int_bits_edge(sign):
    limits = jelly.Limits(max_int_bits=100)
    at_edge = sign * (2**100 - 1)
    assert at_edge.bit_length() == 100
    assert jelly.loads(jelly.dumps(at_edge), limits=limits) == at_edge
    err = assert_limit(jelly.dumps(sign * 2**100), limits, "max_int_bits")
    assert err.maximum == 100


def test_max_int_bits_refuses_a_long_payload_before_converting_it():
    data = msgpack.packb(msgpack.ExtType(0x04, b"\x01" + b"\x00" * 100_000))
    assert_limit(data, jelly.DEFAULT_LIMITS, "max_int_bits")


def test_max_int_bits_bounds_decimal_digits():
    limits = jelly.Limits(max_int_bits=100)  # 100 bits hold at most 31 digits
    at_edge = Decimal("9" * 31)
    assert jelly.loads(jelly.dumps(at_edge), limits=limits) == at_edge
    assert_limit(jelly.dumps(Decimal("9" * 32)), limits, "max_int_bits")
    assert_limit(jelly.dumps(Decimal("9" * 1000)), limits, "max_int_bits")


# --- max_composite_keys ---------------------------------------------------------------------


def test_max_composite_keys_edge_for_a_map():
    limits = jelly.Limits(max_composite_keys=100)
    ok = {(i, "k"): i for i in range(100)}
    assert jelly.loads(jelly.dumps(ok), limits=limits) == ok
    err = assert_limit(jelly.dumps({(i, "k"): i for i in range(101)}), limits, "max_composite_keys")
    assert (err.value, err.maximum) == (101, 100)


def test_max_composite_keys_edge_for_a_set():
    limits = jelly.Limits(max_composite_keys=100)
    ok = {frozenset({i}) for i in range(100)}
    assert jelly.loads(jelly.dumps(ok), limits=limits) == ok
    assert_limit(jelly.dumps({frozenset({i}) for i in range(101)}), limits, "max_composite_keys")


def test_default_max_composite_keys_refuses_a_map_of_5000_tuple_keys():
    data = jelly.dumps({(i, i): None for i in range(5000)})
    err = assert_limit(data, jelly.DEFAULT_LIMITS, "max_composite_keys")
    assert err.value == 5000


def test_safe_keys_do_not_count_towards_max_composite_keys():
    limits = jelly.Limits(max_composite_keys=10)
    value = {**{i: i for i in range(50)}, **{f"s{i}": i for i in range(50)},
             **{(i,): i for i in range(10)}}
    assert jelly.loads(jelly.dumps([(1,)] * 20 + [value]), limits=limits) == [(1,)] * 20 + [value]


def test_limit_exceeded_is_plain_and_its_attributes_default_to_none():
    err = jelly.LimitExceeded("custom")
    assert (err.limit, err.value, err.maximum) == (None, None, None)
    assert str(err) == "custom"


class CollectingContext(FakeContext):
    """Runs garbage collections while the message is being decoded, which
    untrack the tuples of scalars (one nesting level per collection) and
    then the dicts holding only those, decoded so far."""

    def flavor_in(self, kind, args):
        for _ in range(20):
            gc.collect()
        return super().flavor_in(kind, args)


@pytest.mark.parametrize("where", ["dict value", "dict key", "list item"])
def test_depth_is_exact_when_the_gc_untracked_decoded_tuples(where):
    def build(depth):
        deep = nested_tuples(depth - 2)  # inside [PAD, container, ...]
        holder = {"dict value": {"k": deep}, "dict key": {deep: 1}, "list item": [deep]}[where]
        return [PAD, holder, Remote("r")]

    context = CollectingContext()
    limits = jelly.Limits(max_depth=12)
    at_edge = jelly.loads(jelly.dumps(build(12), context=context), context=context, limits=limits)
    deep = at_edge[1]["k"] if where == "dict value" else next(iter(at_edge[1]))
    assert not gc.is_tracked(deep)  # the situation under test
    assert_limit(jelly.dumps(build(13), context=context), limits, "max_depth", context=context)


def test_measure_finds_untracked_tuples_hidden_in_untracked_dicts():
    from jelly._depth import measure

    inner = nested_tuples(5)
    value = [[{"k": inner}]]
    for _ in range(10):
        gc.collect()
    assert not gc.is_tracked(inner) and not gc.is_tracked(value[0][0])
    recorded = {id(t): 5 - i for i, t in enumerate(_tuples_of(inner))}
    assert measure(value, 8, recorded, False, hidden=5) <= 8  # the real depth is 8
    with pytest.raises(jelly.LimitExceeded):
        measure(value, 7, recorded, False, hidden=5)


def _tuples_of(value):
    while type(value) is tuple:
        yield value
        value = value[0]


# --- max_objects ---------------------------------------------------------------------------


def objects(value):
    """How many objects max_objects counts in ``value``: one per list and
    map, and per ext value, plus the array an ext payload holds."""
    kind = type(value)
    if kind is list:
        return 1 + sum(map(objects, value))
    if kind is dict:
        return 1 + sum(map(objects, value)) + sum(map(objects, value.values()))
    if kind in (tuple, set, frozenset):
        return 2 + sum(map(objects, value))
    if isinstance(value, Box):  # the COPY, and its state: a map
        return 2 + objects("content") + objects(value.content)
    if kind is date or kind is Decimal or (kind is int and not -(2**63) <= value < 2**64):
        return 1
    return 0


MIXES = {
    "lists": [[] for _ in range(40)],
    "maps": [{} for _ in range(40)],
    "tuples": [() for _ in range(20)],
    "sets and frozensets": [set(), frozenset({1, 2})] * 10,
    "ext scalars": [date(2024, 5, 6), Decimal("1.5"), 2**70] * 10,
    "nested": {"a": [(1, [2, {"b": ()}]), {frozenset({(3,)})}], "c": [[[]]] * 5, (4,): {}},
    "copies": [Box([Box((1,))]), Box({"k": [date(2000, 1, 1)]})],
    "long": [PAD, [[] for _ in range(30)]],
}


@pytest.mark.parametrize("value", MIXES.values(), ids=MIXES.keys())
def test_max_objects_edge(registry, value):
    count = objects(value)
    data = jelly.dumps(value)
    assert len(data) > count - 1  # so that the message is counted at count - 1
    decoded = jelly.loads(data, limits=jelly.Limits(max_objects=count), registry=registry)
    if value is MIXES["copies"]:  # a Box compares by identity
        assert [type(box) for box in decoded] == [Box, Box]
    else:
        assert decoded == value
    err = assert_limit(data, jelly.Limits(max_objects=count - 1), "max_objects", registry=registry)
    assert (err.value, err.maximum) == (count, count - 1)


def test_max_objects_edge_in_safe_mode():
    # More tuple keys than max_composite_keys: decoded again in safe mode,
    # which counts afresh and stops at the same edge.
    value = {(i,): [] for i in range(10)}
    count = objects(value)
    assert count == 1 + 10 * 2 + 10
    data = jelly.dumps(value)
    limits = jelly.Limits(max_composite_keys=5, max_objects=count)
    assert jelly.loads(data, limits=limits) == value
    err = assert_limit(data, jelly.Limits(max_composite_keys=5, max_objects=count - 1),
                       "max_objects")
    assert err.value == count


def test_a_message_no_longer_than_max_objects_bytes_is_not_counted():
    # 100 bytes cannot hold 101 objects: the fast path needs no count.
    data = jelly.dumps([[]] * 97)
    assert len(data) == 100
    assert jelly.loads(data, limits=jelly.Limits(max_objects=100)) == [[]] * 97


def empty_lists(count, per_list=100_000):
    """A msgpack array of arrays of ``per_list`` empty arrays each."""
    inner = b"\xdd" + struct.pack(">I", per_list) + b"\x90" * per_list
    return b"\xdc" + struct.pack(">H", count) + inner * count


def test_four_million_empty_lists_are_refused_before_they_are_built():
    data = empty_lists(41)  # 4.1 MB, every container within max_items
    tracemalloc.start()
    try:
        with pytest.raises(jelly.LimitExceeded) as info:
            jelly.loads(data, limits=jelly.Limits(max_size=4 * 1024 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.limit == "max_objects"
    assert "more than 100000 lists, maps and ext values" in str(info.value)
    # 100,000 empty lists take some 6 MB; all of them, some 300 MB.
    assert peak < 32 * 1024 * 1024


@pytest.mark.parametrize("payload", [b"\x90" * (4 << 20), bytes(range(256)) * (4 << 12),
                                     "\u0400" * (2 << 20), "\u0090" * (2 << 20)],
                         ids=["0x90 bytes", "all bytes", "0xd0 0x80 str", "0xc2 0x90 str"])
def test_a_long_payload_full_of_container_bytes_is_no_object(payload):
    data = jelly.dumps([1, payload])
    assert len(data) > 4 << 20
    assert jelly.loads(data, limits=jelly.Limits(max_objects=10)) == [1, payload]
