"""Calling the context for references, the same way from any wire dialect.

The codecs call :func:`reference_out` when they meet a ``Flavored`` object
and :func:`reference_in` when they meet a reference; both check what the
context did and turn its failures into jelly errors.  Nothing here knows
about msgpack.
"""

from __future__ import annotations

from typing import Any

from ._context import MAX_REFERENCE_KIND, Flavored, JellyContext
from ._errors import DecodeError, EncodeError, InsecureJelly, JellyError

__all__ = ["reference_in", "reference_out"]


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def reference_out(context: JellyContext | None, obj: Flavored) -> tuple[int, tuple[Any, ...]]:
    """``(kind, args)`` for a Flavored object being sent; ``EncodeError`` if impossible."""
    if context is None:
        raise EncodeError(
            f"cannot send {_name(type(obj))}: it is Flavored (sent by reference) "
            "and can only be sent over a broker connection, not with a bare "
            "jelly.dumps()"
        )
    try:
        kind, args = context.flavor_out(obj)
    except JellyError:
        raise
    except Exception as exc:
        raise EncodeError(
            f"the connection could not send {_name(type(obj))} by reference: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if type(kind) is not int or not 0 <= kind <= MAX_REFERENCE_KIND:
        raise EncodeError(
            f"context.flavor_out() returned reference kind {kind!r}; it must be "
            f"an int from 0 to {MAX_REFERENCE_KIND}"
        )
    if type(args) is not tuple:
        raise EncodeError(
            f"context.flavor_out() returned {type(args).__name__} arguments; "
            "they must be a tuple"
        )
    return kind, args


def check_context(context: JellyContext | None, kind: int) -> JellyContext:
    """The context to resolve a reference of ``kind`` with; refused without one."""
    if context is None:
        raise InsecureJelly(
            f"refusing a reference (kind {kind}): references only make sense on a "
            "broker connection, and loads() was called without a context"
        )
    return context


def reference_in(context: JellyContext, kind: int, args: tuple[Any, ...]) -> Any:
    """The object a received reference stands for; failures become jelly errors."""
    try:
        return context.flavor_in(kind, args)
    except JellyError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"the context could not resolve reference kind {kind} "
            f"{args!r:.80}: {type(exc).__name__}: {exc}"
        ) from exc
