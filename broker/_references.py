"""The per-connection reference tables; this is the jelly context.

Ours (``local``): objects of this side the peer holds references to, each
with a count of how many times it has been sent.  The peer returns counts
with ``DECREF(id, n)`` when its proxy dies, and the entry goes when the count
reaches zero.  Because counts travel, a reference sent again while a decref
is in flight is never freed early: the peer's new proxy carries the new count.

Theirs (``remote``): weak references to the ``RemoteReference`` proxies this
side made for the peer's ids, each proxy carrying how many times its id
arrived.

Reference kinds on the wire (jelly carries them; meaning is ours):
``REMOTE(id)`` an object of the sender's; ``LOCAL(id)`` an object of the
receiver's coming home.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from ._caching import Cacheable, RemoteCache, RemoteCacheObserver, cache_class
from ._errors import InsecureJelly, LimitExceeded, PBError
from ._flavors import Perspective, Referenceable, Viewable, ViewPoint
from ._messages import brief
from ._remote import RemoteReference
from ._streaming import RemoteStream, StreamSource

__all__ = ["ReferenceTables", "REMOTE", "LOCAL", "CACHE", "CACHED", "LCACHE", "ROOT_ID"]

REMOTE = 0
LOCAL = 1
CACHE = 2
CACHED = 3
LCACHE = 4
STREAM = 5
ROOT_ID = 0


class _CacheEntry:
    __slots__ = ("obj", "count", "perspective", "observer")

    def __init__(self, obj: Any, perspective: Any, observer: Any) -> None:
        self.obj = obj
        self.count = 0
        self.perspective = perspective
        self.observer = observer


class _Entry:
    __slots__ = ("obj", "count", "perspective", "permanent")

    def __init__(self, obj: Any, perspective: Any, permanent: bool = False) -> None:
        self.obj = obj
        self.count = 0
        self.perspective = perspective
        self.permanent = permanent


def _ignore(*args: Any) -> None:
    return None


class ReferenceTables:
    """Implements ``jelly.JellyContext`` for one connection."""

    def __init__(self, owner: Any, make_proxy: Callable[[int], Any],
                 max_local: int, max_caches: int = 1024, *,
                 on_released: Callable[[int, Any], Any] | None = None,
                 on_uncached: Callable[[int, Any, bool], Any] | None = None,
                 on_cache_miss: Callable[[], Any] | None = None) -> None:
        self.owner = owner              # identifies proxies that belong here
        self._make_proxy = make_proxy
        # What the connection is told; given here, never assigned later.
        self._on_released = on_released or _ignore
        self._on_uncached = on_uncached or _ignore
        self._on_cache_miss = on_cache_miss or _ignore
        self.max_local = max_local
        self.max_caches = max_caches
        # Cacheables of ours the peer holds copies of.
        self.caches_out: dict[int, _CacheEntry] = {}
        self._cache_ids: dict[int, int] = {}
        self._next_cache_id = 1
        # Copies of the peer's Cacheables: live ones weakly, dropped ones
        # (waiting for UNCACHE) strongly, as zombies.
        self.caches_in: dict[int, weakref.ref] = {}
        self.zombies: dict[int, Any] = {}
        self.local: dict[int, _Entry] = {}
        self._ids: dict[int, int] = {}  # id(obj) -> object id; entries keep obj alive
        self._views: dict[tuple[int, int], ViewPoint] = {}
        self._next_id = ROOT_ID + 1
        self.remote: dict[int, weakref.ref] = {}
        #: Handed to Copyable.get_state_to_copy_for, and recorded for objects
        #: first sent while it is set.
        self.perspective: Any = None
        #: Object ids counted during the current encode, undone if it fails
        #: (made on the first count: most messages carry no reference).
        self._encoding = False
        self._counted: list[int] | None = None

    # -- ours -------------------------------------------------------------

    def set_root(self, obj: Any) -> None:
        self.local[ROOT_ID] = _Entry(obj, None, permanent=True)
        self._ids[id(obj)] = ROOT_ID

    def begin_encode(self, perspective: Any) -> None:
        """An encode starts: sends counted from now on are undone if it fails."""
        self.perspective = perspective
        self._encoding = True

    def end_encode(self, ok: bool) -> None:
        self._encoding = False
        counted, self._counted = self._counted, None
        if not ok and counted:
            for object_id in counted:
                if object_id < 0:
                    self._decache(-object_id, 1, peer_knows=False)
                else:
                    self._decrement(object_id, 1)

    def register(self, obj: Any) -> int:
        """Count one more send of ``obj`` and return its id."""
        object_id = self._ids.get(id(obj))
        if object_id is None:
            held = len(self.local) - (ROOT_ID in self.local)
            if held >= self.max_local:
                raise LimitExceeded(
                    f"the peer already holds {held} references to this side's "
                    f"objects (max_local_references={self.max_local}); it must release "
                    "some, or raise Limits.max_local_references"
                )
            object_id = self._next_id
            self._next_id += 1
            perspective = obj if isinstance(obj, Perspective) else self.perspective
            self.local[object_id] = _Entry(obj, perspective)
            self._ids[id(obj)] = object_id
        entry = self.local[object_id]
        if not entry.permanent:
            entry.count += 1
            self._note_count(object_id)
        return object_id

    def _note_count(self, key: int) -> None:
        if self._encoding:
            if self._counted is None:
                self._counted = [key]
            else:
                self._counted.append(key)

    def decref(self, object_id: int, count: int) -> None:
        """The peer dropped ``count`` sends of ``object_id``.  Raises
        RemoteProtocolError-worthy ValueError for an unknown id or an over-count.
        The root is never counted: a DECREF of id 0 (which an older peer may
        send, even to a side without a root) is ignored."""
        if object_id == ROOT_ID:
            return
        entry = self.local.get(object_id)
        if entry is None:
            raise ValueError(f"DECREF of object id {brief(object_id)}, which the peer does not hold")
        if entry.permanent:
            return
        if count > entry.count:
            raise ValueError(
                f"DECREF of object id {brief(object_id)} by {brief(count)}, but it was sent only {entry.count} times"
            )
        self._decrement(object_id, count)

    def _decrement(self, object_id: int, count: int) -> None:
        entry = self.local[object_id]
        entry.count -= count
        if entry.count <= 0 and not entry.permanent:
            del self.local[object_id]
            del self._ids[id(entry.obj)]
            obj = entry.obj
            if type(obj) is ViewPoint:
                self._views.pop((id(obj.viewable), id(obj.perspective)), None)
            self._on_released(object_id, entry)

    # -- jelly.JellyContext -------------------------------------------------

    def flavor_out(self, obj: Any) -> tuple[int, tuple[Any, ...]]:
        if isinstance(obj, RemoteReference):
            if obj._pb_owner is not self.owner:
                raise PBError(
                    f"{obj!r} belongs to another connection; a reference can only be "
                    "sent back over the connection it came from"
                )
            if obj._pb_released:
                raise PBError(f"{obj!r} was released and cannot be sent")
            return LOCAL, (obj._pb_id,)
        if isinstance(obj, Referenceable):
            return (STREAM if type(obj) is StreamSource else REMOTE), (self.register(obj),)
        if isinstance(obj, Viewable):
            return REMOTE, (self._register_view(obj),)
        if isinstance(obj, Cacheable):
            return self._cache_out(obj)
        if isinstance(obj, RemoteCache):
            if obj.__dict__.get("_pb_owner") is not self.owner:
                raise PBError(f"{obj!r} is a cache from another connection and cannot be sent here")
            return LCACHE, (obj._pb_cache_id,)
        raise PBError(f"{type(obj).__qualname__} objects cannot be sent over a broker connection")

    def _register_view(self, viewable: Viewable) -> int:
        """Count one more send of ``viewable`` as seen by the current
        perspective; its ViewPoint is remembered only once it has an id."""
        key = (id(viewable), id(self.perspective))
        view = self._views.get(key)
        if view is None:
            view = ViewPoint(viewable, self.perspective)
            object_id = self.register(view)  # may raise LimitExceeded: nothing kept
            self._views[key] = view
            return object_id
        return self.register(view)

    def flavor_in(self, kind: int, args: tuple[Any, ...]) -> Any:
        if kind == CACHE:
            return self._cache_in(args)
        if len(args) != 1 or type(args[0]) is not int:
            raise InsecureJelly(f"malformed reference {kind}{brief(args)}")
        object_id = args[0]
        if kind == REMOTE or kind == STREAM:
            ref = self.remote.get(object_id)
            proxy = ref() if ref is not None else None
            if proxy is None or proxy._pb_released:  # released, or finalized just now
                proxy = self._make_proxy(object_id)
                self.remote[object_id] = weakref.ref(proxy)
            proxy._pb_count += 1
            return RemoteStream(proxy) if kind == STREAM else proxy
        if kind == LOCAL:
            entry = self.local.get(object_id)
            if entry is None:
                raise InsecureJelly(f"the peer named object id {brief(object_id)}, which it does not hold")
            obj = entry.obj
            return obj.viewable if type(obj) is ViewPoint else obj
        cache_id = object_id
        if kind == CACHED:
            cache = self.live_cache(cache_id)
            if cache is None:
                self._on_cache_miss()
                cache = self.zombies.pop(cache_id, None)
                if cache is None:
                    raise InsecureJelly(f"the peer named cache id {brief(cache_id)}, which was never sent")
                cache._pb_count = 0
                self.caches_in[cache_id] = weakref.ref(cache)
            cache._pb_count += 1
            return cache
        if kind == LCACHE:
            entry = self.caches_out.get(cache_id)
            if entry is None:
                raise InsecureJelly(f"the peer named cache id {brief(cache_id)}, which it does not hold")
            return entry.obj
        raise InsecureJelly(f"unknown reference kind {kind}")

    # -- caches -----------------------------------------------------------------

    def _cache_out(self, obj: Cacheable) -> tuple[int, tuple[Any, ...]]:
        cache_id = self._cache_ids.get(id(obj))
        if cache_id is not None:
            entry = self.caches_out[cache_id]
            entry.count += 1
            self._note_count(-cache_id)
            return CACHED, (cache_id,)
        if len(self.caches_out) >= self.max_caches:
            raise LimitExceeded(
                f"the peer already holds {len(self.caches_out)} cached objects of this side "
                f"(max_caches={self.max_caches}); it must drop some, or raise Limits.max_caches")
        cache_id = self._next_cache_id
        self._next_cache_id += 1
        perspective = self.perspective
        observer = RemoteCacheObserver(self.owner, cache_id, perspective)
        state = obj.get_state_to_cache_and_observe_for(perspective, observer)
        entry = _CacheEntry(obj, perspective, observer)
        entry.count = 1
        self.caches_out[cache_id] = entry
        self._cache_ids[id(obj)] = cache_id
        self._note_count(-cache_id)
        return CACHE, (cache_id, obj.cache_tag, state)

    def _cache_in(self, args: tuple[Any, ...]) -> Any:
        if len(args) != 3 or type(args[0]) is not int or type(args[1]) is not str:
            raise InsecureJelly(f"malformed cache {brief(args, 200)}")
        cache_id, tag, state = args
        cls = cache_class(tag)
        if cls is None:
            raise InsecureJelly(
                f"cache tag {tag!r} is not registered here; the receiver must call "
                f"broker.register_cache({tag!r}, SomeRemoteCache)")
        if self.live_cache(cache_id) is not None or cache_id in self.zombies:
            raise InsecureJelly(f"the peer sent cache id {brief(cache_id)} twice")
        held = len(self.caches_in) + len(self.zombies)
        if held >= self.max_caches:
            raise LimitExceeded(
                f"this side already keeps {held} cached objects of the peer's, dropped ones "
                f"waiting for UNCACHE included (max_caches={self.max_caches}); drop some, "
                "or raise Limits.max_caches")
        cache = cls.__new__(cls)
        cache.set_copyable_state(state)
        cache._pb_owner = self.owner
        cache._pb_cache_id = cache_id
        cache._pb_count = 1
        self.caches_in[cache_id] = weakref.ref(cache)
        return cache

    def live_cache(self, cache_id: int) -> Any:
        ref = self.caches_in.get(cache_id)
        cache = ref() if ref is not None else None
        if cache is None or "_pb_finalized" in cache.__dict__:  # see RemoteCache.__del__
            return None
        return cache

    def cache_target(self, cache_id: int) -> Any:
        """The cache (live or zombie) a CACHE_CALL for ``cache_id`` reaches."""
        cache = self.live_cache(cache_id)  # a cache may be falsy (an empty one with __len__)
        return cache if cache is not None else self.zombies.get(cache_id)

    def cache_dropped(self, cache_id: int, state: dict, cls: type) -> None:
        """Our last reference to a peer's cache died: keep a zombie with its
        state until the owner's UNCACHE."""
        if self.live_cache(cache_id) is not None:
            return
        self.caches_in.pop(cache_id, None)
        zombie = cls.__new__(cls)
        zombie.__dict__.update(state)
        zombie._pb_count = 0
        self.zombies[cache_id] = zombie

    def uncache(self, cache_id: int) -> None:
        zombie = self.zombies.pop(cache_id, None)
        if zombie is None:
            raise ValueError(f"UNCACHE of cache id {brief(cache_id)}, which this side did not drop")
        zombie._pb_dead = True

    def decache(self, cache_id: int, count: int) -> _CacheEntry | None:
        """The peer dropped ``count`` receipts; return the entry if it is gone."""
        entry = self.caches_out.get(cache_id)
        if entry is None:
            raise ValueError(f"DECACHE of cache id {brief(cache_id)}, which the peer does not hold")
        if count > entry.count:
            raise ValueError(
                f"DECACHE of cache id {brief(cache_id)} by {brief(count)}, but it was sent only {entry.count} times")
        return self._decache(cache_id, count)

    def _decache(self, cache_id: int, count: int, peer_knows: bool = True) -> _CacheEntry | None:
        entry = self.caches_out[cache_id]
        entry.count -= count
        if entry.count > 0:
            return None
        del self.caches_out[cache_id]
        del self._cache_ids[id(entry.obj)]
        self._on_uncached(cache_id, entry, peer_knows)
        return entry

    # -- theirs ---------------------------------------------------------------

    def forget_proxy(self, object_id: int) -> None:
        """Drop the table entry for a dead or released proxy (if still dead)."""
        ref = self.remote.get(object_id)
        if ref is not None:
            proxy = ref()
            if proxy is None or proxy._pb_released:
                del self.remote[object_id]

    def root_proxy(self, make_proxy: Callable[[int], Any]) -> Any:
        """A counted proxy for the peer's root object: the live one, or one
        made by ``make_proxy`` (given here, not the table's own: this works
        after clear() too, for a connection already closed)."""
        ref = self.remote.get(ROOT_ID)
        proxy = ref() if ref is not None else None
        if proxy is None or proxy._pb_released:
            proxy = make_proxy(ROOT_ID)
            self.remote[ROOT_ID] = weakref.ref(proxy)
        proxy._pb_count += 1
        return proxy

    def held_by_peer(self) -> int:
        """How many of our objects the peer holds references to."""
        return sum(1 for e in self.local.values() if not e.permanent)

    def live_proxies(self) -> list[Any]:
        return [p for p in (r() for r in self.remote.values()) if p is not None]

    def clear(self) -> tuple[list[_Entry], list[_CacheEntry]]:
        """Forget everything (connection gone); return what the peer held.

        Nothing can arrive any more, so the connection's callbacks are let
        go too: a closed connection's objects then go by reference counting,
        without waiting for the cyclic collector (a server makes a
        connection per login)."""
        self.owner = None
        self._make_proxy = self._on_released = self._on_uncached = _ignore
        self._on_cache_miss = _ignore
        entries = [e for e in self.local.values() if not e.permanent]
        caches = list(self.caches_out.values())
        self.local.clear()
        self._ids.clear()
        self._views.clear()
        self.remote.clear()
        self.caches_out.clear()
        self._cache_ids.clear()
        for zombie in self.zombies.values():
            zombie._pb_dead = True
        self.zombies.clear()
        for ref in self.caches_in.values():
            cache = ref()
            if cache is not None:
                cache._pb_dead = True
        self.caches_in.clear()
        return entries, caches
