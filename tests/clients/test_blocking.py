"""The blocking facade (``clients``) against real servers.

The servers run in this process on their own event-loop thread (so a test
can look at the server's objects), or, for the whole-program checks, the
client runs as a ``python -c`` subprocess.  After every test the facade is
shut down and its loop must have logged nothing (no "Task was destroyed",
no "Future exception was never retrieved").
"""

from __future__ import annotations

import asyncio
import inspect
import concurrent.futures
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import broker
import clients
import cred
from clients import _loop_thread

REPO = Path(__file__).resolve().parents[2]
LOOP_THREAD = "pb-clients-loop"
LEAKS = ("ResourceWarning", "Task was destroyed", "never awaited", "never retrieved",
         "Traceback", "Exception ignored", "unclosed")


# -- the server side ----------------------------------------------------------------

class Thing(broker.Referenceable):
    def __init__(self, name: str) -> None:
        self.name = name

    def remote_name(self) -> str:
        return self.name


class EchoRoot(broker.Root):
    def __init__(self) -> None:
        self.thing = Thing("thing")
        self.cancelled = threading.Event()
        self.one_way = threading.Event()
        self.produced: list[int] = []
        self.stream_closed = threading.Event()

    def remote_echo(self, value):
        return value

    def remote_add(self, a, b, *, scale=1):
        return (a + b) * scale

    def remote_thing(self):
        return self.thing

    def remote_things(self):
        return {"list": [self.thing], "tuple": (self.thing, 1), "set": {self.thing},
                "dict": {self.thing: "key", "value": self.thing}, "plain": [1, 2]}

    def remote_is_my_thing(self, value):
        return value is self.thing

    def remote_fail(self, text):
        raise ValueError(text)

    async def remote_slow(self, seconds):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return seconds

    def remote_poke(self):
        self.one_way.set()

    async def remote_call_back(self, callback, value):
        return await callback.call_remote("answer", value)

    def remote_count(self, n):
        async def numbers():
            try:
                for i in range(n):
                    self.produced.append(i)
                    yield i
            finally:
                self.stream_closed.set()
        return numbers()

    def remote_data(self, size):
        return broker.stream_bytes(bytes(range(256)) * (size // 256), chunk_size=1000)


class EchoPerspective(broker.Perspective):
    def __init__(self, name: str) -> None:
        self.name = name
        self.minds: list = []

    def attached(self, mind):
        self.minds.append(mind)

    def perspective_echo(self, text):
        return text

    def perspective_whoami(self):
        return self.name

    async def perspective_shout(self, text):
        return await self.minds[-1].call_remote("hear", text.upper())


class EchoService(cred.Service):
    def create_perspective(self, name):
        return EchoPerspective(name)


class ServerThread:
    """A root server and a portal server on one event loop in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = EchoRoot()
        self.socket_path = str(tmp_path / "pb.sock")
        checker = cred.InMemoryChecker({"alice": "wonderland"},
                                       keyring={"alice": [("pbecho", None)]})
        self.service = EchoService("pbecho", allow_anonymous=True)
        self.portal = cred.Portal(cred.ServiceRealm(self.service),
                                  [checker, cred.AllowAnonymous()],
                                  throttle=cred.Throttle(base_delay=0))
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="test-server", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with await broker.serve(self.root, "127.0.0.1", 0) as server, \
                await broker.serve(self.portal, "127.0.0.1", 0) as portal_server, \
                await broker.serve(self.root, path=self.socket_path) as unix_server:
            self.server = server
            self.port = server.port
            self.portal_port = portal_server.port
            del unix_server
            self._ready.set()
            await self._stop.wait()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def connection_count(self) -> int:
        async def count():
            return len(self.server.connections)
        return self.run(count())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def clean_facade(caplog):
    """Each test ends with clients.shutdown(); the loop must log no errors."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    clients.shutdown()
    assert _loop_thread._thread is None
    assert not any(t.name == LOOP_THREAD and t.is_alive() for t in threading.enumerate())
    problems = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not problems, problems


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- calls -----------------------------------------------------------------------------

def test_calls_return_plain_values_unchanged(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        root = conn.root()
        assert root.call_remote("echo", "hi") == "hi"
        value = {"a": [1, 2.5, None, True], "b": b"\x00\xff", "c": (1, "x"), "d": {3, 4}}
        assert root.call_remote("echo", value) == value
        assert root.call_remote("add", 2, 3, scale=10) == 50


def test_references_come_back_wrapped_and_go_home_as_the_original(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        root = conn.root()
        thing = root.call_remote("thing")
        assert isinstance(thing, clients.RemoteReference)
        assert thing.connection is conn
        assert thing.call_remote("name") == "thing"
        assert root.call_remote("thing") == thing          # same remote object, equal wrappers
        assert root.call_remote("is_my_thing", thing) is True
        assert root.call_remote("is_my_thing", [thing]) is False  # a list arrived, not the thing
        assert root.call_remote("echo", {"k": (thing,)}) == {"k": (thing,)}


def test_results_are_wrapped_recursively_through_containers(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        found = conn.root().call_remote("things")
        thing = conn.root().call_remote("thing")
        assert found["list"] == [thing]
        assert found["tuple"] == (thing, 1) and type(found["tuple"]) is tuple
        assert found["set"] == {thing} and type(found["set"]) is set
        assert found["dict"] == {thing: "key", "value": thing}
        assert found["plain"] == [1, 2]
        assert all(isinstance(x, clients.RemoteReference) for x in found["set"])


def test_a_local_referenceable_argument_is_called_back_on_the_loop_thread(server):
    seen = []

    class Answerer(broker.Referenceable):
        def remote_answer(self, value):
            seen.append(threading.current_thread().name)
            return value * 2

    with clients.connect("127.0.0.1", server.port) as conn:
        assert conn.root().call_remote("call_back", Answerer(), 21) == 42
    assert seen == [LOOP_THREAD]


def test_a_blocking_call_on_the_loop_thread_is_refused_with_advice(server):
    class Reentrant(broker.Referenceable):
        def __init__(self, root):
            self.root = root

        def remote_answer(self, value):
            return self.root.call_remote("echo", value)   # blocking, on the loop thread

    with clients.connect("127.0.0.1", server.port) as conn:
        root = conn.root()
        with pytest.raises(broker.RemoteError) as info:
            root.call_remote("call_back", Reentrant(root), 1)
        assert "RuntimeError" in str(info.value)
        assert "use the async API there" in str(info.value)


def test_remote_failures_raise_the_brokers_own_errors(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        root = conn.root()
        with pytest.raises(broker.RemoteError) as info:
            root.call_remote("fail", "boom")
        assert info.value.remote_type.endswith("ValueError")
        assert info.value.remote_message == "boom"
        with pytest.raises(broker.NoSuchMethod):
            root.call_remote("no_such_method")


def test_a_slow_call_times_out_and_is_cancelled_remotely(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        started = time.monotonic()
        with pytest.raises(broker.CallTimeout):
            conn.root().call_remote("slow", 30, timeout=0.2)
        assert time.monotonic() - started < 5
        assert server.root.cancelled.wait(5)
        assert conn.root().call_remote("echo", "still fine") == "still fine"


def test_the_connection_timeout_is_the_default_and_none_waits(server):
    assert clients.DEFAULT_TIMEOUT == 30.0
    with clients.connect("127.0.0.1", server.port, timeout=0.2) as conn:
        assert conn.timeout == 0.2
        with pytest.raises(broker.CallTimeout):
            conn.root().call_remote("slow", 30)
        assert conn.root().call_remote("slow", 0.4, timeout=None) == 0.4
        assert conn.root().call_remote("slow", 0.4, timeout=2) == 0.4


def test_call_remote_only_returns_at_once_and_the_call_runs(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        assert conn.root().call_remote_only("poke") is None
        assert server.root.one_way.wait(5)


def test_release_tells_the_server_and_later_calls_raise_dead_reference(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        thing = conn.root().call_remote("thing")
        assert conn.async_connection.remote_reference_count >= 1
        thing.release()
        assert not thing.is_alive
        with pytest.raises(broker.DeadReference):
            thing.call_remote("name")
        thing.release()  # twice is harmless
        with conn.root().call_remote("thing") as again:   # `with` releases it
            assert again.call_remote("name") == "thing"
        assert not again.is_alive


def test_close_says_goodbye_and_later_calls_raise_dead_reference(server):
    conn = clients.connect("127.0.0.1", server.port)
    root = conn.root()
    wait_until(lambda: server.connection_count() == 1)
    conn.close()
    assert not conn.is_open
    wait_until(lambda: server.connection_count() == 0)
    with pytest.raises(broker.DeadReference):
        root.call_remote("echo", 1)
    conn.close()  # closing twice does nothing


def test_a_unix_socket_works_like_tcp(server):
    with clients.connect(path=server.socket_path) as conn:
        assert conn.root().call_remote("echo", "over unix") == "over unix"


def test_a_refused_connection_raises_os_error():
    with pytest.raises(OSError):
        clients.connect("127.0.0.1", 1)


def test_notify_on_disconnect_runs_on_the_loop_thread_when_the_server_goes(server):
    conn = clients.connect("127.0.0.1", server.port)
    root = conn.root()
    gone = []
    conn.notify_on_disconnect(lambda c: gone.append(("conn", c is conn,
                                                     threading.current_thread().name)))
    root.notify_on_disconnect(lambda r: gone.append(("root", r is root)))
    server.stop()
    wait_until(lambda: len(gone) == 2)
    assert sorted(gone) == [("conn", True, LOOP_THREAD), ("root", True)]
    assert "shutting down" in conn.wait_closed(timeout=5)
    conn.close()


# -- streams -----------------------------------------------------------------------------

def test_a_returned_stream_is_a_blocking_iterator(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        stream = conn.root().call_remote("count", 20)
        assert isinstance(stream, clients.RemoteStream)
        assert list(stream) == list(range(20))
        data = conn.root().call_remote("data", 256 * 40)
        assert b"".join(data) == bytes(range(256)) * 40


def test_closing_a_stream_early_stops_the_producer(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        with conn.root().call_remote("count", 10_000) as stream:
            assert next(stream) == 0
            assert next(stream) == 1
        assert server.root.stream_closed.wait(5)
        assert len(server.root.produced) < 100


# -- login -------------------------------------------------------------------------------

def test_login_returns_a_perspective_that_owns_its_connection(server):
    with clients.login("127.0.0.1", server.portal_port, "alice", "wonderland",
                       service="pbecho") as alice:
        assert alice.call_remote("echo", "hi") == "hi"
        assert alice.call_remote("whoami") == "alice"
        conn = alice.connection
        assert conn.is_open
    assert not conn.is_open


def test_a_refused_login_raises_unauthorized_and_closes_the_connection(server):
    with pytest.raises(broker.Unauthorized) as info:
        clients.login("127.0.0.1", server.portal_port, "alice", "wrong")
    assert str(info.value) == cred.LOGIN_FAILED
    wait_until(lambda: server.connection_count() == 0)


def test_a_mind_receives_the_perspectives_callbacks(server):
    heard = []

    class Mind(broker.Referenceable):
        def remote_hear(self, text):
            heard.append(text)
            return len(heard)

    with clients.connect("127.0.0.1", server.portal_port) as conn:
        alice = conn.login("alice", "wonderland", mind=Mind())
        assert alice.call_remote("shout", "hello") == 1
        assert heard == ["HELLO"]
        anonymous = conn.login_anonymous(service="pbecho")
        assert anonymous.call_remote("whoami") == "anonymous"


def test_anonymous_login_helper(server):
    with clients.login_anonymous("127.0.0.1", server.portal_port, service="pbecho") as anon:
        assert anon.call_remote("whoami") == "anonymous"


# -- threads and loops -----------------------------------------------------------------------

def test_blocking_calls_work_while_an_event_loop_runs_in_the_calling_thread(server):
    async def notebook_cell():
        # What a Jupyter cell does: plain blocking code, with a loop running.
        asyncio.get_running_loop()
        with clients.connect("127.0.0.1", server.port) as conn:
            direct = conn.root().call_remote("echo", "from a running loop")
        loop = asyncio.get_running_loop()

        def in_executor():
            with clients.connect("127.0.0.1", server.port) as conn:
                return conn.root().call_remote("echo", "from an executor")

        return direct, await loop.run_in_executor(None, in_executor)

    assert asyncio.run(notebook_cell()) == ("from a running loop", "from an executor")


def test_every_thread_shares_one_loop(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        root = conn.root()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: root.call_remote("add", i, 1), range(64)))
        assert results == [i + 1 for i in range(64)]
    assert [t.name for t in threading.enumerate()].count(LOOP_THREAD) == 1


def test_shutdown_closes_open_connections_and_the_next_call_starts_a_new_loop(server):
    conn = clients.connect("127.0.0.1", server.port)
    root = conn.root()
    wait_until(lambda: server.connection_count() == 1)
    clients.shutdown()
    assert not conn.is_open
    wait_until(lambda: server.connection_count() == 0)
    with pytest.raises(broker.DeadReference):
        root.call_remote("echo", 1)
    conn.close()
    with clients.connect("127.0.0.1", server.port) as again:
        assert again.root().call_remote("echo", 2) == 2


class OwnedLock:
    """A stand-in for the loop module's lock that knows its owner and tells
    when a given thread starts waiting for it."""

    def __init__(self, watched: threading.Thread) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None
        self.watched = watched
        self.watched_arrives = threading.Event()

    def __enter__(self) -> None:
        if threading.current_thread() is self.watched:
            self.watched_arrives.set()
        self._lock.acquire()
        self.owner = threading.get_ident()

    def __exit__(self, *exc_info) -> None:
        self.owner = None
        self._lock.release()


def test_a_call_that_races_shutdown_from_another_thread_never_hits_a_closed_loop(monkeypatch):
    """Thread B calls shutdown() while this thread is inside run(), between
    finding the loop and handing it the coroutine.  The call must either run
    or fail with an ordinary exception; it must not find the loop closed
    under it (RuntimeError, and a coroutine never awaited)."""
    _loop_thread.run(asyncio.sleep(0))  # a loop is running
    stopper = threading.Thread(target=clients.shutdown, name="stopper")
    lock = OwnedLock(stopper)
    monkeypatch.setattr(_loop_thread, "_lock", lock)
    real_submit = asyncio.run_coroutine_threadsafe
    me = threading.get_ident()

    def submit_while_shutdown_runs(coro, loop):
        monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", real_submit)
        stopper.start()
        lock.watched_arrives.wait()
        if lock.owner != me:  # nothing keeps shutdown() from closing the loop first
            stopper.join()
        return real_submit(coro, loop)

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", submit_while_shutdown_runs)
    try:
        outcome = _loop_thread.run(asyncio.sleep(0, result="ran"))
    except concurrent.futures.CancelledError:
        outcome = "cancelled by the shutdown"
    assert outcome in ("ran", "cancelled by the shutdown")
    stopper.join()
    assert _loop_thread.run(asyncio.sleep(0, result="again")) == "again"  # a fresh loop


def run_script(source: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONASYNCIODEBUG="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c",
         textwrap.dedent(source)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_a_plain_script_works_and_exits_cleanly(server):
    result = run_script(f"""
        import clients
        with clients.connect("127.0.0.1", {server.port}) as conn:
            print(conn.root().call_remote("echo", "from a script"))
        with clients.login("127.0.0.1", {server.portal_port}, "alice", "wonderland") as me:
            print(me.call_remote("whoami"))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from a script", "alice"]
    for marker in LEAKS:
        assert marker not in result.stderr, result.stderr


def test_a_script_that_closes_nothing_is_cleaned_up_at_exit(server):
    result = run_script(f"""
        import clients
        conn = clients.connect("127.0.0.1", {server.port})
        root = conn.root()
        thing = root.call_remote("thing")
        stream = root.call_remote("count", 1000)
        print(next(stream), thing.call_remote("name"))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "thing"]
    for marker in LEAKS:
        assert marker not in result.stderr, result.stderr
    wait_until(lambda: server.connection_count() == 0)
    assert server.root.stream_closed.wait(5)


def test_ctrl_c_while_waiting_cancels_the_remote_call(server):
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        with clients.connect("127.0.0.1", server.port) as conn:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                conn.root().call_remote("slow", 30)
            assert server.root.cancelled.wait(5)
            assert conn.root().call_remote("echo", "after") == "after"
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_wait_closed_gives_up_after_its_timeout(server):
    with clients.connect("127.0.0.1", server.port) as conn:
        with pytest.raises(TimeoutError):
            conn.wait_closed(timeout=0.1)
        assert conn.is_open


def test_the_public_names_are_pinned():
    assert sorted(clients.__all__) == sorted([
        "connect", "login", "login_anonymous", "shutdown", "Connection", "RemoteReference",
        "RemoteStream", "DEFAULT_TIMEOUT", "USE_CONNECTION_TIMEOUT", "reconnecting",
        "Reconnecting"])
    for name in clients.__all__:
        assert getattr(clients, name) is not None
    with pytest.raises(AttributeError):
        clients.no_such_name


class _TwoServices(cred.Service):
    def create_perspective(self, name):
        return broker.Perspective()


def test_login_names_no_default_service_and_the_server_lists_them(server):
    """issue 16: no hidden "pbecho"; a proven account that named no service
    hears which it may use."""
    portal = cred.Portal(cred.ServiceRealm(_TwoServices("chat"), _TwoServices("shop")),
                         [cred.InMemoryChecker({"alice": "pw"},
                                               keyring={"alice": [("chat", None), ("shop", None)]})],
                         throttle=cred.Throttle(base_delay=0))

    async def serve():
        return await broker.serve(portal, "127.0.0.1", 0)

    listener = server.run(serve())
    try:
        cache = cred.ClientCache()
        with pytest.raises(broker.Unauthorized, match="chat, shop"):
            clients.login("127.0.0.1", listener.port, "alice", "pw", cache=cache)
        with clients.login("127.0.0.1", listener.port, "alice", "pw", service="shop",
                           cache=cache) as me:
            assert me.is_alive
        # the blocking client's own cache got the key and the ticket, the default none
        assert cache.key_count == 1
        assert cache.tickets(("pb", ("127.0.0.1", listener.port)), "alice")
        assert not cred.default_client_cache.tickets(("pb", ("127.0.0.1", listener.port)), "alice")
    finally:
        async def stop():
            listener.close()
            await listener.wait_closed()

        server.run(stop())


def test_one_container_walk_and_one_watcher_helper_serve_both_directions():
    """issue 15: _wrap/_unwrap were mirror images, and the watcher code was
    written twice; each is one mechanism now."""
    from clients import _blocking

    source = inspect.getsource(_blocking)
    assert source.count("kind is frozenset") == 1
    assert source.count("def watcher(") == 1
    sentinel = object()
    leaf = lambda value: "X" if value is sentinel else _blocking._KEEP  # noqa: E731
    plain = ([1, 2], {"a": (3,)}, frozenset({4}))
    assert _blocking._walk(plain, leaf) is plain  # nothing replaced: no copy
    assert _blocking._walk([sentinel, {sentinel: (sentinel,)}, {5}], leaf) == ["X", {"X": ("X",)}, {5}]
