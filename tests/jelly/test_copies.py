"""Copyable / RemoteCopy, the registry, and copy identity within a message."""

from __future__ import annotations

import msgpack
import pytest

import jelly

from ._support import FakeContext


class Point(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.Point"

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm1(self):
        return abs(self.x) + abs(self.y)


class Node(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "test.Node"

    def __init__(self, name, links=()):
        self.name = name
        self.links = list(links)


class Oops(jelly.Copyable, jelly.RemoteCopy, Exception):
    copy_tag = "test.Oops"


@pytest.fixture
def registry(registry):
    registry.register(Point)
    registry.register(Node)
    registry.register(Oops)
    return registry


def rt(value, registry, **kwargs):
    return jelly.loads(jelly.dumps(value, **kwargs), registry=registry)


# --- tags ------------------------------------------------------------------------


def test_default_copy_tag_is_module_and_qualname():
    class Local(jelly.Copyable):
        pass

    assert Local.copy_tag == f"{__name__}.test_default_copy_tag_is_module_and_qualname.<locals>.Local"


def test_copy_tag_set_in_the_class_body_wins():
    assert Point.copy_tag == "test.Point"


def test_subclass_gets_its_own_default_tag_not_its_parents():
    class Child(Point):
        pass

    assert Child.copy_tag.endswith("<locals>.Child")


def test_invalid_copy_tag_in_a_class_body_is_refused():
    with pytest.raises(ValueError, match="invalid copy tag"):

        class Bad(jelly.Copyable):
            copy_tag = ""

    with pytest.raises(TypeError, match="must be a str"):

        class AlsoBad(jelly.Copyable):
            copy_tag = 7  # type: ignore[assignment]


def test_copyable_and_flavored_together_are_refused_at_class_creation():
    with pytest.raises(TypeError, match="both Copyable.*Flavored"):

        class Both(jelly.Copyable, jelly.Flavored):
            pass

    with pytest.raises(TypeError, match="both Copyable.*Flavored"):

        class Later(Point, jelly.Flavored):
            pass


# --- registry ----------------------------------------------------------------------


def test_register_returns_the_class_and_lookup_finds_it(registry):
    assert registry.lookup("test.Point") is Point
    assert "test.Point" in registry
    assert registry.tags() == ["test.Node", "test.Oops", "test.Point"]


def test_register_as_a_decorator_with_a_tag(registry):
    @registry.register("custom.tag")
    class Thing(jelly.RemoteCopy):
        pass

    assert registry.lookup("custom.tag") is Thing


def test_register_as_a_bare_decorator_uses_copy_tag(registry):
    @registry.register
    class Thing(jelly.Copyable, jelly.RemoteCopy):
        copy_tag = "bare.tag"

    assert registry.lookup("bare.tag") is Thing


def test_registering_the_same_class_twice_is_harmless(registry):
    assert registry.register("test.Point", Point) is Point


def test_registering_a_taken_tag_for_another_class_is_refused(registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("test.Point", Node)


def test_registering_a_non_class_is_a_type_error(registry):
    with pytest.raises(TypeError, match="only classes"):
        registry.register("x", Point(1, 2))


def test_registering_a_flavored_class_is_a_type_error(registry):
    class Ref(jelly.Flavored, jelly.RemoteCopy):
        pass

    with pytest.raises(TypeError, match="Flavored"):
        registry.register("x", Ref)


def test_registering_a_class_without_set_copyable_state_is_a_type_error(registry):
    with pytest.raises(TypeError, match="set_copyable_state"):
        registry.register("x", dict)


def test_unregister_forgets_the_tag(registry):
    registry.unregister("test.Point")
    with pytest.raises(jelly.InsecureJelly):
        registry.lookup("test.Point")
    with pytest.raises(KeyError):
        registry.unregister("test.Point")


def test_module_register_copy_and_unregister_copy_use_the_default_registry():
    class Module(jelly.Copyable, jelly.RemoteCopy):
        copy_tag = "test.module-default"

    assert jelly.register_copy(Module) is Module
    try:
        assert "test.module-default" in jelly.default_registry
        value = jelly.loads(jelly.dumps(Module()))
        assert type(value) is Module
    finally:
        jelly.unregister_copy("test.module-default")
    assert "test.module-default" not in jelly.default_registry


def test_module_register_copy_works_as_a_decorator_with_a_tag():
    @jelly.register_copy("test.decorated")
    class Decorated(jelly.RemoteCopy):
        pass

    try:
        assert jelly.default_registry.lookup("test.decorated") is Decorated
    finally:
        jelly.unregister_copy("test.decorated")


# --- round trips -------------------------------------------------------------------


def test_copy_arrives_as_the_registered_class_with_its_state(registry):
    point = rt(Point(1, (2, 3)), registry)
    assert type(point) is Point
    assert (point.x, point.y) == (1, (2, 3))
    assert point.norm1  # methods come from the class


def test_decoder_does_not_call_init(registry):
    class Counted(jelly.Copyable, jelly.RemoteCopy):
        copy_tag = "test.Counted"
        inits = 0

        def __init__(self):
            type(self).inits += 1
            self.value = 5

    registry.register(Counted)
    copy = rt(Counted(), registry)
    assert Counted.inits == 1 and copy.value == 5


def test_sender_and_receiver_classes_can_differ(registry):
    class Sender(jelly.Copyable):
        copy_tag = "test.pair"

        def __init__(self):
            self.a = 1

    class Receiver(jelly.RemoteCopy):
        pass

    registry.register("test.pair", Receiver)
    copy = rt(Sender(), registry)
    assert type(copy) is Receiver and copy.a == 1


def test_unregistered_tag_is_refused_by_name(registry):
    class Stranger(jelly.Copyable):
        copy_tag = "test.stranger"

    with pytest.raises(jelly.InsecureJelly, match="'test.stranger'"):
        rt(Stranger(), registry)


@pytest.mark.parametrize("tag", ["os.system", "builtins.eval", "subprocess.Popen", "__main__.Point"])
def test_dangerous_looking_tags_are_only_names_and_are_refused(registry, tag):
    payload = b"\x00" + msgpack.packb(tag) + msgpack.packb({"args": ["rm -rf /"]})
    data = msgpack.packb(msgpack.ExtType(0x10, payload))
    with pytest.raises(jelly.InsecureJelly, match=repr(tag)):
        jelly.loads(data, registry=registry)


def test_custom_state_methods_are_used_on_both_sides(registry):
    class Secretive(jelly.Copyable, jelly.RemoteCopy):
        copy_tag = "test.secretive"

        def __init__(self):
            self.public, self.secret = 1, 2

        def get_state_to_copy(self):
            return ("only", self.public)

        def set_copyable_state(self, state):
            self.got = state

    registry.register(Secretive)
    assert rt(Secretive(), registry).got == ("only", 1)


def test_perspective_is_passed_to_get_state_to_copy_for(registry):
    seen = []

    class Viewed(jelly.Copyable, jelly.RemoteCopy):
        copy_tag = "test.viewed"

        def get_state_to_copy_for(self, perspective):
            seen.append(perspective)
            return {"for": perspective}

    registry.register(Viewed)
    copy = rt(Viewed(), registry, context=FakeContext(perspective="alice"))
    assert seen == ["alice"] and copy.__dict__ == {"for": "alice"}


def test_perspective_is_none_without_a_context(registry):
    seen = []

    class Viewed(jelly.Copyable):
        copy_tag = "test.viewed2"

        def get_state_to_copy_for(self, perspective):
            seen.append(perspective)
            return {}

    jelly.dumps(Viewed())
    assert seen == [None]


def test_default_get_state_to_copy_for_calls_get_state_to_copy():
    class Stateful(jelly.Copyable):
        def get_state_to_copy(self):
            return {"called": True}

    assert Stateful().get_state_to_copy_for("anyone") == {"called": True}


def test_failure_in_get_state_to_copy_becomes_encode_error_naming_the_class():
    class Broken(jelly.Copyable):
        def get_state_to_copy(self):
            raise RuntimeError("nope")

    with pytest.raises(jelly.EncodeError, match="Broken.get_state_to_copy_for.*nope"):
        jelly.dumps(Broken())


def test_slots_class_without_override_is_refused_with_a_hint():
    class Slotted(jelly.Copyable):
        __slots__ = ("a",)

    with pytest.raises(jelly.EncodeError, match="__slots__.*override get_state_to_copy"):
        jelly.dumps(Slotted())


def test_unsendable_attribute_is_refused_naming_its_type(registry):
    import threading

    with pytest.raises(jelly.EncodeError, match="lock"):
        jelly.dumps(Point(threading.Lock(), 1))


# --- identity ------------------------------------------------------------------------


def test_shared_copy_keeps_identity_within_one_message(registry):
    shared = Point(1, 2)
    first, second, in_tuple = rt([shared, shared, (shared,)], registry)
    assert first is second is in_tuple[0]


def test_self_cycle_through_a_copy_resolves(registry):
    node = Node("self")
    node.links.append(node)
    copy = rt(node, registry)
    assert copy.links[0] is copy


def test_two_node_cycle_and_shared_children_keep_identity(registry):
    a, b, leaf = Node("a"), Node("b"), Node("leaf")
    a.links = [b, leaf]
    b.links = [a, leaf]
    ca, cb = rt([a, b], registry)
    assert ca.links[0] is cb and cb.links[0] is ca
    assert ca.links[1] is cb.links[1]
    assert ca.links[1].name == "leaf"


def test_copy_used_as_a_dict_key_and_value_is_one_object(registry):
    point = Point(0, 0)
    value = rt({point: point}, registry)
    (key, val), = value.items()
    assert key is val


def test_identity_does_not_leak_between_messages(registry):
    point = Point(1, 1)
    assert rt(point, registry) is not rt(point, registry)


def test_copy_inside_a_dict_inside_a_copy_resolves_the_outer_cycle(registry):
    outer = Node("outer")
    outer.links = [{"back": outer, "t": (outer,)}]
    copy = rt(outer, registry)
    assert copy.links[0]["back"] is copy and copy.links[0]["t"][0] is copy


def test_long_chain_of_copies_round_trips_past_the_c_packer_levels(registry):
    # Ext nesting past C_PACKER_LEVELS switches to msgpack's Python packer;
    # the bytes must be the same kind of thing and decode the same way.
    head = Node(0)
    node = head
    for i in range(1, 30):
        node.links = [Node(i)]
        node = node.links[0]
    copy = rt(head, registry)
    names = []
    while copy.links:
        names.append(copy.name)
        copy = copy.links[0]
    assert names == list(range(29)) and copy.name == 29


# --- exceptions ------------------------------------------------------------------------


def test_copyable_exception_travels_as_itself_with_args_and_attributes(registry):
    error = Oops("bad thing", 42)
    error.code = "E42"
    copy = rt(error, registry)
    assert type(copy) is Oops
    assert copy.args == ("bad thing", 42)
    assert copy.code == "E42"
    assert str(copy) == str(error)
    with pytest.raises(Oops):
        raise copy


def test_exception_state_documents_args_under_the_args_key():
    error = Oops("x")
    error.extra = 1
    assert error.get_state_to_copy() == {"extra": 1, "args": ("x",)}


def test_exception_notes_travel_too(registry):
    error = Oops("x")
    error.add_note("context")
    assert rt(error, registry).__notes__ == ["context"]


# --- the receiver's default set_copyable_state ----------------------------------------------


def _copy_message(tag, state):
    return msgpack.packb(
        msgpack.ExtType(0x10, b"\x00" + msgpack.packb(tag) + jelly.dumps(state))
    )


def test_state_that_is_not_a_dict_is_refused_as_decode_error(registry):
    with pytest.raises(jelly.DecodeError, match="must be a dict"):
        jelly.loads(_copy_message("test.Point", [1, 2]), registry=registry)


def test_state_with_non_str_keys_is_refused(registry):
    with pytest.raises(jelly.DecodeError, match="non-str keys"):
        jelly.loads(_copy_message("test.Point", {1: 2}), registry=registry)


def test_state_may_not_replace_a_method(registry):
    with pytest.raises(jelly.DecodeError, match="norm1"):
        jelly.loads(_copy_message("test.Point", {"norm1": 0}), registry=registry)


def test_state_may_not_replace_dunder_descriptors(registry):
    with pytest.raises(jelly.DecodeError, match="__class__|__dict__"):
        jelly.loads(_copy_message("test.Point", {"__class__": 0, "__dict__": 1}), registry=registry)


def test_state_may_set_attributes_that_shadow_plain_class_data(registry):
    class Defaults(jelly.RemoteCopy):
        color = "red"

    registry.register("test.defaults", Defaults)
    copy = jelly.loads(_copy_message("test.defaults", {"color": "blue"}), registry=registry)
    assert copy.color == "blue"


def test_exception_args_must_be_a_tuple(registry):
    with pytest.raises(jelly.DecodeError, match="args must be a tuple"):
        jelly.loads(_copy_message("test.Oops", {"args": [1]}), registry=registry)


def test_error_raised_by_set_copyable_state_becomes_decode_error(registry):
    class Picky(jelly.RemoteCopy):
        def set_copyable_state(self, state):
            raise ValueError("I refuse")

    registry.register("test.picky", Picky)
    with pytest.raises(jelly.DecodeError, match="test.picky.*I refuse"):
        jelly.loads(_copy_message("test.picky", {}), registry=registry)


def test_jelly_error_raised_by_set_copyable_state_passes_through(registry):
    class Strict(jelly.RemoteCopy):
        def set_copyable_state(self, state):
            raise jelly.InsecureJelly("not from you")

    registry.register("test.strict", Strict)
    with pytest.raises(jelly.InsecureJelly, match="not from you"):
        jelly.loads(_copy_message("test.strict", {}), registry=registry)


def test_class_whose_new_needs_arguments_fails_as_decode_error(registry):
    class NeedsArgs(jelly.RemoteCopy):
        def __new__(cls, required):
            return super().__new__(cls)

    registry.register("test.needs-args", NeedsArgs)
    with pytest.raises(jelly.DecodeError, match="cannot create"):
        jelly.loads(_copy_message("test.needs-args", {}), registry=registry)


# --- malformed copy payloads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "expected an unsigned int"),
        (b"\xa1x", "expected an unsigned int"),
        (b"\x01" + msgpack.packb("test.Point") + b"\x80", "out of order"),
        (b"\x00\x05", "expected a str"),
        (b"\x00\xa5ab", "str cut short"),
        (b"\x00" + msgpack.packb("test.Point"), "truncated"),
        (b"\x00" + msgpack.packb("test.Point") + b"\x80\x80", "left over"),
        (b"\x00\xa2\xff\xfe\x80", "UnicodeDecodeError"),
    ],
    ids=["empty", "index not int", "index out of order", "tag not str",
         "tag cut short", "no state", "trailing bytes", "tag not utf-8"],
)
def test_malformed_copy_payload_is_a_decode_error(registry, payload, message):
    with pytest.raises(jelly.DecodeError, match=message):
        jelly.loads(msgpack.packb(msgpack.ExtType(0x10, payload)), registry=registry)


def test_backref_to_a_copy_not_yet_sent_is_a_decode_error(registry):
    data = msgpack.packb([msgpack.ExtType(0x11, b"\x00")])
    with pytest.raises(jelly.DecodeError, match="not sent yet"):
        jelly.loads(data, registry=registry)


def test_backref_with_trailing_bytes_is_a_decode_error(registry):
    first = jelly.dumps(Point(1, 2))
    data = msgpack.packb([msgpack.ExtType(0x11, b"\x00\x00")])
    with pytest.raises(jelly.DecodeError):
        jelly.loads(b"\x92" + first + data[1:], registry=registry)
