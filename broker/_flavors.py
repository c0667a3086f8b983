"""The flavors: what kind of access a peer gets to an object.

Exposure is decided once per class, when the class is created: every
attribute whose name starts with the class's prefix is collected into a
table, and dispatch is a dict lookup in that table.  A peer's string is never
passed to ``getattr``.  A name is reachable only if what follows the prefix
is a plain identifier that does not start with an underscore; anything else
under a prefix is a class-definition error, so mistakes show at import time.

========================  =================  ==============================
flavor                    prefix             the peer gets
========================  =================  ==============================
``Referenceable``/``Root``  ``remote_``        a ``RemoteReference``
``Perspective``            ``perspective_``   a reference (what login gives)
``Viewable``               ``view_``          a reference bound to the
                                              perspective it was sent through;
                                              methods receive it first
========================  =================  ==============================
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import jelly

from ._threads import exposed

__all__ = ["Referenceable", "Root", "Perspective", "Viewable", "ViewPoint", "lookup_method"]


def _build_table(cls: type, prefix: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if not attr.startswith(prefix):
                continue
            name = attr[len(prefix):]
            if value is None:
                # ``remote_x = None`` in a subclass withdraws an inherited method.
                table.pop(name, None)
                continue
            if not name.isidentifier() or name.startswith("_"):
                raise TypeError(
                    f"{cls.__qualname__}.{attr}: the part after {prefix!r} must be a "
                    "plain identifier not starting with '_'"
                )
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not callable(func):
                raise TypeError(
                    f"{cls.__qualname__}.{attr} is not callable; attributes named "
                    f"{prefix}* are exposed to peers and must be methods"
                )
            table[name] = value
    class_wide = bool(getattr(cls, "pb_in_thread", False))
    return {name: exposed(value, class_wide) for name, value in table.items()}


class _Exposed(jelly.Flavored):
    """Shared machinery: one exposure table per class, built at creation."""

    __slots__ = ()
    _pb_prefix: ClassVar[str] = "remote_"
    _pb_methods: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if issubclass(cls, jelly.Copyable):
            raise TypeError(f"{cls.__qualname__}: a class cannot be both copied and referenced")
        cls._pb_methods = _build_table(cls, cls._pb_prefix)


class Referenceable(_Exposed):
    """An object the peer receives as a ``RemoteReference``; its
    ``remote_<name>`` methods are reachable as ``name``."""

    __slots__ = ("__weakref__",)
    _pb_prefix = "remote_"


class Root(Referenceable):
    """The object a server publishes; each connection's ``root()`` reaches it.

    Override :meth:`root_object` to give each connection its own root.
    """

    __slots__ = ()

    def root_object(self, connection: Any) -> Referenceable:
        return self


class Perspective(Referenceable):
    """An avatar: what a login returns.  Only ``perspective_<name>`` methods
    are reachable.  ``attached(mind)`` runs when a client logs in to it and
    ``detached(mind)`` exactly once when that login ends (logout, the client
    dropping its reference, or the connection closing)."""

    __slots__ = ()
    _pb_prefix = "perspective_"

    def attached(self, mind: Any) -> None:
        """Called when a login through this perspective starts."""

    def detached(self, mind: Any) -> None:
        """Called exactly once when that login ends."""


class Viewable(_Exposed):
    """An object whose ``view_<name>(perspective, ...)`` methods learn which
    perspective is calling: each perspective it is sent through gets its own
    reference, bound to that perspective."""

    __slots__ = ("__weakref__",)
    _pb_prefix = "view_"


class ViewPoint(jelly.Flavored):
    """A Viewable as seen by one perspective (what actually gets an id)."""

    __slots__ = ("viewable", "perspective")

    def __init__(self, viewable: Viewable, perspective: Any) -> None:
        self.viewable = viewable
        self.perspective = perspective


def lookup_method(obj: Any, name: str) -> Callable[..., Any] | None:
    """The bound method ``name`` reachable on ``obj``, or None."""
    if type(obj) is ViewPoint:
        viewable = obj.viewable
        desc = type(viewable)._pb_methods.get(name)
        if desc is None:
            return None
        bound = desc.__get__(viewable, type(viewable))
        perspective = obj.perspective
        return lambda *a, **k: bound(perspective, *a, **k)
    methods = getattr(type(obj), "_pb_methods", None)
    if methods is None:
        return None
    desc = methods.get(name)
    if desc is None:
        return None
    return desc.__get__(obj, type(obj))
