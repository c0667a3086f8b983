"""Nesting depth of decoded values, measured without a Python call per item.

msgpack's C unpacker has no depth option, so depth is checked after it has
built the value, one *level* at a time: every container at depth ``d`` is
gathered, their children are scanned by C iterators (``map``, ``filter``,
``itertools.chain``), and the containers among them become level ``d + 1``.

Two ways to scan a level's children:

* While the message has produced no ext containers (``recorded`` is empty),
  only GC-tracked children can be containers: CPython tracks every list, and
  tracks a dict as soon as a list or dict (or another GC object) is put in
  it, and never untracks one that holds such a value.  So a dict of scalars
  is skipped without looking at its values, and ``filter(gc.is_tracked)``
  picks the candidates out of a list.  (msgpack builds dicts with
  ``PyDict_SetItem``, which keeps that invariant.)
* Once ext containers exist, tuples may have been untracked by a garbage
  collection run, so every child's type is looked at.

The first way is the depth trick (bench/README.md, "Speed tricks": using
only the second costs bench_calls' 1,000-dict row +86 % CPU per call).

Values made by ext hooks (tuple, set, copy, reference, ...) carry their own
depth, measured when they were built and kept in ``recorded`` by ``id``;
they count as leaves of that depth.  msgpack's timestamp type, which jelly
does not accept, is refused here because this is the one place that sees
every container's contents.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from gc import is_tracked
from itertools import chain, compress, repeat
from operator import is_, not_

from msgpack import Timestamp

from ._errors import InsecureJelly, limit_exceeded

_is_list = partial(is_, list)
_is_dict = partial(is_, dict)
_values = dict.values
_chain = chain.from_iterable


def _timestamp_refused() -> InsecureJelly:
    return InsecureJelly(
        "refusing msgpack ext code -1 (timestamp): jelly sends datetimes with its "
        "own ext code"
    )


def _too_deep(depth: int, limit: int) -> Exception:
    return limit_exceeded("max_depth", f"a nesting depth of {depth}", depth, limit)


def _children(lists, dicts):
    """One iterator over the items of `lists` and the keys and values of `dicts`."""
    if not dicts:
        return _chain(lists)
    parts = [_chain(map(_values, dicts)), _chain(dicts)]
    if lists:
        parts.append(_chain(lists))
    return _chain(parts)


# Types with no nesting that msgpack or a scalar ext value produces.
SCALARS = frozenset(
    {str, int, float, bool, bytes, type(None), datetime, date, time, timedelta, Decimal, complex}
)
_is_scalar = SCALARS.__contains__


def _measure_small(root: object, limit: int, recorded: dict[int, int], budget: int) -> int | None:
    """Exact depth of a list or dict by looking at its items one by one.

    Faster than the level walk for the small values ext payloads usually
    hold (a copy's state, a tuple's items); gives up (``None``) past
    ``budget`` items so that big payloads go to the level walk.
    """
    todo = [(root, 1)]
    deepest = 1
    scalars = SCALARS
    while todo:
        value, depth = todo.pop()
        if type(value) is dict:
            budget -= 2 * len(value)
            items = [*value.values(), *value]
        else:
            budget -= len(value)  # type: ignore[arg-type]
            items = value
        if budget < 0:
            return None
        for item in items:
            kind = type(item)
            if kind in scalars:
                continue
            if kind is list or kind is dict:
                if depth >= deepest:
                    deepest = depth + 1
                    if deepest > limit:
                        raise _too_deep(deepest, limit)
                todo.append((item, depth + 1))
            elif kind is Timestamp:
                raise _timestamp_refused()
            elif recorded:
                inner = recorded.get(id(item))
                if inner and depth + inner > deepest:
                    deepest = depth + inner
                    if deepest > limit:
                        raise _too_deep(deepest, limit)
    return deepest


def measure(
    root: object, limit: int, recorded: dict[int, int], exact: bool, hidden: int = 0
) -> int:
    """Return the depth of ``root``; raise ``LimitExceeded`` past ``limit``.

    ``recorded`` maps ``id()`` of ext-made values to their depth; ``hidden``
    is the greatest depth recorded for a tuple (see :func:`_walk`).  With
    ``exact`` false the result is only guaranteed to be ``<= limit``.
    """
    kind = type(root)
    if kind is list:
        lists, dicts = [root], []
    elif kind is dict:
        lists, dicts = [], [root]
    else:
        if kind is Timestamp:
            raise _timestamp_refused()
        return recorded.get(id(root), 0) if recorded else 0
    if exact:
        small = _measure_small(root, limit, recorded, 64)
        if small is not None:
            return small
        if recorded:
            return _walk(lists, dicts, limit, recorded, False, True)[0]
        return _walk(lists, dicts, limit, recorded, True, True)[0]
    deepest, reach = _walk(lists, dicts, limit, recorded, True, False)
    if reach + hidden <= limit:
        return deepest
    # Tuples the GC may have untracked could sit below `reach`: look at all.
    return _walk(lists, dicts, limit, recorded, False, False)[0]


def _walk(
    lists: list, dicts: list, limit: int, recorded: dict[int, int], use_gc: bool, exact: bool
) -> tuple[int, int]:
    """Level walk from the containers ``lists`` and ``dicts`` at depth 1.

    Returns ``(deepest, reach)``: the deepest depth seen (exact in type mode,
    and a true lower bound in GC mode) and the deepest level a container may
    sit at.  In GC mode (``use_gc``) only GC-tracked children are looked at.
    That sees every list, dict and ext-made object except tuples that a
    garbage collection untracked because they hold only scalars (and the
    dicts holding only such tuples and scalars): those can only hide below
    ``reach``, at most as deep as the deepest tuple recorded, so the caller
    checks ``reach + hidden`` and walks again in type mode if that is too
    deep.
    """
    depth = deepest = 1
    while True:
        # `lists` and `dicts` hold the containers at `depth`.
        if use_gc and dicts:
            dicts = list(filter(is_tracked, dicts))
        if not lists and not dicts:
            return deepest, depth
        here = (lists, dicts)
        kids = _children(lists, dicts)
        if use_gc:
            candidates = list(filter(is_tracked, kids))
        else:
            kids = list(kids)
            candidates = list(compress(kids, map(not_, map(_is_scalar, map(type, kids)))))
        lists = dicts = ()
        if candidates:
            types = set(map(type, candidates))
            if Timestamp in types:
                raise _timestamp_refused()
            has_list = list in types
            has_dict = dict in types
            if recorded and len(types) > has_list + has_dict:
                inner = max(map(recorded.get, map(id, candidates), repeat(0)))
                if depth + inner > deepest:
                    deepest = depth + inner
                    if deepest > limit:
                        raise _too_deep(deepest, limit)
            if has_list:
                lists = candidates if len(types) == 1 else list(
                    compress(candidates, map(_is_list, map(type, candidates)))
                )
            if has_dict:
                dicts = candidates if len(types) == 1 else list(
                    compress(candidates, map(_is_dict, map(type, candidates)))
                )
        if lists or dicts:
            depth += 1
            if depth > limit:
                raise _too_deep(depth, limit)
            if depth > deepest:
                deepest = depth
            continue
        if not use_gc:
            return deepest, depth
        # Last level in GC mode: dicts of scalars one level down were filtered
        # out unseen.  Look for them only when they could change the answer.
        if exact or depth >= limit:
            if dict in set(map(type, _children(*here))):
                if depth + 1 > limit:
                    raise _too_deep(depth + 1, limit)
                deepest = max(deepest, depth + 1)
                return deepest, depth + 1
            return deepest, depth
        return deepest, depth + 1
