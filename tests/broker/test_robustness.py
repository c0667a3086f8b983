"""Hostile or unlucky input reaching one connection: each case gets a clear
answer or a GOODBYE, never an exception out of the protocol, and nothing of
the peer's keeps running or stays allocated once the connection is gone.

Most tests drive a ``BrokerProtocol`` through a recording transport, so that
frames arrive in exactly one ``data_received`` call (no socket can split
them); the rest use real sockets on 127.0.0.1.
"""

import asyncio
import gc
import struct
import sys
import tracemalloc

import msgpack
import pytest

import broker
import jelly
from broker import Limits, Root, Viewable
from broker._protocol import BrokerProtocol

BIG = 2**20000  # a valid BIGINT, but too long for str(): a ValueError waiting to happen


class Recorder(asyncio.Transport):
    """Collects what the protocol writes; close() loses the connection soon."""

    def __init__(self, protocol):
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def write(self, data):
        if not self.closed:
            self.written += data

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return self.closed

    def close(self):
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self):
        self.close()

    def get_write_buffer_size(self):
        return 0

    def messages(self):
        out, data, offset = [], bytes(self.written), 0
        while offset + 4 <= len(data):
            (n,) = struct.unpack(">I", data[offset:offset + 4])
            out.append(msgpack.unpackb(data[offset + 4:offset + 4 + n], strict_map_key=False))
            offset += 4 + n
        return out


def frame(message):
    body = message if isinstance(message, bytes) else jelly.dumps(message)
    return struct.pack(">I", len(body)) + body


HELLO = [0, "pb", 1, ["cancel", "ping"], 4 * 1024 * 1024]


def open_protocol(root, limits=None):
    protocol = BrokerProtocol(root=root, limits=limits or Limits())
    transport = Recorder(protocol)
    protocol.connection_made(transport)
    return protocol, transport


class Target(Root):
    def __init__(self):
        self.started = []
        self.cancelled = []

    def remote_echo(self, value):
        return value

    def remote_record(self, item):
        self.started.append(item)

    def remote_drop(self, value):
        return None

    async def remote_hang(self, item):
        self.started.append(item)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise


async def settle(turns=20):
    for _ in range(turns):
        await asyncio.sleep(0)


# -- peer values that cannot be printed -----------------------------------------


@pytest.mark.parametrize("message, goodbye", [
    ([11, BIG, "bye"], None),                          # GOODBYE with an absurd code
    ([2, BIG, "answer"], "protocol-error"),            # ANSWER for a huge request id
    ([3, BIG, "remote-error", "T", "m", None, None], "protocol-error"),
    ([BIG, 1, 2], "protocol-error"),                   # a huge opcode
])
async def test_huge_integers_in_a_message_get_a_goodbye_not_an_exception(message, goodbye):
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO) + frame(message))
    await protocol.connection.wait_closed()
    messages = transport.messages()
    if goodbye is not None:
        assert messages[-1][:2] == [11, goodbye]


async def test_a_huge_hello_version_is_a_version_goodbye():
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame([0, "pb", BIG, [], 1024]))
    await protocol.connection.wait_closed()
    assert transport.messages()[-1][:2] == [11, "version"]


async def test_a_call_to_a_huge_object_id_is_answered_and_the_connection_stays():
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO) + frame([1, 1, BIG, "echo", [], {}, True])
                           + frame([1, 2, 0, "echo", ["after"], {}, True]))
    await settle()
    error, answer = transport.messages()[1:]
    assert error[:3] == [3, 1, "no-such-object"]
    assert answer == [2, 2, "after"]
    assert protocol.is_open
    transport.close()
    await protocol.connection.wait_closed()


async def test_a_call_reusing_a_huge_running_request_id_is_a_protocol_error():
    root = Target()
    protocol, transport = open_protocol(root)
    call = frame([1, BIG, 0, "hang", ["h"], {}, True])
    protocol.data_received(frame(HELLO) + call + call)
    await protocol.connection.wait_closed()
    assert transport.messages()[-1][:2] == [11, "protocol-error"]


async def test_a_ping_whose_token_holds_a_reference_is_refused_with_a_goodbye():
    protocol, transport = open_protocol(Target())
    ping = msgpack.packb([9, msgpack.ExtType(0x20, msgpack.packb([5]))])
    protocol.data_received(frame(HELLO) + frame(ping))
    await protocol.connection.wait_closed()
    goodbye = transport.messages()[-1]
    assert goodbye[:2] == [11, "protocol-error"]
    assert "PING" in goodbye[2]



