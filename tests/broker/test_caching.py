import asyncio
import gc

import pytest

import broker
from broker import Cacheable, Limits, RemoteCache, Root, register_cache


class SharedList(Cacheable):
    cache_tag = "tests.SharedList"

    def __init__(self):
        self.items = []
        self.observers = []
        self.stopped = []

    def get_state_to_cache_and_observe_for(self, perspective, observer):
        self.observers.append(observer)
        return {"items": list(self.items)}

    def stopped_observing(self, perspective, observer):
        self.observers.remove(observer)
        self.stopped.append(observer)

    def append(self, item):
        self.items.append(item)
        for observer in self.observers:
            observer.call_remote("append", item)


@register_cache("tests.SharedList")
class SharedListCopy(RemoteCache):
    def observe_append(self, item):
        self.items.append(item)


class Holder(Root):
    def __init__(self):
        self.shared = SharedList()

    def remote_get(self):
        return self.shared

    def remote_get_twice(self):
        return [self.shared, self.shared]

    def remote_is_mine(self, obj):
        return obj is self.shared

    def remote_add(self, item):
        self.shared.append(item)


async def wait_for(predicate, timeout=2.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_first_send_carries_state_later_sends_give_the_same_instance(pair):
    holder = Holder()
    holder.shared.items.extend([1, 2])
    async with pair(holder) as (server, client):
        root = await client.root()
        first = await root.call_remote("get")
        assert isinstance(first, SharedListCopy)
        assert first.items == [1, 2]
        second = await root.call_remote("get")
        assert second is first
        a, b = await root.call_remote("get_twice")
        assert a is b is first
        assert len(holder.shared.observers) == 1


async def test_a_cache_sent_home_arrives_as_the_original_cacheable(pair):
    holder = Holder()
    async with pair(holder) as (_, client):
        root = await client.root()
        copy = await root.call_remote("get")
        assert await root.call_remote("is_mine", copy) is True


async def test_changes_reach_observers_in_order(pair):
    holder = Holder()
    async with pair(holder) as (_, client):
        root = await client.root()
        copy = await root.call_remote("get")
        for i in range(20):
            await root.call_remote("add", i)
        assert copy.items == list(range(20))


async def test_dropping_the_cache_calls_stopped_observing_once():
    holder = Holder()
    server, client = await broker.testing.connected_pair(holder)
    root = await client.root()
    copy = await root.call_remote("get")
    del copy
    gc.collect()
    await wait_for(lambda: holder.shared.stopped)
    await asyncio.sleep(0.05)
    assert len(holder.shared.stopped) == 1
    assert holder.shared.observers == []
    assert server._protocol.core.refs.caches_out == {}
    assert client._protocol.core.refs.zombies == {}  # UNCACHE arrived
    # a new send after that starts over with full state
    holder.shared.items.append("x")
    again = await root.call_remote("get")
    assert again.items == ["x"]
    await client.close()


async def test_disconnect_calls_stopped_observing_once_and_leaks_nothing():
    holder = Holder()
    server, client = await broker.testing.connected_pair(holder)
    root = await client.root()
    copy = await root.call_remote("get")
    await client.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)
    assert len(holder.shared.stopped) == 1
    assert holder.shared.observers == []
    holder.shared.append("after")  # no observers left: nothing is sent
    del copy


async def test_a_resend_racing_a_decache_revives_the_dropped_copy():
    holder = Holder()
    holder.shared.items.append("state")
    server, client = await broker.testing.connected_pair(holder)
    root = await client.root()
    copy = await root.call_remote("get")
    pending = root.call_remote("get")      # the server will send CACHED(id)
    del copy                               # ...while our DECACHE is on its way
    gc.collect()
    revived = await pending
    assert revived.items == ["state"]
    await root.call_remote("add", "more")
    assert revived.items == ["state", "more"]
    await asyncio.sleep(0.05)
    assert holder.shared.stopped == []     # the server still knows we observe
    await client.close()


