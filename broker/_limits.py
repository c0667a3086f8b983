"""Per-connection limits, all in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

import jelly

__all__ = ["Limits", "DEFAULT_LIMITS"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost.  Every field is checked before memory is
    spent; raising one is a deliberate choice (bulk data should stream)."""

    #: Largest frame body accepted or sent, in bytes.
    max_frame: int = 4 * MiB
    #: Nesting depth of a decoded message.
    max_depth: int = 64
    #: Items in one list, map, set or tuple.
    max_items: int = 100_000
    #: Calls one side may have waiting for answers, and calls the peer may
    #: have running here at once.
    max_outstanding_calls: int = 1024
    #: Objects of ours the peer may hold references to.
    max_local_references: int = 10_000
    #: Cacheables of ours the peer may hold copies of, and copies of the
    #: peer's Cacheables this side keeps (a dropped one counts until the
    #: owner's UNCACHE).
    max_caches: int = 1024
    #: Bytes accepted before the peer's HELLO completes.
    handshake_bytes: int = 16 * 1024
    #: Seconds allowed for the handshake.
    handshake_timeout: float = 10.0
    #: Seconds between keepalive pings on an idle connection (None: never).
    keepalive_interval: float | None = 30.0
    #: Seconds of silence after which the peer is declared dead (None: never).
    #: Defaults to three missed keepalives.
    idle_timeout: float | None = 90.0
    #: Lists, maps and ext values (tuples, sets, copies, references, ...)
    #: decoded from one message, counted as they are built.  (Last, so that
    #: the fields before it keep their positions.)
    max_objects: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_depth", "max_items", "max_objects",
                     "max_outstanding_calls", "max_local_references", "max_caches",
                     "handshake_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")
        if self.max_frame > 0xFFFFFFFF:
            raise ValueError("Limits.max_frame cannot exceed the 32-bit length header")

    def jelly_limits(self) -> jelly.Limits:
        return jelly.Limits(
            max_size=self.max_frame,
            max_depth=self.max_depth,
            max_items=self.max_items,
            max_objects=self.max_objects,
            max_str_len=self.max_frame,
            max_bin_len=self.max_frame,
        )


DEFAULT_LIMITS = Limits()
