"""The sans-IO core's call bookkeeping, driven in memory (broker.testing.CorePair):
the queue of our calls waiting for a free slot, and the E-order backlog of
the peer's calls held behind one that has not taken its first step."""

from __future__ import annotations

import dataclasses

import pytest

import broker
import broker.testing
from broker._events import AnswerEvent, CallEvent, CallNotSent, CallSent, CancelEvent
from broker._messages import Op
from broker.testing import CorePair, split_frames

import msgpack


class Calculator(broker.Root):
    def remote_add(self, a, b):
        return a + b

    def remote_note(self, text):
        return None


def open_pair(**limits) -> CorePair:
    pair = CorePair(Calculator(), limits=dataclasses.replace(broker.DEFAULT_LIMITS, **limits))
    pair.handshake()
    return pair


def sent_calls(core) -> list[list]:
    """The CALL messages ``core`` queued (other opcodes left out)."""
    messages = [msgpack.unpackb(body, strict_map_key=False)
                for body in split_frames(core.take_output())]
    return [m for m in messages if m[0] == Op.CALL]


def answer_all(pair: CorePair) -> list:
    """Deliver the client's calls, answer each (the test runs the methods),
    deliver the answers; return the client's events."""
    for event in pair.deliver(pair.client):
        if type(event) is CancelEvent:
            continue  # answered all the same, as a method that finished first
        pair.server.answer(event.req_id, getattr(event.target, "remote_" + event.method)(
            *event.args, **event.kwargs))
    return pair.deliver(pair.server)


# -- our calls waiting for a slot ------------------------------------------------

def test_a_call_past_the_free_slots_is_queued_and_sent_when_an_answer_frees_one():
    pair = open_pair(max_outstanding_calls=2)
    client = pair.client
    first = client.call(0, "add", (1, 2), {}, True, "first")
    second = client.call(0, "add", (3, 4), {}, True, "second")
    third = client.call(0, "add", (5, 6), {}, True, "third")
    assert (first, second, third) == (1, 2, None)
    assert [entry[0] for entry in client.call_queue] == ["third"]
    events = answer_all(pair)
    assert [type(e) for e in events] == [AnswerEvent, AnswerEvent]
    # The first answer freed a slot: the queued call went out with its id.
    assert client.take_dequeued() == [CallSent("third", 3)]
    assert not client.call_queue
    assert [m[1] for m in sent_calls(client)] == [3]


def test_a_one_way_call_waits_behind_queued_calls_to_keep_their_order():
    pair = open_pair(max_outstanding_calls=1)
    client = pair.client
    assert client.call(0, "add", (1, 2), {}, True, "a") == 1
    assert client.call(0, "add", (3, 4), {}, True, "b") is None
    assert client.call(0, "note", ("x",), {}, False) is None  # behind "b"
    answer_all(pair)
    assert client.take_dequeued() == [CallSent("b", 2)]
    assert [(m[1], m[3]) for m in sent_calls(client)] == [(2, "add"), (3, "note")]


def test_without_wait_for_call_slot_a_call_past_the_slots_is_refused():
    pair = open_pair(max_outstanding_calls=1, wait_for_call_slot=False)
    pair.client.call(0, "add", (1, 2), {})
    with pytest.raises(broker.LimitExceeded, match="wait_for_call_slot"):
        pair.client.call(0, "add", (3, 4), {})
    assert not pair.client.call_queue


def test_the_peers_smaller_running_limit_bounds_our_slots():
    pair = CorePair(Calculator(), limits=dataclasses.replace(broker.DEFAULT_LIMITS,
                                                              max_outstanding_calls=10))
    server_limits = dataclasses.replace(broker.DEFAULT_LIMITS, max_outstanding_calls=1)
    pair.server = CorePair._core(Calculator(), server_limits, False)
    pair.server.start(pair.now)
    pair.handshake()
    assert pair.client.call_slots == 1
    assert pair.client.call(0, "add", (1, 2), {}, True, "a") == 1
    assert pair.client.call(0, "add", (1, 2), {}, True, "b") is None


