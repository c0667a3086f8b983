"""A client speaking the earlier wire format still works with this server.

``recorded/session-v1.json`` holds the frames of a real client session, as
the broker before the core's re-cut (issue 15) sent and received them: the
HELLOs, a refused call on the portal's root, a SCRAM login, calls on the
perspective with args and kwargs, a reference handed out, called, sent home
and released (DECREF), an error raised by a method, a one-way call and the
GOODBYE.  The test replays the client's frames byte for byte to a live
server over a real socket and checks each frame the server sends back.

Two fields cannot be replayed as they are: the server's nonce is fresh for
every login, so the recording marks the server-first message, the
server-final message and the ticket as "any str", and the client-final
message of ``respond`` is recomputed from the recorded client-first message
(same client nonce, same password) and the live server-first message.

Record again (only on purpose: the file is the old wire format)::

    python -m tests.broker.test_old_wire_replay --record
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import struct
import sys

import pytest

import broker
import cred
from broker import Perspective, Referenceable

from .wirevalues import RawPeer, dumps, frame, from_json, loads, to_json

RECORDING = pathlib.Path(__file__).resolve().parent / "recorded" / "session-v1.json"
USER, PASSWORD = "alice", "wonderland"


class Counter(Referenceable):
    def __init__(self) -> None:
        self.n = 0

    def remote_incr(self, by: int = 1) -> int:
        self.n += by
        return self.n


class Recorded(Perspective):
    def __init__(self, name: str) -> None:
        self.name = name
        self.counter = Counter()
        self.notes: list = []

    def perspective_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def perspective_counter(self):
        return self.counter

    def perspective_is_mine(self, counter):
        return counter is self.counter

    def perspective_divide(self, a, b):
        return a / b

    def perspective_note(self, text):
        self.notes.append(text)


class RecordedService(cred.Service):
    def create_perspective(self, name):
        return Recorded(name)


def make_portal() -> cred.Portal:
    checker = cred.InMemoryChecker({USER: PASSWORD}, keyring={USER: [("pbecho", USER)]},
                                   iterations=4096)
    return cred.Portal(cred.ServiceRealm(RecordedService("pbecho")), [checker],
                       throttle=cred.Throttle(base_delay=0))


async def client_session(host: str, port: int) -> None:
    """What the recorded client did (through the public API)."""
    conn = await broker.connect(host, port)
    async with conn:
        root = await conn.root()
        with pytest.raises(broker.NoSuchMethod):
            await root.call_remote("echo", "before login")
        me = await conn.login(USER, PASSWORD, service="pbecho")
        assert await me.call_remote("echo", "hello", (1, "a"), key={"b": [1.5, None]}) == [
            ["hello", (1, "a")], {"key": {"b": [1.5, None]}}]
        counter = await me.call_remote("counter")
        assert await counter.call_remote("incr", 2) == 2
        assert await me.call_remote("is_mine", counter) is True
        with pytest.raises(broker.RemoteError) as info:
            await me.call_remote("divide", 1, 0)
        assert info.value.remote_type == "ZeroDivisionError"
        await counter.release()
        me.call_remote_only("note", "one-way")
        assert await counter_count(me) == 2


async def counter_count(me) -> int:
    again = await me.call_remote("counter")
    try:
        return await again.call_remote("incr", 0)
    finally:
        await again.release()


# -- recording ------------------------------------------------------------------

async def _record() -> list[dict]:
    events: list[tuple[str, bytes]] = []
    server = await broker.serve(make_portal(), "127.0.0.1", 0)

    async def pipe(reader, writer, who):
        buffer = b""
        while data := await reader.read(65536):
            buffer += data
            while len(buffer) >= 4:
                (size,) = struct.unpack(">I", buffer[:4])
                if len(buffer) < 4 + size:
                    break
                events.append((who, buffer[4:4 + size]))
                buffer = buffer[4 + size:]
            writer.write(data)
        writer.close()

    async def proxy(reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.gather(pipe(reader, up_writer, "client"), pipe(up_reader, writer, "server"))

    relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with server, relay:
        await client_session("127.0.0.1", relay.sockets[0].getsockname()[1])
        await asyncio.sleep(0.5)
    return _mark(events)


def _mark(events: list[tuple[str, bytes]]) -> list[dict]:
    """The steps, with the fields no replay can repeat marked."""
    steps = []
    login_req = respond_req = None
    for who, body in events:
        value = to_json(loads(body))
        step: dict = {"from": who, "hex": frame(body).hex()}
        if who == "client" and value[0] == 1 and value[3] == "login":
            login_req = value[1]
            step["client_first"] = value[4][0]
        if who == "client" and value[0] == 1 and value[3] == "respond":
            respond_req = value[1]
            step["replace_arg_0"] = "client_final"
        if who == "server" and value[0] == 2 and value[1] == login_req:
            value[2]["$tuple"][1] = {"$any": "str"}  # server-first: a fresh nonce
        if who == "server" and value[0] == 2 and value[1] == respond_req:
            value[2]["$tuple"][0] = {"$any": "str"}  # server-final
            value[2]["$tuple"][2] = {"$any": "str"}  # the ticket
        step["value"] = value
        steps.append(step)
    return steps


# -- replay ----------------------------------------------------------------------

def _matches(got, expected) -> bool:
    if isinstance(expected, dict) and set(expected) == {"$any"}:
        return type(got).__name__ == expected["$any"]
    if isinstance(expected, list):
        return (isinstance(got, list) and len(got) == len(expected)
                and all(_matches(g, e) for g, e in zip(got, expected)))
    if isinstance(expected, dict):
        return (isinstance(got, dict) and set(got) == set(expected)
                and all(_matches(got[k], expected[k]) for k in expected))
    return got == expected and type(got) is type(expected)


async def test_a_recorded_client_session_replays_against_the_current_server():
    steps = json.loads(RECORDING.read_text(encoding="utf-8"))
    portal = make_portal()
    server = await broker.serve(portal, "127.0.0.1", 0)
    async with server:
        peer = await RawPeer.connect("127.0.0.1", server.port)
        try:
            client = None
            for number, step in enumerate(steps):
                if step["from"] == "client":
                    if "client_first" in step:
                        nonce = step["client_first"].rsplit("r=", 1)[1]
                        client = cred.ScramClient(USER, PASSWORD, nonce=nonce)
                        assert client.first() == step["client_first"]
                    body = bytes.fromhex(step["hex"])[4:]
                    if step.get("replace_arg_0") == "client_final":
                        message = loads(body)
                        message[4][0] = client.final(server_first)
                        body = dumps(message)
                    peer.send_body(body)
                    continue
                got = to_json(await peer.receive())
                assert _matches(got, step["value"]), (number, got, step["value"])
                if "$any" in json.dumps(step["value"]) and client is not None:
                    answer = got[2]["$tuple"]
                    if isinstance(answer[1], str):
                        server_first = answer[1]  # the live challenge
                    else:
                        client.verify(answer[0])  # the server proved itself
            # Everything was answered; the server then closes after our GOODBYE.
            assert await peer.reader.read() == b""
        finally:
            await peer.close()
    assert portal.open_challenges == 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        RECORDING.parent.mkdir(exist_ok=True)
        steps = asyncio.run(_record())
        RECORDING.write_text(json.dumps(steps, indent=1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    else:
        sys.exit("usage: python -m tests.broker.test_old_wire_replay --record")
