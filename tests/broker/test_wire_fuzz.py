"""Seeded, bounded fuzzing of a real server over 127.0.0.1.

A raw client speaks the wire protocol by hand: a HELLO (sometimes a broken
one), then batches of mutated frames, each batch followed by a PING whose
PONG says the server has read it all.  Connections are reused until the
server closes them.  The server must never raise into the event loop's
exception handler, must end every connection with answers or a GOODBYE,
must keep its per-connection tables within the limits, and must still
serve a normal client afterwards with no connection left behind.
"""

import asyncio
import collections
import random
import struct

import msgpack

import broker
from broker import Cacheable, Limits, Referenceable, RemoteCache, Root, register_cache

SEED = 0x5EED_FB
FRAMES = 3000

LIMITS = Limits(max_frame=16 * 1024, max_depth=16, max_items=256, max_outstanding_calls=8,
                max_local_references=16, max_caches=4, handshake_bytes=1024)

HELLO = [0, "pb", 1, ["cancel", "ping"], 4 * 1024 * 1024]
# Any opcode but CACHE_CALL (the fuzzer observes nothing that changes).  CALL
# and CANCEL too: a STREAM reference of the fuzzer's, echoed back, is re-served
# by the server as a stream of its own, which pulls from the fuzzer.
SERVER_SENDS = set(range(12)) - {5}
METHODS = ["echo", "echo", "slow", "hang", "child", "fail", "cache", "stream", "nope",
           "_private", "", "x" * 300, "echo\x00"]


class Child(Referenceable):
    def remote_name(self):
        return "child"


class Sheet(Cacheable):
    cache_tag = "tests.fuzz.Sheet"

    def get_state_to_cache_and_observe_for(self, perspective, observer):
        return {"rows": [1, 2, 3]}


@register_cache("tests.fuzz.Sheet")
class SheetCopy(RemoteCache):
    def observe_set(self, *args):
        pass


class FuzzRoot(Root):
    def __init__(self):
        self.sheet = Sheet()

    def remote_echo(self, value=None, *more, **kw):
        return value

    async def remote_slow(self, value=None):
        await asyncio.sleep(0)
        return value

    async def remote_hang(self, *args):
        await asyncio.sleep(3600)

    def remote_child(self):
        return Child()

    def remote_fail(self, *args):
        raise ValueError("failed on purpose")

    def remote_cache(self):
        return self.sheet

    def remote_stream(self, *args):
        async def gen():
            for i in range(3):
                yield i
        return gen()


# -- generating frames -------------------------------------------------------------


def ext(code, payload):
    return msgpack.ExtType(code, msgpack.packb(payload) if not isinstance(payload, bytes)
                           else payload)


def scalar(rng):
    return rng.choice([
        None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("nan"),
        "", "text", "ü" * rng.randint(1, 20), b"", b"\x00\xff" * rng.randint(1, 30),
        rng.randint(-10, 10), rng.randint(0, 99),
    ])


# A BIGINT of some 4800 digits: an int, but one str() refuses to print.
HUGE = msgpack.ExtType(4, b"\x01" * 2000)


def ident(rng):
    return rng.choice([0, 1, 2, 3, 4, 5, -1, -(2**63), 2**64 - 1, rng.randint(6, 100), HUGE])


def value(rng, depth=0):
    roll = rng.random()
    if depth > 3 or roll < 0.60:
        return scalar(rng)
    if roll < 0.70:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.77:
        return {scalar(rng) if rng.random() < 0.5 else str(i): value(rng, depth + 1)
                for i in range(rng.randint(0, 3))}
    if roll < 0.83:
        return ext(rng.choice([1, 2, 3]), [scalar(rng) for _ in range(rng.randint(0, 3))])
    if roll < 0.88:  # a reference, of a kind the server knows or not
        kind = rng.choice([0, 0, 1, 1, 3, 4, 5, 6, 15])
        return ext(0x20 + kind, [ident(rng)] if rng.random() < 0.9 else [ident(rng), 1])
    if roll < 0.90:  # a cache the server has registered, or not
        tag = rng.choice(["tests.fuzz.Sheet", "tests.fuzz.Sheet", "no.such.cache"])
        return ext(0x22, [ident(rng), tag, {"rows": [value(rng, depth + 1)]}])
    if roll < 0.92:  # a copy of a tag nobody registered
        return ext(0x10, b"\x00\xa5no.tg\x80")
    if roll < 0.94:  # codes jelly refuses (-1 is msgpack's timestamp), or bad payloads
        if rng.random() < 0.1:
            return msgpack.Timestamp(rng.randint(0, 2**32), 0)
        return msgpack.ExtType(rng.choice([0, 0x0B, 0x12, 0x30, 0x7F, 4, 5, 7, 0x11]),
                               rng.randbytes(rng.randint(0, 12)))
    if roll < 0.96:  # a BIGINT, up to past max_int_bits
        return msgpack.ExtType(4, b"\x01" * rng.choice([1, 9, 200, 2000, 8193]))
    if roll < 0.98:  # nesting past max_depth, in plain arrays or in tuples
        nested = scalar(rng)
        for _ in range(rng.choice([LIMITS.max_depth - 2, LIMITS.max_depth + 1, 40])):
            nested = ext(1, [nested]) if rng.random() < 0.3 else [nested]
        return nested
    # a container past max_items
    return [None] * rng.choice([LIMITS.max_items, LIMITS.max_items + 1, 3000])


