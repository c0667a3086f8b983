"""Twisted's banana token stream, sans-IO: values to bytes and bytes to values.

Every token is a base-128 number (seven bits a byte, least significant
first, at most ``PREFIX_LIMIT`` bytes) followed by one type byte:

=========  =====  ==========================================
LIST       0x80   the number is how many items follow
INT        0x81   a non-negative int below 2**31
STRING     0x82   the number is the byte length that follows
NEG        0x83   a negative int down to -2**31
FLOAT      0x84   no number; 8 bytes, a big-endian double
LONGINT    0x85   a larger non-negative int
LONGNEG    0x86   a smaller negative int
VOCAB      0x87   an index in the ``pb`` dialect's vocabulary
=========  =====  ==========================================

The decoder checks every length against its limits before it waits for,
or allocates, the bytes it announces; nesting is tracked on an explicit
stack, so a deep message cannot exhaust Python's recursion.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from .._errors import ProtocolError

__all__ = ["BananaError", "Decoder", "encode", "VOCABULARY", "SIZE_LIMIT", "PREFIX_LIMIT"]

LIST, INT, STRING, NEG, FLOAT, LONGINT, LONGNEG, VOCAB = range(0x80, 0x88)
#: Twisted's own cap on a string's length and a list's item count.
SIZE_LIMIT = 640 * 1024
#: Bytes of base-128 prefix accepted before a type byte.
PREFIX_LIMIT = 64
_LARGEST_INT = 2**31 - 1
_SMALLEST_INT = -(2**31)
_LARGEST_LONG = 2 ** (PREFIX_LIMIT * 7) - 1

#: The ``pb`` dialect's vocabulary: these byte strings travel as one small number.
VOCABULARY: dict[bytes, int] = {
    name.encode(): number for number, name in enumerate((
        "None", "class", "dereference", "reference", "dictionary", "function",
        "instance", "list", "module", "persistent", "tuple", "unpersistable",
        "copy", "cache", "cached", "remote", "local", "lcache",
        "version", "login", "password", "challenge", "logged_in", "not_logged_in",
        "cachemessage", "message", "answer", "error", "decref", "decache", "uncache",
    ), start=1)
}
_WORDS: dict[int, bytes] = {number: word for word, number in VOCABULARY.items()}

#: A two-item LIST and the STRING ``unicode`` (not a vocabulary word).
_UNICODE_HEAD = bytes([2, LIST, 7, STRING]) + b"unicode"
_pack_double = struct.Struct("!d").pack
_unpack_double = struct.Struct("!d").unpack_from
# A token's prefix and type byte, or (second branch) a prefix past the limit.
_TOKEN = re.compile(rb"([\x00-\x7f]{0,%d}[\x80-\xff])|[\x00-\x7f]{%d}"
                    % (PREFIX_LIMIT, PREFIX_LIMIT + 1))


class BananaError(ProtocolError):
    """The peer's bytes are not a banana stream we accept."""


def _b128(number: int, out: bytearray) -> None:
    if number == 0:
        out.append(0)
        return
    while number:
        out.append(number & 0x7F)
        number >>= 7


def encode(value: Any, vocabulary: bool = True) -> bytes:
    """One expression as bytes.  ``value`` holds lists/tuples, ints, floats
    and bytes only (jelly turns everything else into those)."""
    out = bytearray()
    _encode(value, out, VOCABULARY if vocabulary else {})
    return bytes(out)


