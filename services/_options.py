"""Argument types for plug-in options (``type=`` in ``add_argument``).

Each takes the option's text and returns its value, or raises
``argparse.ArgumentTypeError`` with a message that says what was expected;
a TOML file's value goes through the same function (see :mod:`._config`).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["port_number", "host_name", "non_negative_seconds", "option_type",
           "add_listen_arguments"]

T = TypeVar("T", bound=Callable[..., Any])


def option_type(toml: type, expects: str) -> Callable[[T], T]:
    """Declare what an argument type takes in a config file: ``toml`` is the
    TOML value type it requires (``int``, ``float`` — an integer is taken
    too — or ``str``), ``expects`` how an error names it ("a port number").
    A config file's value of another type is refused, as for ``type=int``;
    a type without this gets the value as text, as on the command line."""
    if toml not in (int, float, str):
        raise ValueError(f"option_type takes int, float or str, not {toml!r}")

    def mark(func: T) -> T:
        func.toml_type = toml  # type: ignore[attr-defined]
        func.expects = expects  # type: ignore[attr-defined]
        return func

    return mark

# RFC 1123 labels: letters, digits and inner hyphens, 1..63 characters.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


@option_type(float, "a number of seconds, 0 or more")
def non_negative_seconds(text: str) -> float:
    """A number of seconds, 0 or more (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


@option_type(int, "a port number (0..65535; 0: any free port)")
def port_number(text: str) -> int:
    """A TCP port to listen on: 0..65535, where 0 asks for any free port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {value}")
    return value


@option_type(str, "an IP address or a host name")
def host_name(text: str) -> str:
    """An address to listen on: an IPv4 or IPv6 literal, or a host name."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split(".")):
        return text
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise argparse.ArgumentTypeError(f"expected an IP address or a host name, got {shown!r}")


def add_listen_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """``--host``, ``--port`` and ``--socket``, as every PB service plug-in
    takes them (``options.host``/``options.port`` are None when not given)."""
    parser.add_argument("--host", type=host_name, default=None,
                        help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=None,
                        help=f"TCP port (default: {default_port}; 0: any free port)")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="listen on this UNIX socket instead of TCP")
