"""``call_remote`` behaves like asyncio (issue 16): its result goes wherever a
coroutine goes, bulk calls wait for a slot instead of failing, and failed
calls nobody awaited do not print a traceback each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import broker
from broker import Limits


class Echo(broker.Root):
    def __init__(self):
        self.started = 0
        self.cancelled = 0

    def remote_echo(self, value):
        return value

    async def remote_slow_echo(self, value):
        await asyncio.sleep(0.001)
        return value

    async def remote_hang(self):
        self.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def remote_fail(self):
        raise ValueError("no")


SERVED: list[Echo] = []


@pytest.fixture
async def root():
    echo = Echo()
    SERVED[:] = [echo]
    async with await broker.serve(echo, "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            yield await conn.root()


async def test_create_task_taskgroup_gather_and_wait_for_take_a_call(root):
    task = asyncio.create_task(root.call_remote("echo", 1))
    assert await task == 1
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(root.call_remote("echo", n)) for n in range(5)]
    assert [t.result() for t in tasks] == list(range(5))
    assert await asyncio.gather(root.call_remote("echo", "a"), root.call_remote("echo", "b")) \
        == ["a", "b"]
    assert await asyncio.wait_for(root.call_remote("echo", "w"), 5) == "w"
    with pytest.raises(broker.RemoteError, match="no"):
        await asyncio.create_task(root.call_remote("fail"))


async def test_cancelling_a_task_made_from_a_call_cancels_the_call_remotely(root):
    task = asyncio.create_task(root.call_remote("hang"))
    while SERVED[0].started == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if SERVED[0].cancelled:
            break
        await asyncio.sleep(0.01)
    assert SERVED[0].cancelled == 1


async def test_ten_thousand_calls_in_one_gather_all_succeed(root):
    results = await asyncio.gather(*(root.call_remote("slow_echo", n) for n in range(10_000)))
    assert results == list(range(10_000))


async def test_calls_waiting_for_a_slot_keep_their_order_and_their_timeouts():
    limits = Limits(max_outstanding_calls=2)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            hangs = [root.call_remote("hang") for _ in range(2)]
            late = root.call_remote("echo", "late", timeout=0.2)
            with pytest.raises(broker.CallTimeout, match="found no free slot within 0.2 s"):
                await late
            order = [root.call_remote("echo", n) for n in range(5)]
            root.call_remote_only("echo", "one-way, in its turn")
            hangs[0].cancel()
            hangs[1].cancel()
            assert await asyncio.gather(*order) == list(range(5))
            # A queued call cancelled before it was sent is never sent.
            blockers = [root.call_remote("hang") for _ in range(2)]
            never = root.call_remote("echo", "never")
            never.cancel()
            for b in blockers:
                b.cancel()
            assert await root.call_remote("echo", "after") == "after"


async def test_a_closed_connection_fails_the_calls_waiting_for_a_slot():
    limits = Limits(max_outstanding_calls=1)
    async with await broker.serve(Echo(), "127.0.0.1", 0, limits=limits) as server:
        conn = await broker.connect("127.0.0.1", server.port, limits=limits)
        root = await conn.root()
        hang = root.call_remote("hang")
        queued = root.call_remote("echo", 1)
        await conn.close()
        for call in (hang, queued):
            with pytest.raises(broker.ConnectionLost):
                await call


SCRIPT = textwrap.dedent('''
    import asyncio, gc, broker

    class Root(broker.Root):
        def remote_fail(self):
            raise ValueError("no")

    async def main():
        async with await broker.serve(Root(), "127.0.0.1", 0) as server:
            async with await broker.connect("127.0.0.1", server.port) as conn:
                root = await conn.root()
                calls = [root.call_remote("fail") for _ in range(50)]
                await asyncio.sleep(0.5)
                del calls
                gc.collect()
                lost = [root.call_remote("fail") for _ in range(5)]
            del lost
            gc.collect()

    asyncio.run(main())
''')


def test_failed_calls_nobody_awaited_print_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "never retrieved" not in result.stderr
