"""Service plug-ins: how ``pb run NAME`` finds the code that builds a service.

A plug-in is an object with a ``name``, a one-line ``description``, an
``add_arguments(parser)`` that declares its options on an
:class:`argparse.ArgumentParser`, and a ``build(options, application)`` that
returns a :class:`~services.Service` (or an awaitable of one).  The same
parser describes both the command line (``pb run NAME --port 1``) and the
``[[service]]`` tables of a TOML file (``port = 1``), see :mod:`._config`.

Plug-ins are found in two places:

* installed packages declare entry points in the group
  ``perspective_broker.services`` (``echo = "services.echo:plugin"``); an
  entry point is imported only when its plug-in is asked for or listed, so a
  broken one fails with a :class:`PluginLoadError` naming it and never
  breaks the others;
* :func:`register_plugin` adds one in-process (tests, embedding,
  ``pb run --plugin-module``); these take precedence over entry points with
  the same name.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zope.interface import Attribute, Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from ._application import Application
from ._service import Service, ServiceError

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXTRA_PLUGINS_ENV",
    "IServicePlugin",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "ServicePlugin",
    "UnknownPluginError",
    "available_plugins",
    "get_plugin",
    "load_plugin_spec",
    "plugin_parser",
    "ServiceBuildError",
    "build_service",
    "load_extra_plugins",
    "register_plugin",
    "unregister_plugin",
]

#: The entry-point group installed plug-ins are declared in.
ENTRY_POINT_GROUP = "perspective_broker.services"

#: Environment variable naming extra plug-ins to load (``module:attr,...``).
EXTRA_PLUGINS_ENV = "PB_EXTRA_PLUGINS"


class PluginError(ServiceError):
    """A plug-in could not be found or loaded."""


class UnknownPluginError(PluginError):
    """No plug-in has that name; ``available`` lists the names there are."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = sorted(available)
        known = ", ".join(self.available) or "none"
        shown = name if len(name) <= 60 else name[:57] + "..."
        super().__init__(
            f"unknown plugin {shown!r}; available: {known} (see `pb run --list`)"
        )


class ServiceBuildError(PluginError):
    """A plug-in's ``build()`` failed; ``__cause__`` is the original exception."""

    def __init__(self, plugin_name: str, cause: BaseException) -> None:
        self.plugin_name = plugin_name
        self.cause = cause
        super().__init__(
            f"plugin {plugin_name!r} failed to build its service: "
            f"{type(cause).__name__}: {cause}"
        )


class PluginLoadError(PluginError):
    """A plug-in exists but could not be loaded; ``__cause__`` says why."""

    def __init__(self, name: str, origin: str, reason: str) -> None:
        self.name = name
        self.origin = origin
        self.reason = reason
        super().__init__(f"plugin {name!r} ({origin}) cannot be loaded: {reason}")


class IServicePlugin(Interface):
    """What ``pb run`` needs from a plug-in."""

    name = Attribute("The name used on the command line and in [[service]] tables.")
    description = Attribute("A one-line description for `pb run --list`.")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Declare the service's options on *parser*."""

    def build(
        options: argparse.Namespace, application: Application
    ) -> Service | Awaitable[Service]:
        """Return the (not yet started) service described by *options*."""


