"""Seeded, bounded fuzzing of the Twisted dialect, at the native fuzz's scale.

A raw client negotiates the ``pb`` dialect by hand, then sends batches of
mutated PB messages (bad jelly, unknown classes and ids, wrong shapes, deep
nesting, past-the-limit lengths, flipped and cut bytes), each clean batch
followed by an echo call whose answer says the server has read it all.
The server must never raise into the loop's exception handler, must answer
or close, must keep its tables within the limits, and must still serve a
real client afterwards with no connection left behind.  The sans-IO core is
fuzzed the same way in memory: only ``ProtocolError`` may come out of it.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import broker
from broker import Limits, Referenceable, Root
from broker.twisted._banana import Decoder, encode
from broker.twisted._core import TwistedBroker

SEED = 0x5EED_7B
FRAMES = 3000

LIMITS = Limits(max_frame=16 * 1024, max_depth=16, max_items=256, max_outstanding_calls=8,
                max_local_references=16, max_caches=4, handshake_bytes=1024)


class Child(Referenceable):
    def remote_name(self):
        return "child"


class FuzzRoot(Root):
    def remote_echo(self, value=None, *more, **kw):
        return value

    def remote_child(self):
        return Child()

    def remote_fail(self, *args):
        raise ValueError("fuzz")


def scalar(rng: random.Random):
    return rng.choice([0, 1, -1, 2**31, -(2**40), 2**200, 1.5, b"", b"x" * rng.randint(0, 40),
                       b"None", b"remote", [b"None"], [b"unicode", b"t\xc3\xa9"],
                       [b"unicode", b"\xff\xfe"], [b"boolean", b"true"], [b"boolean", b"maybe"]])


def value(rng: random.Random, depth: int = 0):
    if depth > 3 or rng.random() < 0.4:
        return scalar(rng)
    kind = rng.randrange(12)
    items = [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 0:
        return [b"list", *items]
    if kind == 1:
        return [b"tuple", *items]
    if kind == 2:
        return [b"dictionary", *[[value(rng, depth + 1), value(rng, depth + 1)]
                                 for _ in range(rng.randint(0, 3))]]
    if kind == 3:
        return [b"reference", rng.randint(0, 3), value(rng, depth + 1)]
    if kind == 4:
        return [b"dereference", rng.randint(0, 3)]
    if kind == 5:
        return [rng.choice([b"remote", b"local", b"cached", b"lcache"]),
                rng.choice([0, 1, 2, 99, b"root", -3])]
    if kind == 6:
        return [rng.choice([b"evil.Thing", b"os.system", b"twisted.spread.pb.CopyableFailure",
                            b"tests.Point", b"\xff"]), value(rng, depth + 1)]
    if kind == 7:
        return [b"set", *items]
    if kind == 8:
        return [b"decimal", rng.randint(-5, 5), rng.choice([0, 3, 10**6])]
    if kind == 9:
        return [b"datetime", rng.choice([b"2024 1 2 3 4 5 6", b"x", b"99999999999 1 1 1 1 1 1"])]
    if kind == 10:
        deep: list = [b"None"]
        for _ in range(rng.choice([LIMITS.max_depth - 3, LIMITS.max_depth + 1, 40])):
            deep = [b"list", deep]
        return deep
    return items


def message(rng: random.Random, req_id: int) -> list:
    kind = rng.randrange(24)
    if kind < 19:
        method = rng.choice([b"echo", b"echo", b"child", b"fail", b"nope", b"_private", b"",
                             b"\xff", b"x" * 300])
        target = rng.choice([b"root", b"root", 1, 2, 99, b"other", -1])
        args = [b"tuple", *[value(rng) for _ in range(rng.choice([0, 1, 1, 2]))]]
        kwargs = rng.choice([[b"dictionary"], [b"dictionary", [[b"unicode", b"k"], 1]],
                             [b"dictionary", [1, 2]], value(rng)])
        return [b"message", req_id, target, method, rng.choice([1, 1, 0]), args, kwargs]
    if kind == 19:
        return [b"decref", rng.choice([1, 2, 3, 99, b"root", b"x"])]
    if kind == 20:
        return [rng.choice([b"answer", b"error"]), rng.randint(0, 5), value(rng)]
    if kind == 21:
        return [rng.choice([b"decache", b"uncache", b"cachemessage"]),
                *[value(rng) for _ in range(rng.randint(0, 6))]]
    if kind == 22:
        return [rng.choice([b"version", b"didNotUnderstand", b"bogus", 7]), value(rng)]
    return value(rng)


def damage(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0 and data:
        return data[:rng.randrange(len(data))]
    if choice == 1 and data:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return bytes(flipped)
    if choice == 2:
        return bytes([0x7F] * 70) + b"\x82"          # a prefix past the limit
    return b"\x00\x80\x80\x00" + b"\x7f\x7f\x7f\x01\x82"  # a string past SIZE_LIMIT


def encode_any(expression) -> bytes:
    try:
        return encode(expression)
    except Exception:
        return encode([b"None"])


class Reader:
    """Reads banana expressions from the server (after the offer)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.stream = reader
        self.decoder = Decoder(max_bytes=1 << 20, max_depth=64, max_items=10_000,
                               max_objects=100_000)
        self.pending: list = []

    async def next(self):
        while not self.pending:
            data = await self.stream.read(65536)
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
            if not self.decoder.vocabulary and self.pending:
                self.decoder.vocabulary = True
                self.pending.extend(self.decoder.feed(b""))
        return self.pending.pop(0)