def frame(body):
    return struct.pack(">I", len(body)) + body


class Fuzzer:
    """Makes the frames of one connection, partly from what the server sent:
    references it handed out are called, sent home and released (correctly
    or not), so the server's reference and cache tables see real traffic."""

    def __init__(self, rng, gentle=False):
        self.rng = rng
        self.gentle = gentle  # well-formed frames only: the connection lives long
        self.req_ids = []
        self.objects = {}   # object id -> receipts not yet released
        self.caches = {}    # cache id -> receipts not yet released

    def learn(self, messages):
        for msg in messages:
            if msg[0] in (2, 3):
                self._scan(msg[2:])

    def _scan(self, value):
        if isinstance(value, msgpack.ExtType):
            try:
                args = msgpack.unpackb(value.data, strict_map_key=False)
            except Exception:
                return
            if value.code in (0x20, 0x25) and args and type(args[0]) is int:
                self.objects[args[0]] = self.objects.get(args[0], 0) + 1
            elif value.code in (0x22, 0x23) and args and type(args[0]) is int:
                self.caches[args[0]] = self.caches.get(args[0], 0) + 1
        elif isinstance(value, (list, tuple)):
            for item in value:
                self._scan(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                self._scan(key)
                self._scan(item)

    def held(self, table):
        return self.rng.choice(sorted(table)) if table and self.rng.random() < 0.8 else None

    def message(self):
        rng = self.rng
        if self.req_ids and rng.random() < 0.15:
            req = rng.choice(self.req_ids)
        else:
            req = rng.choice([len(self.req_ids) + 1] * 8 + [0, -5, 2**64 - 1, HUGE])
        self.req_ids.append(req)
        op = rng.choices(
            ["call", "decref", "decache", "uncache", "cache_call", "cancel", "answer", "error",
             "ping", "pong", "goodbye", "hello", "unknown"],
            [55, 8, 3, 1, 3, 4, 1, 1, 5, 2, 1, 1, 1] if not self.gentle
            else [60, 8, 3, 0, 0, 4, 0, 0, 5, 0, 0, 0, 0])[0]
        if op == "call":
            target = self.held(self.objects) if rng.random() < 0.25 else None
            if target is not None:
                method = rng.choice(["name", "pull", "pull", "close", "nope"])
            else:
                target = 0 if rng.random() < 0.9 else ident(rng)
                method = rng.choice(METHODS)
            args = [value(rng) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
            if self.objects and rng.random() < 0.1:  # one of its objects, sent home
                args.append(ext(0x21, [rng.choice(sorted(self.objects))]))
            kwargs = {} if rng.random() < 0.8 else {rng.choice(["value", "n", "zz", 5]): value(rng)}
            msg = [1, req, target, method, args, kwargs, rng.random() < 0.8]
        elif op == "decref":
            object_id = self.held(self.objects)
            if object_id is not None:
                count = self.objects.pop(object_id) if rng.random() < 0.7 else 1
                msg = [4, object_id, count]
            elif rng.random() < 0.3:
                msg = [4, ident(rng), rng.choice([1, 1, 2, 0, -1, 2**63])]
            else:
                msg = [9, "nothing to release"]
        elif op == "decache":
            cache_id = self.held(self.caches)
            if cache_id is not None:
                msg = [6, cache_id, self.caches.pop(cache_id)]
            else:
                msg = [6, ident(rng), rng.choice([1, 2, 0])]
        elif op == "uncache":
            msg = [7, ident(rng)]
        elif op == "cache_call":
            msg = [5, ident(rng), rng.choice(["set", "nope"]), [value(rng)], {}]
        elif op == "cancel":
            msg = [8, rng.choice(self.req_ids)]
        elif op == "answer":
            msg = [2, req, value(rng)]
        elif op == "error":
            msg = [3, req, "remote-error", "T", "m", None, rng.choice([None, b"\x91\x01", b"\xc1"])]
        elif op == "ping":
            msg = [9, scalar(rng) if rng.random() < 0.8 else value(rng)]
        elif op == "pong":
            msg = [10, value(rng)]
        elif op == "goodbye":
            msg = [11, rng.choice(["normal", 5, None]), value(rng)]
        elif op == "hello":
            msg = list(HELLO)
        else:
            msg = [rng.choice([12, 99, -1, 2**64 - 1]), req]
        roll = rng.random() if not self.gentle else 1.0
        if roll < 0.02 and len(msg) > 1:  # a wrong arity or a wrong field type, now and then
            msg = msg[:rng.randrange(1, len(msg))]
        elif roll < 0.03:
            msg = msg + [value(rng)]
        elif roll < 0.06:
            msg[rng.randrange(1, len(msg))] = value(rng)
        return msg

    def frame(self):
        """One frame's bytes, and whether it is a well-formed GOODBYE of ours."""
        rng = self.rng
        body = msgpack.packb(self.message())
        roll = rng.random() if not self.gentle else 1.0
        if roll < 0.01:
            body = body[:rng.randrange(0, max(len(body), 1))]           # a truncated body
        elif roll < 0.02:
            body = rng.randbytes(rng.randint(0, 40))                    # random bytes
        elif roll < 0.035 and body:
            flipped = bytearray(body)                                   # a few flipped bytes
            for _ in range(rng.randint(1, 3)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            body = bytes(flipped)
        elif roll < 0.04:
            return struct.pack(">I", LIMITS.max_frame + 1), False       # just over max_frame
        elif roll < 0.043:
            body = body + b"\xc0" * (LIMITS.max_frame + 1 - len(body))  # a whole body just over
        try:
            plain = msgpack.unpackb(body, strict_map_key=False)
            goodbye = type(plain) is list and len(plain) == 3 and plain[0] == 11
        except Exception:
            goodbye = False
        return frame(body), goodbye


def hello(rng):
    roll = rng.random()
    if roll < 0.9:
        return frame(msgpack.packb(HELLO))
    return rng.choice([
        frame(msgpack.packb([0, "pb", 2, [], 1024])),               # another version
        frame(msgpack.packb([0, "xx", 1, [], 1024])),               # another protocol
        frame(msgpack.packb([0, "pb", 1, "features", 1024])),       # malformed
        frame(msgpack.packb([0, "pb", 1, [], 0])),
        frame(msgpack.packb([1, 1, 0, "echo", [], {}, True])),      # a CALL first
        struct.pack(">I", LIMITS.handshake_bytes + 1),              # too big before HELLO
        frame(rng.randbytes(30)),
    ])


# -- running it ------------------------------------------------------------------------


async def read_until_pong(reader, token):
    """Frames until PONG(token) ("open") or the end of the stream ("closed")."""
    received = []
    while True:
        try:
            header = await reader.readexactly(4)
            (size,) = struct.unpack(">I", header)
            body = await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, "the server cut a frame short"
            return "closed", received
        msg = msgpack.unpackb(body, strict_map_key=False)
        assert type(msg) is list and msg and msg[0] in SERVER_SENDS, msg
        if received and received[-1][0] == 11:
            raise AssertionError(f"{msg!r} after the server's GOODBYE")
        received.append(msg)
        if msg == [10, token]:
            return "open", received


def server_side(server, writer):
    address = writer.get_extra_info("sockname")
    found = [p for p in server._protocols if p.peer_address == address]
    return found[0] if found else None


def assert_bounded(protocol):
    core, refs = protocol.core, protocol.core.refs
    assert len(core.running) <= LIMITS.max_outstanding_calls
    assert len(protocol._dispatch.tasks) <= LIMITS.max_outstanding_calls
    assert len(core.backlog) <= LIMITS.max_outstanding_calls + 16
    assert len(refs.local) <= LIMITS.max_local_references + 1
    assert len(refs.caches_out) <= LIMITS.max_caches
    assert len(refs.caches_in) + len(refs.zombies) <= LIMITS.max_caches
    assert len(refs.remote) <= 64 and len(core.dead_proxies) <= 64
    assert len(core.waiting) <= LIMITS.max_outstanding_calls  # pulls of a re-served stream
    assert len(protocol._calls.futures) <= LIMITS.max_outstanding_calls
    assert len(protocol.reader._buf) <= 256 * 1024


def tally(seen, received):
    for msg in received:
        if msg[0] == 3:
            seen[f"ERROR {msg[2]}"] += 1
        elif msg[0] == 11:
            seen[f"GOODBYE {msg[1]}"] += 1
        elif msg[0] == 2 and isinstance(msg[2], msgpack.ExtType):
            seen[f"ANSWER ext {msg[2].code:#x}"] += 1
        else:
            seen[f"op {msg[0]}"] += 1


async def fuzz_connection(rng, server, budget, gentle, reported, seen):
    """One connection; returns how many frames it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sent = 0
    our_goodbye = False
    try:
        writer.write(hello(rng) if not gentle else frame(msgpack.packb(HELLO)))
        fuzzer = Fuzzer(rng, gentle)
        token = 0
        while sent < budget:
            frames = []
            for _ in range(rng.randint(1, 8)):
                data, goodbye = fuzzer.frame()
                frames.append(data)
                our_goodbye = our_goodbye or goodbye
            sent += len(frames)
            token += 1
            if not gentle and rng.random() < 0.03:
                # A frame cut off by the end of the stream: the server just sees EOF.
                writer.write(b"".join(frames) + frame(msgpack.packb(HELLO))[:7])
                try:
                    writer.write_eof()
                except OSError:  # the server closed first (an earlier frame in the batch)
                    pass
                state, received = await asyncio.wait_for(read_until_pong(reader, "end"), 10)
                assert state == "closed" and reported == []
                tally(seen, received)
                break
            sync = f"sync {token}"  # no fuzzed PING carries such a token
            writer.write(b"".join(frames) + frame(msgpack.packb([9, sync])))
            state, received = await asyncio.wait_for(read_until_pong(reader, sync), 10)
            assert reported == []
            tally(seen, received)
            seen[state] += 1
            if state == "closed":
                assert (received and received[-1][0] == 11) or our_goodbye, received[-3:]
                break
            fuzzer.learn(received)
            protocol = server_side(server, writer)
            if protocol is not None:
                assert_bounded(protocol)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return sent


async def test_mutated_frames_never_crash_the_server_or_leak():
    loop = asyncio.get_running_loop()
    reported = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    rng = random.Random(SEED)
    seen = collections.Counter()
    try:
        async with await broker.serve(FuzzRoot(), "127.0.0.1", 0, limits=LIMITS) as server:
            # A well-behaved client stays connected through it all.
            bystander = await broker.connect("127.0.0.1", server.port, limits=LIMITS)
            bystander_root = await bystander.root()
            assert await bystander_root.call_remote("echo", "before") == "before"
            sent = connections = 0
            while sent < FRAMES:
                gentle = rng.random() < 0.1
                sent += await fuzz_connection(rng, server, rng.randint(5, 200 if gentle else 60),
                                              gentle, reported, seen)
                connections += 1
            # The run reached each kind of outcome, not just the first violation.
            assert connections > 20 and seen["open"] > 100, seen
            for outcome in ["ERROR insecure-jelly", "ERROR limit-exceeded", "ERROR no-such-method",
                            "ERROR no-such-object", "ERROR remote-error", "GOODBYE protocol-error",
                            "GOODBYE limit-exceeded", "GOODBYE version", "ANSWER ext 0x20",
                            "ANSWER ext 0x22", "ANSWER ext 0x25", "op 4", "op 6"]:
                assert seen[outcome], (outcome, seen)
            assert await bystander_root.call_remote("echo", "after") == "after"
            await bystander.close()

            for _ in range(500):
                if not server._protocols:
                    break
                await asyncio.sleep(0.01)
            assert not server._protocols

            async with await broker.connect("127.0.0.1", server.port, limits=LIMITS) as conn:
                root = await conn.root()
                for v in [None, 1, "text", [1, (2, 3)], {"k": b"v"}]:
                    assert await root.call_remote("echo", v) == v
                child = await root.call_remote("child")
                assert await child.call_remote("name") == "child"
            for _ in range(500):
                if not server._protocols:
                    break
                await asyncio.sleep(0.01)
            assert not server._protocols and server.connections == []
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftover == []
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
