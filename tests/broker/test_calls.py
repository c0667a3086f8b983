import asyncio
import datetime
import decimal
import gc
import weakref

import pytest

import broker
import jelly
from broker import Referenceable, RemoteError, Root


class Echo(Root):
    def __init__(self):
        self.log = []
        self.kept = []

    def remote_echo(self, value):
        return value

    async def remote_slow_echo(self, value, delay=0.0):
        await asyncio.sleep(delay)
        return value

    def remote_fail(self, text):
        raise ValueError(text)

    async def remote_afail(self, text):
        await asyncio.sleep(0)
        raise KeyError(text)

    def remote_record(self, item):
        self.log.append(item)

    async def remote_arecord(self, item, delay):
        self.log.append(("start", item))
        await asyncio.sleep(delay)
        self.log.append(("end", item))

    def remote_make(self, name):
        return Child(name)

    def remote_keep(self, ref):
        self.kept.append(ref)
        return ref

    async def remote_call_back(self, ref, value):
        return await ref.call_remote("shout", value)

    def remote_same(self, a, b):
        return a is b

    def remote_kwargs(self, *args, **kwargs):
        return [list(args), kwargs]


class Child(Referenceable):
    def __init__(self, name):
        self.name = name

    def remote_name(self):
        return self.name


class Shouter(Referenceable):
    def remote_shout(self, text):
        return text.upper()


@jelly.register_copy("tests.broker.Oops")
class Oops(jelly.Copyable, jelly.RemoteCopy, Exception):
    copy_tag = "tests.broker.Oops"


VALUES = [
    None, True, False, 0, -1, 2**64 + 5, -(2**70), 1.5, float("inf"), "text", "ünïcode",
    b"\x00\xff", [1, [2, [3]]], (1, (2, "x")), {"a": {"b": [1]}},
    {(1, 2): "tuple key", 3: "int key"}, {1, 2, 3}, frozenset({"f"}),
    datetime.datetime(2026, 11, 23, 14, 0, tzinfo=datetime.timezone.utc),
    datetime.datetime(2026, 1, 1, 12, 30), datetime.date(2026, 1, 2), datetime.time(1, 2, 3),
    datetime.timedelta(days=1, seconds=5), decimal.Decimal("1.10"), 3 + 4j,
]


async def test_every_jelly_type_round_trips_through_a_real_call(pair):
    async with pair(Echo()) as (_, client):
        root = await client.root()
        for value in VALUES:
            got = await root.call_remote("echo", value)
            assert got == value and type(got) is type(value), value


async def test_a_bytearray_arrives_as_bytes():
    # msgpack's C packer writes bytearray as bin before jelly sees it; keeping
    # the type would cost a Python walk of every message (docs/jelly.md).
    server, client = await broker.testing.connected_pair(Echo())
    root = await client.root()
    assert await root.call_remote("echo", bytearray(b"ba")) == b"ba"
    await client.close()


async def test_sync_and_async_methods_answer(pair):
    async with pair(Echo()) as (_, client):
        root = await client.root()
        assert await root.call_remote("echo", "hello network") == "hello network"
        assert await root.call_remote("slow_echo", "later", delay=0.01) == "later"


async def test_keyword_arguments_reach_the_remote_method(pair):
    async with pair(Echo()) as (_, client):
        root = await client.root()
        assert await root.call_remote("kwargs", 1, 2, name="x") == [[1, 2], {"name": "x"}]


async def test_exceptions_come_back_as_remote_error_with_type_and_message(pair):
    async with pair(Echo()) as (_, client):
        root = await client.root()
        with pytest.raises(RemoteError) as info:
            await root.call_remote("fail", "boom")
        assert info.value.remote_type == "ValueError"
        assert info.value.remote_message == "boom"
        assert info.value.remote_traceback is None
        with pytest.raises(RemoteError) as info:
            await root.call_remote("afail", "k")
        assert info.value.remote_type == "KeyError"


