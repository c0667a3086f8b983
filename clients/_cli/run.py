"""``pb run``: run services in the foreground.

``pb run [RUN OPTIONS] SERVICE [SERVICE OPTIONS]`` runs one plug-in;
``pb run [RUN OPTIONS] -c app.toml`` runs the services a file lists;
``pb run --list`` shows the plug-ins there are.  The work is done by
:mod:`services`; this module turns arguments into a :class:`services.RunConfig`
and errors into exit codes (2: usage or configuration, 1: failure).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    EXTRA_PLUGINS_ENV,
    LOG_LEVELS,
    ConfigError,
    PluginError,
    PluginLoadError,
    RunConfig,
    ServiceSpec,
    UnknownPluginError,
    available_plugins,
    configure_logging,
    get_plugin,
    load_config,
    load_extra_plugins,
    plugin_parser,
    run,
)

from ._common import non_negative_seconds

__all__ = ["register"]

_EPILOG = f"""\
Run options go before SERVICE; everything after SERVICE belongs to the
service (see `pb run SERVICE --help`).  `pb run --list` shows the plugins.

A plugin that is not installed can be loaded with --plugin-module
MODULE[:ATTR] or the {EXTRA_PLUGINS_ENV} environment variable
(comma-separated MODULE[:ATTR] specs).

Signals: SIGTERM or SIGINT stops the services gracefully within --grace
seconds and exits 0; a second SIGINT exits at once with 130.
Exit codes: 0 stopped cleanly, 1 failed (start, build, plugin, pidfile),
2 usage or configuration error.  See docs/running.md.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run services in the foreground",
        description="Run one service, or the services a TOML file lists, in the foreground.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", type=Path, metavar="FILE",
                        help="run the services listed in this TOML file")
    parser.add_argument("--list", action="store_true",
                        help="list the available plugins and exit")
    parser.add_argument("--name", help="the application's name (default: pb)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="state directory, created with mode 0700 (default: ./pb-data)")
    parser.add_argument("--log-level", choices=list(LOG_LEVELS),
                        help="log records at this level and above (default: info)")
    parser.add_argument("--log-file", type=Path, metavar="FILE",
                        help="log to this file instead of stderr (errors still go to stderr)")
    parser.add_argument("--pidfile", type=Path, metavar="FILE",
                        help="write the process id here once started; refuse to "
                             "start if it names a running process")
    parser.add_argument("--grace", type=non_negative_seconds, metavar="SECONDS",
                        help="how long services may take to stop (default: 10)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"),
                        help="the event loop (default: auto, which is uvloop where it is "
                             "installed: pip install 'perspective-broker[uvloop]')")
    parser.add_argument("--plugin-module", action="append", default=[],
                        metavar="MODULE[:ATTR]",
                        help="load and register plugins from this module (repeatable)")
    parser.add_argument("service", nargs="?", metavar="SERVICE",
                        help="the plugin to run")
    parser.add_argument("service_args", nargs=argparse.REMAINDER, metavar="...",
                        help="options for the service")
    parser.set_defaults(func=lambda args: _run_command(parser, args))


def _error(message: str) -> None:
    print(f"pb run: error: {message}", file=sys.stderr, flush=True)


def _print_plugins() -> int:
    infos = available_plugins()
    if not infos:
        print("no plugins found")
        return EXIT_OK
    width = max(len(info.name) for info in infos)
    for info in infos:
        if info.error is None:
            print(f"{info.name:<{width}}  {info.description}")
        else:
            print(f"{info.name:<{width}}  (broken) {info.error} [{info.origin}]")
    return EXIT_OK


def _service_options(plugin: Any, argv: list[str]) -> argparse.Namespace:
    parser = plugin_parser(plugin, prog=f"pb run {plugin.name}")
    report = parser.error

    def error(message: str) -> Any:
        if message.startswith("unrecognized arguments"):
            message += " (options of `pb run` itself go before the service name)"
        return report(message)

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        load_extra_plugins(args.plugin_module)
    except PluginError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    if args.list:
        return _print_plugins()
    if args.config is not None and args.service is not None:
        parser.error("give either SERVICE or -c FILE, not both")
    if args.config is None and args.service is None:
        parser.error("give the SERVICE to run, or -c FILE (see `pb run --list`)")

    try:
        if args.config is not None:
            config = load_config(args.config)
        else:
            plugin = get_plugin(args.service)
            options = _service_options(plugin, args.service_args)
            config = RunConfig(services=[ServiceSpec(plugin, options)])
    except (ConfigError, UnknownPluginError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except PluginLoadError as exc:
        _error(str(exc))
        return EXIT_FAILURE

    if args.name is not None:
        config.name = args.name
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    if args.log_level is not None:
        config.log_level = args.log_level
    if args.log_file is not None:
        config.log_file = args.log_file
    if args.pidfile is not None:
        config.pidfile = args.pidfile
    if args.grace is not None:
        config.grace = args.grace
    if args.loop is not None:
        config.loop = args.loop

    try:
        configure_logging(config.log_level, log_file=config.log_file)
    except OSError as exc:
        _error(f"cannot open the log file {str(config.log_file)!r}: {exc.strerror or exc}")
        return EXIT_FAILURE
    try:
        return run(config)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
