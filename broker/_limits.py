"""Per-connection limits, all in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

import jelly

from ._fields import MIN_MAX_FRAME

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
    #: Bytes a server may hold queued for a peer that does not read.  Past
    #: it the server stops reading from that peer (so it produces no more
    #: answers), and closes the connection if the backlog is still past it
    #: after ``write_stall_timeout`` seconds.
    max_write_buffer: int = 8 * MiB
    #: The same cap before the peer has logged in (on a server that asks for
    #: a login) or sent its HELLO: a stranger gets much less.
    preauth_write_buffer: int = 256 * 1024
    #: Seconds a peer may stay past its write cap before it is dropped.
    write_stall_timeout: float = 30.0
    #: On a server that publishes a login portal: seconds a connection may
    #: stay without logging in (None: for ever).
    login_timeout: float | None = 30.0
    #: Lists, maps and ext values (tuples, sets, copies, references, ...)
    #: decoded from one message, counted as they are built.
    max_objects: int = 100_000
    #: Past the calls that may wait for answers (ours, or the peer's smaller
    #: limit from its HELLO), a new call waits for a slot (True) or fails at
    #: once with LimitExceeded (False).
    wait_for_call_slot: bool = True
    # (New fields go last, so that positional Limits(...) calls keep their meaning.)

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_depth", "max_items", "max_objects",
                     "max_outstanding_calls", "max_local_references", "max_caches",
                     "handshake_bytes", "max_write_buffer", "preauth_write_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")
        for name in ("write_stall_timeout", "login_timeout"):
            value = getattr(self, name)
            if value is None and name == "login_timeout":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"Limits.{name} must be a positive number of seconds, not {value!r}")
        if self.max_frame < MIN_MAX_FRAME:
            raise ValueError(f"Limits.max_frame must be at least {MIN_MAX_FRAME} "
                             f"(docs/protocol.md section 1), not {self.max_frame}")
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
