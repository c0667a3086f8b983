"""The context hooks: Flavored objects go out through flavor_out and come
back through flavor_in, wherever they sit in the value."""

from __future__ import annotations

import msgpack
import pytest

import jelly

from ._support import FakeContext, Ref, Remote


class Box(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.context.Box"

    def __init__(self, content):
        self.content = content


@pytest.fixture
def registry(registry):
    registry.register(Box)
    return registry


def test_fake_context_satisfies_the_protocol():
    assert isinstance(FakeContext(), jelly.JellyContext)


def test_flavored_object_goes_out_as_kind_and_args_and_comes_back_through_flavor_in():
    sender, receiver = FakeContext(), FakeContext()
    remote = Remote("calc")
    data = jelly.dumps(remote, context=sender)
    assert sender.out_calls == [remote]
    value = jelly.loads(data, context=receiver)
    assert type(value) is Ref
    assert receiver.in_calls == [(2, (id(remote), "calc"))]
    assert value.kind == 2 and value.args == (id(remote), "calc")


def test_reference_coming_home_is_resolved_by_the_context_to_the_original():
    context = FakeContext()
    remote = Remote("home")
    assert jelly.loads(jelly.dumps(remote, context=context), context=context) is remote


def test_references_nested_in_containers_are_resolved(registry):
    context = FakeContext()
    a, b = Remote("a"), Remote("b")
    value = [a, {"b": b, (a,): {b}}, (1, a)]
    out = jelly.loads(jelly.dumps(value, context=context), context=context)
    assert out[0] is a and out[1]["b"] is b and out[2][1] is a
    assert out[1][(a,)] == {b}


def test_references_inside_copies_are_resolved(registry):
    context = FakeContext()
    remote = Remote("inside")
    box = jelly.loads(jelly.dumps(Box([remote]), context=context), context=context, registry=registry)
    assert type(box) is Box and box.content[0] is remote


def test_copies_inside_reference_args_are_decoded(registry):
    class CopyArgs(FakeContext):
        def flavor_out(self, obj):
            return 7, (Box("payload"), (1, 2))

    context = CopyArgs()
    value = jelly.loads(jelly.dumps(Remote("x"), context=context), context=context, registry=registry)
    assert value.kind == 7
    box, pair = value.args
    assert type(box) is Box and box.content == "payload" and pair == (1, 2)


def test_every_kind_from_0_to_15_round_trips():
    for kind in range(jelly.MAX_REFERENCE_KIND + 1):

        class Kind(FakeContext):
            def flavor_out(self, obj, kind=kind):
                return kind, ("id",)

        value = jelly.loads(jelly.dumps(Remote("k"), context=Kind()), context=FakeContext())
        assert (value.kind, value.args) == (kind, ("id",))


@pytest.mark.parametrize("kind", [-1, 16, "2", 2.0, True])
def test_flavor_out_returning_a_bad_kind_is_an_encode_error(kind):
    class Bad(FakeContext):
        def flavor_out(self, obj):
            return kind, ()

    with pytest.raises(jelly.EncodeError, match="reference kind"):
        jelly.dumps(Remote("x"), context=Bad())


def test_flavor_out_returning_list_args_is_an_encode_error():
    class Bad(FakeContext):
        def flavor_out(self, obj):
            return 0, [1]

    with pytest.raises(jelly.EncodeError, match="must be a tuple"):
        jelly.dumps(Remote("x"), context=Bad())


def test_flavor_out_failure_becomes_encode_error_and_jelly_errors_pass_through():
    class Failing(FakeContext):
        def flavor_out(self, obj):
            raise KeyError("gone")

    with pytest.raises(jelly.EncodeError, match="KeyError.*gone"):
        jelly.dumps(Remote("x"), context=Failing())

    class Limited(FakeContext):
        def flavor_out(self, obj):
            raise jelly.LimitExceeded("too many references")

    with pytest.raises(jelly.LimitExceeded, match="too many references"):
        jelly.dumps(Remote("x"), context=Limited())


def test_flavored_object_without_a_context_is_an_encode_error_naming_the_broker():
    with pytest.raises(jelly.EncodeError, match="Remote.*only be sent over a broker connection"):
        jelly.dumps({"ref": Remote("x")})


def test_reference_without_a_context_is_insecure_jelly():
    data = jelly.dumps([Remote("x")], context=FakeContext())
    with pytest.raises(jelly.InsecureJelly, match="reference.*without a context"):
        jelly.loads(data)


def test_kind_refused_by_the_context_raises_its_insecure_jelly():
    data = jelly.dumps(Remote("x"), context=FakeContext())
    with pytest.raises(jelly.InsecureJelly, match="refused by the fake context"):
        jelly.loads(data, context=FakeContext(refuse_kinds=(2,)))


def test_other_layers_subclass_of_insecure_jelly_passes_through_unchanged():
    class BrokerError(Exception):
        pass

    class BrokerInsecure(BrokerError, jelly.InsecureJelly):
        pass

    class Refusing(FakeContext):
        def flavor_in(self, kind, args):
            raise BrokerInsecure(f"no object {args[0]}")

    data = jelly.dumps(Remote("x"), context=FakeContext())
    with pytest.raises(BrokerInsecure, match="no object"):
        jelly.loads(data, context=Refusing())


def test_unexpected_error_in_flavor_in_becomes_decode_error():
    class Buggy(FakeContext):
        def flavor_in(self, kind, args):
            return {}[args[0]]

    data = jelly.dumps(Remote("x"), context=FakeContext())
    with pytest.raises(jelly.DecodeError, match="KeyError"):
        jelly.loads(data, context=Buggy())


def test_reference_payload_that_is_not_an_array_is_a_decode_error():
    data = msgpack.packb(msgpack.ExtType(0x22, msgpack.packb({"a": 1})))
    with pytest.raises(jelly.DecodeError, match="must be a msgpack array"):
        jelly.loads(data, context=FakeContext())


def test_each_reference_reaches_flavor_in_once():
    context = FakeContext()
    remote = Remote("x")
    jelly.loads(jelly.dumps([remote, remote, (remote,)], context=context), context=context)
    assert len(context.in_calls) == 3
