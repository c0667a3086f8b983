"""The Twisted dialect's harness: banana bytes -> sans-IO core -> unjelly."""

from __future__ import annotations

import broker
from broker import Limits, Referenceable, Root
from broker.twisted._banana import encode
from broker.twisted._core import CallEvent, TwistedBroker

from ._harness import Harness, check_limits

LIMITS = Limits(max_frame=16 * 1024, max_depth=12, max_items=64, max_outstanding_calls=4,
                max_local_references=8, max_caches=4, handshake_bytes=1024)


class _Child(Referenceable):
    pass


class _FuzzRoot(Root):
    def remote_echo(self, value=None):
        return value

    def remote_child(self):
        return _Child()


_ROOT = _FuzzRoot()
_CHOICE = encode(b"pb", vocabulary=False)


def _twisted_wire(data: bytes) -> None:
    core = TwistedBroker(owner=object(), make_proxy=lambda i: None, is_client=False,
                         limits=LIMITS)
    core.refs.set_root(_ROOT)
    core.start()
    # An odd first byte means "the client chose pb first", so most inputs
    # get past the negotiation; an even one fuzzes the negotiation itself.
    if data[:1] and data[0] & 1:
        core.receive_data(_CHOICE)
    for event in core.receive_data(data[1:]):
        if isinstance(event, CallEvent):
            check_limits([event.args, event.kwargs], max_depth=LIMITS.max_depth,
                         max_items=LIMITS.max_items)
            if event.answer_wanted:
                core.answer(event.req_id, event.func(*event.args[:1]) if event.method == "echo"
                            else None)
    core.take_output()
    assert len(core.running) <= LIMITS.max_outstanding_calls, "running calls past the limit"
    assert len(core.refs.local) <= LIMITS.max_local_references + 1, "references past the limit"


TWISTED_WIRE = Harness(
    "twisted-wire", "banana bytes -> Twisted-dialect core (receive_data) -> unjelly",
    _twisted_wire, allowed=(broker.ProtocolError,),
)
