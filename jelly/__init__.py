"""jelly: the safe serializer.

``dumps(value)`` turns a value into msgpack bytes and ``loads(data)`` turns
them back.  Plain data (None, bool, int, float, str, bytes, list, dict) stays
on msgpack's C fast path; tuples, sets, big ints, the datetime family,
Decimal, complex, registered :class:`Copyable` objects and (over a broker
connection) :class:`Flavored` references travel as msgpack ext values.  The
decoder builds only builtin types and classes registered with
:func:`register_copy`, within :class:`Limits`.  The encoding is specified in
``docs/jelly.md``.
"""

from ._context import MAX_REFERENCE_KIND, Flavored, JellyContext
from ._copyable import Copyable, RemoteCopy
from ._decode import loads
from ._encode import dumps
from ._errors import DecodeError, EncodeError, InsecureJelly, JellyError, LimitExceeded
from ._limits import DEFAULT_LIMITS, Limits
from ._registry import Registry, default_registry, register_copy, unregister_copy

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_REFERENCE_KIND",
    "Copyable",
    "DecodeError",
    "EncodeError",
    "Flavored",
    "InsecureJelly",
    "JellyContext",
    "JellyError",
    "Limits",
    "LimitExceeded",
    "Registry",
    "RemoteCopy",
    "default_registry",
    "dumps",
    "loads",
    "register_copy",
    "unregister_copy",
]
