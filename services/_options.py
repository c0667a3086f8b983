"""Argument types for plug-in options (``type=`` in ``add_argument``).

Each takes the option's text and returns its value, or raises
``argparse.ArgumentTypeError`` with a message that says what was expected;
a TOML file's value goes through the same function (see :mod:`._config`).
"""

from __future__ import annotations

import argparse

__all__ = ["port_number"]


def port_number(text: str) -> int:
    """A TCP port to listen on: 0..65535, where 0 asks for any free port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {value}")
    return value