def _encode(value: Any, out: bytearray, words: dict[bytes, int]) -> None:
    # Short prefixes (under 128) are one byte: appended directly, the
    # general base-128 loop only for longer ones (bench_calls:
    # twisted-client->pb, dicts).
    kind = type(value)
    if kind is bytes:
        number = words.get(value)
        if number is not None:
            out.append(number)  # every vocabulary index is below 128
            out.append(VOCAB)
            return
        size = len(value)
        if size < 128:
            out.append(size)
        elif size > SIZE_LIMIT:
            raise BananaError(f"a byte string of {size} bytes is longer than banana's "
                              f"SIZE_LIMIT ({SIZE_LIMIT}); stream it in pieces")
        else:
            _b128(size, out)
        out.append(STRING)
        out += value
    elif kind is list or kind is tuple:
        size = len(value)
        if size < 128:
            out.append(size)
        elif size > SIZE_LIMIT:
            raise BananaError(f"a list of {size} items is longer than banana's "
                              f"SIZE_LIMIT ({SIZE_LIMIT})")
        else:
            _b128(size, out)
        out.append(LIST)
        # The commonest items (small ints, vocabulary words, short strings)
        # are written here rather than through a call each (bench_calls:
        # twisted-client->pb, burst and dicts).
        for item in value:
            kind = type(item)
            if kind is int and 0 <= item < 16384:  # a request id, say: two bytes at most
                if item < 128:
                    out.append(item)
                else:
                    out.append(item & 0x7F)
                    out.append(item >> 7)
                out.append(INT)
            elif kind is bytes and len(item) < 128:
                number = words.get(item)
                if number is not None:
                    out.append(number)
                    out.append(VOCAB)
                else:
                    out.append(len(item))
                    out.append(STRING)
                    out += item
            elif (kind is list and len(item) == 2 and item[0] == b"unicode"
                  and type(item[1]) is bytes and len(item[1]) < 128):
                # Jelly's text, [b"unicode", utf-8]: the commonest list of all.
                out += _UNICODE_HEAD
                out.append(len(item[1]))
                out.append(STRING)
                out += item[1]
            else:
                _encode(item, out, words)
    elif kind is int:
        if 0 <= value < 128:
            out.append(value)
            out.append(INT)
        elif value < 0:
            if value < -_LARGEST_LONG:
                raise BananaError("an int this large cannot travel in the Twisted dialect")
            _b128(-value, out)
            out.append(NEG if value >= _SMALLEST_INT else LONGNEG)
        else:
            if value > _LARGEST_LONG:
                raise BananaError("an int this large cannot travel in the Twisted dialect")
            _b128(value, out)
            out.append(INT if value <= _LARGEST_INT else LONGINT)
    elif kind is float:
        out.append(FLOAT)
        out += _pack_double(value)
    else:
        raise BananaError(f"banana cannot carry {kind.__name__} values")