@pytest.mark.parametrize("pong", [[10], [10, 1, 2]])
async def test_a_pong_of_the_wrong_arity_is_a_protocol_error(pong):
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO) + frame(pong))
    await protocol.connection.wait_closed()
    assert transport.messages()[-1][:2] == [11, "protocol-error"]

# -- the E-order backlog ----------------------------------------------------------


# Data fed from inside a task (as these tests do) cannot start a coroutine
# eagerly on 3.11, so later calls queue behind it; 3.12+ always starts eagerly.
_BACKLOG_EXISTS = pytest.mark.skipif(sys.version_info >= (3, 12),
                                     reason="3.12+ starts every async method at once: no backlog")


@_BACKLOG_EXISTS
async def test_calls_still_waiting_in_the_backlog_never_start_after_the_connection_is_lost():
    root = Target()
    protocol, transport = open_protocol(root)
    protocol.data_received(frame(HELLO)
                           + b"".join(frame([1, i, 0, "hang", [i], {}, True]) for i in (1, 2, 3))
                           + frame([1, 4, 0, "record", [4], {}, False]))
    protocol.connection_lost(None)  # the peer vanished before the first call's first step
    await protocol.connection.wait_closed()
    await settle()
    try:
        assert root.started == []   # nothing of that peer starts once it is gone
        assert protocol.calls_in_progress == 0
    finally:
        for task in list(protocol._dispatch.tasks.values()):
            task.cancel()
        await settle()


@_BACKLOG_EXISTS
async def test_a_cancel_for_a_call_still_in_the_backlog_stops_it_from_starting():
    root = Target()
    protocol, transport = open_protocol(root)
    protocol.data_received(frame(HELLO)
                           + frame([1, 1, 0, "hang", [1], {}, True])    # starts a task
                           + frame([1, 2, 0, "hang", [2], {}, True])    # waits behind it
                           + frame([8, 2])                              # CANCEL 2
                           + frame([1, 3, 0, "record", [3], {}, False]))
    await settle()
    try:
        assert root.started == [1, 3]
        errors = [m for m in transport.messages() if m[0] == 3]
        assert errors == [[3, 2, "cancelled", "asyncio.exceptions.CancelledError",
                           "call 'hang' was cancelled", None, None]]
        assert protocol.core.running == {1}
    finally:
        transport.close()
        await protocol.connection.wait_closed()
    assert root.cancelled == [1]


# -- limits before memory -----------------------------------------------------------


async def test_a_refused_call_is_answered_without_building_its_arguments():
    # args: an array of 300 000 empty arrays, three times max_items.  jelly
    # refuses it from the header; answering the call must not build it either.
    n = 300_000
    body = (b"\x97\x01\x01\x00\xa4echo" + b"\xdd" + struct.pack(">I", n) + b"\x90" * n
            + b"\x80\xc3")
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO))
    tracemalloc.start()
    try:
        protocol.data_received(frame(body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert transport.messages()[-1][:3] == [3, 1, "limit-exceeded"]
    # A few copies of the bytes (buffers); 300 000 lists would take some 20 MB.
    assert peak < 8 * len(body)
    assert protocol.is_open
    transport.close()
    await protocol.connection.wait_closed()


@pytest.mark.parametrize("answer_wanted, reply", [
    (True, "insecure-jelly"),    # answered, and the connection stays
    (False, None),               # one-way: nothing comes back, the connection stays
    (1, "protocol-error"),       # not a bool: a malformed CALL
])
async def test_a_call_with_a_refused_value_is_answered_from_its_envelope(answer_wanted, reply):
    copy = msgpack.ExtType(0x10, b"\x00\xabno.such.tag\x80")  # COPY of an unregistered tag
    body = msgpack.packb([1, 1, 0, "echo", [copy], {}, answer_wanted])
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO) + frame(body) + frame([9, 7]))
    await settle()
    replies = transport.messages()[1:]
    if reply == "protocol-error":
        assert replies[-1][:2] == [11, "protocol-error"]
        await protocol.connection.wait_closed()
        return
    if reply is not None:
        assert replies[0][:3] == [3, 1, reply] and "no.such.tag" in replies[0][4]
        replies = replies[1:]
    assert replies == [[10, 7]]
    transport.close()
    await protocol.connection.wait_closed()


async def test_refused_viewable_sends_leave_nothing_behind():
    class Board(Viewable):
        def view_look(self, perspective):
            return "ok"

    class Boards(Root):
        def remote_new(self):
            return Board()

    protocol, transport = open_protocol(Boards(), Limits(max_local_references=1))
    protocol.data_received(frame(HELLO) + b"".join(
        frame([1, i, 0, "new", [], {}, True]) for i in range(1, 21)))
    await settle()
    answers = [m for m in transport.messages() if m[0] in (2, 3)]
    assert [m[0] for m in answers] == [2] + [3] * 19
    refs = protocol.core.refs
    assert len(refs.local) == 2 and len(refs._views) == 1  # the root and the one Board
    transport.close()
    await protocol.connection.wait_closed()


