"""Helpers shared by the jelly tests: exact comparison and a fake context."""

from __future__ import annotations

import math
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import jelly


def same(a: Any, b: Any) -> bool:
    """Deep equality that also demands equal types, and treats NaN as equal
    to NaN, -0.0 as different from 0.0, and time zones as equal only when
    they are the same kind of zone with the same offset, name or key."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if type(a) is Decimal:
        return repr(a) == repr(b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        keys_b = {key: key for key in b}
        return all(
            key in keys_b and same(key, keys_b[key]) and same(value, b[keys_b[key]])
            for key, value in a.items()
        )
    if type(a) in (set, frozenset):
        if len(a) != len(b):
            return False
        items_b = {item: item for item in b}
        return all(item in items_b and same(item, items_b[item]) for item in a)
    if type(a) in (datetime, time):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and same_tz(a.tzinfo, b.tzinfo)
        )
    return bool(a == b)


def same_tz(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if a is None:
        return True
    key = getattr(a, "key", None)
    if key is not None:
        return key == getattr(b, "key", None)
    return a.utcoffset(None) == b.utcoffset(None) and a.tzname(None) == b.tzname(None)


def round_trip(value: Any, **kwargs: Any) -> Any:
    return jelly.loads(jelly.dumps(value), **kwargs)


class Remote(jelly.Flavored):
    """A stand-in for a broker's Referenceable."""

    def __init__(self, name: str) -> None:
        self.name = name


class Ref:
    """What the fake context hands back for a reference."""

    def __init__(self, kind: int, args: tuple) -> None:
        self.kind = kind
        self.args = args

    def __repr__(self) -> str:
        return f"Ref({self.kind}, {self.args!r})"


class FakeContext:
    """A dict-backed JellyContext: objects go out as (kind 2, (id,)) and come
    back as the same object if this side sent it, else as a Ref."""

    def __init__(self, perspective: Any = None, refuse_kinds: tuple[int, ...] = ()) -> None:
        self.perspective = perspective
        self.refuse_kinds = refuse_kinds
        self.sent: dict[int, Any] = {}
        self.out_calls: list[Any] = []
        self.in_calls: list[tuple[int, tuple]] = []

    def flavor_out(self, obj: jelly.Flavored) -> tuple[int, tuple[Any, ...]]:
        self.out_calls.append(obj)
        self.sent[id(obj)] = obj
        return 2, (id(obj), getattr(obj, "name", None))

    def flavor_in(self, kind: int, args: tuple[Any, ...]) -> Any:
        self.in_calls.append((kind, args))
        if kind in self.refuse_kinds:
            raise jelly.InsecureJelly(f"kind {kind} refused by the fake context")
        if kind == 2 and args and args[0] in self.sent:
            return self.sent[args[0]]
        return Ref(kind, args)
