"""The Twisted PB dialect against the real Twisted, in subprocesses over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import weakref
from pathlib import Path

import pytest

import broker
import jelly
from broker import Cacheable, Referenceable, Root

pytest.importorskip("twisted.spread.pb", reason="Twisted is not installed (the test extra "
                    "pulls it in): the Twisted-dialect interop tests need a real Twisted peer")

PEERS = Path(__file__).parent / "twisted_peers"


class Point(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "tests.Point"

    def __init__(self, x, y):
        self.x, self.y = x, y


jelly.register_copy("tests.Point", Point, dialect="twisted")


class Board(Cacheable):
    cache_tag = "tests.Board"

    def __init__(self):
        self.items = []
        self.observers = []

    def get_state_to_cache_and_observe_for(self, perspective, observer):
        self.observers.append(observer)
        return {"items": list(self.items)}

    def stopped_observing(self, perspective, observer):
        self.observers.remove(observer)

    def add(self, item):
        self.items.append(item)
        for observer in self.observers:
            observer.call_remote("add", item)


class Counter(Referenceable):
    def __init__(self):
        self.n = 0

    def remote_increment(self):
        self.n += 1
        return self.n


class Temp(Referenceable):
    def remote_ping(self):
        return "pong"


class Service(Root):
    def __init__(self):
        self.counter = Counter()
        self.board = Board()
        self.temp_ref = None

    def remote_echo(self, value):
        return value

    def remote_kwargs(self, one, two=None):
        return [one, two]

    def remote_make_counter(self):
        return self.counter

    def remote_is_counter(self, obj):
        return obj is self.counter

    async def remote_call_back(self, callback, value):
        return await callback.call_remote("double", value)

    def remote_move(self, point):
        return Point(point.x + 1, point.y + 1)

    def remote_board(self):
        return self.board

    def remote_add(self, item):
        self.board.add(item)

    def remote_fail(self, message):
        raise ValueError(message)

    def remote_make_temp(self):
        temp = Temp()
        self.temp_ref = weakref.ref(temp)
        return temp

    def remote_temp_gone(self):
        import gc

        gc.collect()
        return self.temp_ref is not None and self.temp_ref() is None


async def run_peer(script: Path | str, *args: str, timeout: float = 30.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_twisted_client_uses_every_flavor_of_our_server():
    service = Service()
    server = await broker.serve(service, "127.0.0.1", 0, dialect="twisted")
    async with server:
        out = await run_peer(PEERS / "client.py", str(server.port))
    check_client_results(out, service)


def check_client_results(out: str, service: Service) -> None:
    """What client.py printed, after a run against ``service``."""
    results = json.loads(out.strip().splitlines()[-1])
    assert results["echo"] == []
    assert results["kwargs"] is True
    assert results["shared"] is True
    assert results["cyclic"] is True
    assert results["reference"] is True
    assert results["back_home"] is True
    assert results["same_object"] is True
    assert results["callback"] == 42
    assert results["copy"] is True
    assert results["cache"] == ["first", "second"]
    assert results["error"][0] == "CopiedFailure" or "boom" in results["error"][1]
    assert results["failure_check"] is True
    assert results["failure_value"] == "boom"
    assert "no remote method 'nothing'" in results["no_such_method"]
    assert results["decref"] is True
    assert results["insecure"][0] == "broker.InsecureJelly"
    assert "evilmodule.Thing" in results["insecure"][1]
    assert "evilmodule" not in sys.modules
    # Every reference the client held was dropped when it disconnected.
    assert service.board.observers == []


@broker.register_cache("tests.Board")
class BoardCopy(broker.RemoteCache):
    def observe_add(self, item):
        self.items.append(item)


class Doubler(Referenceable):
    def remote_double(self, x):
        return x * 2


VALUES = [None, True, False, 0, 1, -1, 2**31, -(2**31) - 5, 2**100, -(2**90), 1.5, -0.25,
          b"bytes", b"None", "text \u00fc", "", [], [1, [2, [3]]], (1, 2, "t"), (),
          {"a": 1, "b": [True]}, {(1, 2): "tuple key"}, {1, 2, 3}, frozenset({"x"})]


@contextlib.asynccontextmanager
async def start_twisted_server(*args: str):
    """server.py running; yields the ports (and paths) it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEERS / "server.py"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, (await proc.stderr.read()).decode()
        yield json.loads(line)
    finally:
        proc.kill()
        await proc.wait()


@pytest.fixture
async def twisted_server():
    async with start_twisted_server() as ports:
        yield ports


async def wait_for(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_our_client_uses_every_flavor_of_a_twisted_server(twisted_server):
    async with broker.connect("127.0.0.1", twisted_server["root"], dialect="twisted") as conn:
        root = await conn.root()
        for value in VALUES:
            got = await root.call_remote("echo", value)
            assert got == value and type(got) is type(value), (value, got)
        assert await root.call_remote("kwargs", 1, two="2") == [1, "2"]
        shared = [1]
        got = await root.call_remote("echo", [shared, shared])
        assert got == [[1], [1]] and got[0] is got[1]
        cyclic = [1]
        cyclic.append(cyclic)
        got = await root.call_remote("echo", cyclic)
        assert got[1] is got

        counter = await root.call_remote("make_counter")
        assert await counter.call_remote("increment") == 1
        assert await root.call_remote("is_counter", counter) is True
        again = await root.call_remote("make_counter")
        assert again is counter  # one proxy per remote object
        assert await again.call_remote("increment") == 2

        doubler = Doubler()
        assert await root.call_remote("call_back", doubler, 21) == 42
        assert await root.call_remote("echo", doubler) is doubler  # home with identity

        moved = await root.call_remote("move", Point(1, 2))
        assert isinstance(moved, Point) and (moved.x, moved.y) == (2, 3)

        board = await root.call_remote("board")
        await root.call_remote("add", "first")
        await wait_for(lambda: board.items == ["first"])
        assert await root.call_remote("observers") == 1
        del board
        import gc

        gc.collect()
        await wait_for_async(lambda: root.call_remote("observers"), 0)

        with pytest.raises(broker.RemoteError) as info:
            await root.call_remote("fail", "boom")
        assert info.value.remote_type == "builtins.ValueError"
        assert info.value.remote_message == "boom"

        temp = await root.call_remote("make_temp")
        assert await temp.call_remote("ping") == "pong"
        del temp
        gc.collect()
        await wait_for_async(lambda: root.call_remote("temp_gone"), True)


async def wait_for_async(call, expected, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await call() != expected:
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_we_log_in_to_a_twisted_portal_with_a_mind(twisted_server):
    port = twisted_server["portal"]
    me = await broker.login("127.0.0.1", port, "alice", "secret", mind=Doubler(),
                            dialect="twisted")
    async with me:
        assert await me.call_remote("whoami") == "alice"
        assert await me.call_remote("call_mind", 5) == 10
        assert await me.call_remote("events") == ["attached"]
    with pytest.raises(broker.RemoteError):
        await broker.login("127.0.0.1", port, "alice", "wrong", dialect="twisted")
    anonymous = await broker.login("127.0.0.1", port, None, None, dialect="twisted")
    async with anonymous:
        events = await anonymous.call_remote("events")
    assert events.count("attached") == 2 and events.count("detached") == 1
