"""Wire values as tagged JSON, and a reference context that keeps
references as plain data: what the protocol vectors and the recorded
sessions are written in (docs/protocol-vectors/README.md describes the form).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import struct
import zoneinfo
from typing import Any

import jelly


class Ref(jelly.Flavored):
    """A reference as it travels: its kind and its arguments, nothing more."""

    __slots__ = ("kind", "args")

    def __init__(self, kind: int, args: tuple) -> None:
        self.kind = kind
        self.args = tuple(args)

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and (self.kind, self.args) == (other.kind, other.args)

    def __hash__(self) -> int:
        return hash((self.kind, self.args))

    def __repr__(self) -> str:
        return f"Ref({self.kind}, {self.args!r})"


class RefContext:
    """A jelly context that sends and receives :class:`Ref` values."""

    perspective = None

    def flavor_out(self, obj: Ref) -> tuple[int, tuple]:
        return obj.kind, obj.args

    def flavor_in(self, kind: int, args: tuple) -> Ref:
        return Ref(kind, args)


class Point(jelly.Copyable, jelly.RemoteCopy):
    """The copy the vectors use (tag ``vectors.Point``)."""

    copy_tag = "vectors.Point"

    def __init__(self, x: Any = None, y: Any = None) -> None:
        self.x, self.y = x, y


REGISTRY = jelly.Registry()
REGISTRY.register(Point)
CONTEXT = RefContext()


def dumps(value: Any) -> bytes:
    return jelly.dumps(value, context=CONTEXT)


def loads(body: bytes) -> Any:
    return jelly.loads(body, context=CONTEXT, registry=REGISTRY)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# -- tagged JSON ---------------------------------------------------------------

def _tz_to_json(tz: Any) -> Any:
    if tz is None:
        return None
    if tz is datetime.timezone.utc:
        return "utc"
    if isinstance(tz, zoneinfo.ZoneInfo):
        return {"zone": tz.key}
    offset = tz.utcoffset(None)
    name = tz.tzname(None)
    out: dict[str, Any] = {"offset_us": offset // datetime.timedelta(microseconds=1)}
    if name != datetime.timezone(offset).tzname(None):
        out["name"] = name
    return out


def _tz_from_json(tz: Any) -> Any:
    if tz is None:
        return None
    if tz == "utc":
        return datetime.timezone.utc
    if "zone" in tz:
        return zoneinfo.ZoneInfo(tz["zone"])
    offset = datetime.timedelta(microseconds=tz["offset_us"])
    return datetime.timezone(offset, tz["name"]) if "name" in tz else datetime.timezone(offset)


def to_json(value: Any, _seen: dict[int, int] | None = None) -> Any:
    """The tagged-JSON form of a decoded value (copies share an ``$id``)."""
    seen = {} if _seen is None else _seen
    t = type(value)
    if value is None or t in (bool, str) or (t is int and -2 ** 63 <= value < 2 ** 64):
        return value
    if t is int:
        return {"$bigint": str(value)}
    if t is float:
        return {"$float": value}
    if t is bytes:
        return {"$bin": value.hex()}
    if t is list:
        return [to_json(v, seen) for v in value]
    if t is dict:
        return {"$map": [[to_json(k, seen), to_json(v, seen)] for k, v in value.items()]}
    if t is tuple:
        return {"$tuple": [to_json(v, seen) for v in value]}
    if t in (set, frozenset):
        key = "$set" if t is set else "$frozenset"
        return {key: sorted((to_json(v, seen) for v in value), key=repr)}
    if t is complex:
        return {"$complex": [value.real, value.imag]}
    if t is decimal.Decimal:
        return {"$decimal": str(value)}
    if t is datetime.datetime:
        return {"$datetime": [value.year, value.month, value.day, value.hour, value.minute,
                              value.second, value.microsecond],
                "fold": value.fold, "tz": _tz_to_json(value.tzinfo)}
    if t is datetime.date:
        return {"$date": [value.year, value.month, value.day]}
    if t is datetime.time:
        return {"$time": [value.hour, value.minute, value.second, value.microsecond],
                "fold": value.fold, "tz": _tz_to_json(value.tzinfo)}
    if t is datetime.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if t is Ref:
        return {"$ref": [value.kind, [to_json(v, seen) for v in value.args]]}
    if isinstance(value, jelly.Copyable):
        if id(value) in seen:
            return {"$same": seen[id(value)]}
        seen[id(value)] = index = len(seen)
        return {"$copy": [value.copy_tag, to_json(value.get_state_to_copy_for(None), seen)],
                "$id": index}
    raise TypeError(f"no tagged-JSON form for {t.__qualname__}")


def from_json(obj: Any, _made: dict[int, Any] | None = None) -> Any:
    """The value a tagged-JSON form stands for."""
    made = {} if _made is None else _made
    if obj is None or type(obj) in (bool, int, str):
        return obj
    if type(obj) is list:
        return [from_json(v, made) for v in obj]
    (tag, arg), *rest = obj.items()
    extra = dict(rest)
    if tag == "$bigint":
        return int(arg)
    if tag == "$float":
        return float(arg)
    if tag == "$bin":
        return bytes.fromhex(arg)
    if tag == "$map":
        return {from_json(k, made): from_json(v, made) for k, v in arg}
    if tag == "$tuple":
        return tuple(from_json(v, made) for v in arg)
    if tag == "$set":
        return {from_json(v, made) for v in arg}
    if tag == "$frozenset":
        return frozenset(from_json(v, made) for v in arg)
    if tag == "$complex":
        return complex(arg[0], arg[1])
    if tag == "$decimal":
        return decimal.Decimal(arg)
    if tag == "$datetime":
        return datetime.datetime(*arg, fold=extra["fold"], tzinfo=_tz_from_json(extra["tz"]))
    if tag == "$date":
        return datetime.date(*arg)
    if tag == "$time":
        return datetime.time(*arg, fold=extra["fold"], tzinfo=_tz_from_json(extra["tz"]))
    if tag == "$timedelta":
        return datetime.timedelta(days=arg[0], seconds=arg[1], microseconds=arg[2])
    if tag == "$ref":
        return Ref(arg[0], tuple(from_json(v, made) for v in arg[1]))
    if tag == "$copy":
        assert arg[0] == Point.copy_tag, arg[0]
        point = made[extra["$id"]] = Point.__new__(Point)
        point.set_copyable_state(from_json(arg[1], made))
        return point
    if tag == "$same":
        return made[arg]
    raise ValueError(f"unknown tag {tag!r}")


# -- a raw client over a real socket --------------------------------------------

class RawPeer:
    """One end of a real stream, speaking frames of raw jelly values."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPeer:
        return cls(*await asyncio.open_connection(host, port))

    def send_body(self, body: bytes) -> None:
        self.writer.write(frame(body))

    def send(self, value: Any) -> None:
        self.send_body(dumps(value))

    async def receive_body(self, timeout: float = 10.0) -> bytes:
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        (size,) = struct.unpack(">I", header)
        return await asyncio.wait_for(self.reader.readexactly(size), timeout)

    async def receive(self, timeout: float = 10.0) -> Any:
        return loads(await self.receive_body(timeout))

    async def receive_until(self, wanted: Any, timeout: float = 10.0) -> tuple[Any, list]:
        """The first message ``wanted(message)`` accepts, and those skipped
        on the way (PINGs, DECREFs, ... that may come in between)."""
        skipped = []
        while True:
            message = await self.receive(timeout)
            if wanted(message):
                return message, skipped
            skipped.append(message)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