async def test_tracebacks_travel_only_when_the_server_allows_it(pair):
    async with pair(Echo(), unsafe_tracebacks=True) as (_, client):
        root = await client.root()
        with pytest.raises(RemoteError) as info:
            await root.call_remote("fail", "boom")
        assert "remote_fail" in info.value.remote_traceback


async def test_registered_copyable_exceptions_come_back_as_themselves():
    class Raiser(Root):
        def remote_oops(self):
            raise Oops("copied", 7)

    server, client = await broker.testing.connected_pair(Raiser())
    root = await client.root()
    with pytest.raises(Oops) as info:
        await root.call_remote("oops")
    assert info.value.args == ("copied", 7)
    await client.close()


@pytest.mark.parametrize("name", ["missing", "_private", "__class__", "remote_echo",
                                  "echo.__globals__", "ec\x00ho", "", "__init__"])
async def test_unreachable_names_are_no_such_method(name):
    server, client = await broker.testing.connected_pair(Echo())
    root = await client.root()
    with pytest.raises(broker.NoSuchMethod):
        await root.call_remote(name)
    assert await root.call_remote("echo", 1) == 1
    await client.close()


async def test_references_arrive_as_remote_references_and_come_home_as_themselves(pair):
    echo = Echo()
    async with pair(echo) as (server, client):
        root = await client.root()
        child = await root.call_remote("make", "kid")
        assert isinstance(child, broker.RemoteReference)
        assert await child.call_remote("name") == "kid"
        # the client's own object travels as a reference, and comes home as itself
        shouter = Shouter()
        back = await root.call_remote("keep", shouter)
        assert back is shouter
        assert isinstance(echo.kept[0], broker.RemoteReference)
        # the server's object sent back to it arrives as the original object
        assert await root.call_remote("same", child, child) is True


async def test_either_side_can_call_the_other(pair):
    async with pair(Echo()) as (_, client):
        root = await client.root()
        assert await root.call_remote("call_back", Shouter(), "hey") == "HEY"


async def test_dropping_the_last_reference_frees_the_object_on_the_owner(pair):
    async with pair(Echo()) as (server, client):
        root = await client.root()
        children = [await root.call_remote("make", str(i)) for i in range(5)]
        assert server.local_object_count == 5
        again = await root.call_remote("make", "x")
        del children, again
        gc.collect()
        for _ in range(100):
            if server.local_object_count == 0:
                break
            await asyncio.sleep(0.01)
        assert server.local_object_count == 0


async def test_release_frees_at_once_and_later_calls_raise_dead_reference(pair):
    async with pair(Echo()) as (server, client):
        root = await client.root()
        child = await root.call_remote("make", "x")
        await child.release()
        with pytest.raises(broker.DeadReference):
            await child.call_remote("name")
        for _ in range(100):
            if server.local_object_count == 0:
                break
            await asyncio.sleep(0.01)
        assert server.local_object_count == 0


async def test_a_reference_resent_while_a_decref_is_in_flight_stays_alive():
    class Keeper(Root):
        def __init__(self):
            self.child = Child("kept")

        def remote_get(self):
            return self.child

    server, client = await broker.testing.connected_pair(Keeper())
    root = await client.root()
    first = await root.call_remote("get")
    first_id = first._pb_id
    # The client drops its proxy; the DECREF is scheduled, not yet sent, while
    # a second request for the same object is already on its way.
    pending = root.call_remote("get")
    del first
    gc.collect()
    second = await pending
    await asyncio.sleep(0.05)
    assert second._pb_id == first_id
    assert await second.call_remote("name") == "kept"
    assert server.local_object_count == 1
    await client.close()