def test_a_queued_call_that_cannot_be_encoded_fails_alone():
    pair = open_pair(max_outstanding_calls=1)
    client = pair.client
    client.call(0, "add", (1, 2), {}, True, "a")
    client.call(0, "add", ({1, 2j, object()}, 2), {}, True, "bad")
    client.call(0, "add", (5, 6), {}, True, "good")
    answer_all(pair)
    outcomes = client.take_dequeued()
    assert type(outcomes[0]) is CallNotSent and outcomes[0].token == "bad"
    assert isinstance(outcomes[0].error, Exception)
    assert type(outcomes[1]) is CallSent and outcomes[1].token == "good"
    assert [m[4] for m in sent_calls(client)] == [[5, 6]]


def test_unqueue_withdraws_a_waiting_call_and_lets_one_way_calls_behind_it_go():
    pair = open_pair(max_outstanding_calls=1)
    client = pair.client
    client.call(0, "add", (1, 2), {}, True, "a")
    client.call(0, "add", (3, 4), {}, True, "b")
    client.call(0, "note", ("x",), {}, False)
    client.take_output()
    assert client.unqueue("b") is True
    assert client.unqueue("b") is False
    assert [m[3] for m in sent_calls(client)] == ["note"]
    assert not client.call_queue


def test_a_cancelled_call_keeps_its_slot_until_the_peer_answers():
    pair = open_pair(max_outstanding_calls=1)
    client = pair.client
    req = client.call(0, "add", (1, 2), {}, True, "a")
    client.cancel(req)
    assert client.call(0, "add", (3, 4), {}, True, "b") is None  # the slot is still taken
    events = answer_all(pair)  # the late answer frees it
    assert events == [AnswerEvent(req, None)]
    assert client.take_dequeued() == [CallSent("b", 2)]


def test_closing_hands_back_the_calls_that_never_got_a_slot():
    pair = open_pair(max_outstanding_calls=1)
    client = pair.client
    client.call(0, "add", (1, 2), {}, True, "a")
    client.call(0, "add", (3, 4), {}, True, "b")
    client.call(0, "note", ("x",), {}, False)
    client.close()
    assert client.drop_queued() == ["b"]  # one-way calls have nobody to tell
    assert not client.call_queue


# -- the peer's calls held for E-order ------------------------------------------------

def calls_from_client(pair: CorePair, count: int) -> list:
    for i in range(count):
        pair.client.call(0, "add", (i, i), {}, True, i)
    return pair.deliver(pair.client)


def test_calls_after_one_waiting_for_its_first_step_are_held_in_order():
    pair = open_pair()
    server = pair.server
    first = server.receive_frame(split_frames(_one_call(pair, 1))[0])
    assert type(first) is CallEvent
    server.first_step_pending()  # the adapter started it; its first step has not run
    assert calls_from_client(pair, 3) == []
    assert [e.req_id for e in server.backlog] == [2, 3, 4]
    assert server.next_held_call() is None  # still waiting for that first step
    server.first_step_taken()
    assert server.next_held_call().req_id == 2
    server.first_step_pending()  # that one could not start at once either
    assert server.next_held_call() is None
    server.first_step_taken()
    assert [server.next_held_call().req_id for _ in range(2)] == [3, 4]
    assert server.next_held_call() is None


def _one_call(pair: CorePair, a: int) -> list[bytes]:
    pair.client.call(0, "add", (a, a), {}, True, a)
    return pair.client.take_output()


def test_a_cache_update_is_held_behind_a_call_too():
    pair = open_pair()
    server = pair.server
    calls_from_client(pair, 1)
    server.first_step_pending()
    held = CallEvent(None, Calculator(), "note", ["x"], {}, False, None)
    assert server._hold(held) is None
    assert server.backlog[-1] is held


def test_cancel_of_a_held_call_is_answered_cancelled_and_it_never_starts():
    pair = open_pair()
    server = pair.server
    calls_from_client(pair, 1)
    server.first_step_pending()
    calls_from_client(pair, 1)
    assert [e.req_id for e in server.backlog] == [2]
    pair.client.cancel(2)
    assert pair.deliver(pair.client) == []  # no CancelEvent: the core answered it
    assert not server.backlog
    assert 2 not in server.running
    messages = [msgpack.unpackb(b) for b in split_frames(server.take_output())]
    assert messages[-1][:3] == [Op.ERROR, 2, "cancelled"]


def test_cancel_of_a_started_call_is_an_event_for_the_adapter():
    pair = open_pair()
    (event,) = calls_from_client(pair, 1)
    pair.client.cancel(event.req_id)
    assert pair.deliver(pair.client) == [CancelEvent(event.req_id)]


