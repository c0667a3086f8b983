"""The sans-IO core alone: every state and transition of its table, with no
event loop, no socket and a clock the test moves (docs/protocol.md,
"Connection states")."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

import broker
from broker._core import (
    ACCEPTS,
    AWAIT_HELLO,
    CLOSED,
    GOODBYE_RECEIVED,
    GOODBYE_SENT,
    LINGERING,
    OPEN,
    TRANSITIONS,
)
from broker._events import (
    AnswerEvent,
    CallEvent,
    CancelEvent,
    FailureEvent,
    GoodbyeEvent,
    HelloEvent,
    SendPing,
    StopLingering,
    TimedOut,
)
from broker._messages import Op
from broker.testing import CorePair, split_frames


class Calculator(broker.Root):
    def remote_add(self, a, b):
        return a + b


def wire(core) -> list:
    """The messages ``core`` queued, decoded as plain msgpack."""
    return [msgpack.unpackb(body) for body in split_frames(core.take_output())]


def frame(*message) -> bytes:
    return msgpack.packb(list(message))


def open_pair(**limits) -> CorePair:
    pair = CorePair(Calculator(), limits=dataclasses.replace(broker.DEFAULT_LIMITS, **limits))
    pair.handshake()
    return pair


# -- reaching each state -------------------------------------------------------

def in_state(state: str) -> tuple[CorePair, object]:
    """A pair whose server core is in ``state``."""
    pair = CorePair(Calculator())
    core = pair.server
    if state == AWAIT_HELLO:
        return pair, core
    pair.handshake()
    if state == OPEN:
        return pair, core
    if state == GOODBYE_RECEIVED:
        core.receive_frame(frame(Op.GOODBYE, "normal", "bye"))
    elif state in (GOODBYE_SENT, LINGERING):
        core.goodbye("normal", "bye")
        if state == LINGERING:
            core.linger(pair.now)
    elif state == CLOSED:
        core.close()
    assert core.state == state
    return pair, core


def fire(pair: CorePair, core, trigger: str):
    """Make ``trigger`` happen to ``core``; return what it returned."""
    if trigger == "recv HELLO":
        return pair.deliver(pair.client)  # the client's HELLO is still queued
    if trigger == "recv GOODBYE":
        return core.receive_frame(frame(Op.GOODBYE, "normal", "done"))
    if trigger == "goodbye()":
        return core.goodbye("normal", "done")
    if trigger == "refuse()":
        return core.refuse("limit-exceeded", "too many")
    if trigger == "peer broke protocol":
        with pytest.raises(broker.RemoteProtocolError) as info:
            core.receive_frame(frame(Op.CALL, 1, 0, "add"))  # a CALL of 3 fields
        return info.value
    if trigger == "handshake deadline":
        return core.handle_timeout(pair.now + core.limits.handshake_timeout)
    if trigger == "idle deadline":
        return core.handle_timeout(pair.now + core.limits.idle_timeout)
    if trigger == "login deadline":  # shorter than the handshake deadline
        core.expect_login(pair.now, 1.0)
        return core.handle_timeout(pair.now + 1.0)
    if trigger == "linger()":
        return core.linger(pair.now)
    if trigger == "close()":
        return core.close()
    raise AssertionError(trigger)


@pytest.mark.parametrize("state, trigger", sorted(TRANSITIONS))
def test_every_transition_of_the_table(state, trigger):
    pair, core = in_state(state)
    fire(pair, core, trigger)
    assert core.state == TRANSITIONS[state, trigger]


COMMANDS = ("linger()", "close()")


STATES = (AWAIT_HELLO, OPEN, GOODBYE_SENT, GOODBYE_RECEIVED, LINGERING, CLOSED)
UNLISTED = [(state, command) for state in STATES for command in COMMANDS
            if (state, command) not in TRANSITIONS]


def test_the_table_names_every_state():
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) == set(STATES)


@pytest.mark.parametrize("state, command", UNLISTED)
def test_a_command_the_table_does_not_list_is_a_local_protocol_error(state, command):
    pair, core = in_state(state)
    with pytest.raises(broker.LocalProtocolError, match=f"not allowed in state {state}"):
        fire(pair, core, command)
    assert core.state == state


def test_start_twice_is_a_local_protocol_error():
    pair = CorePair()
    with pytest.raises(broker.LocalProtocolError):
        pair.server.start(pair.now)


@pytest.mark.parametrize("state", [GOODBYE_SENT, GOODBYE_RECEIVED, LINGERING, CLOSED])
def test_closing_states_ignore_every_frame_and_send_nothing(state):
    pair, core = in_state(state)
    core.take_output()
    for op in range(Op.GOODBYE + 2):
        assert core.receive_frame(frame(op, 1, 2)) is None
    core.goodbye("normal", "again")  # a no-op once closing
    core.decref(5, 1)
    with pytest.raises(broker.DeadReference):
        core.call(0, "add", (1, 2), {})
    assert core.take_output() == []
    assert core.state == state
    if state != LINGERING:  # (its own deadline: see "lingering" below)
        assert core.next_deadline() is None
        assert core.handle_timeout(pair.now + 10_000) is None


def test_the_accepted_opcodes_match_the_table():
    assert ACCEPTS[AWAIT_HELLO] == {Op.HELLO, Op.GOODBYE}
    assert ACCEPTS[OPEN] == set(range(Op.CALL, Op.GOODBYE + 1))
    assert set(ACCEPTS) == {AWAIT_HELLO, OPEN}


@pytest.mark.parametrize("op", sorted(set(range(Op.GOODBYE + 1)) - {Op.HELLO, Op.GOODBYE}))
def test_anything_but_hello_before_hello_is_refused(op):
    pair = CorePair(Calculator())
    with pytest.raises(broker.RemoteProtocolError, match=f"opcode {op} is not allowed"):
        pair.server.receive_frame(frame(op, 1, 2, 3))
    assert pair.server.state == GOODBYE_SENT
    assert wire(pair.server)[-1][:2] == [Op.GOODBYE, "protocol-error"]


def test_hello_twice_is_refused():
    pair = open_pair()
    with pytest.raises(broker.RemoteProtocolError, match="opcode 0 is not allowed in state OPEN"):
        pair.server.receive_frame(frame(Op.HELLO, "pb", 1, [], 1 << 20))


# -- every opcode, wrong arity or type ----------------------------------------

BAD_MESSAGES = [
    # (what, message)
    ("CALL arity", [Op.CALL, 1, 0, "add", [1, 2], {}]),
    ("CALL req_id type", [Op.CALL, "1", 0, "add", [1, 2], {}, True]),
    ("CALL target type", [Op.CALL, 1, "0", "add", [1, 2], {}, True]),
    ("CALL method type", [Op.CALL, 1, 0, b"add", [1, 2], {}, True]),
    ("CALL kwargs type", [Op.CALL, 1, 0, "add", [1, 2], [], True]),
    ("CALL answer_wanted type", [Op.CALL, 1, 0, "add", [1, 2], {}, 1]),
    ("ANSWER arity", [Op.ANSWER, 1]),
    ("ANSWER req_id type", [Op.ANSWER, "1", 3]),
    ("ANSWER never sent", [Op.ANSWER, 99, 3]),
    ("ERROR arity", [Op.ERROR, 1, "remote-error", "X", "m", None]),
    ("ERROR never sent", [Op.ERROR, 99, "remote-error", "X", "m", None, None]),
    ("ERROR code type", [Op.ERROR, 1, 5, "X", "m", None, None]),
    ("ERROR message type", [Op.ERROR, 1, "remote-error", "X", None, None, None]),
    ("DECREF arity", [Op.DECREF, 1]),
    ("DECREF count zero", [Op.DECREF, 1, 0]),
    ("DECREF id type", [Op.DECREF, "1", 1]),
    ("DECREF unknown id", [Op.DECREF, 77, 1]),
    ("CACHE_CALL arity", [Op.CACHE_CALL, 1, "m", []]),
    ("CACHE_CALL args type", [Op.CACHE_CALL, 1, "m", {}, {}]),
    ("CACHE_CALL id type", [Op.CACHE_CALL, "1", "m", [], {}]),
    ("DECACHE unknown id", [Op.DECACHE, 9, 1]),
    ("UNCACHE unknown id", [Op.UNCACHE, 9]),
    ("DECACHE arity", [Op.DECACHE, 1]),
    ("DECACHE count type", [Op.DECACHE, 1, "1"]),
    ("UNCACHE arity", [Op.UNCACHE]),
    ("UNCACHE id type", [Op.UNCACHE, "1"]),
    ("CANCEL arity", [Op.CANCEL, 1, 2]),
    ("CANCEL req_id type", [Op.CANCEL, 1.5]),
    ("PING arity", [Op.PING]),
    ("PONG arity", [Op.PONG, 1, 2]),
    ("GOODBYE arity", [Op.GOODBYE, "normal"]),
    ("unknown opcode", [Op.GOODBYE + 1, 1]),
    ("not an opcode", ["call", 1]),
    ("empty message", []),
]


@pytest.mark.parametrize("what, message", BAD_MESSAGES, ids=[w for w, _ in BAD_MESSAGES])
def test_every_opcode_with_wrong_arity_or_type_is_a_remote_protocol_error(what, message):
    pair = open_pair()
    core = pair.server
    if message[:1] == [Op.ERROR]:
        pair.server.call(0, "anything", (), {})  # so that request id 1 was sent
    with pytest.raises(broker.RemoteProtocolError):
        core.receive_frame(msgpack.packb(message))
    assert core.state == GOODBYE_SENT
    goodbye = wire(core)[-1]
    assert goodbye[:2] == [Op.GOODBYE, "protocol-error"], goodbye
    assert core.receive_frame(frame(Op.PING, 1)) is None  # nothing more is read


@pytest.mark.parametrize("message", [
    [Op.HELLO, "pb", 1, [], 0],
    [Op.HELLO, "pb", 1, "cancel", 1 << 20],
    [Op.HELLO, "xmlrpc", 1, [], 1 << 20],
    [Op.HELLO, "pb"],
])
def test_a_malformed_hello_is_a_remote_protocol_error(message):
    pair = CorePair()
    with pytest.raises(broker.RemoteProtocolError, match="malformed HELLO|below the minimum"):
        pair.server.receive_frame(msgpack.packb(message))
    assert pair.server.state == GOODBYE_SENT


def test_another_protocol_version_says_goodbye_version():
    pair = CorePair()
    with pytest.raises(broker.RemoteProtocolError, match="version mismatch"):
        pair.server.receive_frame(frame(Op.HELLO, "pb", 2, [], 1 << 20))
    assert wire(pair.server)[-1][:2] == [Op.GOODBYE, "version"]


# -- calls through the pair ---------------------------------------------------

def test_a_call_and_its_answer_cross_the_pair():
    pair = open_pair()
    req = pair.client.call(0, "add", (2, 3), {})
    [event] = pair.deliver(pair.client)
    assert isinstance(event, CallEvent)
    assert (event.req_id, event.method, event.args, event.answer_wanted) == (req, "add", [2, 3],
                                                                              True)
    assert isinstance(event.target, Calculator)  # data, not a bound method
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.method = "other"
    pair.server.answer(event.req_id, 5)
    assert pair.deliver(pair.server) == [AnswerEvent(req, 5)]
    assert pair.client.waiting == set()


def test_an_unknown_method_is_answered_by_the_core():
    pair = open_pair()
    req = pair.client.call(0, "nope", (), {})
    assert pair.deliver(pair.client) == []  # the core answered it itself
    [event] = pair.deliver(pair.server)
    assert isinstance(event, FailureEvent) and event.req_id == req
    assert isinstance(event.error, broker.NoSuchMethod)


def test_cancel_reaches_the_running_call_and_keeps_the_slot_until_answered():
    pair = open_pair()
    req = pair.client.call(0, "add", (1, 1), {})
    pair.deliver(pair.client)
    pair.client.cancel(req)
    assert pair.deliver(pair.client) == [CancelEvent(req)]
    assert req in pair.client.given_up
    pair.server.fail(req, broker.CallTimeout("cancelled"))
    pair.deliver(pair.server)
    assert pair.client.given_up == set()


def test_a_ping_is_answered_with_its_token():
    pair = open_pair()
    assert pair.server.receive_frame(frame(Op.PING, "tok")) is None
    assert wire(pair.server) == [[Op.PONG, "tok"]]


def test_goodbye_from_the_peer_is_an_event():
    pair = open_pair()
    pair.client.goodbye("normal", "see you")
    assert pair.deliver(pair.client) == [GoodbyeEvent("normal", "see you")]
    assert pair.server.state == GOODBYE_RECEIVED


def test_the_handshake_gives_hello_events():
    pair = CorePair()
    [event] = pair.deliver(pair.client)
    assert isinstance(event, HelloEvent) and "ping" in event.features
    assert pair.server.state == OPEN and pair.client.state == AWAIT_HELLO


# -- deadlines, with a fake clock ---------------------------------------------

def test_handshake_deadline_is_exact():
    pair = CorePair(limits=dataclasses.replace(broker.DEFAULT_LIMITS, handshake_timeout=10.0))
    start = pair.now
    assert pair.client.next_deadline() == start + 10.0
    assert pair.client.handle_timeout(start + 9.999) is None
    event = pair.client.handle_timeout(start + 10.0)
    assert event == TimedOut("no PB HELLO from memory server within 10.0 s "
                             "(is this a PB server?)", True)
    assert pair.client.state == GOODBYE_SENT
    assert wire(pair.client)[-1][:2] == [Op.GOODBYE, "timeout"]
    event = pair.server.handle_timeout(start + 10.0)
    assert event.reason == "the peer did not complete the handshake within 10.0 s"


def test_keepalive_and_idle_deadlines_are_exact():
    pair = open_pair(keepalive_interval=30.0, idle_timeout=90.0)
    core = pair.server
    t0 = pair.now
    core.take_output()
    # The first PING is due 30 s after the last input: not 40 (gap 7).
    assert core.next_deadline() == t0 + 30.0
    assert core.handle_timeout(t0 + 29.999) is None
    assert core.handle_timeout(t0 + 30.0) == SendPing(1)
    assert wire(core) == [[Op.PING, 1]]
    assert core.next_deadline() == t0 + 60.0  # the next PING, 30 s after this one
    core.data_received(t0 + 45.0)  # the PONG
    assert core.next_deadline() == t0 + 75.0
    assert core.handle_timeout(t0 + 60.0) is None  # early wakes do nothing
    assert core.handle_timeout(t0 + 75.0) == SendPing(2)
    assert core.handle_timeout(t0 + 105.0) == SendPing(3)
    assert core.next_deadline() == t0 + 45.0 + 90.0  # idle wins over the next PING
    assert core.handle_timeout(t0 + 134.999) is None
    event = core.handle_timeout(t0 + 135.0)
    # The idle close comes 90 s after the last input: not 100 (gap 7).
    assert isinstance(event, TimedOut) and not event.handshake
    assert "silent for 90.0 s (idle_timeout=90.0)" in event.reason
    assert core.state == GOODBYE_SENT
    assert wire(core)[-1][:2] == [Op.GOODBYE, "timeout"]


def test_no_deadline_when_keepalive_and_idle_are_off():
    pair = open_pair(keepalive_interval=None, idle_timeout=None)
    assert pair.server.next_deadline() is None
    assert pair.server.handle_timeout(pair.now + 1e6) is None


def test_idle_only_without_keepalive():
    pair = open_pair(keepalive_interval=None, idle_timeout=5.0)
    assert pair.server.next_deadline() == pair.now + 5.0
    assert isinstance(pair.server.handle_timeout(pair.now + 5.0), TimedOut)


# -- lingering ----------------------------------------------------------------

def test_lingering_discards_input_up_to_its_budget():
    pair, core = in_state(GOODBYE_SENT)
    core.linger(pair.now, 1000)
    assert core.discard(600) is False
    assert core.discard(400) is False
    assert core.discard(1) is True  # past the budget: the adapter aborts


def test_lingering_ends_at_its_deadline():
    pair, core = in_state(GOODBYE_SENT)
    core.linger(pair.now, 1000, 2.0)
    assert core.next_deadline() == pair.now + 2.0
    assert core.handle_timeout(pair.now + 1.9) is None
    assert isinstance(core.handle_timeout(pair.now + 2.0), StopLingering)
    core.close()
    assert core.state == CLOSED
    assert core.next_deadline() is None


@pytest.mark.parametrize("end", ["refuse", "violation", "deadline"])
def test_a_goodbye_on_a_fault_lingers(end):
    pair = open_pair(idle_timeout=5.0, keepalive_interval=None)
    core = pair.server
    if end == "refuse":
        core.refuse("limit-exceeded", "too many connections")
    elif end == "violation":
        with pytest.raises(broker.RemoteProtocolError):
            core.receive_frame(frame(Op.CALL, 1, 0, "add"))
    else:
        core.handle_timeout(pair.now + 5.0)
    assert core.state == GOODBYE_SENT
    assert core.lingers


def test_an_application_goodbye_or_the_peers_closes_at_once():
    pair = open_pair()
    pair.server.goodbye("normal", "done")
    assert pair.server.state == GOODBYE_SENT and not pair.server.lingers
    pair.deliver(pair.server)
    assert pair.client.state == GOODBYE_RECEIVED and not pair.client.lingers


# -- why a connection closed ---------------------------------------------------

def test_the_close_reason_is_the_first_goodbyes():
    pair = open_pair()
    assert pair.server.close_reason is None
    pair.server.goodbye("shutdown", "the server is shutting down")
    pair.deliver(pair.server)
    assert pair.server.close_reason == "the server is shutting down"
    assert pair.client.close_reason == ("the peer closed the connection (shutdown): "
                                        "the server is shutting down")
    pair.client.close("connection lost: reset")  # a GOODBYE already said why
    assert pair.client.close_reason.startswith("the peer closed")


def test_a_violation_is_its_own_close_reason():
    pair = open_pair()
    with pytest.raises(broker.RemoteProtocolError) as info:
        pair.server.receive_frame(frame(Op.CALL, 1, 0, "add"))
    assert pair.server.close_reason == str(info.value)
    assert wire(pair.server)[-1][:2] == [Op.GOODBYE, "protocol-error"]


def test_a_version_mismatch_is_told_as_such():
    pair = CorePair(Calculator())
    pair.server.take_output()
    with pytest.raises(broker.RemoteProtocolError, match="version mismatch") as info:
        pair.server.receive_frame(frame(Op.HELLO, "pb", 99, [], 1 << 20))
    assert pair.server.close_reason == str(info.value)
    assert wire(pair.server)[-1][:2] == [Op.GOODBYE, "version"]


def test_a_deadline_is_its_own_close_reason():
    pair = open_pair(idle_timeout=5.0, keepalive_interval=None)
    event = pair.server.handle_timeout(pair.now + 5.0)
    assert pair.server.close_reason == event.reason


def test_a_lost_transport_gives_its_reason():
    pair = open_pair()
    pair.server.close("connection lost: reset by peer")
    assert pair.server.close_reason == "connection lost: reset by peer"


def test_every_opcode_has_a_bad_message_above():
    named = {m[0] for _, m in BAD_MESSAGES if m and type(m[0]) is int}
    assert set(range(Op.CALL, Op.GOODBYE + 1)) <= named  # HELLO: the malformed-HELLO test


def test_a_ping_token_that_cannot_be_echoed_is_a_remote_protocol_error():
    pair = open_pair()
    pair.server.take_output()
    ref = msgpack.ExtType(0x20, msgpack.packb([0]))  # a reference: not plain data
    with pytest.raises(broker.RemoteProtocolError, match="PING token"):
        pair.server.receive_frame(msgpack.packb([Op.PING, ref]))