# -- errors that do not fit, or do not print ---------------------------------------------


class Failing(Root):
    def remote_big(self, n):
        raise ValueError("x" * n)

    def remote_unprintable(self):
        class Odd(Exception):
            def __str__(self):
                raise RuntimeError("no text for you")
        raise Odd()

    def remote_echo(self, value):
        return value


async def test_an_error_larger_than_the_peers_frame_limit_arrives_shortened():
    limits = Limits(max_frame=64 * 1024)
    async with await broker.serve(Failing(), "127.0.0.1", 0, limits=limits) as server:
        async with await broker.connect("127.0.0.1", server.port, limits=limits) as conn:
            root = await conn.root()
            with pytest.raises(broker.RemoteError) as info:
                await root.call_remote("big", 100_000)
            assert info.value.remote_type == "ValueError"
            assert info.value.remote_message.startswith("xxxx")
            assert "truncated" in info.value.remote_message
            assert await root.call_remote("echo", "still open") == "still open"


async def test_an_exception_that_cannot_be_printed_still_comes_back():
    async with await broker.serve(Failing(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            root = await conn.root()
            with pytest.raises(broker.RemoteError, match="Odd"):
                await root.call_remote("unprintable")
            assert await root.call_remote("echo", "still open") == "still open"


# -- the root is never counted -------------------------------------------------------------


async def test_dropping_a_reference_to_a_peer_without_a_root_keeps_the_connection(pair):
    async with pair(Target()) as (server, client):
        peer_root = await server.root()          # the client published no root
        with pytest.raises(broker.DeadReference):
            await peer_root.call_remote("anything")
        del peer_root
        gc.collect()   # the server's DECREF goes out before the answer below
        root = await client.root()
        assert await root.call_remote("echo", "still open") == "still open"
        assert client.is_open and server.is_open


async def test_a_decref_of_the_root_is_ignored_even_without_a_root():
    protocol, transport = open_protocol(None)
    protocol.data_received(frame(HELLO) + frame([4, 0, 3]) + frame([9, 1]))
    await settle()
    assert transport.messages()[1:] == [[10, 1]]
    assert protocol.is_open
    transport.close()
    await protocol.connection.wait_closed()


# -- copies of the peer's caches are limited too ---------------------------------------


@broker.register_cache("tests.robustness.Sheet")
class SheetCopy(broker.RemoteCache):
    pass


async def test_a_peer_that_never_uncaches_cannot_make_this_side_keep_unlimited_copies():
    protocol, transport = open_protocol(Target(), Limits(max_caches=5))

    def cache(i):
        return msgpack.ExtType(0x22, msgpack.packb([i, "tests.robustness.Sheet", {"n": i}]))

    protocol.data_received(frame(HELLO) + b"".join(
        frame(msgpack.packb([1, i, 0, "drop", [cache(i)], {}, True])) for i in range(1, 21)))
    await settle()
    refs = protocol.core.refs
    assert len(refs.zombies) + len(refs.caches_in) <= 5  # the peer sent DECACHE-bait, no UNCACHE
    errors = [m for m in transport.messages() if m[0] == 3]
    assert errors and all(m[2] == "limit-exceeded" and "max_caches" in m[4] for m in errors)
    assert protocol.is_open
    transport.close()
    await protocol.connection.wait_closed()


# -- the handshake limit ----------------------------------------------------------------


def hello_of(total):
    """A valid HELLO frame of exactly ``total`` bytes, its 4-byte header included."""
    overhead = len(jelly.dumps([0, "pb", 1, ["cancel", "p" * 256], 1 << 20])) - 256
    pad = "p" * (total - 4 - overhead)  # 256 to 65535 characters: the same str header
    data = frame([0, "pb", 1, ["cancel", pad], 1 << 20])
    assert len(data) == total
    return data


@pytest.mark.parametrize("total, accepted", [(1024, True), (1025, False), (1028, False)])
@pytest.mark.parametrize("split", [False, True])
async def test_a_hello_at_the_handshake_limit_is_judged_the_same_however_it_arrives(
        total, accepted, split):
    protocol, transport = open_protocol(Target(), Limits(handshake_bytes=1024))
    data = hello_of(total)
    if split:  # all but the last byte first: a socket may deliver it so
        protocol.data_received(data[:-1])
        protocol.data_received(data[-1:])
    else:
        protocol.data_received(data)
    await settle()
    assert protocol.is_open is accepted
    if accepted:
        transport.close()
    else:
        assert transport.messages()[-1][:2] == [11, "limit-exceeded"]
        assert "handshake_bytes=1024" in transport.messages()[-1][2]
    await protocol.connection.wait_closed()


# -- finalizers that run on other threads ---------------------------------------------
#
# A proxy or cache dropped on another thread is finalized there.  Reporting it
# wakes the loop (call_soon_threadsafe), which releases the GIL while the dying
# object is still reachable through the weak tables; the loop may decode a
# frame naming it right then.  Calling __del__ by hand, with the object still
# referenced, puts the loop in exactly that state.


async def test_a_proxy_whose_finalizer_ran_is_never_handed_out_again():
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO))
    refs = protocol.core.refs
    first = refs.flavor_in(0, (7,))          # REMOTE 7 arrives
    first.__del__()                          # it is finalized on another thread...
    second = refs.flavor_in(0, (7,))         # ...while the loop decodes REMOTE 7 again
    assert second is not first and second._pb_count == 1
    await settle()
    assert [m for m in transport.messages() if m[0] == 4] == [[4, 7, 1]]  # the first receipt
    transport.close()
    await protocol.connection.wait_closed()