@implementer(IServicePlugin)
class ServicePlugin:
    """Convenient base for plug-ins: set ``name`` and ``description``,
    override :meth:`add_arguments` (optional) and :meth:`build`.

    ``build()`` may be ``async``.  It should only construct: open sockets
    and start tasks in the service's ``on_start()``, so that a failure in a
    later service never leaves anything open.
    """

    name: str = ""
    description: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare options; the default declares none."""

    def build(
        self, options: argparse.Namespace, application: Application
    ) -> Service | Awaitable[Service]:
        raise NotImplementedError(f"{type(self).__name__}.build()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass(frozen=True)
class PluginInfo:
    """One line of ``pb run --list``; ``error`` is set for a broken plug-in."""

    name: str
    description: str
    origin: str
    error: str | None = None


def _as_plugin(obj: Any, origin: str, expected_name: str | None) -> Any:
    """Check that *obj* (or an instance of it, if it is a class) is a plug-in."""
    label = expected_name or getattr(obj, "name", None) or repr(obj)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginLoadError(
                label, origin, f"instantiating {obj.__qualname__}: {type(exc).__name__}: {exc}"
            ) from exc
    try:
        verifyObject(IServicePlugin, obj, tentative=True)
    except Invalid as exc:
        detail = " ".join(str(exc).split())
        raise PluginLoadError(
            label, origin, f"{obj!r} is not a service plugin: {detail}"
        ) from exc
    if not isinstance(obj.name, str) or not obj.name:
        raise PluginLoadError(label, origin, f"{obj!r} has no name")
    if expected_name is not None and obj.name != expected_name:
        raise PluginLoadError(
            label, origin,
            f"the entry point is called {expected_name!r} but the plugin calls "
            f"itself {obj.name!r}",
        )
    return obj


def _describe_entry_point(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" in {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value!r}{where}"


def _installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


class PluginRegistry:
    """The plug-ins known to one process: registered ones, then entry points.

    *entry_points* returns the entry points to consider (default: the
    installed ones in :data:`ENTRY_POINT_GROUP`); it is called each time the
    registry looks, so packages installed meanwhile are seen.
    """

    def __init__(
        self,
        entry_points: Callable[[], Iterable[importlib.metadata.EntryPoint]] | None = None,
    ) -> None:
        self._entry_points = entry_points or _installed_entry_points
        self._registered: dict[str, Any] = {}
        self._loaded: dict[tuple[str, str], Any] = {}

    def register(self, plugin: Any, *, replace: bool = False) -> Any:
        """Make *plugin* available by its name; returns it.

        Registered plug-ins take precedence over entry points.  Registering a
        second, different plug-in under a taken name is an error unless
        *replace* is true.
        """
        plugin = _as_plugin(plugin, "registered in-process", None)
        current = self._registered.get(plugin.name)
        if current is not None and current is not plugin and not replace:
            raise ValueError(
                f"a plugin named {plugin.name!r} is already registered ({current!r}); "
                f"pass replace=True to replace it"
            )
        self._registered[plugin.name] = plugin
        return plugin

    def unregister(self, name: str) -> None:
        """Forget the in-process plug-in called *name* (KeyError if none)."""
        del self._registered[name]

    def _entry_points_by_name(self) -> dict[str, importlib.metadata.EntryPoint]:
        found: dict[str, importlib.metadata.EntryPoint] = {}
        for ep in self._entry_points():
            found.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
        return found

    def _load(self, ep: importlib.metadata.EntryPoint) -> Any:
        key = (ep.name, ep.value)
        if key not in self._loaded:
            origin = _describe_entry_point(ep)
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    ep.name, origin, f"{type(exc).__name__}: {exc}"
                ) from exc
            self._loaded[key] = _as_plugin(obj, origin, ep.name)
        return self._loaded[key]

    def get(self, name: str) -> Any:
        """The plug-in called *name*, importing its entry point if needed.

        Raises :class:`UnknownPluginError` or :class:`PluginLoadError`.
        """
        if name in self._registered:
            return self._registered[name]
        entry_points = self._entry_points_by_name()
        if name not in entry_points:
            raise UnknownPluginError(name, {*self._registered, *entry_points})
        return self._load(entry_points[name])

    def names(self) -> list[str]:
        """Every known plug-in name, without importing anything."""
        return sorted({*self._registered, *self._entry_points_by_name()})

    def available(self) -> list[PluginInfo]:
        """Every known plug-in, loading each entry point; broken ones carry
        their error instead of raising."""
        infos: dict[str, PluginInfo] = {}
        for name, ep in self._entry_points_by_name().items():
            if name in self._registered:
                continue
            try:
                plugin = self._load(ep)
            except PluginLoadError as exc:
                infos[name] = PluginInfo(name, "", exc.origin, exc.reason)
            else:
                infos[name] = PluginInfo(
                    name, plugin.description, _describe_entry_point(ep)
                )
        for name, plugin in self._registered.items():
            infos[name] = PluginInfo(name, plugin.description, "registered in-process")
        return [infos[name] for name in sorted(infos)]

    def load_spec(self, spec: str, *, origin: str | None = None) -> list[Any]:
        """Import ``module`` or ``module:attr`` and register the plug-in(s) there.

        Without ``:attr`` the module's ``plugins`` (a sequence) or ``plugin``
        is used; an attribute holding a list or tuple registers each item.
        """
        origin = origin or f"plugin module {spec!r}"
        module_name, _, attr = spec.strip().partition(":")
        if not module_name:
            raise PluginLoadError(spec, origin, "expected MODULE or MODULE:ATTRIBUTE")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginLoadError(
                spec, origin, f"{type(exc).__name__}: {exc}"
            ) from exc
        if attr:
            try:
                obj: Any = module
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginLoadError(
                    spec, origin, f"module {module_name!r} has no attribute {attr!r}"
                ) from exc
        elif hasattr(module, "plugins"):
            obj = module.plugins
        elif hasattr(module, "plugin"):
            obj = module.plugin
        else:
            raise PluginLoadError(
                spec, origin,
                f"module {module_name!r} has neither `plugins` nor `plugin`; "
                f"name the attribute as {module_name}:ATTRIBUTE",
            )
        items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        plugins = [_as_plugin(item, origin, None) for item in items]
        for plugin in plugins:
            try:
                self.register(plugin)
            except ValueError as exc:
                raise PluginLoadError(plugin.name, origin, str(exc)) from exc
        return plugins


_default_registry = PluginRegistry()


def register_plugin(plugin: Any, *, replace: bool = False) -> Any:
    """Register *plugin* in this process (see :meth:`PluginRegistry.register`)."""
    return _default_registry.register(plugin, replace=replace)


def unregister_plugin(name: str) -> None:
    """Forget an in-process plug-in (see :meth:`PluginRegistry.unregister`)."""
    _default_registry.unregister(name)


def get_plugin(name: str) -> Any:
    """The plug-in called *name* (see :meth:`PluginRegistry.get`)."""
    return _default_registry.get(name)


def available_plugins() -> list[PluginInfo]:
    """Every known plug-in (see :meth:`PluginRegistry.available`)."""
    return _default_registry.available()


def load_plugin_spec(spec: str, *, origin: str | None = None) -> list[Any]:
    """Import and register ``module[:attr]`` (see :meth:`PluginRegistry.load_spec`)."""
    return _default_registry.load_spec(spec, origin=origin)


def plugin_parser(plugin: Any, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser holding *plugin*'s options."""
    parser = argparse.ArgumentParser(
        prog=prog or f"pb run {plugin.name}",
        description=plugin.description or None,
    )
    plugin.add_arguments(parser)
    return parser


async def build_service(
    plugin: Any, options: argparse.Namespace, application: Application
) -> Service:
    """Call ``plugin.build()``, awaiting it if needed, and check the result.

    Failures raise :class:`ServiceBuildError`.
    """
    try:
        result = plugin.build(options, application)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Service):
            raise TypeError(f"build() returned {result!r}, not a services.Service")
    except Exception as exc:
        raise ServiceBuildError(plugin.name, exc) from exc
    return result


def load_extra_plugins(
    specs: Iterable[str] = (), *, environ: Mapping[str, str] | None = None
) -> list[Any]:
    """Register the plug-ins named in ``$PB_EXTRA_PLUGINS`` and in *specs*.

    Each spec is ``module`` or ``module:attr`` (see :func:`load_plugin_spec`);
    the variable holds specs separated by commas or spaces.
    """
    environ = os.environ if environ is None else environ
    loaded: list[Any] = []
    for spec in re.split(r"[,\s]+", environ.get(EXTRA_PLUGINS_ENV, "")):
        if spec:
            loaded += load_plugin_spec(spec, origin=f"{EXTRA_PLUGINS_ENV}={spec}")
    for spec in specs:
        loaded += load_plugin_spec(spec, origin=f"--plugin-module {spec}")
    return loaded
