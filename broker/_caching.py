"""Cacheable and RemoteCache: state sent once, then kept up to date.

The owner's ``Cacheable`` is sent with its state the first time it goes to a
peer (``CACHE``) and by id after that (``CACHED``), so the peer always gets
the same ``RemoteCache`` instance.  The owner is handed an *observer* for
that peer: ``observer.call_remote("name", ...)`` runs the peer cache's
``observe_name(...)`` (one-way, in order with everything else on the
connection).  When the peer drops its last reference it sends ``DECACHE``;
the owner calls ``stopped_observing`` once and answers ``UNCACHE``.

The race: the peer drops its cache (DECACHE in flight) while the owner sends
it again by id.  The peer therefore keeps the dropped instance's state alive
(a "zombie" instance) until the owner's UNCACHE, and a CACHED that arrives in
between revives it; counts on both sides make the owner's bookkeeping agree.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import jelly

from ._flavors import _Exposed

__all__ = ["Cacheable", "RemoteCache", "RemoteCacheObserver", "register_cache",
           "unregister_cache", "cache_class"]

_CACHE_CLASSES: dict[str, type] = {}


class Cacheable(jelly.Flavored):
    """An object whose state is copied to each peer once and then updated.

    Override :meth:`get_state_to_cache_and_observe_for` to return the state
    and remember the observer; override :meth:`stopped_observing` to forget
    it.  ``cache_tag`` (default ``module.QualName``) names the class the
    receiver registered with :func:`register_cache`.
    """

    __slots__ = ("__weakref__",)
    cache_tag: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "cache_tag" not in cls.__dict__:
            cls.cache_tag = f"{cls.__module__}.{cls.__qualname__}"
        if issubclass(cls, jelly.Copyable):
            raise TypeError(f"{cls.__qualname__}: a class cannot be both copied and cached")

    def get_state_to_cache_and_observe_for(self, perspective: Any,
                                           observer: RemoteCacheObserver) -> Any:
        """The state to send to a new observer (default: a copy of ``__dict__``)."""
        return dict(getattr(self, "__dict__", {}))

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        """The peer behind ``observer`` dropped its copy, or disconnected."""


class RemoteCache(_Exposed):
    """The receiving side of a Cacheable: ``observe_<name>`` methods are
    what the owner's observer calls.  Register subclasses with
    :func:`register_cache`.  Instances are made without calling ``__init__``;
    :meth:`set_copyable_state` receives the owner's state."""

    _pb_prefix = "observe_"
    # Instances need a __dict__ (the state lives there) and weak references.

    def set_copyable_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise jelly.InsecureJelly(
                f"{type(self).__qualname__} got a {type(state).__name__} state; override "
                "set_copyable_state to accept it")
        self.__dict__.update(state)

    def __del__(self) -> None:
        # Gone from here on: telling the loop (from another thread, perhaps)
        # may release the GIL while the loop can still reach this cache
        # through its weak table; it must revive the dropped state instead.
        if "_pb_finalized" in self.__dict__:
            return
        self.__dict__["_pb_finalized"] = True
        owner = self.__dict__.get("_pb_owner")
        if owner is not None and not self.__dict__.get("_pb_dead"):
            try:
                owner.cache_died(self)
            except Exception:  # interpreter shutdown, closed loop
                pass


class RemoteCacheObserver:
    """The owner's handle on one peer's copy of a Cacheable."""

    __slots__ = ("_owner", "_cache_id", "perspective")

    def __init__(self, owner: Any, cache_id: int, perspective: Any) -> None:
        self._owner = owner
        self._cache_id = cache_id
        self.perspective = perspective

    def call_remote(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run ``observe_<name>(*args, **kwargs)`` on the peer's cache.

        One-way: nothing comes back.  A call after the peer dropped its copy
        (or disconnected) is silently discarded.
        """
        self._owner.send_cache_call(self._cache_id, name, args, kwargs)

    @property
    def is_alive(self) -> bool:
        return self._owner.cache_is_held(self._cache_id)

    def __repr__(self) -> str:
        return f"<RemoteCacheObserver cache={self._cache_id} on {self._owner.describe()}>"


def register_cache(tag: str, cls: type | None = None) -> Any:
    """Let ``cls`` (a RemoteCache subclass) receive Cacheables tagged ``tag``.

    Also usable as a decorator: ``@register_cache("myapp.Board")``.
    """
    def register(klass: type) -> type:
        if not isinstance(klass, type) or not issubclass(klass, RemoteCache):
            raise TypeError(f"{klass!r} is not a RemoteCache subclass")
        if not isinstance(tag, str) or not tag:
            raise TypeError("a cache tag must be a non-empty string")
        _CACHE_CLASSES[tag] = klass
        return klass

    return register if cls is None else register(cls)


def unregister_cache(tag: str) -> None:
    _CACHE_CLASSES.pop(tag, None)


def cache_class(tag: str) -> type | None:
    return _CACHE_CLASSES.get(tag)


ObserverFactory = Callable[[int, Any], RemoteCacheObserver]