async def test_a_cache_whose_finalizer_ran_is_revived_from_its_dropped_state():
    protocol, transport = open_protocol(Target())
    protocol.data_received(frame(HELLO))
    refs = protocol.core.refs
    first = refs.flavor_in(2, (3, "tests.robustness.Sheet", {"n": 1}))   # CACHE 3
    first.__del__()                          # finalized on another thread: its drop is queued
    second = refs.flavor_in(3, (3,))         # CACHED 3 arrives meanwhile
    assert second is not first and second.n == 1 and second._pb_count == 1
    await settle()
    assert [m for m in transport.messages() if m[0] == 6] == [[6, 3, 1]]  # the first receipt
    assert refs.live_cache(3) is second and not refs.zombies
    transport.close()
    await protocol.connection.wait_closed()


# -- what a synchronous method may raise ---------------------------------------------


class Abrupt(BaseException):
    pass


class Raiser(Root):
    def remote_cancelled(self):
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return future.result()          # raises CancelledError, synchronously

    def remote_abrupt(self):
        raise Abrupt("not an Exception")

    async def remote_async_abrupt(self):
        raise Abrupt("not an Exception")

    def remote_echo(self, value):
        return value


@pytest.mark.parametrize("method, error", [
    ("cancelled", broker.CallTimeout),    # ERROR code "cancelled"
    ("abrupt", broker.RemoteError),
    ("async_abrupt", broker.RemoteError),  # what a task does with it, for comparison
])
async def test_a_method_raising_a_base_exception_fails_only_its_call(method, error):
    loop = asyncio.get_running_loop()
    reported = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with await broker.serve(Raiser(), "127.0.0.1", 0) as server:
            async with await broker.connect("127.0.0.1", server.port) as conn:
                root = await conn.root()
                with pytest.raises(error):
                    await root.call_remote(method)
                assert await root.call_remote("echo", "still open") == "still open"
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


def raise_cancelled(*args):
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    future.result()                     # CancelledError, a BaseException


class Watched(broker.Cacheable):
    cache_tag = "tests.robustness.Watched"

    def stopped_observing(self, perspective, observer):
        raise_cancelled()


@broker.register_cache("tests.robustness.Watched")
class WatchedCopy(broker.RemoteCache):
    pass


class Watching(Root):
    def __init__(self):
        self.watched = Watched()

    def remote_watched(self):
        return self.watched

    def remote_echo(self, value):
        return value


@pytest.mark.parametrize("where", ["connection", "proxy", "stopped_observing"])
async def test_a_close_callback_raising_a_base_exception_still_lets_the_connection_close(where):
    loop = asyncio.get_running_loop()
    reported = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with await broker.serve(Watching(), "127.0.0.1", 0) as server:
            later = []
            async with await broker.connect("127.0.0.1", server.port) as conn:
                root = await conn.root()
                copy = await root.call_remote("watched")
                (server_conn,) = server.connections
                if where == "connection":
                    server_conn.notify_on_disconnect(raise_cancelled)
                    server_conn.notify_on_disconnect(later.append)
                elif where == "proxy":
                    peer_root = await server_conn.root()
                    peer_root.notify_on_disconnect(raise_cancelled)
                    server_conn.notify_on_disconnect(later.append)
                del copy
            for _ in range(500):
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == []
            assert later == ([server_conn] if where != "stopped_observing" else [])
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