async def open_raw(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    r = Reader(reader)
    offer = await r.next()
    assert offer == [b"pb"]
    writer.write(encode(b"pb", vocabulary=False) + encode([b"version", 6]))
    assert await r.next() == [b"version", 6]
    return r, writer


async def test_the_twisted_dialect_survives_mutated_traffic():
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    errors: list = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    root = FuzzRoot()
    server = await broker.serve(root, "127.0.0.1", 0, limits=LIMITS, dialect="twisted")
    sent = closes = answered = 0
    async with server:
        conn = None
        req_id = 1000
        while sent < FRAMES:
            if conn is None:
                conn = await open_raw(server.port)
            r, writer = conn
            batch = b"".join(encode_any(message(rng, rng.randint(1, 999)))
                             for _ in range(rng.randint(1, 4)))
            sent += 4
            damaged = rng.random() < 0.1
            if damaged:
                batch = damage(rng, batch)
            req_id += 1
            writer.write(batch + encode([b"message", req_id, b"root", b"echo", 1,
                                         [b"tuple", [b"unicode", b"ping"]], [b"dictionary"]]))
            while True:
                try:
                    got = await asyncio.wait_for(r.next(), 0.5 if damaged else 5)
                except TimeoutError:
                    assert damaged, "the server neither answered nor closed"
                    got = None
                except ConnectionError:
                    got = None
                if got is None:
                    closes += 1
                    writer.close()
                    conn = None
                    break
                if got[:2] == [b"answer", req_id]:
                    answered += 1
                    break
            for entry_conn in server.connections:
                refs = entry_conn._protocol.core.refs
                assert len(refs.local) <= LIMITS.max_local_references + 1
        if conn is not None:
            conn[1].close()
        # A real client is still served, and nothing is left behind.
        async with broker.connect("127.0.0.1", server.port, dialect="twisted") as client:
            ref = await client.root()
            assert await ref.call_remote("echo", "after") == "after"
        for _ in range(200):
            if len(server.connections) == 0:
                break
            await asyncio.sleep(0.01)
        assert server.connections == []
    assert [c.get("exception") for c in errors] == []
    print(f"answered={answered} closes={closes}")
    assert answered > 100 and closes > 10


@pytest.mark.parametrize("seed", range(3))
def test_the_sans_io_core_raises_only_protocol_errors(seed):
    rng = random.Random(SEED + seed)
    core = None
    for _ in range(FRAMES // 3):
        if core is None or core.state == "CLOSED":
            core = TwistedBroker(owner=object(), make_proxy=lambda i: None, is_client=False,
                                 limits=LIMITS)
            core.refs.set_root(FuzzRoot())
            core.start()
            core.receive_data(encode(b"pb", vocabulary=False))
        data = b"".join(encode_any(message(rng, rng.randint(1, 99)))
                        for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.2:
            data = damage(rng, data)
        try:
            step = rng.choice([1, 7, 4096])
            for i in range(0, len(data), step):
                core.receive_data(data[i:i + step])
        except broker.ProtocolError:
            core = None
        else:
            core.take_output()
