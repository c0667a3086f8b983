"""Keys whose hashes a peer can choose: counted on the fast path, checked
per map and set in safe mode, and crafted collisions refused."""

from __future__ import annotations

import pytest

import jelly
from jelly import _codes, _decode

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


def test_a_map_of_colliding_tuple_keys_is_refused_before_it_is_built(monkeypatch):
    # Building a dict of m colliding keys costs m*m/2 comparisons (3000 of
    # them: 4.5 million), which is what the attacker wants us to spend.  The
    # decoder must refuse the map with no dict ever holding more than
    # MAX_SAME_HASH of its keys, so the comparisons stay of the order of
    # MAX_SAME_HASH**2 however many keys are sent.  (Deterministic: what is
    # counted is the work, not the time it takes.)
    pairs = colliding_pairs(3000)
    data = jelly.dumps(dict.fromkeys(pairs))
    decoded = {"fast": 0, "safe": 0}
    real_tuple = _decode._HANDLERS[_codes.TUPLE]

    def counting_tuple(dec, code, payload):
        decoded["safe" if dec.safe else "fast"] += 1
        return real_tuple(dec, code, payload)

    maps: list[tuple[int, str]] = []  # (pairs offered, outcome) per safe-mode map
    real_pairs_hook = _decode._Decoder.pairs_hook

    def watching_pairs_hook(dec, map_pairs):
        try:
            built = real_pairs_hook(dec, map_pairs)
        except jelly.InsecureJelly:
            maps.append((len(map_pairs), "refused"))
            raise
        maps.append((len(map_pairs), "built"))
        return built

    monkeypatch.setitem(_decode._HANDLERS, _codes.TUPLE, counting_tuple)
    monkeypatch.setattr(_decode._Decoder, "pairs_hook", watching_pairs_hook)
    with pytest.raises(jelly.InsecureJelly, match="share one hash"):
        jelly.loads(data)
    # The fast pass (msgpack builds the dict in C, a key as soon as it is
    # decoded) gave up at the first key past MAX_SAME_HASH with one hash...
    assert 0 < decoded["fast"] <= _decode.MAX_SAME_HASH + 1
    # ...and the safe pass decoded the keys as a list of pairs and refused
    # that list before making a dict of it.
    assert decoded["safe"] == len(pairs)
    assert maps == [(len(pairs), "refused")]


class Colliding(jelly.Copyable, jelly.RemoteCopy):
    """A copy whose instances all share one hash and count their comparisons."""

    copy_tag = "test.composite.Colliding"
    compared = 0

    def __init__(self, n):
        self.n = n

    def __hash__(self):
        return 0x5EED

    def __eq__(self, other):
        type(self).compared += 1
        return isinstance(other, Colliding) and self.n == other.n


def test_refusing_a_map_of_colliding_keys_compares_keys_a_bounded_number_of_times(registry):
    # Counted where the int pairs above cannot be: a dict of these 3000
    # tuple keys costs about 4.5 million comparisons, each a call of
    # Colliding.__eq__.  The fast pass puts at most MAX_SAME_HASH of them in
    # its dict before it gives up (about MAX_SAME_HASH**2 / 2 comparisons),
    # and the safe pass must refuse the map without building it.
    registry.register(Colliding)
    keys = [(Colliding(i),) for i in range(3000)]
    data = jelly.dumps(dict.fromkeys(keys))
    Colliding.compared = 0
    with pytest.raises(jelly.InsecureJelly, match="share one hash"):
        jelly.loads(data, registry=registry)
    assert Colliding.compared <= _decode.MAX_SAME_HASH ** 2


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
