"""The field constraints of docs/protocol.md (issue 15, gaps 3, 8, 9, 11),
checked on the wire: a raw peer over a real socket against this broker."""

from __future__ import annotations

import asyncio

import pytest

import broker
import cred
from broker import Referenceable, Root
from broker._fields import MAX_REQ_ID, MIN_MAX_FRAME, error_body

from .test_old_wire_replay import PASSWORD, USER, make_portal
from .wirevalues import RawPeer, Ref, loads

HELLO = [0, "pb", 1, ["cancel", "ping"], 4 * 1024 * 1024]


class Big(Exception):
    pass


class Service(Root):
    def remote_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_fail(self, size, tb_size=0):
        raise Big("é" * size)

    async def remote_numbers(self):
        for n in range(3):
            yield n


@pytest.fixture
async def raw():
    server = await broker.serve(Service(), "127.0.0.1", 0)
    peers = []

    async def connect(hello=HELLO):
        peer = await RawPeer.connect("127.0.0.1", server.port)
        peers.append(peer)
        peer.send(hello)
        assert (await peer.receive())[0] == 0
        return peer

    async with server:
        yield connect
        for peer in peers:
            await peer.close()


async def _goodbye(peer):
    message, _ = await peer.receive_until(lambda m: m[0] == 11)
    return message


def test_limits_refuse_a_max_frame_below_the_minimum():
    with pytest.raises(ValueError, match="at least 1024"):
        broker.Limits(max_frame=MIN_MAX_FRAME - 1)
    assert broker.Limits(max_frame=MIN_MAX_FRAME).max_frame == 1024


async def test_a_hello_announcing_a_max_frame_below_1024_is_a_protocol_error(raw):
    peer = await raw(hello=[0, "pb", 1, [], 1023])
    code, reason = (await _goodbye(peer))[1:]
    assert code == "protocol-error" and "1023" in reason and "1024" in reason


@pytest.mark.parametrize("size", [300, 5000, 100_000])
async def test_a_shortened_error_always_fits_the_peers_max_frame(raw, size):
    peer = await raw(hello=[0, "pb", 1, [], MIN_MAX_FRAME])
    peer.send([1, 1, 0, "fail", [size], {}, True])
    body = await peer.receive_body()
    assert len(body) <= MIN_MAX_FRAME
    _, req_id, code, type_name, message, tb, copy = loads(body)
    assert (req_id, code, copy) == (1, "remote-error", None)
    assert type_name.endswith("Big")
    assert message.startswith("é" * 100)
    if len(("é" * size).encode()) > MIN_MAX_FRAME:
        assert message.endswith("(truncated to fit max_frame)")
    peer.send([1, 2, 0, "echo", ["still open"], {}, True])
    assert await peer.receive() == [2, 2, [["still open"], {}]]


@pytest.mark.parametrize("limit", [1024, 1500, 4096, 70_000])
@pytest.mark.parametrize("tb", [None, "x" * 10, "t\u00e9" * 50_000])
def test_error_body_fits_every_limit_with_long_fields(limit, tb):
    body = error_body(MAX_REQ_ID, "limit-exceeded", "m." * 1000, "\U0001f600" * 40_000, tb,
                      b"c" * 100_000, limit)
    assert len(body) <= limit
    message = loads(body)
    assert message[6] is None and len(message[3].encode()) <= 256
    assert message[4].startswith("\U0001f600")
    if tb is not None and len(tb) > 100:
        assert message[5].startswith("(truncated to fit max_frame) ...")


def test_error_body_leaves_an_error_that_fits_untouched():
    body = error_body(1, "remote-error", "ValueError", "short", "tb", b"\x01", 1024)
    assert loads(body) == [3, 1, "remote-error", "ValueError", "short", "tb", b"\x01"]


@pytest.mark.parametrize("req_id", [0, -1, MAX_REQ_ID + 1, 2 ** 64 - 1])
async def test_a_call_whose_req_id_is_out_of_range_is_a_protocol_error(raw, req_id):
    peer = await raw()
    peer.send([1, req_id, 0, "echo", [], {}, True])
    assert (await _goodbye(peer))[1] == "protocol-error"


async def test_the_largest_req_id_is_answered(raw):
    peer = await raw()
    peer.send([1, MAX_REQ_ID, 0, "echo", [1], {}, True])
    assert await peer.receive() == [2, MAX_REQ_ID, [[1], {}]]


async def test_a_cancel_whose_req_id_is_out_of_range_is_a_protocol_error(raw):
    peer = await raw()
    peer.send([8, 0])
    assert (await _goodbye(peer))[1] == "protocol-error"


async def test_a_kwargs_key_that_is_not_a_string_fails_that_call_only(raw):
    peer = await raw()
    peer.send([1, 1, 0, "echo", [], {1: "one"}, True])
    error = await peer.receive()
    assert error[:4] == [3, 1, "remote-error", "TypeError"]
    peer.send([1, 1, 0, "echo", [], {"one": 1}, False])  # one-way: nothing comes back
    peer.send([1, 2, 0, "echo", [], {"one": 1}, True])
    assert await peer.receive() == [2, 2, [[], {"one": 1}]]


async def test_args_sent_as_a_tuple_is_a_protocol_error(raw):
    peer = await raw()
    peer.send([1, 1, 0, "echo", (1, 2), {}, True])
    assert (await _goodbye(peer))[1] == "protocol-error"


