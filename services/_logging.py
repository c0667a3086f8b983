"""Structured logging for the runner and the services it runs.

Every record is one line::

    2026-11-23T14:00:00Z INFO pb.run: started services=echo,manhole

— a UTC timestamp, the level, the logger name, the message, then the
record's fields as ``key=value`` pairs (values with spaces, quotes or ``=``
are JSON-quoted).  Fields are passed as keyword arguments to the logger that
:func:`get_logger` returns::

    log = get_logger("pb.echo")
    log.info("client connected", peer="127.0.0.1:50412")

Records from plain :mod:`logging` loggers (asyncio, third-party code) use the
same format, without fields.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from cred.log import FieldsLogger, render_fields
from cred.log import get_logger as _get_logger

__all__ = ["LOG_LEVELS", "StructuredFormatter", "configure_logging", "get_logger"]

#: The accepted ``--log-level`` / ``log_level`` names, quietest last.
LOG_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Handlers installed by configure_logging(), removed by the next call.
_installed: list[logging.Handler] = []


class StructuredFormatter(logging.Formatter):
    """Format records as ``TIME LEVEL logger: message key=value ...``."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%SZ")

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record, self.datefmt),
            record.levelname,
            f"{record.name}: {record.getMessage()}",
        ]
        # A FieldsLogger's message prints its own fields; records that carry
        # fields through ``extra`` alone get them appended the same way.
        fields: Mapping[str, object] | None = getattr(record, "fields", None)
        if fields and type(record.msg) is str:
            parts.append(render_fields(fields))
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def get_logger(name: str) -> FieldsLogger:
    """A logger whose methods take fields as keyword arguments.

    ``get_logger("pb.run").info("started", services="echo")`` logs
    ``... INFO pb.run: started services=echo``.  The same logger class as
    ``cred`` and ``broker`` use (:mod:`cred.log`), so all share one format.
    """
    return _get_logger(name)


def configure_logging(
    level: str = "info",
    *,
    log_file: Path | str | None = None,
    stream: TextIO | None = None,
) -> list[logging.Handler]:
    """Send every record at *level* or above to *stream* (stderr) or *log_file*.

    With a log file, records go to the file and errors are also shown on the
    stream, so that a failed start is never silent on the terminal.  The
    runner owns the process, so this configures the root logger; it replaces
    handlers installed by an earlier call.  Returns the installed handlers.
    """
    try:
        numeric = LOG_LEVELS[level]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}"
        ) from None
    stream = stream if stream is not None else sys.stderr
    formatter = StructuredFormatter()
    handlers: list[logging.Handler] = []
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(numeric)
        handlers.append(file_handler)
        echo = logging.StreamHandler(stream)
        echo.setLevel(max(numeric, logging.ERROR))
        handlers.append(echo)
    else:
        handler = logging.StreamHandler(stream)
        handler.setLevel(numeric)
        handlers.append(handler)
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed[:] = handlers
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(numeric)
    return handlers