class Decoder:
    """Bytes in, whole expressions out.

    ``max_bytes`` bounds one expression's encoded size, ``max_depth`` its
    nesting, ``max_items`` one list, ``max_objects`` the lists in one
    expression.  ``vocabulary`` is switched on once the ``pb`` dialect has
    been chosen.
    """

    def __init__(self, *, max_bytes: int, max_depth: int, max_items: int,
                 max_objects: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_items = min(max_items, SIZE_LIMIT)
        self.max_objects = max_objects
        self.vocabulary = False
        self._buffer = bytearray()
        self._pos = 0
        # Per expression: [items still wanted, list being filled] for each open list.
        self._stack: list[list] = []
        self._start = 0      # where the expression being decoded started
        self._lists = 0      # lists opened in it

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> list[Any]:
        """Take ``data``; return the expressions it completed (maybe none).
        Raises :class:`BananaError` for anything that is not acceptable
        banana: the connection must then close."""
        buf = self._buffer
        done: list[Any] = []
        if self._pos == len(buf):
            # Nothing left over: decode straight from ``data``, and keep only
            # what it leaves unfinished (most reads end on a message's end;
            # strings are then sliced from bytes, one copy, not two).
            self._start -= self._pos
            self._pos = 0
            buf.clear()
            if type(data) is not bytes:
                data = bytes(data)
            try:
                self._run(done, data)
            finally:
                pos = self._pos
                if pos < len(data):
                    buf += memoryview(data)[pos:]
                self._start -= pos
                self._pos = 0
            return done
        buf += data
        try:
            self._run(done, buf)
        finally:
            # Drop what has been consumed, unless it is cheaper to wait.
            pos = self._pos
            if pos > 65536 and pos * 2 > len(buf):
                del buf[:pos]
                self._start -= pos
                self._pos = 0
        return done

    def _run(self, done: list[Any], buf: bytes | bytearray) -> None:
        # Everything the loop reads per token is a local; the message-size
        # check runs per string and once per feed, not per token
        # (bench_calls: twisted-client->pb, seq, burst and dicts).
        stack = self._stack  # [items still wanted, list being filled] per open list
        end = len(buf)
        pos = self._pos
        start = self._start
        lists = self._lists
        max_bytes = self.max_bytes
        max_items = self.max_items
        max_depth = self.max_depth
        max_objects = self.max_objects
        vocabulary = self.vocabulary
        words = _WORDS
        match = _TOKEN.match
        in_bytearray = type(buf) is not bytes
        try:
            while pos < end:
                if not stack:
                    start = pos
                    lists = 0
                # Most tokens have a prefix of two bytes or fewer (vocabulary
                # words, short strings, small ints, request ids): read those
                # directly and leave the regex to longer prefixes.
                first = buf[pos]
                if first & 0x80:
                    kind = first
                    number = digits = 0
                    after = pos + 1
                elif pos + 1 < end and buf[pos + 1] & 0x80:
                    kind = buf[pos + 1]
                    number = first
                    digits = 1
                    after = pos + 2
                elif pos + 2 < end and buf[pos + 2] & 0x80:
                    kind = buf[pos + 2]
                    number = first | buf[pos + 1] << 7
                    digits = 2
                    after = pos + 3
                else:
                    m = match(buf, pos)
                    if m is None:
                        break  # the type byte has not arrived yet
                    after = m.end()
                    if m.lastindex is None:
                        raise BananaError(f"more than {PREFIX_LIMIT} bytes of prefix: not "
                                          "banana, or a number no peer may send")
                    kind = buf[after - 1]
                    digits = after - 1 - pos
                    number = 0
                    shift = 0
                    for i in range(pos, after - 1):
                        number |= buf[i] << shift
                        shift += 7
                if kind == VOCAB:
                    if not vocabulary:
                        raise BananaError("a VOCAB token before the pb dialect was chosen")
                    item: Any = words.get(number)
                    if item is None:
                        raise BananaError(f"VOCAB {number} is not in the pb vocabulary")
                elif kind == STRING:
                    if number > SIZE_LIMIT or after + number - start > max_bytes:
                        raise BananaError(f"a string of {number} bytes is past the limit "
                                          f"(SIZE_LIMIT {SIZE_LIMIT}, max_frame {max_bytes})")
                    if end - after < number:
                        break
                    item = buf[after:after + number]
                    if in_bytearray:
                        item = bytes(item)
                    after += number
                elif kind == LIST:
                    if number > max_items:
                        raise BananaError(f"a list of {number} items is past the limit "
                                          f"(max_items {max_items})")
                    if len(stack) >= max_depth:
                        raise BananaError(f"lists nested deeper than max_depth={max_depth}")
                    lists += 1
                    if lists > max_objects:
                        raise BananaError(f"more than max_objects={max_objects} lists in "
                                          "one message")
                    pos = after
                    if number:
                        stack.append([number, []])
                        continue
                    item = []
                elif kind == INT or kind == LONGINT:
                    item = number
                elif kind == NEG or kind == LONGNEG:
                    item = -number
                elif kind == FLOAT:
                    if digits:
                        raise BananaError("a FLOAT token carries no prefix")
                    if end - after < 8:
                        break
                    item = _unpack_double(buf, after)[0]
                    after += 8
                else:
                    raise BananaError(f"unknown banana type byte 0x{kind:02x}")
                pos = after
                # Hand the item to its list, closing every list it completes.
                while stack:
                    top = stack[-1]
                    top[1].append(item)
                    top[0] -= 1
                    if top[0]:
                        break
                    stack.pop()
                    item = top[1]
                else:
                    done.append(item)
                    if not vocabulary:
                        # Still negotiating: what follows may use the vocabulary
                        # the answer switches on, so stop after this expression.
                        return
        finally:
            self._pos = pos
            self._start = start
            self._lists = lists
        if stack or pos < end:
            self._check_size(end, start)

    def _check_size(self, upto: int, start: int) -> None:
        if upto - start > self.max_bytes:
            raise BananaError(f"one message is longer than max_frame={self.max_bytes} bytes")