async def test_an_unregistered_cache_tag_is_refused():
    class Secret(Cacheable):
        cache_tag = "tests.NotRegisteredAnywhere"

    class Giver(Root):
        def remote_get(self):
            return Secret()

        def remote_get_nothing(self):
            return None

    server, client = await broker.testing.connected_pair(Giver())
    root = await client.root()
    with pytest.raises(broker.InsecureJelly, match="tests.NotRegisteredAnywhere"):
        await root.call_remote("get")
    assert await root.call_remote("get_nothing") is None  # the connection stays open
    await client.close()


async def test_cache_limit_at_the_edge_and_one_past():
    class Many(Root):
        def remote_make(self, n):
            return [SharedList() for _ in range(n)]

    server, client = await broker.testing.connected_pair(Many(), limits=Limits(max_caches=5))
    root = await client.root()
    five = await root.call_remote("make", 5)
    assert len(five) == 5
    with pytest.raises(broker.LimitExceeded, match="max_caches"):
        await root.call_remote("make", 1)
    del five
    gc.collect()
    await wait_for(lambda: not server._protocol.core.refs.caches_out)
    assert len(await root.call_remote("make", 5)) == 5
    await client.close()


class Roster(Cacheable):
    cache_tag = "tests.Roster"

    def __init__(self):
        self.names = []
        self.observers = []

    def get_state_to_cache_and_observe_for(self, perspective, observer):
        self.observers.append(observer)
        return {"names": list(self.names)}

    def add(self, name):
        self.names.append(name)
        for observer in self.observers:
            observer.call_remote("add", name)


@register_cache("tests.Roster")
class RosterCopy(RemoteCache):
    def __len__(self):  # an empty roster is falsy
        return len(self.names)

    def observe_add(self, name):
        self.names.append(name)


async def test_updates_reach_a_cache_that_is_falsy(pair):
    class Club(Root):
        def __init__(self):
            self.roster = Roster()

        def remote_roster(self):
            return self.roster

        def remote_join(self, name):
            self.roster.add(name)

    club = Club()
    async with pair(club) as (_, client):
        root = await client.root()
        roster = await root.call_remote("roster")
        assert len(roster) == 0
        await root.call_remote("join", "ann")   # the update travels before this answer
        assert roster.names == ["ann"]


class Ticker(Cacheable):
    cache_tag = "tests.Ticker"

    def __init__(self):
        self.observers = []

    def get_state_to_cache_and_observe_for(self, perspective, observer):
        self.observers.append(observer)
        return {"seen": []}

    def stopped_observing(self, perspective, observer):
        self.observers.remove(observer)

    def tick(self, n):
        for observer in self.observers:
            observer.call_remote("tick", n)


GATE = {}


@register_cache("tests.Ticker")
class SlowTickerCopy(RemoteCache):
    running = 0
    most = 0

    async def observe_tick(self, n):
        cls = type(self)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        try:
            await GATE["open"].wait()
            self.seen.append(n)
        finally:
            cls.running -= 1


class TickerHolder(Root):
    def __init__(self):
        self.ticker = Ticker()

    def remote_get(self):
        return self.ticker

    def remote_tick(self, count):
        for n in range(count):
            self.ticker.tick(n)


async def test_slow_async_observers_hold_back_reading_at_max_outstanding_calls(pair):
    # Nothing bounds CACHE_CALLs by request id: past max_outstanding_calls
    # updates still running, the holder stops reading until half are done.
    GATE["open"] = asyncio.Event()
    SlowTickerCopy.running = SlowTickerCopy.most = 0
    holder = TickerHolder()
    async with pair(holder, limits=Limits(max_outstanding_calls=8)) as (_, client):
        root = await client.root()
        copy = await root.call_remote("get")
        root.call_remote_only("tick", 40)
        await wait_for(lambda: SlowTickerCopy.running == 8)
        await asyncio.sleep(0.05)  # more would have started by now if reading went on
        assert SlowTickerCopy.most == 8
        GATE["open"].set()
        await wait_for(lambda: len(copy.seen) == 40)
        assert sorted(copy.seen) == list(range(40))
        assert SlowTickerCopy.most == 8
