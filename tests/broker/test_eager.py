"""Async remote methods start at once, inside their own task.

Unit tests drive ``broker._eager.start`` from plain loop callbacks (where the
broker calls it: a receive pass); the socket tests check what users see: an
async method that never waits answers in the same packet as a plain one,
``asyncio.timeout``/``TaskGroup``/``current_task`` work in its first step,
context variables do not leak between calls, and a CANCEL arriving right
behind its CALL cancels the method where it waits."""

import asyncio
import contextvars
import struct

import msgpack
import pytest

import broker
from broker import Root, _eager

VAR = contextvars.ContextVar("VAR", default="unset")


async def run_in_callback(fn):
    """Run ``fn()`` from a loop callback (no current task), return its result."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def callback():
        try:
            done.set_result(fn())
        except BaseException as exc:  # pragma: no cover - reported by the test
            done.set_exception(exc)

    loop.call_soon(callback)
    return await done


async def test_a_coroutine_that_never_waits_finishes_inside_start():
    steps = []

    async def quick():
        steps.append(asyncio.current_task() is not None)
        return 42

    started = await run_in_callback(lambda: _eager.start(asyncio.get_running_loop(), quick()))
    assert started.done and started.value == 42 and started.error is None
    assert steps == [True]  # it ran as a task, at once


async def test_an_error_in_the_first_step_is_returned_not_raised():
    async def bad():
        raise ValueError("nope")

    started = await run_in_callback(lambda: _eager.start(asyncio.get_running_loop(), bad()))
    assert started.done and isinstance(started.error, ValueError)


async def test_a_coroutine_that_waits_runs_its_first_step_now_and_finishes_in_its_task():
    steps = []

    async def slow():
        steps.append("first")
        async with asyncio.timeout(5):      # needs a current task
            await asyncio.sleep(0.01)
        async with asyncio.TaskGroup() as group:  # so does this
            inner = group.create_task(asyncio.sleep(0, result="inner"))
        await asyncio.sleep(0)                # a bare yield
        steps.append("rest")
        return inner.result()

    started = await run_in_callback(lambda: _eager.start(asyncio.get_running_loop(), slow()))
    assert not started.done and started.first_step_ran
    assert steps == ["first"]
    assert await started.task == "inner"
    assert steps == ["first", "rest"]


async def test_cancelling_before_the_task_first_runs_cancels_where_the_coroutine_waits():
    seen = []

    async def hang():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled in place")
            raise

    def start_and_cancel():
        started = _eager.start(asyncio.get_running_loop(), hang())
        started.task.cancel()
        return started

    started = await run_in_callback(start_and_cancel)
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert seen == ["cancelled in place"]


async def test_cancelling_before_the_first_run_after_a_bare_yield_still_unwinds_the_coroutine():
    seen = []

    async def spin():
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(3600)
        finally:
            seen.append("unwound")

    def start_and_cancel():
        started = _eager.start(asyncio.get_running_loop(), spin())
        started.task.cancel()
        return started

    started = await run_in_callback(start_and_cancel)
    with pytest.raises(asyncio.CancelledError):
        await started.task
    assert seen == ["unwound"]


async def test_context_changes_stay_in_the_call_that_made_them():
    async def set_var():
        VAR.set("changed")
        return VAR.get()

    started = await run_in_callback(lambda: _eager.start(asyncio.get_running_loop(), set_var()))
    assert started.value == "changed"
    assert VAR.get() == "unset"


async def test_inside_another_task_it_falls_back_to_a_normal_start_on_311_or_runs_eagerly():
    steps = []

    async def quick():
        steps.append("ran")
        return 1

    started = _eager.start(asyncio.get_running_loop(), quick())
    if started.first_step_ran:
        assert steps == ["ran"] and started.done  # Python 3.12+: eager even here
    else:
        assert steps == [] and not started.done   # 3.11 cannot enter a second task
        assert await started.task == 1


# -- over a socket ------------------------------------------------------------

class Methods(Root):
    def __init__(self):
        self.log = []

    async def remote_now(self, value):
        return value

    def remote_echo(self, value):
        return value

    async def remote_tools(self):
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as group:
                task = group.create_task(asyncio.sleep(0, result="grouped"))
        return [task.result(), asyncio.current_task() is not None]

    async def remote_set_var(self, value):
        before = VAR.get()
        VAR.set(value)
        return before

    async def remote_hang(self):
        self.log.append("started")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.log.append("cancelled")
            raise


def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


HELLO = [0, "pb", 1, ["cancel", "ping"], 4 * 1024 * 1024]


async def read_message(reader):
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return msgpack.unpackb(await reader.readexactly(size), strict_map_key=False)


async def test_an_async_method_that_never_waits_answers_in_the_same_packet_as_a_plain_one():
    root = Methods()
    async with await broker.serve(root, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert (await read_message(reader))[0] == 0  # the server's HELLO
            (connection,) = server.connections
            writes = []
            transport = connection._protocol.transport
            original = transport.write
            transport.write = lambda data: (writes.append(bytes(data)), original(data))[1]
            writer.write(frame(HELLO) + frame([1, 1, 0, "now", ["a"], {}, True])
                         + frame([1, 2, 0, "echo", ["b"], {}, True]))
            assert await read_message(reader) == [2, 1, "a"]
            assert await read_message(reader) == [2, 2, "b"]
            assert len(writes) == 1
        finally:
            writer.close()


async def test_a_cancel_right_behind_its_call_cancels_the_method_where_it_waits():
    root = Methods()
    async with await broker.serve(root, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await read_message(reader)
            writer.write(frame(HELLO) + frame([1, 1, 0, "hang", [], {}, True]) + frame([8, 1]))
            answer = await asyncio.wait_for(read_message(reader), 5)
            assert answer[:3] == [3, 1, "cancelled"]
            assert root.log == ["started", "cancelled"]
        finally:
            writer.close()


async def test_timeout_task_group_and_context_variables_work_in_remote_methods():
    async with await broker.serve(Methods(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            assert await root.call_remote("tools") == ["grouped", True]
            assert await root.call_remote("set_var", "first") == "unset"
            assert await root.call_remote("set_var", "second") == "unset"