async def test_stream_answers_are_plain_arrays_and_a_pull_after_close_answers_false_nil(raw):
    peer = await raw()
    peer.send([1, 1, 0, "numbers", [], {}, True])
    answer = await peer.receive()
    assert answer[:2] == [2, 1] and type(answer[2]) is Ref and answer[2].kind == 5
    (source,) = answer[2].args
    peer.send([1, 2, source, "pull", [], {}, True])
    item = await peer.receive()
    assert item == [2, 2, [True, 0]] and type(item[2]) is list
    peer.send([1, 3, source, "close", [], {}, False])
    peer.send([1, 4, source, "pull", [], {}, True])
    peer.send([1, 5, source, "pull", [], {}, True])
    assert await peer.receive() == [2, 4, [False, None]]
    assert await peer.receive() == [2, 5, [False, None]]
    peer.send([4, source, 1])
    peer.send([1, 6, 0, "echo", [], {}, True])
    assert await peer.receive() == [2, 6, [[], {}]]


async def test_a_stream_pulled_past_its_end_answers_false_nil_to_every_pull(raw):
    peer = await raw()
    peer.send([1, 1, 0, "numbers", [], {}, True])
    (source,) = (await peer.receive())[2].args
    for req in range(2, 8):
        peer.send([1, req, source, "pull", [], {}, True])
    answers = [await peer.receive() for _ in range(6)]
    assert [a[2] for a in answers] == [[True, 0], [True, 1], [True, 2], [False, None],
                                       [False, None], [False, None]]


async def test_the_client_releases_the_challenger_after_a_refused_respond():
    """Gap 3: a server plays the portal by hand; the client must DECREF the
    challenger (object 1) once respond failed, without being collected."""
    verifier = cred.ScramVerifier.from_password("right", iterations=4096)
    seen: asyncio.Queue = asyncio.Queue()

    async def serve_one(reader, writer):
        peer = RawPeer(reader, writer)
        peer.send([0, "pb", 1, ["cancel", "ping"], 4 * 1024 * 1024])
        scram = None
        try:
            while True:
                message = await peer.receive()
                await seen.put(message)
                if message[0] == 1 and message[3] == "login":
                    scram = cred.ScramServer(message[4][0])
                    peer.send([2, message[1], (Ref(0, (1,)), scram.start(verifier))])
                elif message[0] == 1 and message[3] == "respond":
                    peer.send([3, message[1], "remote-error", "broker.Unauthorized",
                               cred.LOGIN_FAILED, None, None])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    async with server:
        conn = await broker.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            with pytest.raises(broker.Unauthorized) as info:
                await conn.login("alice", "wrong", service="s")
            messages = []
            while not messages or messages[-1] != [4, 1, 1]:
                messages.append(await asyncio.wait_for(seen.get(), 10))
            assert info.value is not None  # the failed login is still referenced here
            assert [m[3] for m in messages if m[0] == 1] == ["login", "respond"]
        finally:
            await conn.close()


async def _raw_scram_login(peer, client, req=1):
    peer.send([1, req, 0, "login", [client.first()], {}, True])
    (challenger, server_first) = (await peer.receive())[2]
    final = client.final(server_first)
    peer.send([1, req + 1, challenger.args[0], "respond", [final, "pbecho", None, None], {}, True])
    server_final, perspective, ticket = (await peer.receive())[2]
    client.verify(server_final)
    return server_first, ticket


@pytest.mark.parametrize("spelling", ["exact", "salt-unpadded", "iterations-zero-padded",
                                      "space"])
async def test_a_one_trip_server_first_must_match_byte_for_byte(spelling):
    """Gap 12: the same salt and count spelled another way gets the fallback."""
    server = await broker.serve(make_portal(), "127.0.0.1", 0)
    async with server:
        first = await RawPeer.connect("127.0.0.1", server.port)
        first.send(HELLO)
        await first.receive()
        server_first, ticket = await _raw_scram_login(first, cred.ScramClient(USER, PASSWORD))
        await first.close()
        _, salt, iterations = server_first.split(",")
        nonce = "OneTripNonce0123456789ab"
        spelled = {"exact": f"{salt},{iterations}",
                   "salt-unpadded": f"{salt.rstrip('=')},{iterations}",
                   "iterations-zero-padded": f"{salt},i=0{iterations[2:]}",
                   "space": f"{salt}, {iterations}"}[spelling]
        one_first = f"r={nonce}{ticket},{spelled}"
        client = cred.ScramClient(USER, PASSWORD, nonce=nonce)
        client_first = client.first()
        # The proof is over the exact text, so only the spelling differs.
        final = client.final(f"r={nonce}{ticket},{salt},{iterations}")
        peer = await RawPeer.connect("127.0.0.1", server.port)
        try:
            peer.send(HELLO)
            await peer.receive()
            peer.send([1, 1, 0, "login_one_trip",
                       [client_first, ticket, one_first, final, "pbecho", None, None], {}, True])
            answer = (await peer.receive())[2]
            assert type(answer) is tuple
            if spelling == "exact":
                assert type(answer[0]) is str and type(answer[1]) is Ref  # logged in
            else:
                assert type(answer[0]) is Ref and type(answer[1]) is str  # the fallback
                assert answer[1] != one_first
        finally:
            await peer.close()