def test_held_calls_never_start_once_closed():
    pair = open_pair()
    server = pair.server
    calls_from_client(pair, 1)
    server.first_step_pending()
    calls_from_client(pair, 2)
    server.close()
    server.first_step_taken()
    assert server.next_held_call() is None


# -- the login deadline (server side, a root that requires login) ----------------------

@pytest.mark.parametrize("open_first", [False, True])
def test_the_login_deadline_is_exact_and_closes_with_goodbye_timeout(open_first):
    pair = CorePair(Calculator())
    if open_first:
        pair.handshake()
    server = pair.server
    server.expect_login(pair.now, 5.0)
    assert server.next_deadline() == pair.now + 5.0
    assert server.handle_timeout(pair.now + 4.999) is None
    event = server.handle_timeout(pair.now + 5.0)
    assert "did not log in within" in event.reason
    assert server.state == "GOODBYE_SENT"
    messages = [msgpack.unpackb(b) for b in split_frames(server.take_output())]
    assert messages[-1][:2] == [Op.GOODBYE, "timeout"]


def test_logging_in_takes_the_login_deadline_off():
    pair = open_pair()
    server = pair.server
    server.expect_login(pair.now, 5.0)
    server.logged_in()
    # Only the keepalive and idle deadlines are left.
    assert server.next_deadline() == pair.now + server.limits.keepalive_interval
    assert server.handle_timeout(pair.now + 5.0) is None
    assert server.state == "OPEN"


# -- what dead and released proxies owe the peer ---------------------------------------

class Child(broker.Referenceable):
    def remote_ping(self):
        return "pong"


class Parent(broker.Root):
    def remote_child(self):
        return Child()


def pair_holding_a_child() -> tuple[CorePair, int]:
    pair = CorePair(Parent())
    pair.handshake()
    pair.client.call(0, "child", (), {}, True, "c")
    (event,) = pair.deliver(pair.client)
    pair.server.answer(event.req_id, Child())
    (answer,) = pair.deliver(pair.server)
    proxy = answer.value
    assert len(pair.server.refs.local) == 2  # the root and the child
    return pair, proxy.object_id


def messages(core) -> list[list]:
    return [msgpack.unpackb(b) for b in split_frames(core.take_output())]


def test_a_dead_proxy_is_decrefed_when_the_loop_processes_releases():
    pair, child_id = pair_holding_a_child()
    client = pair.client
    assert client.proxy_died(child_id, 1) is True  # the adapter schedules the loop
    assert client.take_output() == []  # nothing before process_releases()
    client.process_releases()
    assert messages(client) == [[Op.DECREF, child_id, 1]]
    client.decref(child_id, 0)  # a zero count sends nothing
    assert client.take_output() == []


def test_the_peer_lets_go_of_an_object_once_the_decref_arrives():
    pair, child_id = pair_holding_a_child()
    pair.client.proxy_died(child_id, 1)
    pair.client.process_releases()
    assert pair.deliver(pair.client) == []
    assert child_id not in pair.server.refs.local


def test_the_root_proxy_is_never_counted_so_its_death_owes_nothing():
    pair, _ = pair_holding_a_child()
    assert pair.client.proxy_died(0, 1) is False
    pair.client.process_releases()
    assert pair.client.take_output() == []


def test_a_released_proxy_is_decrefed_at_once_and_the_peer_lets_go():
    pair, child_id = pair_holding_a_child()
    pair.client.proxy_released(child_id, 1)
    assert pair.deliver(pair.client) == []
    assert child_id not in pair.server.refs.local


def test_releases_owed_to_a_closed_peer_are_dropped():
    pair, child_id = pair_holding_a_child()
    pair.client.proxy_died(child_id, 1)
    pair.client.close()
    assert not pair.client.dead_proxies
    pair.client.process_releases()
    assert pair.client.take_output() == []


def test_the_root_proxy_is_shared_counted_and_made_again_once_released():
    pair, _ = pair_holding_a_child()
    refs = pair.client.refs
    first = refs.root_proxy(broker.testing.CoreProxy)
    assert refs.root_proxy(broker.testing.CoreProxy) is first
    assert first._pb_count == 2
    first._pb_released = True
    again = refs.root_proxy(broker.testing.CoreProxy)
    assert again is not first and again._pb_count == 1
    assert pair.server.refs.held_by_peer() == 1  # the child; the root is not counted
