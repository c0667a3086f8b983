"""Property tests: generated values round-trip exactly; random bytes raise
nothing but the declared errors."""

from __future__ import annotations

import zoneinfo
from datetime import timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jelly

from ._support import FakeContext, Remote, same

ZONES = st.sampled_from([
    None,
    timezone.utc,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-3), "BRT"),
    timezone(-timedelta(hours=23, minutes=59, microseconds=999_999)),
    zoneinfo.ZoneInfo("Europe/Paris"),
    zoneinfo.ZoneInfo("America/New_York"),
    zoneinfo.ZoneInfo("UTC"),
])


def scalars(hashable: bool):
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**300), max_value=2**300),
        st.floats(allow_nan=not hashable),
        st.text(),
        st.binary(),
        st.datetimes(timezones=ZONES),
        st.dates(),
        st.times(timezones=ZONES),
        st.timedeltas(),
        st.decimals(allow_nan=not hashable),
        st.complex_numbers(allow_nan=not hashable),
    )


HASHABLES = st.recursive(
    scalars(hashable=True),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)


class Box(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.properties.Box"

    def __init__(self, content):
        self.content = content

    def __eq__(self, other):
        return type(other) is Box and same(self.content, other.content)

    __hash__ = None  # type: ignore[assignment]


REGISTRY = jelly.Registry()
REGISTRY.register(Box)

VALUES = st.recursive(
    scalars(hashable=False),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(HASHABLES, inner, max_size=5),
        st.sets(HASHABLES, max_size=5),
        st.frozensets(HASHABLES, max_size=5),
        st.builds(Box, inner),
    ),
    max_leaves=25,
)

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(VALUES)
def test_generated_values_round_trip_exactly(value):
    assert same(jelly.loads(jelly.dumps(value), registry=REGISTRY), value)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([Remote("a"), Remote("b")]), max_size=4), VALUES)
def test_references_mixed_into_values_round_trip(remotes, value):
    context = FakeContext()
    out = jelly.loads(jelly.dumps([remotes, value], context=context), context=context,
                      registry=REGISTRY)
    assert out[0] == remotes and same(out[1], value)


def _decodes_or_declares(data: bytes) -> None:
    try:
        jelly.loads(data, context=FakeContext(), registry=REGISTRY)
    except jelly.JellyError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_declared_errors(data):
    _decodes_or_declares(data)


EXT_CODES = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x10, 0x11, 0x20, 0x2F]


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(EXT_CODES), st.binary(max_size=60), st.binary(max_size=20))
def test_random_ext_payloads_raise_only_declared_errors(code, payload, prefix):
    header = b"\xc7" + bytes((len(payload), code))
    _decodes_or_declares(header + payload)
    _decodes_or_declares(b"\x92" + prefix[:1] + header + payload)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.data())
def test_truncated_encodings_raise_only_declared_errors(value, data):
    encoded = jelly.dumps(value)
    cut = data.draw(st.integers(min_value=0, max_value=max(0, len(encoded) - 1)))
    _decodes_or_declares(encoded[:cut])
