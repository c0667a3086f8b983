"""The receiving side's registry of copy tags.

Only classes registered here are ever built from a message; a tag that is
not registered is refused with :class:`InsecureJelly` and never imported or
looked up by name anywhere else.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar, overload

from ._context import Flavored
from ._copyable import check_tag
from ._errors import InsecureJelly

__all__ = ["Registry", "default_registry", "twisted_registry", "register_copy",
           "unregister_copy"]

T = TypeVar("T", bound=type)


def _check_class(cls: object) -> type:
    if not isinstance(cls, type):
        raise TypeError(f"only classes can be registered as copies, got {cls!r}")
    if issubclass(cls, Flavored):
        raise TypeError(
            f"{cls.__qualname__} is Flavored: it travels by reference and "
            "cannot be registered as a copy"
        )
    if not callable(getattr(cls, "set_copyable_state", None)):
        raise TypeError(
            f"{cls.__qualname__} cannot receive copies: subclass jelly.RemoteCopy "
            "or define set_copyable_state(state)"
        )
    return cls


class Registry:
    """A mapping from copy tags to the classes that receive them.

    Most programs use the module default (:data:`default_registry`, through
    :func:`register_copy`); pass another ``Registry`` to ``loads`` to keep
    separate sets apart, e.g. per service or in tests.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, tag: str, cls: T) -> T: ...
    @overload
    def register(self, tag: str) -> Callable[[T], T]: ...
    @overload
    def register(self, tag: T) -> T: ...

    def register(self, tag: Any, cls: Any = None) -> Any:
        """Register ``cls`` to receive copies tagged ``tag``.

        ``register(tag, cls)`` returns ``cls``; ``@register(tag)`` decorates
        a class; ``register(cls)`` / ``@register`` use ``cls.copy_tag`` (the
        common case of one class that is both ``Copyable`` and
        ``RemoteCopy``).  Registering the same class again is harmless; a
        tag already taken by another class is a ``ValueError``.
        """
        if cls is None:
            if isinstance(tag, type):
                cls = tag
                tag = getattr(cls, "copy_tag", None)
                if tag is None:
                    raise TypeError(
                        f"{cls.__qualname__} has no copy_tag; pass the tag explicitly"
                    )
            else:
                check_tag(tag)
                return lambda klass: self.register(tag, klass)
        check_tag(tag)
        _check_class(cls)
        with self._lock:
            existing = self._classes.get(tag)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"copy tag {tag!r} is already registered to "
                    f"{existing.__module__}.{existing.__qualname__}; unregister it first"
                )
            self._classes[tag] = cls
        return cls

    def unregister(self, tag: str) -> None:
        """Forget ``tag``; ``KeyError`` if it is not registered."""
        with self._lock:
            if tag not in self._classes:
                raise KeyError(f"copy tag {tag!r} is not registered")
            del self._classes[tag]

    def lookup(self, tag: str) -> type:
        """Return the class for ``tag`` or raise :class:`InsecureJelly`."""
        cls = self._classes.get(tag)
        if cls is None:
            raise InsecureJelly(
                f"refusing copy tag {tag[:100]!r}: no class is registered for it on "
                f"this side (register one with jelly.register_copy({tag[:100]!r}, cls))"
            )
        return cls

    def __contains__(self, tag: object) -> bool:
        return tag in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def tags(self) -> list[str]:
        """The registered tags, sorted."""
        return sorted(self._classes)

    def copy(self) -> Registry:
        """A new registry with the same entries."""
        new = Registry()
        new._classes = dict(self._classes)
        return new

    def __repr__(self) -> str:
        return f"<jelly.Registry with {len(self._classes)} tags>"


#: The registry ``loads`` uses when none is given.
default_registry = Registry()


#: Copies a Twisted PB peer may send (its class names), kept apart from the
#: native tags: a name registered for one dialect is never accepted in the other.
twisted_registry = Registry()

_DIALECTS = {"native": default_registry, "twisted": twisted_registry}


def _registry_for(dialect: str) -> Registry:
    try:
        return _DIALECTS[dialect]
    except KeyError:
        raise ValueError(f"unknown dialect {dialect!r}; use 'native' or 'twisted'") from None


def register_copy(tag: Any, cls: Any = None, *, dialect: str = "native") -> Any:
    """Register a class in :data:`default_registry` (or, with
    ``dialect="twisted"``, for copies a Twisted PB peer sends under the
    class name ``tag``); see :meth:`Registry.register`."""
    return _registry_for(dialect).register(tag, cls)


def unregister_copy(tag: str, *, dialect: str = "native") -> None:
    """Remove ``tag`` from the dialect's registry."""
    _registry_for(dialect).unregister(tag)