async def test_calls_start_in_the_order_sent_and_slow_methods_do_not_block_later_ones(pair):
    echo = Echo()
    async with pair(echo) as (_, client):
        root = await client.root()
        futures = [root.call_remote("arecord", 0, 0.05), root.call_remote("record", 1),
                   root.call_remote("arecord", 2, 0.0), root.call_remote("record", 3)]
        await asyncio.gather(*futures)
        starts = [e if not isinstance(e, tuple) else e for e in echo.log]
        assert starts[:4] == [("start", 0), 1, ("start", 2), 3]
        assert echo.log.index(("end", 2)) < echo.log.index(("end", 0))


async def test_one_way_calls_run_and_send_no_answer(pair):
    echo = Echo()
    async with pair(echo) as (server, client):
        root = await client.root()
        sent_before = client._protocol.core._next_req
        assert root.call_remote_only("record", "a") is None
        root.call_remote_only("fail", "ignored")
        assert await root.call_remote("echo", "sync") == "sync"  # ordered after them
        assert echo.log == ["a"]
        assert client._protocol.core.waiting == set()
        assert client._protocol.core._next_req == sent_before + 3


async def test_a_hung_call_with_timeout_raises_call_timeout_and_is_cancelled_remotely(pair):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Hangs(Root):
        async def remote_hang(self):
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with pair(Hangs()) as (server, client):
        root = await client.root()
        with pytest.raises(broker.CallTimeout):
            await root.call_remote("hang", timeout=0.1)
        await asyncio.wait_for(cancelled.wait(), 2)
        # The handler saw the cancellation; its task ends on a later turn.
        for _ in range(100):
            if server.calls_in_progress == 0:
                break
            await asyncio.sleep(0.01)
        assert server.calls_in_progress == 0


async def test_cancelling_the_awaiting_task_cancels_the_remote_handler(pair):
    cancelled = asyncio.Event()

    class Hangs(Root):
        async def remote_hang(self):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with pair(Hangs()) as (_, client):
        root = await client.root()
        task = asyncio.ensure_future(root.call_remote("hang"))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.wait_for(cancelled.wait(), 2)


async def test_connection_loss_fails_pending_calls_and_runs_each_callback_once(pair):
    class Hangs(Root):
        async def remote_hang(self):
            await asyncio.sleep(3600)

        def remote_make(self):
            return Child("c")

    calls = []
    async with pair(Hangs()) as (server, client):
        root = await client.root()
        child = await root.call_remote("make")
        child.notify_on_disconnect(lambda ref: calls.append(("ref", ref)))
        client.notify_on_disconnect(lambda conn: calls.append(("conn", conn)))
        pending = [root.call_remote("hang") for _ in range(10)]
        await asyncio.sleep(0.02)
        await server.close("server going away")
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, broker.ConnectionLost) for r in results)
        assert "server going away" in str(results[0])
        await client.wait_closed()
        with pytest.raises(broker.DeadReference):
            await root.call_remote("hang")
        assert [c[0] for c in calls] == ["ref", "conn"]


async def test_a_cancelled_wait_closed_leaves_the_connection_and_other_waiters_alone(pair):
    async with pair(Echo()) as (server, client):
        first = asyncio.ensure_future(client.wait_closed())
        second = asyncio.ensure_future(client.wait_closed())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        assert client.is_open
        root = await client.root()
        assert await root.call_remote("echo", "still here") == "still here"
        await client.close("done here")
        assert await asyncio.wait_for(second, 2) == "done here"
        assert await client.wait_closed() == "done here"
        assert first.cancelled()


async def test_after_disconnect_the_server_holds_nothing_of_that_connection(pair):
    echo = Echo()
    async with pair(echo) as (server, client):
        root = await client.root()
        children = [await root.call_remote("make", str(i)) for i in range(3)]
        shouter = Shouter()
        await root.call_remote("keep", shouter)
        watch = weakref.ref(server._protocol.core.refs.local[1].obj)
    del children
    echo.kept.clear()
    gc.collect()
    assert watch() is None
    assert server.local_object_count == 0
