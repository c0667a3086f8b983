"""TOML application files and plug-in options derived from argparse."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services import (
    ConfigError,
    PluginRegistry,
    ServicePlugin,
    load_config,
    options_from_table,
)
from tests.services import fixture_plugins


@pytest.fixture
def registry() -> PluginRegistry:
    registry = PluginRegistry(lambda: [])
    for plugin in fixture_plugins.plugins:
        registry.register(plugin)
    return registry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(text)
    return path


def test_a_file_with_two_services_is_read(tmp_path, registry):
    path = write(tmp_path, """
[application]
name = "myapp"
data_dir = "state"
log_level = "debug"
grace = 2.5
pidfile = "app.pid"

[[service]]
plugin = "line-echo"
port = 8787
slow_stop = 0.5

[[service]]
plugin = "ticker"
name = "clock"
""")
    config = load_config(path, registry=registry)
    assert (config.name, config.data_dir, config.log_level, config.grace, config.pidfile) == (
        "myapp", Path("state"), "debug", 2.5, Path("app.pid"),
    )
    echo, clock = config.services
    assert echo.plugin is fixture_plugins.line_echo and echo.name is None
    assert vars(echo.options) == {
        "host": "127.0.0.1", "port": 8787, "fail_start": False, "slow_stop": 0.5,
    }
    assert clock.name == "clock" and clock.options.interval == 0.05
    assert (clock.file, clock.where) == (str(path), "service[1]")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[[service]]\nplugin = "line-echo"\nport = \n', None, "malformed TOML"),
        ('[[service]]\nplugin = "line-echo"\nprot = 1\n', "service[0].prot",
         "unknown key (did you mean 'port'?)"),
        ('[[service]]\nplugin = "line-echo"\nslow-stop = 1\n', "service[0].slow-stop",
         "did you mean 'slow_stop'?"),
        ('[[service]]\nplugin = "ticker"\n[[service]]\nplugin = "line-echo"\nport = "x"\n',
         "service[1].port", 'expected an integer, got a string ("x")'),
        ('[[service]]\nplugin = "line-echo"\nport = true\n', "service[0].port",
         "expected an integer, got a boolean"),
        ('[[service]]\nplugin = "line-echo"\nfail_start = "yes"\n', "service[0].fail_start",
         "expected true or false"),
        ('[[service]]\nplugin = "ehco"\n', "service[0].plugin",
         "unknown plugin 'ehco'; available: line-echo, ticker"),
        ('[[service]]\nport = 1\n', "service[0].plugin", "missing"),
        ('[service]\nplugin = "line-echo"\n', "service", "expected an array of tables"),
        ('[application]\nname = "x"\n', "service", "missing"),
        ('[application]\nlog_level = "loud"\n[[service]]\nplugin = "ticker"\n',
         "application.log_level", "expected one of debug, info, warning, error"),
        ('[application]\ndatadir = "x"\n[[service]]\nplugin = "ticker"\n',
         "application.datadir", "did you mean 'data_dir'?"),
        ('[aplication]\n[[service]]\nplugin = "ticker"\n', "aplication", "unknown key"),
    ],
)
def test_an_invalid_file_is_reported_with_the_file_and_the_key(tmp_path, registry, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, registry=registry)
    assert raised.value.file == str(path)
    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"{path}: {key + ': ' if key else ''}")


def test_a_missing_file_is_reported(tmp_path, registry):
    with pytest.raises(ConfigError, match="nope.toml: cannot read the file: No such file"):
        load_config(tmp_path / "nope.toml", registry=registry)


class Rich(ServicePlugin):
    """A plug-in using most of argparse, to check the TOML mapping."""

    name = "rich"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--mode", choices=["fast", "safe"], default="safe")
        parser.add_argument("--ratio", type=float, default="0.5")
        parser.add_argument("--tag", action="append", default=[])
        parser.add_argument("--pair", nargs=2, type=int)
        parser.add_argument("--path", type=Path, default=Path("x"))
        parser.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)
        parser.add_argument("--quiet", dest="verbose", action="store_false")
        parser.add_argument("-v", "--verbosity", action="count", default=0)
        parser.add_argument("--token", required=True)
        parser.set_defaults(extra="kept")


def test_defaults_are_those_argparse_would_give():
    options = options_from_table(Rich(), {"token": "t"}, file="f", where="service[0]")
    expected = argparse.ArgumentParser()
    Rich().add_arguments(expected)
    assert vars(options) == vars(expected.parse_args(["--token", "t"]))


def test_table_values_are_checked_and_converted_like_the_command_line():
    options = options_from_table(Rich(), {
        "mode": "fast", "ratio": 2, "tag": ["a", "b"], "pair": [1, 2], "path": "p/q",
        "color": False, "verbose": False, "verbosity": 2, "token": "t",
    }, file="f", where="s")
    assert (options.mode, options.ratio, options.tag, options.pair, options.path) == (
        "fast", 2.0, ["a", "b"], [1, 2], Path("p/q"),
    )
    assert (options.color, options.verbose, options.verbosity) == (False, False, 2)


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"mode": "slow"}, "s.mode", "expected one of 'fast', 'safe'"),
        ({"tag": "a"}, "s.tag", "expected an array of a string"),
        ({"tag": ["a", 1]}, "s.tag[1]", "expected a string, got an integer"),
        ({"pair": [1]}, "s.pair", "expected 2 items"),
        ({"ratio": "fast"}, "s.ratio", "expected a number"),
        ({"verbosity": -1}, "s.verbosity", "non-negative integer"),
        ({}, "s.token", "missing; plugin 'rich' requires it"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(table, key, problem):
    table = {"token": "t", **table} if key != "s.token" else table
    with pytest.raises(ConfigError) as raised:
        options_from_table(Rich(), table, file="f", where="s")
    assert raised.value.key == key
    assert problem in raised.value.problem


# -- garbage, oversize and truncated files ------------------------------------------


@pytest.mark.parametrize(("content", "key", "problem"), [
    (bytes(range(256)) * 8, None, "malformed TOML"),
    (b"\x00" * 1000, None, "malformed TOML"),
    (b"a = " + b"[" * 100_000, None, "nested too deeply"),
    (b"x = {" + b"a = {" * 5000, None, "nested too deeply"),
    (b'[[service]]\nplugin = "' + b"x" * 1_000_000 + b'"\n', "service[0].plugin", "unknown plugin"),
    (b'[[service]]\nplugin = "ticker"\n' + b"k" * 1_000_000 + b" = 1\n", None, "unknown key"),
    (b"[application]\ngrace = nan\n[[service]]\nplugin = 'ticker'\n", "application.grace",
     "expected a non-negative number of seconds, got a number (nan)"),
    (b"[application]\ngrace = -inf\n[[service]]\nplugin = 'ticker'\n", "application.grace",
     "non-negative"),
    (b"[application]\ndata_dir = 5\n[[service]]\nplugin = 'ticker'\n", "application.data_dir",
     "expected a non-empty string, got an integer (5)"),
    (b"[application]\nname = ''\n[[service]]\nplugin = 'ticker'\n", "application.name",
     "expected a non-empty string"),
    (b"application = 5\n[[service]]\nplugin = 'ticker'\n", "application", "expected a table"),
    (b"service = [1, 2]\n", "service[0]", "expected a table, got an integer (1)"),
    (b"service = []\n", "service", "empty"),
    (b"[[service]]\nplugin = 5\n", "service[0].plugin", "expected a non-empty string"),
    (b"[[service]]\nplugin = 'line-echo'\nport = 1.5\n", "service[0].port", "expected an integer"),
])
def test_garbage_and_oversize_files_are_one_line_errors(tmp_path, registry, content, key, problem):
    path = tmp_path / "app.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config(path, registry=registry)
    if key is not None:
        assert raised.value.key == key
    assert problem in raised.value.problem
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert len(message) < 500  # a million-character name is not echoed back


VALID = """\
# a comment
[application]
name = "café"
grace = 2.5
log_level = "warning"

