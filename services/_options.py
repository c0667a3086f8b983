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

__all__ = ["port_number", "host_name", "non_negative_seconds"]

# RFC 1123 labels: letters, digits and inner hyphens, 1..63 characters.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def non_negative_seconds(text: str) -> float:
    """A number of seconds, 0 or more (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port to listen on: 0..65535, where 0 asks for any free port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {value}")
    return value


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
