"""The Twisted dialect's limits, at the edge, in memory (sans-IO core) and
over a socket; every refusal happens before the announced bytes arrive."""

from __future__ import annotations

import asyncio

import pytest

import broker
from broker import Limits, Referenceable, Root
from broker.twisted._banana import PREFIX_LIMIT, SIZE_LIMIT, BananaError, Decoder, encode
from broker.twisted._core import AnswerEvent, CallEvent, TwistedBroker
from broker.twisted._jelly import unjelly

LIMITS = Limits(max_frame=4096, max_depth=8, max_items=50, max_outstanding_calls=2,
                max_local_references=3, handshake_bytes=256)


class Thing(Referenceable):
    pass


class Service(Root):
    def remote_echo(self, value):
        return value

    def remote_thing(self):
        return Thing()


def server_core(limits: Limits = LIMITS) -> TwistedBroker:
    core = TwistedBroker(owner=object(), make_proxy=lambda i: None, is_client=False,
                         limits=limits)
    core.refs.set_root(Service())
    core.start()
    assert core.take_output() == encode([b"pb"], vocabulary=False)
    core.receive_data(encode(b"pb", vocabulary=False))
    core.take_output()
    return core


def call(req: int, method: bytes, *args) -> bytes:
    return encode([b"message", req, b"root", method, 1, [b"tuple", *args], [b"dictionary"]])


def nested(depth: int) -> list:
    value: list = [b"None"]
    for _ in range(depth - 1):
        value = [b"list", value]
    return value


def test_nesting_at_max_depth_is_accepted_and_one_past_it_closes():
    core = server_core()
    # The message, its argument tuple and the value: three levels of lists.
    (event,) = core.receive_data(call(1, b"echo", nested(LIMITS.max_depth - 2)))
    assert isinstance(event, CallEvent)
    with pytest.raises(broker.ProtocolError, match="max_depth=8"):
        server_core().receive_data(call(1, b"echo", nested(LIMITS.max_depth - 1)))


def test_a_list_past_max_items_is_refused_from_its_header():
    core = server_core()
    (event,) = core.receive_data(call(1, b"echo", [b"list", *range(LIMITS.max_items - 1)]))
    assert isinstance(event, CallEvent)
    decoder = Decoder(max_bytes=4096, max_depth=8, max_items=50, max_objects=100)
    with pytest.raises(BananaError, match="max_items 50"):
        decoder.feed(bytes([51, 0x80]))  # 51 items announced, none sent


def test_a_string_past_max_frame_or_size_limit_is_refused_before_its_bytes():
    decoder = Decoder(max_bytes=4096, max_depth=8, max_items=50, max_objects=100)
    announce = bytearray()
    n = 4097
    while n:
        announce.append(n & 0x7F)
        n >>= 7
    with pytest.raises(BananaError, match="max_frame 4096"):
        decoder.feed(bytes(announce) + b"\x82")
    big = Decoder(max_bytes=1 << 30, max_depth=8, max_items=50, max_objects=100)
    size = SIZE_LIMIT + 1
    announce = bytearray()
    while size:
        announce.append(size & 0x7F)
        size >>= 7
    with pytest.raises(BananaError, match="SIZE_LIMIT"):
        big.feed(bytes(announce) + b"\x82")


def test_a_prefix_past_64_bytes_is_refused():
    decoder = Decoder(max_bytes=4096, max_depth=8, max_items=50, max_objects=100)
    assert decoder.feed(b"\x01" * PREFIX_LIMIT) == []  # still waiting for a type byte
    with pytest.raises(BananaError, match="prefix"):
        decoder.feed(b"\x01")


def test_bytes_before_the_dialect_is_chosen_are_bounded_by_handshake_bytes():
    core = TwistedBroker(owner=object(), make_proxy=lambda i: None, is_client=False,
                         limits=LIMITS)
    core.start()
    with pytest.raises(broker.ProtocolError):
        core.receive_data(b"\x7f\x02\x82" + b"x" * 300)  # a 383-byte string
    with pytest.raises(broker.ProtocolError, match="did not offer"):
        TwistedBroker(owner=object(), make_proxy=lambda i: None, is_client=False,
                      limits=LIMITS).receive_data(encode(b"none", vocabulary=False))


def test_the_peers_calls_past_max_outstanding_calls_get_limit_exceeded():
    core = server_core()
    events = core.receive_data(call(1, b"echo", 1) + call(2, b"echo", 2) + call(3, b"echo", 3))
    assert [e.req_id for e in events] == [1, 2]  # the third was answered with an error
    error = unjelly_error(core.take_output())
    assert error.remote_type == "broker.LimitExceeded"
    core.answer(1, "done")
    (event,) = core.receive_data(call(4, b"echo", 4))
    assert event.req_id == 4


def test_our_calls_past_max_outstanding_calls_fail_at_once():
    core = server_core()
    core.call(0, "echo", (1,), {})
    core.call(0, "echo", (2,), {})
    with pytest.raises(broker.LimitExceeded, match="max_outstanding_calls=2"):
        core.call(0, "echo", (3,), {})


def test_references_past_max_local_references_fail_the_call_not_the_connection():
    core = server_core()
    for req in range(1, 5):
        (event,) = core.receive_data(call(req, b"thing"))
        core.answer(req, event.func())
    out = core.take_output()
    error = unjelly_error(out)
    assert error.remote_type == "broker.LimitExceeded"
    assert len(core.refs.local) == 1 + LIMITS.max_local_references
    assert core.state == "OPEN"


def unjelly_error(data: bytes):
    decoder = Decoder(max_bytes=1 << 20, max_depth=64, max_items=1000, max_objects=1000)
    decoder.vocabulary = True
    errors = [e for e in decoder.feed(data) if e[0] == b"error"]
    assert errors, decoder
    return unjelly(errors[-1][2], None)


async def test_garbage_gets_a_clean_close_and_no_traceback():
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda _l, ctx: seen.append(ctx))
    server = await broker.serve(Service(), "127.0.0.1", 0, limits=LIMITS, dialect="twisted")
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await reader.read(100)  # the dialect offer
        writer.write(b"pb\x00\xff\xfe garbage")  # 0xff is no banana type byte
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b""  # closed, nothing said: Twisted does the same
        writer.close()
    assert seen == []