[[service]]
plugin = "line-echo"
name = "é-echo"
port = 0

[[service]]
plugin = "ticker"
interval = 0.5
"""


def test_every_truncation_of_a_valid_file_loads_or_is_a_config_error(tmp_path, registry):
    data = VALID.encode("utf-8")
    path = tmp_path / "app.toml"
    loaded = 0
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])  # some cuts fall inside a UTF-8 character
        try:
            load_config(path, registry=registry)
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: ")
        else:
            loaded += 1
    assert loaded >= 1  # the whole file, at least


class _Typed(ServicePlugin):
    name = "typed"
    description = "options of every kind of converter"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from services import host_name, non_negative_seconds, port_number

        def _private_converter(text: str) -> str:
            if not text.startswith("x"):
                raise ValueError("must start with x")
            return text

        parser.add_argument("--port", type=port_number, default=1)
        parser.add_argument("--host", type=host_name, default="127.0.0.1")
        parser.add_argument("--wait", type=non_negative_seconds, default=1.0)
        parser.add_argument("--tag", type=_private_converter, action="append", default=[])

    def build(self, options, application):  # pragma: no cover - never run
        raise NotImplementedError


@pytest.mark.parametrize("key, value, message", [
    ("port", '"8787"', 'expected a port number (0..65535; 0: any free port), got a string ("8787")'),
    ("port", "1.5", "expected a port number (0..65535; 0: any free port), got a number (1.5)"),
    ("port", "true", "expected a port number (0..65535; 0: any free port), got a boolean (true)"),
    ("host", "5", "expected an IP address or a host name, got an integer (5)"),
    ("wait", '"2"', 'expected a number of seconds, 0 or more, got a string ("2")'),
    ("tag", '"x"', 'expected an array of a value --tag accepts, got a string ("x")'),
])
def test_config_values_are_typed_strictly_and_errors_name_no_function(
        tmp_path, key, value, message):
    registry = PluginRegistry(lambda: [])
    registry.register(_Typed())
    path = write(tmp_path, f'[[service]]\nplugin = "typed"\n{key} = {value}\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path, registry=registry)
    assert str(raised.value) == f"{path}: service[0].{key}: {message}"
    assert "_private_converter" not in str(raised.value)


def test_strictly_typed_values_of_the_right_type_are_taken(tmp_path):
    registry = PluginRegistry(lambda: [])
    registry.register(_Typed())
    path = write(tmp_path, '[[service]]\nplugin = "typed"\nport = 8787\nwait = 2\n'
                           'host = "::1"\ntag = ["xa", "xb"]\n')
    (spec,) = load_config(path, registry=registry).services
    assert (spec.options.port, spec.options.wait, spec.options.host, spec.options.tag) == (
        8787, 2.0, "::1", ["xa", "xb"])
