"""What to run: the :class:`RunConfig`, read from ``pb run`` arguments or a TOML file.

The TOML shape (documented in ``docs/running.md``)::

    [application]              # optional; every key optional
    name = "myapp"
    data_dir = "pb-data"
    log_level = "info"         # debug | info | warning | error
    log_file = "pb.log"
    pidfile = "pb.pid"
    grace = 10                 # seconds
    loop = "auto"              # auto | asyncio | uvloop

    [[service]]                # one table per service, started in order
    plugin = "echo"            # required
    name = "echo-public"       # optional; default: the plugin's name
    port = 8787                # the plugin's options, by argparse dest

A plug-in's options are validated against the parser its
``add_arguments()`` fills: each key is an option's ``dest`` (``--slow-stop``
is ``slow_stop``), flags take booleans, ``type=int`` options integers,
``nargs``/``append`` options arrays, choices are enforced, and unknown keys,
wrong types and missing required options are :class:`ConfigError`\\ s naming
the file and the key (``app.toml: service[1].port: expected an integer, got
a string ("x")``).  ``service[0]`` is the first ``[[service]]`` table.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._logging import LOG_LEVELS
from ._plugins import PluginRegistry, UnknownPluginError, get_plugin, plugin_parser
from ._service import ServiceError

__all__ = ["ConfigError", "RunConfig", "ServiceSpec", "load_config", "options_from_table"]

DEFAULT_DATA_DIR = Path("pb-data")
#: The environment variable that names the data directory when neither the
#: command line nor a config file does (``pb user`` reads it too).
DATA_DIR_ENV = "PB_DATA_DIR"


def default_data_dir() -> Path:
    """``$PB_DATA_DIR``, else ``./pb-data``: the data directory when neither
    ``--data-dir`` nor ``[application] data_dir`` says otherwise."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
DEFAULT_GRACE = 10.0
DEFAULT_LOG_LEVEL = "info"

# Keys of a [[service]] table that are not plug-in options.
_SERVICE_KEYS = ("plugin", "name")


class ConfigError(ServiceError):
    """The configuration is invalid: ``file``, ``key`` (or None) and ``problem``."""

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


@dataclass
class ServiceSpec:
    """One service to build: a plug-in, its parsed options, an optional name,
    and where it was asked for (``file``/``where`` name it in errors)."""

    plugin: Any
    options: argparse.Namespace
    name: str | None = None
    file: str = "command line"
    where: str = "service"


@dataclass
class RunConfig:
    """Everything ``pb run`` needs; relative paths are relative to the working
    directory."""

    name: str = "pb"
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: str = DEFAULT_LOG_LEVEL
    log_file: Path | None = None
    pidfile: Path | None = None
    grace: float = DEFAULT_GRACE
    #: The event loop: "auto" (uvloop where it is installed), "asyncio" or "uvloop".
    loop: str = "auto"
    services: list[ServiceSpec] = field(default_factory=list)
    source: str | None = None


# -- describing TOML values ----------------------------------------------


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"a date/time ({value})"
    return type(value).__name__


