"""Field constraints docs/protocol.md states for every implementation: the
smallest ``max_frame``, the ``req_id`` range, and an ``ERROR`` cut to fit
the peer's ``max_frame`` (protocol.md sections 1 and 2.2)."""

from __future__ import annotations

import jelly

__all__ = ["MIN_MAX_FRAME", "MAX_REQ_ID", "valid_req_id", "error_body"]

#: No side may announce (or configure) a smaller max_frame: below it a
#: shortened ERROR could not carry its envelope and a useful message.
MIN_MAX_FRAME = 1024
#: The largest req_id: 2**53 - 1, so that a double (JavaScript's number)
#: and a 64-bit int both hold every req_id exactly.
MAX_REQ_ID = 2 ** 53 - 1
#: UTF-8 bytes of ERROR.type kept when the ERROR must be shortened.
_TYPE_BYTES = 256
_CUT = " ... (truncated to fit max_frame)"
_ERROR = 3


def valid_req_id(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_REQ_ID


def _head(text: str, size: int) -> str:
    """The longest start of ``text`` within ``size`` UTF-8 bytes."""
    return text.encode("utf-8")[:max(size, 0)].decode("utf-8", "ignore")


def _tail(text: str, size: int) -> str:
    """The longest end of ``text`` within ``size`` UTF-8 bytes."""
    data = text.encode("utf-8")
    return data[len(data) - max(size, 0):].decode("utf-8", "ignore")


def error_body(req_id: int, code: str, type_name: str, message: str, tb: str | None,
               copy: bytes | None, limit: int) -> bytes:
    """The body of an ERROR, whole if it fits in ``limit`` bytes; otherwise
    without ``copy``, with ``type`` cut to 256 bytes, and ``message`` (its
    start) and ``traceback`` (its end) cut so that the frame fits.  ``limit``
    is at least :data:`MIN_MAX_FRAME`, which always leaves room."""
    body = jelly.dumps([_ERROR, req_id, code, type_name, message, tb, copy])
    if len(body) <= limit:
        return body
    type_name = _head(type_name, _TYPE_BYTES)
    fixed = len(jelly.dumps([_ERROR, req_id, code, type_name, "", None, None]))
    # Each of the two texts may need a str header of up to 5 bytes.
    budget = limit - fixed - 10
    tb_bytes = 0 if tb is None else len(tb.encode("utf-8"))
    tb_budget = min(tb_bytes, budget // 2)
    msg_budget = budget - tb_budget
    if len(message.encode("utf-8")) > msg_budget:
        message = _head(message, msg_budget - len(_CUT)) + _CUT
    else:
        tb_budget = budget - len(message.encode("utf-8"))
    if tb is not None and tb_bytes > tb_budget:
        tb = "(truncated to fit max_frame) ..." + _tail(tb, tb_budget - 32)
    body = jelly.dumps([_ERROR, req_id, code, type_name, message, tb, None])
    assert len(body) <= limit, (len(body), limit)
    return body
