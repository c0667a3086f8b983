"""broker.call_many / call_many_only: one call to many references, jellied
once when the arguments hold no reference.  The bytes are checked equal to
call_remote's in memory; the semantics (order per reference, errors per
reference, closed connections, references among the arguments) over real
sockets, with one server and several clients.  Also here: a connection's
writes after its first in a loop turn leave together (TurnWrites)."""

import asyncio
import contextlib
import datetime
import decimal

import pytest

import broker
import jelly
from broker import Referenceable, Root
from broker._fanout import _shared_tail
from broker.testing import CorePair

from .test_coalescing import count_writes


@jelly.register_copy("tests.call_many.Point")
class Point(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "tests.call_many.Point"

    def __init__(self, x=0, y=0):
        self.x, self.y = x, y

    def get_state_to_copy(self):
        return {"x": self.x, "y": self.y}

    def set_copyable_state(self, state):
        self.x, self.y = state["x"], state["y"]


SAMPLES = [
    ((), {}),
    (("text", 1, 2.5, None, True, b"bytes"), {}),
    (((1, 2), {3}, frozenset({4}), 2**80, datetime.datetime(2026, 12, 4, 18, 0),
      decimal.Decimal("1.5")), {"when": datetime.date(2026, 1, 1)}),
    # Copies, one of them sent twice (a BACKREF), and enough of them for
    # one- and two-byte indexes.
    ([Point(i, -i) for i in range(300)] + [Point(7, 7)] * 2, {"p": Point(1, 2)}),
    (({"nested": [{"deep": [1, [2, [3]]]}]},), {"k": "v"}),
]


@pytest.mark.parametrize("args, kwargs", SAMPLES)
@pytest.mark.parametrize("answer_wanted", [True, False])
def test_a_shared_call_is_the_same_bytes_as_its_own(args, kwargs, answer_wanted):
    own, shared = CorePair(), CorePair()
    for pair in (own, shared):
        pair.handshake()
        pair.client.take_output()
    tail = _shared_tail("method", tuple(args), kwargs, answer_wanted)
    assert tail is not None
    for target in (0, 5, 70000):
        own.client.call(target, "method", tuple(args), kwargs, answer_wanted)
        shared.client.call(target, "method", tuple(args), kwargs, answer_wanted, None, tail)
    assert b"".join(own.client.take_output()) == b"".join(shared.client.take_output())


def test_arguments_holding_a_reference_are_not_shared():
    assert _shared_tail("m", (Referenceable(),), {}, False) is None
    assert _shared_tail("m", (), {"who": [Referenceable()]}, True) is None


class Mind(Referenceable):
    def __init__(self):
        self.seen = []
        self.got = asyncio.Event()

    def remote_hear(self, *args, **kwargs):
        self.seen.append((args, kwargs))
        self.got.set()
        return len(self.seen)

    def remote_call_back(self, ref):
        return ref.call_remote("ping")


class Pinged(Referenceable):
    def remote_ping(self):
        return "pong"


class Hub(Root):
    def __init__(self):
        self.minds = []

    def remote_register(self, mind):
        self.minds.append(mind)


@contextlib.asynccontextmanager
async def _room(count, limits=()):
    """A hub server with ``count`` clients, each registered with its mind;
    ``limits`` are the first clients' own."""
    hub = Hub()
    async with await broker.serve(hub, "127.0.0.1", 0) as server:
        conns, minds = [], []
        try:
            for n in range(count):
                conn = await broker.connect("127.0.0.1", server.port,
                                            limits=limits[n] if n < len(limits) else None)
                conns.append(conn)
                mind = Mind()
                await (await conn.root()).call_remote("register", mind)
                minds.append(mind)
            assert len(hub.minds) == count
            yield hub, conns, minds
        finally:
            for conn in conns:
                await conn.close()


async def _until(condition):
    while not condition():
        await asyncio.sleep(0.005)


async def test_call_many_only_reaches_every_reference_once_in_order():
    async with _room(4) as (hub, conns, minds):
        for i in range(20):
            # Shared calls interleaved with each reference's own: E-order
            # per reference holds across both.
            assert broker.call_many_only(hub.minds, "hear", i, Point(i, i)) == []
            for ref in hub.minds:
                ref.call_remote_only("hear", -i)
        await asyncio.wait_for(_until(lambda: all(len(m.seen) == 40 for m in minds)), 5)
        for mind in minds:
            firsts = [args[0] for args, _ in mind.seen]
            assert firsts == [v for i in range(20) for v in (i, -i)]
            point = mind.seen[0][0][1]
            assert isinstance(point, Point) and (point.x, point.y) == (0, 0)


async def test_a_closed_connection_is_skipped_and_reported_the_others_still_hear():
    async with _room(3) as (hub, conns, minds):
        await conns[1].close()
        await _until(lambda: not hub.minds[1].is_alive)
        failures = broker.call_many_only(hub.minds, "hear", "hello", to="all")
        assert [ref for ref, _ in failures] == [hub.minds[1]]
        assert isinstance(failures[0][1], broker.DeadReference)
        await _until(lambda: minds[0].seen and minds[2].seen)
        assert minds[0].seen == minds[2].seen == [(("hello",), {"to": "all"})]
        assert minds[1].seen == []


async def test_a_peer_with_a_smaller_max_frame_refuses_a_shared_call_alone():
    async with _room(3, limits=(None, broker.Limits(max_frame=2048))) as (hub, conns, minds):
        text = "x" * 4000
        failures = broker.call_many_only(hub.minds, "hear", text)
        assert [ref for ref, _ in failures] == [hub.minds[1]]
        assert isinstance(failures[0][1], broker.LimitExceeded)
        await _until(lambda: minds[0].seen and minds[2].seen)
        assert minds[0].seen == minds[2].seen == [((text,), {})]
        # The connection that refused it still works.
        assert await hub.minds[1].call_remote("hear", "short") == 1


async def test_call_many_answers_each_reference_with_its_own_future():
    async with _room(3) as (hub, conns, minds):
        minds[2].seen.append("earlier")  # so its answer differs
        await hub.minds[1].release()
        futures = broker.call_many(hub.minds, "hear", "x", timeout=30)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], broker.DeadReference)


async def test_a_reference_among_the_arguments_is_sent_to_each_connection_as_its_own():
    async with _room(3) as (hub, conns, minds):
        pinged = Pinged()
        results = await asyncio.gather(*broker.call_many(hub.minds, "call_back", pinged))
        assert results == ["pong"] * 3


async def test_an_argument_that_cannot_be_sent_fails_each_call_not_the_caller():
    async with _room(2) as (hub, conns, minds):
        failures = broker.call_many_only(hub.minds, "hear", object())
        assert [ref for ref, _ in failures] == hub.minds
        assert all(isinstance(exc, jelly.EncodeError) for _, exc in failures)
        futures = broker.call_many(hub.minds, "hear", object())
        for future in futures:
            with pytest.raises(jelly.EncodeError):
                await future


async def test_the_first_call_of_a_turn_goes_at_once_the_rest_together_at_its_end():
    async with _room(1) as (hub, conns, minds):
        await asyncio.sleep(0.05)  # let the login turn's writes settle
        writes = count_writes(conns[0])
        root = await conns[0].root()
        writes.clear()
        root.call_remote_only("register", None)
        assert len(writes) == 1  # not delayed
        for _ in range(9):
            root.call_remote_only("register", None)
        assert len(writes) == 1  # waiting for the end of the turn
        await _until(lambda: len(hub.minds) == 11)
        assert len(writes) == 2  # the nine left in one write
