"""Plug-in discovery: entry points, in-process registration, broken plug-ins."""

from __future__ import annotations

import argparse
import sys
import types
from importlib.metadata import EntryPoint

import pytest

import services
from services import (
    ENTRY_POINT_GROUP,
    Application,
    PluginLoadError,
    PluginRegistry,
    Service,
    ServiceBuildError,
    ServicePlugin,
    UnknownPluginError,
    get_plugin,
    load_extra_plugins,
    register_plugin,
    unregister_plugin,
)
from services._plugins import build_service
from tests.services import fixture_plugins


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.fixture
def fake_module(monkeypatch):
    """Install an importable module ``pb_fake_plugins`` with a few objects."""
    module = types.ModuleType("pb_fake_plugins")
    module.good = fixture_plugins.LineEchoPlugin()
    module.not_a_plugin = object()
    module.PluginClass = fixture_plugins.TickerPlugin
    monkeypatch.setitem(sys.modules, "pb_fake_plugins", module)
    return module


def test_an_entry_point_is_imported_only_when_its_plugin_is_asked_for(fake_module):
    registry = PluginRegistry(lambda: [
        entry_point("line-echo", "pb_fake_plugins:good"),
        entry_point("echo", "pb_no_such_module_here:plugin"),
    ])
    assert registry.names() == ["echo", "line-echo"]
    assert registry.get("line-echo") is fake_module.good
    with pytest.raises(PluginLoadError) as raised:
        registry.get("echo")
    message = str(raised.value)
    assert "plugin 'echo'" in message
    assert "entry point echo = 'pb_no_such_module_here:plugin'" in message
    assert "ModuleNotFoundError: No module named 'pb_no_such_module_here'" in message
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_listing_marks_broken_plugins_and_keeps_the_others(fake_module):
    registry = PluginRegistry(lambda: [
        entry_point("line-echo", "pb_fake_plugins:good"),
        entry_point("echo", "pb_no_such_module_here:plugin"),
        entry_point("odd", "pb_fake_plugins:not_a_plugin"),
    ])
    infos = {info.name: info for info in registry.available()}
    assert infos["line-echo"].error is None
    assert infos["line-echo"].description == fixture_plugins.LineEchoPlugin.description
    assert "No module named" in infos["echo"].error
    assert "is not a service plugin" in infos["odd"].error


def test_an_entry_point_may_name_a_plugin_class(fake_module):
    registry = PluginRegistry(lambda: [entry_point("ticker", "pb_fake_plugins:PluginClass")])
    assert isinstance(registry.get("ticker"), fixture_plugins.TickerPlugin)


def test_an_entry_point_must_be_named_like_its_plugin(fake_module):
    registry = PluginRegistry(lambda: [entry_point("other", "pb_fake_plugins:good")])
    with pytest.raises(PluginLoadError, match="calls itself 'line-echo'"):
        registry.get("other")


def test_an_unknown_plugin_lists_the_known_ones(fake_module):
    registry = PluginRegistry(lambda: [entry_point("line-echo", "pb_fake_plugins:good")])
    with pytest.raises(UnknownPluginError) as raised:
        registry.get("ehco")
    assert raised.value.available == ["line-echo"]
    assert "available: line-echo" in str(raised.value)


def test_registered_plugins_take_precedence_over_entry_points():
    registry = PluginRegistry(lambda: [entry_point("line-echo", "pb_no_such_module_here:x")])
    mine = registry.register(fixture_plugins.LineEchoPlugin())
    assert registry.get("line-echo") is mine
    assert [info.error for info in registry.available()] == [None]


def test_registering_a_second_plugin_under_a_taken_name_needs_replace():
    registry = PluginRegistry(lambda: [])
    first = registry.register(fixture_plugins.LineEchoPlugin())
    registry.register(first)  # the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(fixture_plugins.LineEchoPlugin())
    second = registry.register(fixture_plugins.LineEchoPlugin(), replace=True)
    assert registry.get("line-echo") is second
    registry.unregister("line-echo")
    with pytest.raises(UnknownPluginError):
        registry.get("line-echo")


def test_a_duck_typed_plugin_is_accepted_and_a_broken_one_refused():
    class Duck:
        name = "duck"
        description = "quacks"

        def add_arguments(self, parser):
            pass

        def build(self, options, application):
            return Service()

    registry = PluginRegistry(lambda: [])
    registry.register(Duck())

    class NoBuild:
        name = "nobuild"
        description = ""

        def add_arguments(self, parser):
            pass

    with pytest.raises(PluginLoadError, match="not a service plugin"):
        registry.register(NoBuild())


def test_register_plugin_makes_a_plugin_available_in_process():
    plugin = register_plugin(fixture_plugins.TickerPlugin())
    try:
        assert get_plugin("ticker") is plugin
    finally:
        unregister_plugin("ticker")


def test_extra_plugins_load_from_the_environment_and_from_specs(fake_module):
    registry = PluginRegistry(lambda: [])
    assert registry.load_spec("pb_fake_plugins:good") == [fake_module.good]
    with pytest.raises(PluginLoadError, match="'line-echo' is already registered"):
        registry.load_spec("tests.services.fixture_plugins")
    registry = PluginRegistry(lambda: [])
    assert [p.name for p in registry.load_spec("tests.services.fixture_plugins")] == [
        "line-echo", "ticker",
    ]
    with pytest.raises(PluginLoadError, match="has no attribute 'missing'"):
        registry.load_spec("pb_fake_plugins:missing")
    with pytest.raises(PluginLoadError, match="No module named"):
        registry.load_spec("pb_no_such_module_here")


def test_load_extra_plugins_reads_PB_EXTRA_PLUGINS(monkeypatch):
    monkeypatch.setattr(services._plugins, "_default_registry", PluginRegistry(lambda: []))
    loaded = load_extra_plugins(
        ["tests.services.fixture_plugins:ticker"],
        environ={"PB_EXTRA_PLUGINS": " tests.services.fixture_plugins:line_echo , "},
    )
    assert [p.name for p in loaded] == ["line-echo", "ticker"]
    assert get_plugin("line-echo") is fixture_plugins.line_echo


async def test_build_may_be_async_and_must_return_a_service(tmp_path):
    application = Application("app", data_dir=tmp_path)
    options = argparse.Namespace(interval=1.0, realm="r")
    service = await build_service(fixture_plugins.ticker, options, application)
    assert isinstance(service, fixture_plugins.TickerService)

    class Wrong(ServicePlugin):
        name = "wrong"

        def build(self, options, application):
            return "not a service"

    with pytest.raises(ServiceBuildError, match="not a services.Service"):
        await build_service(Wrong(), options, application)
