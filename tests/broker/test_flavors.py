import pytest

from broker import Perspective, Referenceable, Viewable
from broker._flavors import lookup_method


class Thing(Referenceable):
    def remote_add(self, a, b):
        return a + b

    def not_exposed(self):
        return "secret"

    @staticmethod
    def remote_static():
        return "static"

    @classmethod
    def remote_klass(cls):
        return cls.__name__


def test_only_remote_prefixed_methods_are_reachable_by_their_short_name():
    thing = Thing()
    assert lookup_method(thing, "add")(1, 2) == 3
    assert lookup_method(thing, "static")() == "static"
    assert lookup_method(thing, "klass")() == "Thing"
    for name in ("not_exposed", "remote_add", "__class__", "__init__", "__dict__",
                 "add.real", "ad\x00d", "", "_private"):
        assert lookup_method(thing, name) is None


def test_a_non_callable_under_the_prefix_is_a_class_definition_error():
    with pytest.raises(TypeError, match="not callable"):
        class Bad(Referenceable):
            remote_value = 3


def test_a_private_name_under_the_prefix_is_a_class_definition_error():
    with pytest.raises(TypeError, match="plain identifier"):
        type("Bad", (Referenceable,), {"remote__hidden": lambda self: 1})


def test_a_subclass_can_withdraw_an_inherited_method_with_none():
    class Less(Thing):
        remote_add = None

    assert lookup_method(Less(), "add") is None
    assert lookup_method(Less(), "static")() == "static"


def test_perspectives_expose_only_perspective_methods():
    class Avatar(Perspective):
        def perspective_hi(self):
            return "hi"

        def remote_hi(self):
            return "wrong door"

    assert lookup_method(Avatar(), "hi")() == "hi"
    assert "hi" in Avatar._pb_methods and len(Avatar._pb_methods) == 1


def test_viewables_have_view_tables():
    class Board(Viewable):
        def view_who(self, perspective):
            return perspective

    assert set(Board._pb_methods) == {"who"}
