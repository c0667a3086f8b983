"""Opcodes and the shape of each message (docs/protocol.md is normative).

Every message is a msgpack array whose first element is the opcode.  The
fields after it are listed here once; the core validates incoming messages
against these arities and types before acting on them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROTOCOL_NAME", "PROTOCOL_VERSION", "FEATURES", "Op", "FIELDS", "ERROR_CODES",
           "GOODBYE_CODES", "brief"]

PROTOCOL_NAME = "pb"
PROTOCOL_VERSION = 1
#: Optional capabilities this implementation offers in HELLO.
FEATURES: tuple[str, ...] = ("cancel", "ping")


class Op:
    HELLO = 0        # [0, name, version, features, max_frame, max_calls?]
    CALL = 1         # [1, req_id, target_id, method, args, kwargs, answer_wanted]
    ANSWER = 2       # [2, req_id, value]
    ERROR = 3        # [3, req_id, code, type_name, message, traceback|nil, copy|nil]
    DECREF = 4       # [4, object_id, count]
    CACHE_CALL = 5   # [5, cache_id, method, args, kwargs]
    DECACHE = 6      # [6, cache_id, count]
    UNCACHE = 7      # [7, cache_id]
    CANCEL = 8       # [8, req_id]
    PING = 9         # [9, token]
    PONG = 10        # [10, token]
    GOODBYE = 11     # [11, code, reason]


#: How many fields follow each opcode (HELLO: at least this many; later
#: fields are optional or for future versions).  The core checks every
#: incoming message against this before reading it.
FIELDS: dict[int, int] = {
    Op.HELLO: 4,
    Op.CALL: 6,
    Op.ANSWER: 2,
    Op.ERROR: 6,
    Op.DECREF: 2,
    Op.CACHE_CALL: 4,
    Op.DECACHE: 2,
    Op.UNCACHE: 1,
    Op.CANCEL: 1,
    Op.PING: 1,
    Op.PONG: 1,
    Op.GOODBYE: 2,
}

#: ERROR's ``code`` field: what kind of failure, so the caller can raise the
#: matching local exception.
ERROR_CODES = (
    "remote-error",    # the method raised; type_name/message describe it
    "no-such-method",  # no reachable method of that name
    "no-such-object",  # the target id is not (or no longer) held
    "insecure-jelly",  # the call carried something the receiver refuses
    "limit-exceeded",  # a limit was hit while handling the call
    "cancelled",       # the call was cancelled (answer to CANCEL)
    "shutting-down",   # the receiver is closing and takes no new calls
)

#: GOODBYE's ``code`` field.
GOODBYE_CODES = ("normal", "shutdown", "protocol-error", "version", "limit-exceeded", "timeout")


def brief(value: Any, limit: int = 100) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about what a
    peer sent.  Never raises: a peer's int may be too long for ``str()``
    (``sys.get_int_max_str_digits``), and a long value is not worth echoing."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}..."
