"""jelly: the safe serializer."""

from ._context import MAX_REFERENCE_KIND, Flavored, JellyContext

__all__ = ["Flavored", "JellyContext", "MAX_REFERENCE_KIND"]
