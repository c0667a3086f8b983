import asyncio
import gc

import pytest

import broker
from broker import Root, collect, stream_bytes


class Producer(Root):
    def __init__(self):
        self.produced = 0
        self.closed = asyncio.Event()

    async def remote_count(self, n):
        async def gen():
            try:
                for i in range(n):
                    self.produced += 1
                    yield i
            finally:
                self.closed.set()
        return gen()

    def remote_endless(self):
        async def gen():
            try:
                i = 0
                while True:
                    self.produced += 1
                    yield i
                    i += 1
            finally:
                self.closed.set()
        return gen()

    def remote_blob(self, size):
        return stream_bytes(bytes(range(256)) * (size // 256), chunk_size=32 * 1024)

    def remote_broken(self):
        async def gen():
            yield 1
            raise ValueError("producer failed")
        return gen()


async def test_a_remote_async_generator_is_iterated_in_order(pair):
    producer = Producer()
    async with pair(producer) as (_, client):
        root = await client.root()
        stream = await root.call_remote("count", 50)
        assert isinstance(stream, broker.RemoteStream)
        assert [i async for i in stream] == list(range(50))
        await asyncio.wait_for(producer.closed.wait(), 2)


async def test_bytes_larger_than_a_frame_travel_as_a_stream():
    limits = broker.Limits(max_frame=64 * 1024)
    async with await broker.serve(Producer(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            stream = await root.call_remote("blob", 1024 * 1024)
            stream_chunked = stream
            data = await collect(stream_chunked)
            assert data == bytes(range(256)) * 4096


async def test_a_slow_consumer_makes_the_producer_wait(pair):
    producer = Producer()
    async with pair(producer) as (_, client):
        root = await client.root()
        stream = await root.call_remote("endless")
        got = []
        async for item in stream:
            got.append(item)
            await asyncio.sleep(0.01)
            if len(got) == 10:
                break
        await asyncio.sleep(0.1)
        # at most the window of items beyond what was consumed was produced
        assert producer.produced <= 10 + stream.window + 1
        await stream.aclose()
        await asyncio.wait_for(producer.closed.wait(), 2)


async def test_dropping_the_consumer_stops_the_producer():
    producer = Producer()
    server, client = await broker.testing.connected_pair(producer)
    root = await client.root()
    stream = await root.call_remote("endless")
    assert await stream.__anext__() == 0
    del stream
    gc.collect()
    await asyncio.wait_for(producer.closed.wait(), 2)
    await client.close()


async def test_cancelling_the_consumer_task_stops_the_producer():
    producer = Producer()
    server, client = await broker.testing.connected_pair(producer)
    root = await client.root()

    async def consume():
        async with await root.call_remote("endless") as stream:
            async for _ in stream:
                await asyncio.sleep(0.001)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(producer.closed.wait(), 2)
    await client.close()


async def test_a_producer_error_reaches_the_consumer(pair):
    async with pair(Producer()) as (_, client):
        root = await client.root()
        stream = await root.call_remote("broken")
        assert await stream.__anext__() == 1
        with pytest.raises(broker.RemoteError, match="producer failed"):
            await stream.__anext__()


async def test_a_stream_cut_off_by_a_closed_connection_leaves_no_unretrieved_errors(caplog):
    producer = Producer()
    server, client = await broker.testing.connected_pair(producer)
    root = await client.root()
    stream = await root.call_remote("count", 100)
    assert await stream.__anext__() == 0
    await client.close()
    del stream
    gc.collect()
    await asyncio.sleep(0.01)
    assert "never retrieved" not in caplog.text


async def test_references_dropped_on_other_threads_are_all_released():
    class Maker(Root):
        def remote_make(self, n):
            return [broker.Referenceable() for _ in range(n)]

    server, client = await broker.testing.connected_pair(Maker())
    root = await client.root()
    refs = await root.call_remote("make", 200)
    assert server.local_object_count == 200

    def drop(chunk):
        chunk.clear()
        gc.collect()

    chunks = [refs[i::4] for i in range(4)]
    del refs
    await asyncio.gather(*(asyncio.to_thread(drop, c) for c in chunks))
    del chunks
    for _ in range(200):
        if server.local_object_count == 0:
            break
        await asyncio.sleep(0.01)
    assert server.local_object_count == 0
    await client.close()


class Feed(Root):
    def __init__(self):
        self.closed = asyncio.Event()
        self.never = asyncio.Event()

    def remote_feed(self):
        async def gen():
            try:
                yield "first"
                await self.never.wait()   # a live feed with nothing new to say
                yield "never"
            finally:
                self.closed.set()
        return gen()


async def test_dropping_the_consumer_closes_a_producer_waiting_for_its_next_item(pair):
    feed = Feed()
    async with pair(feed) as (_, client):
        root = await client.root()
        stream = await root.call_remote("feed")
        async for item in stream:
            assert item == "first"
            break
        del stream
        gc.collect()
        await asyncio.wait_for(feed.closed.wait(), 5)


async def test_closing_a_stream_while_its_connection_closes_does_not_raise(pair):
    producer = Producer()
    async with pair(producer) as (_, client):
        root = await client.root()
        stream = await root.call_remote("endless")
        assert await stream.__anext__() == 0
        # The connection's GOODBYE goes out first; the stream has nothing left to say.
        await asyncio.gather(client.close(), stream.aclose())
        await asyncio.wait_for(producer.closed.wait(), 5)
