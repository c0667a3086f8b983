"""A bounded, seeded fuzz run: mutated encodings decode or raise a JellyError."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import jelly

from ._support import FakeContext, Remote

SEED = 20240611
ROUNDS = 12_000


class Node(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.fuzz.Node"

    def __init__(self, name, links=()):
        self.name = name
        self.links = list(links)


def corpus() -> list[bytes]:
    context = FakeContext()
    a, b = Node("a"), Node("b", [(1, 2)])
    a.links = [a, b, {"back": b}]
    values = [
        None, 0, -1, 2**64, -(2**100), 1.5, "text", b"\x00\xff", [], {},
        [1, 17, 0, "echo", ["hello"], {}, True],
        {"id": 7, "name": "user7", "score": 10.5, "tags": ["x", "y"]},
        (1, (2, (3, ()))), {1, 2, 3}, frozenset({(1, 2), "s"}),
        {(1, 2): [3], frozenset({4}): {5: 6}},
        datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 1, 2), date(2024, 2, 29), timedelta(days=-1, microseconds=3),
        Decimal("-1.5E-7"), Decimal("sNaN12"), complex(1, -1),
        a, [a, b, a], Remote("r"), [Remote("r"), {"k": (Remote("s"),)}],
        [[[[["deep"]]]]], ["p" * 300, {"q": list(range(40))}],
    ]
    return [jelly.dumps(value, context=context) for value in values]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    choice = rng.randrange(7)
    if choice == 0 and buf:  # flip one bit
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    elif choice == 1 and buf:  # replace a byte
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif choice == 2:  # truncate
        del buf[rng.randrange(len(buf) + 1):]
    elif choice == 3:  # insert random bytes
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    elif choice == 4:  # splice with another encoding
        other = rng.choice(others)
        buf = buf[: rng.randrange(len(buf) + 1)] + other[rng.randrange(len(other) + 1):]
    elif choice == 5 and buf:  # duplicate a slice
        i = rng.randrange(len(buf))
        j = rng.randrange(i, min(len(buf), i + 16) + 1)
        buf[j:j] = buf[i:j]
    elif buf:  # set a byte to an interesting value
        buf[rng.randrange(len(buf))] = rng.choice(
            [0x00, 0x7F, 0x80, 0x90, 0xC1, 0xC7, 0xD4, 0xD9, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF]
        )
    return bytes(buf)


def test_ten_thousand_mutated_inputs_raise_only_jelly_errors():
    registry = jelly.Registry()
    registry.register(Node)
    tight = jelly.Limits(max_size=4096, max_depth=6, max_items=64, max_str_len=256,
                         max_bin_len=64, max_int_bits=128, max_composite_keys=8)
    rng = random.Random(SEED)
    seeds = corpus()
    outcomes = {"decoded": 0, "refused": 0}
    for round_ in range(ROUNDS):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(rng, data, seeds)
        limits = tight if round_ % 3 == 0 else None
        try:
            jelly.loads(data, context=FakeContext(), registry=registry, limits=limits)
            outcomes["decoded"] += 1
        except jelly.JellyError:
            outcomes["refused"] += 1
        except BaseException as exc:  # pragma: no cover - the failure we hunt
            raise AssertionError(
                f"round {round_}: {type(exc).__name__}: {exc} for input {data.hex()}"
            ) from exc
    assert outcomes["decoded"] > 500 and outcomes["refused"] > 500, outcomes
