"""The seam between the serializer and whatever carries its bytes.

jelly turns values into bytes without knowing about connections.  Some
objects, though, only make sense relative to a connection: a
``Referenceable`` travels as an id the receiver can call back through, a
``RemoteReference`` going home travels as the id its owner gave it.  Those
objects subclass :class:`Flavored`, and the encoder hands each of them to the
*context* it was given, which answers with a reference *kind* and a tuple of
arguments.  The decoder hands the kind and the decoded arguments back to the
receiving side's context, which turns them into an object.

The kinds are small integers (0 to 15) whose meaning belongs to the context's
owner (the broker documents its own in ``docs/protocol.md``); jelly only
carries them.  Nothing here knows about msgpack, so another wire dialect can
drive the same contexts.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Flavored", "JellyContext", "MAX_REFERENCE_KIND"]

#: Reference kinds are 0..MAX_REFERENCE_KIND inclusive.
MAX_REFERENCE_KIND = 15


class Flavored:
    """Base for objects that cross the wire only by reference.

    The encoder never looks inside a ``Flavored`` object: it asks the
    context.  Encoding one without a context is an error, because there is
    no connection for the reference to live in.
    """

    __slots__ = ()


@runtime_checkable
class JellyContext(Protocol):
    """What a connection offers the encoder and the decoder.

    ``perspective`` is handed to ``Copyable.get_state_to_copy_for`` so that an
    object can show each peer its own view; it is ``None`` when nobody has
    logged in.
    """

    perspective: Any

    def flavor_out(self, obj: Flavored) -> tuple[int, tuple[Any, ...]]:
        """Return ``(kind, args)`` for a flavored object being sent.

        ``args`` are encoded like any other value, so they may hold further
        references, copies or plain data.
        """
        ...

    def flavor_in(self, kind: int, args: tuple[Any, ...]) -> Any:
        """Return the object that ``(kind, args)`` stands for on this side.

        Raise ``jelly.InsecureJelly`` (or a subclass) for a kind or id the
        context does not accept; the decoder lets it propagate.
        """
        ...
