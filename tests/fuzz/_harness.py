"""What a harness is: a function fed one input, and the exceptions its
parser documents.  Anything else escaping is a finding."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass
class KnownBug:
    """An undocumented exception we know of and have not fixed yet: the
    harness lets it pass so CI stays green, and says why."""

    exception: type[BaseException]
    message: str  # a substring of str(exc)
    reason: str


@dataclasses.dataclass
class Harness:
    name: str
    description: str
    one_input: Callable[[bytes], None]
    #: The parser's documented exceptions: these may escape one_input.
    allowed: tuple[type[BaseException], ...]
    known_bugs: tuple[KnownBug, ...] = ()

    def run(self, data: bytes) -> None:
        """Feed one input; raise only if the contract is broken."""
        try:
            self.one_input(data)
        except self.allowed:
            pass
        except Exception as exc:
            for bug in self.known_bugs:
                if isinstance(exc, bug.exception) and bug.message in str(exc):
                    return
            raise


def check_limits(value: object, *, max_depth: int, max_items: int) -> None:
    """Assert a decoded value nests no deeper than max_depth and holds no
    container of more than max_items.  Iterative: a value deeper than the
    recursion limit must not crash the checker instead of the parser."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if id(item) in seen:
            continue
        if isinstance(item, (list, tuple, set, frozenset, dict)):
            seen.add(id(item))
            depth += 1
            assert depth <= max_depth, f"decoded value nests {depth} deep, max_depth={max_depth}"
            assert len(item) <= max_items, f"container of {len(item)} items, max_items={max_items}"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            # An object's state counts at the object's own level (at most as
            # deep as jelly counts it, so the check never over-reports).
            seen.add(id(item))
            children = list(vars(item).values())
        else:
            continue
        stack.extend((child, depth) for child in children)
