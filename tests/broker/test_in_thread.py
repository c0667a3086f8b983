"""Blocking remote methods off the event loop (issue 16): ``@broker.in_thread``
or ``pb_in_thread = True`` on a class runs them in a bounded thread pool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

import pytest

import broker
from broker import _threads


class Blocking(broker.Root):
    def __init__(self) -> None:
        self.gate = threading.Event()

    @broker.in_thread
    def remote_wait(self) -> str:
        # Blocks its thread until the test opens the gate: were it on the
        # event loop, nothing else could be answered meanwhile.
        assert self.gate.wait(10), "the gate was never opened"
        return threading.current_thread().name

    def remote_echo(self, value):
        return value

    def remote_where(self) -> str:
        return threading.current_thread().name

    @broker.expected_errors(KeyError)
    @broker.in_thread
    def remote_lookup(self, key):
        raise KeyError(key)

    @broker.in_thread
    def remote_crash(self):
        raise RuntimeError("disk on fire")


class AllInThreads(broker.Root):
    pb_in_thread = True

    def remote_where(self) -> str:
        return threading.current_thread().name

    async def remote_on_loop(self) -> str:
        return threading.current_thread().name


async def test_a_blocking_method_in_a_thread_leaves_the_loop_free():
    root_object = Blocking()
    async with await broker.serve(root_object, "127.0.0.1", 0) as server:
        async with broker.connect("127.0.0.1", server.port) as first, \
                broker.connect("127.0.0.1", server.port) as second:
            waiting = (await first.root()).call_remote("wait", timeout=20)
            other = await second.root()
            # Answered while remote_wait still blocks its thread.
            assert await other.call_remote("echo", "free", timeout=5) == "free"
            assert await other.call_remote("where") == threading.current_thread().name
            assert not waiting.done()
            root_object.gate.set()
            assert (await waiting).startswith("pb-in-thread")


async def test_errors_from_a_thread_come_back_and_are_logged_as_usual(caplog):
    caplog.set_level(logging.ERROR, logger="broker.calls")
    async with await broker.serve(Blocking(), "127.0.0.1", 0) as server:
        async with broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            with pytest.raises(broker.RemoteError, match="apple"):
                await root.call_remote("lookup", "apple")
            with pytest.raises(broker.RemoteError, match="disk on fire"):
                await root.call_remote("crash")
    records = [r for r in caplog.records if r.name == "broker.calls"]
    assert len(records) == 1
    assert records[0].fields["method"] == "Blocking.remote_crash"
    assert records[0].fields["error"] == "RuntimeError"


async def test_a_class_can_put_all_its_plain_methods_in_threads():
    async with await broker.serve(AllInThreads(), "127.0.0.1", 0) as server:
        async with broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            assert (await root.call_remote("where")).startswith("pb-in-thread")
            assert await root.call_remote("on_loop") == threading.current_thread().name


async def test_the_pool_is_bounded_and_can_be_replaced():
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="only-one")
    old = _threads._pool
    broker.use_thread_pool(pool)
    try:
        root_object = Blocking()
        async with await broker.serve(root_object, "127.0.0.1", 0) as server:
            async with broker.connect("127.0.0.1", server.port) as conn:
                root = await conn.root()
                first = root.call_remote("wait", timeout=20)
                second = root.call_remote("wait", timeout=20)
                await asyncio.sleep(0.2)
                assert not first.done() and not second.done()
                root_object.gate.set()
                assert await first == await second == "only-one_0"
    finally:
        _threads._pool = old
        pool.shutdown()


def test_an_async_method_cannot_be_put_in_a_thread():
    with pytest.raises(TypeError, match="is async"):
        class Wrong(broker.Root):
            @broker.in_thread
            async def remote_x(self):
                pass
