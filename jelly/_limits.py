"""Decode limits: one frozen :class:`Limits` and its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Limits", "DEFAULT_LIMITS"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the decoder enforces before it spends memory or time.

    ``max_size``
        Total bytes of one message.  Checked before anything else.
    ``max_depth``
        Nesting of containers (list, dict, tuple, set, frozenset, copy,
        reference arguments).  A scalar has depth 0, ``[]`` depth 1,
        ``[[1]]`` depth 2.  A shared copy counts at each place it appears; a
        reference back into a copy still being decoded counts as a leaf.
    ``max_items``
        Elements of one array or entries of one map.  Checked from the
        header, before allocation.
    ``max_str_len`` / ``max_bin_len``
        UTF-8 bytes of one ``str`` / bytes of one ``bytes``.  Default:
        ``max_size``.
    ``max_int_bits``
        ``int.bit_length()`` of an integer outside msgpack's 64-bit range,
        and the coefficient of a ``Decimal`` (in the same number of bits).
    ``max_composite_keys``
        Map keys (and set elements) of a type whose hash a peer can force to
        collide (tuple, frozenset, big int, Decimal, complex, copies) allowed
        in one map or set.  See ``docs/jelly.md``.
    ``max_objects``
        Lists, maps and ext values (tuples, sets, copies, references, dates,
        ...) built for one message, those inside ext payloads included: a
        tuple counts 2, its ext value and the array it holds.  Bounds the
        decode's time and memory, which go to containers, not bytes (a 4 MiB
        message can hold 4 million empty lists).  Counted as they are built
        only in messages longer than ``max_objects`` bytes (each object takes
        at least one byte), and refused at ``max_objects + 1``.
    """

    max_size: int = 16 * _MIB
    max_depth: int = 64
    max_items: int = 100_000
    max_str_len: int = None  # type: ignore[assignment]  # None means max_size
    max_bin_len: int = None  # type: ignore[assignment]  # None means max_size
    max_int_bits: int = 65_536
    max_composite_keys: int = 4096
    max_objects: int = 100_000
    # Derived once, for the decoder's fast path: a message no longer than
    # this cannot hit max_str_len, max_bin_len or max_items, so msgpack's own
    # length-based defaults are exact and no limit arguments need passing.
    _small: int = field(init=False, repr=False, compare=False)
    # Shorter messages cannot exceed any limit but a ext-made one, so plain
    # ones are decoded without any decoder state (bounded so that re-decoding
    # one that turns out to hold an ext value costs next to nothing).
    _tiny: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_str_len is None:
            object.__setattr__(self, "max_str_len", self.max_size)
        if self.max_bin_len is None:
            object.__setattr__(self, "max_bin_len", self.max_size)
        for name in (
            "max_size",
            "max_depth",
            "max_items",
            "max_str_len",
            "max_bin_len",
            "max_int_bits",
            "max_composite_keys",
            "max_objects",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        small = min(self.max_str_len, self.max_bin_len, self.max_items, self.max_size)
        object.__setattr__(self, "_small", small)
        object.__setattr__(
            self, "_tiny", min(small, self.max_depth, self.max_objects, 256)
        )


DEFAULT_LIMITS = Limits()
