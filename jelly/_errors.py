"""The jelly error tree.

::

    JellyError                 base of everything jelly raises on purpose
    ├── EncodeError            a value that cannot be sent (raised by dumps)
    ├── DecodeError            bytes that are not a well-formed jelly message
    ├── InsecureJelly          well-formed, but asks for something refused
    └── LimitExceeded          well-formed, but bigger than the receiver allows

The four leaves are *plain* subclasses: they add no required constructor
arguments, so another layer can multiply-inherit them
(``class InsecureJelly(PBError, jelly.InsecureJelly)``) and raise its own
class from a context hook; jelly lets any ``JellyError`` propagate unchanged.
Extra detail lives in optional attributes set after construction.
"""

from __future__ import annotations

__all__ = [
    "JellyError",
    "EncodeError",
    "DecodeError",
    "InsecureJelly",
    "LimitExceeded",
]


class JellyError(Exception):
    """Base class of every error jelly raises deliberately."""


class EncodeError(JellyError):
    """A value cannot be encoded; the message names its type and the fix."""


class DecodeError(JellyError):
    """The bytes are truncated, garbage or otherwise malformed."""


class InsecureJelly(JellyError):
    """The message asks for something the receiver refuses to build.

    An unregistered copy tag, an unknown ext code, a reference without a
    connection context, or a reference kind the context does not accept.
    """


class LimitExceeded(JellyError):
    """A decode limit was hit.

    ``limit`` is the name of the :class:`jelly.Limits` field, ``value`` what
    the message asked for and ``maximum`` the configured bound (each ``None``
    when not known).
    """

    limit: str | None = None
    value: int | None = None
    maximum: int | None = None


def limit_exceeded(
    limit: str, description: str, value: int | None, maximum: int
) -> LimitExceeded:
    """Build a :class:`LimitExceeded` naming what was too big, the limit and the fix.

    ``description`` says what was met, e.g. ``"a str of 2000000 bytes"``.
    """
    err = LimitExceeded(
        f"{description} exceeds {limit}={maximum}; if the peer is trusted, raise "
        f"the limit on the receiving side with jelly.Limits({limit}=...)"
    )
    err.limit = limit
    err.value = value
    err.maximum = maximum
    return err
