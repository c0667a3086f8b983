"""Our banana codec against Twisted's own (twisted.spread.banana), value by
value: the same bytes out, and Twisted's bytes decoded back, whole or split
at every byte."""

from __future__ import annotations

import pytest

from broker.twisted._banana import Decoder, encode

banana = pytest.importorskip("twisted.spread.banana", reason="Twisted is not installed (the "
                             "test extra pulls it in)")

VALUES = [
    0, 1, 127, 128, 2**31 - 1, 2**31, 2**64 + 3, -1, -128, -(2**31), -(2**31) - 1, -(2**70),
    0.0, -2.5, 1e300,
    b"", b"x", b"y" * 127, b"z" * 128, b"w" * 20_000,
    b"message", b"answer", b"tuple", b"unicode", b"dictionary", b"None",  # vocabulary
    [], [1, [2, [3, []]]], list(range(300)), [b"answer", 7, [b"unicode", b"hello"]],
    [b"answer", 9000, 127, 128, 16383, 16384, 2**21, -200], list(range(0, 40000, 97)),
    [[b"unicode", b"a"], [b"unicode", b"b" * 127], [b"unicode", b"c" * 128], [b"unicode", 5],
     [b"unicode"], [b"unicode", b"d", b"e"], [b"none", b"x"]],
    [b"message", 12, b"root", b"echo", 1, [b"tuple", [b"unicode", b"hi"], 5, -3, 1.5],
     [b"dictionary", [[b"unicode", b"k"], [b"list", b"v" * 200, 2**40]]]],
    [[b"tuple"] + [[b"unicode", b"item%d" % i], i, i * 0.5] for i in range(200)],
]


def twisted_bytes(value) -> bytes:
    codec = banana.Banana()
    codec.setPrefixLimit(banana._PREFIX_LIMIT)
    codec._selectDialect(b"pb")
    out: list[bytes] = []
    codec._encode(value, out.append)
    return b"".join(out)


def decoder() -> Decoder:
    d = Decoder(max_bytes=1 << 20, max_depth=100, max_items=100_000, max_objects=100_000)
    d.vocabulary = True
    return d


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_our_bytes_are_twisteds_and_we_decode_twisteds(value):
    theirs = twisted_bytes(value)
    assert encode(value) == theirs
    expected = [value] if type(value) is not tuple else [list(value)]
    assert decoder().feed(theirs) == expected
    if len(theirs) < 5_000:  # every split point, for the tokens cut in two
        for cut in range(1, len(theirs)):
            d = decoder()
            assert d.feed(theirs[:cut]) + d.feed(theirs[cut:]) == expected, cut
    d = decoder()
    got = [x for i in range(0, len(theirs), 3) for x in d.feed(theirs[i:i + 3])]
    assert got == expected


def test_several_expressions_in_one_feed():
    stream = b"".join(twisted_bytes(v) for v in VALUES[:20])
    assert decoder().feed(stream) == VALUES[:20]
