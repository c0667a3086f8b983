"""Keys whose hashes a peer can choose: counted on the fast path, checked
per map and set in safe mode, and crafted collisions refused."""

from __future__ import annotations

import time

import pytest

import jelly
from jelly import _decode

from ._support import FakeContext, Remote

M64 = (1 << 64) - 1
P1, P2, P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def colliding_pairs(count, target=0x5EED):
    """`count` distinct (int, int) tuples that all have hash `target`.

    CPython's tuple hash is an unkeyed xxHash-style mix of the items'
    hashes, and an int's hash is the int modulo 2**61 - 1, so for each first
    item the second one can be solved for.
    """
    inverse = pow(P2, -1, 1 << 64)
    want = ((target >> 31) | (target << 33)) & M64  # rotate right 31
    out = []
    first = 1
    while len(out) < count:
        acc = (_rotl((P5 + (hash(first) & M64) * P2) & M64, 31) * P1) & M64
        lane = ((want - acc) * inverse) & M64
        second = lane if lane < (1 << 61) - 1 else lane - (1 << 64)
        if second != -1 and hash(second) & M64 == lane:
            out.append((first, second))
        first += 1
    return out


def test_the_crafted_keys_really_collide():
    pairs = colliding_pairs(200)
    assert len(set(pairs)) == 200 and len({hash(p) for p in pairs}) == 1


def test_a_map_of_colliding_tuple_keys_is_refused_quickly():
    pairs = colliding_pairs(3000)
    start = time.perf_counter()
    attack = dict.fromkeys(pairs)  # what the attacker wants us to spend
    dict_time = time.perf_counter() - start
    data = jelly.dumps(attack)
    start = time.perf_counter()
    with pytest.raises(jelly.InsecureJelly, match="share one hash"):
        jelly.loads(data)
    assert time.perf_counter() - start < dict_time / 4


def test_a_set_of_colliding_tuples_is_refused():
    data = jelly.dumps(set(colliding_pairs(500)))
    with pytest.raises(jelly.InsecureJelly, match="share one hash"):
        jelly.loads(data)


def test_colliding_tuples_as_values_still_decode():
    pairs = colliding_pairs(300)
    assert jelly.loads(jelly.dumps(pairs)) == pairs


def test_a_few_colliding_keys_are_fine():
    value = {pair: 1 for pair in colliding_pairs(_decode.MAX_SAME_HASH)}
    assert jelly.loads(jelly.dumps(value)) == value


def test_ten_thousand_tuples_as_values_decode():
    value = [(i, str(i)) for i in range(10_000)]
    assert jelly.loads(jelly.dumps(value)) == value


def test_ten_thousand_equal_tuples_as_values_decode():
    value = [(0, 0)] * 10_000
    assert jelly.loads(jelly.dumps(value)) == value


def test_many_maps_each_under_the_limit_decode_in_safe_mode():
    value = [{(i, j): j for j in range(1000)} for i in range(6)]
    assert jelly.loads(jelly.dumps(value)) == value


def test_str_int_and_float_keys_never_count():
    value = {**{i: i for i in range(6000)}, **{str(i): i for i in range(6000)},
             **{i + 0.5: i for i in range(6000)}}
    assert jelly.loads(jelly.dumps(value)) == value


def test_big_int_keys_count_as_composite():
    value = {2**64 + i: i for i in range(5000)}
    with pytest.raises(jelly.LimitExceeded, match="max_composite_keys"):
        jelly.loads(jelly.dumps(value))


class Item(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.composite.Item"

    def __init__(self, n):
        self.n = n

    def set_copyable_state(self, state):
        type(self).restored += 1
        super().set_copyable_state(state)

    restored = 0


def test_safe_mode_restores_each_copy_once_and_keeps_identity(registry):
    registry.register(Item)
    shared = Item(-1)
    items = [Item(i) for i in range(20)]
    value = [shared, items, [(i,) for i in range(5000)], shared, items[3]]
    Item.restored = 0
    out = jelly.loads(jelly.dumps(value), registry=registry)
    assert Item.restored == 21
    assert out[0] is out[3] and out[4] is out[1][3]
    assert [item.n for item in out[1]] == list(range(20))


def test_safe_mode_calls_flavor_in_once_per_reference():
    context = FakeContext()
    remotes = [Remote(str(i)) for i in range(10)]
    value = [remotes, [(i,) for i in range(5000)], remotes[:3]]
    out = jelly.loads(jelly.dumps(value, context=context), context=context)
    assert len(context.in_calls) == 13
    assert out[0] == remotes and out[2] == remotes[:3]
