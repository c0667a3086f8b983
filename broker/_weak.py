"""Callbacks that do not keep their object alive.

The adapter owns its helpers (dispatcher, call table, flow control) and hands
them its own methods as callbacks; held weakly, those make no cycle to break
when the connection closes.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

__all__ = ["weak_method"]


def weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, called without keeping its object alive (a no-op
    returning None once the object is gone)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)
    return call
