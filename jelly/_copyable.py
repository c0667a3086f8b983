"""Copies: the sender's :class:`Copyable` and the receiver's :class:`RemoteCopy`.

A copy travels as a *tag* (a string naming the class, registered on the
receiving side) and a *state* (any jelly value, by default a dict of
attributes).  This module holds the state machinery only; it knows nothing
about msgpack, so any wire dialect can drive it through :func:`state_for`,
:func:`blank_instance` and :func:`restore`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._context import Flavored
from ._errors import DecodeError, EncodeError, JellyError

__all__ = ["Copyable", "RemoteCopy", "check_tag"]

MAX_TAG_BYTES = 256


def check_tag(tag: object) -> str:
    """Return ``tag`` if it is a valid copy tag, else raise ``TypeError``/``ValueError``.

    A tag is a non-empty printable ``str`` of at most 256 UTF-8 bytes.
    """
    if type(tag) is not str:
        raise TypeError(f"a copy tag must be a str, got {type(tag).__name__}")
    if not tag or not tag.isprintable() or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise ValueError(
            f"invalid copy tag {tag[:80]!r}: it must be a non-empty printable "
            f"str of at most {MAX_TAG_BYTES} UTF-8 bytes"
        )
    return tag


def _default_tag(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Copyable:
    """Base for objects sent *by value*: the receiver gets a fresh copy.

    ``copy_tag`` names the class on the wire.  By default it is
    ``"module.QualName"``, computed when the class is created; set
    ``copy_tag = "..."`` in the class body to choose a stable name that
    survives moving the class.  Each class gets its own default; a subclass
    never inherits its parent's tag.

    The state sent is ``get_state_to_copy_for(perspective)``, which by
    default returns ``get_state_to_copy()``: a shallow copy of ``__dict__``;
    for exceptions (``BaseException`` subclasses) ``args`` is added under
    the key ``"args"`` as a tuple.  Override either method to send less, or
    to show each perspective its own view.

    A class cannot be both ``Copyable`` and ``Flavored``: one crosses the
    wire by value, the other by reference.
    """

    __slots__ = ()
    copy_tag: ClassVar[str] = "jelly.Copyable"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if issubclass(cls, Flavored):
            raise TypeError(
                f"{cls.__qualname__} cannot be both Copyable (sent by value) and "
                "Flavored (sent by reference); pick one"
            )
        if "copy_tag" in cls.__dict__:
            check_tag(cls.__dict__["copy_tag"])
        else:
            cls.copy_tag = check_tag(_default_tag(cls))

    def get_state_to_copy(self) -> Any:
        """Return the state to send; default: ``__dict__`` (plus exception args)."""
        return default_state(self)

    def get_state_to_copy_for(self, perspective: Any) -> Any:
        """Return the state to send to ``perspective`` (``None`` when unknown)."""
        return self.get_state_to_copy()


class RemoteCopy:
    """Base for the receiving side of a copy.

    The decoder makes an instance with ``cls.__new__(cls)`` (``__init__`` is
    *not* called) and then calls ``set_copyable_state(state)``.  The default
    restores exception ``args`` (for ``BaseException`` subclasses) and
    updates ``__dict__`` with the rest, refusing a state that is not a dict
    with ``str`` keys or that would shadow a method, property or other
    descriptor of the class.  Override it to validate or convert state;
    raising any exception there makes ``loads`` fail with ``DecodeError``.
    """

    __slots__ = ()

    def set_copyable_state(self, state: Any) -> None:
        """Restore this copy from ``state`` (see the class docstring)."""
        restore_default(self, state)


def default_state(obj: object) -> dict[str, Any]:
    """The default state of a copy: its ``__dict__``, plus ``args`` for exceptions."""
    try:
        attrs = obj.__dict__
    except AttributeError:
        raise TypeError(
            f"{type(obj).__qualname__} has no __dict__ (it uses __slots__); "
            "override get_state_to_copy() to say what to send"
        ) from None
    state = dict(attrs)
    if isinstance(obj, BaseException):
        state["args"] = obj.args
    return state


# Names a copy's state may not set, per class: everything the class (or a
# base) defines that is callable or a descriptor.  Filled on first use.
_protected_cache: dict[type, frozenset[str]] = {}
_STR_ONLY = frozenset({str})


def _protected(cls: type) -> frozenset[str]:
    names = _protected_cache.get(cls)
    if names is None:
        found = set()
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                if callable(value) or hasattr(type(value), "__get__"):
                    found.add(name)
        names = _protected_cache[cls] = frozenset(found)
    return names


def restore_default(obj: object, state: Any) -> None:
    """The default ``set_copyable_state``: see :class:`RemoteCopy`."""
    cls = type(obj)
    if type(state) is not dict:
        raise TypeError(
            f"the state of a {cls.__qualname__} copy must be a dict, got {type(state).__name__}"
        )
    if isinstance(obj, BaseException) and "args" in state:
        state = dict(state)
        args = state.pop("args")
        if type(args) is not tuple:
            raise TypeError(f"exception args must be a tuple, got {type(args).__name__}")
        obj.args = args
    if not state:
        return
    if not _STR_ONLY.issuperset(map(type, state)):
        raise TypeError(f"the state of a {cls.__qualname__} copy has non-str keys")
    clash = _protected(cls).intersection(state)
    if clash:
        raise TypeError(
            f"the state of a {cls.__qualname__} copy would replace "
            f"{', '.join(sorted(clash)[:5])}, which the class defines as methods "
            "or descriptors; refused"
        )
    obj.__dict__.update(state)


# --- what the codecs call ---------------------------------------------------


def state_for(obj: Copyable, perspective: Any) -> Any:
    """Ask ``obj`` for its state; any failure becomes ``EncodeError``."""
    try:
        return obj.get_state_to_copy_for(perspective)
    except JellyError:
        raise
    except Exception as exc:
        raise EncodeError(
            f"{type(obj).__qualname__}.get_state_to_copy_for() failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def blank_instance(cls: type, tag: str) -> Any:
    """Make an instance of a registered class without calling ``__init__``."""
    try:
        return cls.__new__(cls)
    except Exception as exc:
        raise DecodeError(
            f"cannot create a {cls.__qualname__} for copy tag {tag!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def restore(obj: Any, state: Any, tag: str) -> None:
    """Hand ``state`` to ``obj.set_copyable_state``; failure becomes ``DecodeError``."""
    try:
        obj.set_copyable_state(state)
    except JellyError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"copy tag {tag!r}: {type(obj).__qualname__}.set_copyable_state() "
            f"refused the state: {type(exc).__name__}: {exc}"
        ) from exc
