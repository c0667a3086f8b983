"""One format for log records with fields, shared by every layer.

A record says what happened in a short message, then the facts as
``key=value`` pairs::

    login refused account=bob source=127.0.0.1 reason="wrong password"

Values with spaces, quotes, ``=`` or nothing in them are JSON-quoted.  The
loggers of ``cred``, ``broker`` and ``pb.*`` (the services and the runner)
all log this way, so an operator greps one format.  It lives here because
``cred`` is the lowest layer that logs and every other layer may import it.

Fields are keyword arguments of the logger :func:`get_logger` returns::

    log = get_logger("cred.portal")
    log.info("login refused", account="bob", source="127.0.0.1")

The record's message stays the bare text (``record.msg == "login refused"``),
its fields are ``record.fields`` (a dict), and ``record.getMessage()`` is the
whole line, so that any formatter, not only ``pb run``'s, shows the facts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["FieldsLogger", "get_logger", "render_fields", "render_value"]

_STANDARD_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})


def render_value(value: object) -> str:
    """A field's value as it appears after ``key=``."""
    text = value if isinstance(value, str) else str(value)
    if not text or any(ch.isspace() or ch in '"=\\' for ch in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def render_fields(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs, space-separated, in the given order."""
    return " ".join(f"{key}={render_value(value)}" for key, value in fields.items())


class _Message(str):
    """A record's message: equal to the bare text, printed with its fields.

    logging turns ``record.msg`` into text with ``str()`` before applying
    ``%`` arguments, so overriding ``__str__`` is what lets every formatter
    show the fields while code that inspects records still compares the
    message alone.
    """

    fields: Mapping[str, object]
    escaped: bool

    def __str__(self) -> str:
        rendered = render_fields(self.fields)
        if self.escaped:  # the message has % arguments still to apply
            rendered = rendered.replace("%", "%%")
        return f"{str.__str__(self)} {rendered}"


class FieldsLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose methods take fields as keyword arguments."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in _STANDARD_KWARGS}
        if not fields:
            return msg, kwargs
        extra = dict(kwargs.get("extra") or {})
        fields = {**extra.get("fields", {}), **fields}
        extra["fields"] = fields
        kwargs["extra"] = extra
        message = _Message(msg)
        message.fields = fields
        message.escaped = False
        return message, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            if args and isinstance(msg, _Message):
                msg.escaped = True
            kwargs.setdefault("stacklevel", 1)
            kwargs["stacklevel"] += 1
            self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str) -> FieldsLogger:
    """A logger whose methods take fields as keyword arguments:
    ``get_logger("pb.run").info("started", services="echo")``."""
    return FieldsLogger(logging.getLogger(name), {})
