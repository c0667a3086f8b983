"""One call made on many references, its arguments jellied once.

A chat room, a cache with many observers, a notice to every client: the
same call goes to many references, each on its own connection.  Calling
each reference's ``call_remote`` jellies the method, arguments and keyword
arguments again for every one of them; :func:`call_many` and
:func:`call_many_only` jelly them once and let each connection put in only
what is its own: the request id and the target's id.  The bytes on the wire
are the same as one ``call_remote`` per reference (docs/protocol.md is
untouched), and so are the semantics: each reference gets the call in the
order it was made relative to its other calls (E-order), under its
connection's limits, and an error on one reference touches no other.

Sharing is only possible when the arguments look the same from every
connection: plain data and ``Copyable`` objects (whose state for a call is
taken with no perspective, as ``call_remote`` does).  Arguments holding a
``Referenceable``, ``Cacheable``, ``RemoteReference`` or any other
flavored object become ids that belong to one connection, so then each
reference's call is jellied on its own, as ``call_remote`` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import jelly

from ._protocol import BrokerProtocol
from ._remote import RemoteReference

__all__ = ["call_many", "call_many_only"]


def _shared_tail(method: str, args: tuple, kwargs: dict, answer_wanted: bool) -> bytes | None:
    """A CALL's last four fields, jellied for any connection, or None when
    they cannot be shared (or cannot be sent at all: each reference's own
    encoding then raises the error for it)."""
    try:
        # No connection as context: a copy's state is taken with no
        # perspective, as in any call, and a flavored argument is refused.
        packed = jelly.dumps([method, list(args), kwargs, answer_wanted])
    except jelly.JellyError:
        return None
    # Drop the 4-array's one-byte header: the core writes a 7-array's.
    return packed[1:]


def _native(ref: Any) -> BrokerProtocol | None:
    owner = getattr(ref, "_pb_owner", None)
    return owner if type(owner) is BrokerProtocol else None


def _targets(references: Iterable[RemoteReference], name: str, args: tuple, kwargs: dict,
             answer_wanted: bool) -> Iterator[tuple[RemoteReference, BrokerProtocol | None,
                                                    bytes | None]]:
    """Each reference, its native adapter (None: call it as itself, which
    also raises its own DeadReference) and the shared tail (None: the
    adapter encodes the call itself).  The tail is made at the first
    reference that can use it."""
    tail: bytes | None = None
    tried = False
    for ref in references:
        owner = _native(ref)
        if owner is None or ref._pb_released:
            yield ref, None, None
            continue
        if not tried:
            tried = True
            tail = _shared_tail(name, args, kwargs, answer_wanted)
        yield ref, owner, tail


def call_many(references: Iterable[RemoteReference], name: str, /, *args: Any,
              timeout: float | None = None, **kwargs: Any) -> list[asyncio.Future[Any]]:
    """Call ``name`` on every reference, as ``ref.call_remote(name, *args,
    timeout=timeout, **kwargs)`` would, and return one future per
    reference, in the same order.

    The arguments are jellied once for all of them when they hold no
    reference (see the module's docstring).  A reference that cannot take
    the call (released, its connection closed, no free call slot, a message
    over its connection's ``max_frame``) gets a future that has already
    failed with that error; the others are not affected.
    """
    futures: list[asyncio.Future[Any]] = []
    for ref, owner, tail in _targets(references, name, args, kwargs, True):
        try:
            if owner is None:
                futures.append(ref.call_remote(name, *args, timeout=timeout, **kwargs))
            else:
                futures.append(owner.send_call(ref._pb_id, name, args, kwargs, timeout, tail))
        except Exception as exc:  # this reference's error, not the others'
            futures.append(_failed(exc))
    return futures


def call_many_only(references: Iterable[RemoteReference], name: str, /, *args: Any,
                   **kwargs: Any) -> list[tuple[RemoteReference, Exception]]:
    """Call ``name`` on every reference without wanting answers, as
    ``ref.call_remote_only(name, *args, **kwargs)`` would, jellying the
    arguments once when they hold no reference.

    Returns the references that could not take the call, each with its
    error (``DeadReference`` for one released or whose connection closed);
    the call still went to every other reference.
    """
    failures: list[tuple[RemoteReference, Exception]] = []
    for ref, owner, tail in _targets(references, name, args, kwargs, False):
        try:
            if owner is None:
                ref.call_remote_only(name, *args, **kwargs)
            else:
                owner.send_call_only(ref._pb_id, name, args, kwargs, tail)
        except Exception as exc:
            failures.append((ref, exc))
    return failures


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