def _shorten(text: str, limit: int = 60) -> str:
    """*text*, cut to *limit* characters with "..." (errors quote input back)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(file: str, key: str, name: str, known: list[str], what: str) -> ConfigError:
    hint = ""
    candidate = name.replace("-", "_")
    if candidate != name and candidate in known:
        hint = f" (did you mean {candidate!r}?)"
    elif len(name) <= 100:  # difflib is quadratic; nobody mistypes at that length
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    expected = ", ".join(known) or "none"
    return ConfigError(file, _shorten(key), f"unknown key{hint}; {what}: {expected}")


# -- plug-in options from a table ----------------------------------------


# argparse has no public way to inspect a parser, so the mapping below reads
# ``parser._actions`` and tells actions apart by their (stable) classes.


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(
        action, (argparse._StoreConstAction, argparse.BooleanOptionalAction)
    ) and not isinstance(action, argparse._AppendConstAction)


def _is_many(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction) or action.nargs in (
        "*", "+", argparse.REMAINDER,
    ) or isinstance(action.nargs, int)


def _expected_element(action: argparse.Action) -> str:
    kind = action.type
    if kind is None or kind is str:
        text = "a string"
    elif kind is int:
        text = "an integer"
    elif kind is float:
        text = "a number"
    elif kind is bool:
        text = "true or false"
    else:
        text = f"a value accepted by {getattr(kind, '__name__', repr(kind))}"
    if action.choices is not None:
        text += " (one of " + ", ".join(repr(c) for c in action.choices) + ")"
    return text


def _convert_element(action: argparse.Action, value: Any, file: str, key: str) -> Any:
    kind = action.type

    def wrong() -> ConfigError:
        return ConfigError(
            file, key, f"expected {_expected_element(action)}, got {_describe(value)}"
        )

    if kind is None or kind is str:
        if not isinstance(value, str):
            raise wrong()
        result: Any = value
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        result = value
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        result = float(value)
    elif kind is bool:
        if not isinstance(value, bool):
            raise wrong()
        result = value
    else:
        # A converter written for the command line: give it the text it
        # would have received there.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise wrong()
        text = value if isinstance(value, str) else str(value)
        try:
            result = kind(text)  # type: ignore[operator]
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ConfigError(file, key, f"invalid value {value!r}: {exc}") from exc
    if action.choices is not None and result not in action.choices:
        raise ConfigError(
            file, key,
            f"expected one of {', '.join(repr(c) for c in action.choices)}, "
            f"got {_describe(value)}",
        )
    return result


def _convert(action: argparse.Action, value: Any, file: str, key: str) -> Any:
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                file, key, f"expected a non-negative integer, got {_describe(value)}"
            )
        return value
    if _is_flag(action):
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {_describe(value)}")
        if isinstance(action.const, bool) or isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else action.default
    if isinstance(action, argparse._AppendConstAction):
        raise ConfigError(file, key, "this option cannot be set from a configuration file")
    if _is_many(action):
        expected = f"an array of {_expected_element(action)}"
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {expected}, got {_describe(value)}")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise ConfigError(
                file, key, f"expected {action.nargs} items, got {len(value)}"
            )
        if action.nargs == "+" and not value:
            raise ConfigError(file, key, "expected at least one item, got an empty array")
        return [
            _convert_element(action, item, file, f"{key}[{i}]")
            for i, item in enumerate(value)
        ]
    return _convert_element(action, value, file, key)


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        action.dest: action
        for action in parser._actions
        if action.dest != argparse.SUPPRESS
        and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
    }


def _defaults(
    parser: argparse.ArgumentParser, actions: Mapping[str, argparse.Action]
) -> argparse.Namespace:
    """The namespace ``parser.parse_args([])`` would give, minus its checks."""
    namespace = argparse.Namespace()
    for dest, action in actions.items():
        default = action.default
        if default is argparse.SUPPRESS:
            continue
        if isinstance(default, str) and action.type is not None and action.option_strings:
            default = action.type(default)  # argparse converts string defaults too
        setattr(namespace, dest, default)
    for dest, value in parser._defaults.items():
        if not hasattr(namespace, dest):
            setattr(namespace, dest, value)
    return namespace


def _is_required(action: argparse.Action) -> bool:
    if action.option_strings:
        return bool(action.required)
    return action.nargs not in ("?", "*", argparse.REMAINDER)


def options_from_table(
    plugin: Any, table: Mapping[str, Any], *, file: str, where: str
) -> argparse.Namespace:
    """Validate *table* against *plugin*'s parser and return the options.

    *where* prefixes keys in errors (``"service[0]"``).
    """
    parser = plugin_parser(plugin)
    actions = _option_actions(parser)
    for reserved in _SERVICE_KEYS:
        actions.pop(reserved, None)
    namespace = _defaults(parser, actions)
    for key, value in table.items():
        action = actions.get(key)
        if action is None:
            raise _unknown_key(
                file, f"{where}.{key}", key, sorted(actions),
                f"plugin {plugin.name!r} accepts",
            )
        setattr(namespace, key, _convert(action, value, file, f"{where}.{key}"))
    for dest, action in actions.items():
        if dest not in table and _is_required(action):
            raise ConfigError(
                file, f"{where}.{dest}",
                f"missing; plugin {plugin.name!r} requires it "
                f"({_expected_element(action)})",
            )
    return namespace


# -- the file ------------------------------------------------------------

_APPLICATION_KEYS = ("name", "data_dir", "log_level", "log_file", "pidfile", "grace", "loop")
#: What ``loop`` may be.
LOOPS = ("auto", "asyncio", "uvloop")


def _string(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(file, key, f"expected a non-empty string, got {_describe(value)}")
    return value


def _read_application(file: str, table: Any, config: RunConfig) -> None:
    if not isinstance(table, dict):
        raise ConfigError(file, "application", f"expected a table, got {_describe(table)}")
    for key, value in table.items():
        dotted = f"application.{key}"
        if key == "name":
            config.name = _string(file, dotted, value)
        elif key == "data_dir":
            config.data_dir = Path(_string(file, dotted, value))
        elif key == "log_level":
            if value not in LOG_LEVELS:
                raise ConfigError(
                    file, dotted,
                    f"expected one of {', '.join(LOG_LEVELS)}, got {_describe(value)}",
                )
            config.log_level = value
        elif key == "log_file":
            config.log_file = Path(_string(file, dotted, value))
        elif key == "pidfile":
            config.pidfile = Path(_string(file, dotted, value))
        elif key == "grace":
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or math.isnan(value) or value < 0):
                raise ConfigError(
                    file, dotted,
                    f"expected a non-negative number of seconds, got {_describe(value)}",
                )
            config.grace = float(value)
        elif key == "loop":
            if value not in LOOPS:
                raise ConfigError(file, dotted,
                                  f"expected one of {', '.join(LOOPS)}, got {_describe(value)}")
            config.loop = value
        else:
            raise _unknown_key(
                file, dotted, key, list(_APPLICATION_KEYS), "[application] accepts"
            )


def _read_service(
    file: str, index: int, table: Any, registry: PluginRegistry | None
) -> ServiceSpec:
    where = f"service[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(file, where, f"expected a table, got {_describe(table)}")
    if "plugin" not in table:
        raise ConfigError(file, f"{where}.plugin", "missing; name the plugin to run")
    plugin_name = _string(file, f"{where}.plugin", table["plugin"])
    name = None
    if "name" in table:
        name = _string(file, f"{where}.name", table["name"])
    try:
        plugin = get_plugin(plugin_name) if registry is None else registry.get(plugin_name)
    except UnknownPluginError as exc:
        raise ConfigError(file, f"{where}.plugin", str(exc)) from exc
    options = {k: v for k, v in table.items() if k not in _SERVICE_KEYS}
    namespace = options_from_table(plugin, options, file=file, where=where)
    return ServiceSpec(plugin, namespace, name, file=file, where=where)


def load_config(path: Path | str, *, registry: PluginRegistry | None = None) -> RunConfig:
    """Read and validate a TOML application file.

    Raises :class:`ConfigError` for anything wrong with the file, and
    :class:`~services.PluginLoadError` if a plug-in it names is broken.
    """
    file = str(path)
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read the file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, None, f"malformed TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(file, None, "malformed TOML: arrays or tables nested too deeply") from None
    config = RunConfig(source=file)
    for key in data:
        if key not in ("application", "service"):
            raise _unknown_key(
                file, key, key, ["application", "service"], "the top level accepts"
            )
    if "application" in data:
        _read_application(file, data["application"], config)
    services = data.get("service")
    if services is None:
        raise ConfigError(file, "service", "missing; add at least one [[service]] table")
    if not isinstance(services, list):
        raise ConfigError(
            file, "service",
            f"expected an array of tables ([[service]]), got {_describe(services)}",
        )
    if not services:
        raise ConfigError(file, "service", "empty; add at least one [[service]] table")
    config.services = [
        _read_service(file, index, table, registry) for index, table in enumerate(services)
    ]
    return config
