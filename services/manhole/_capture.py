"""Per-evaluation capture of ``sys.stdout`` and ``sys.stderr``.

The manhole runs user code on the server's event loop, where several
sessions may be evaluating at once (each awaiting something).  Swapping
``sys.stdout`` for the duration of one evaluation would mix their output, so
instead, while any evaluation runs, ``sys.stdout`` and ``sys.stderr`` are
:class:`_ContextStream` proxies that look up a context variable: code running
in an evaluation's context (its task, the tasks it creates, the threads
``asyncio.to_thread`` starts for it) writes into that evaluation's
:class:`OutputBuffer`; everything else writes to the real stream.

Both streams feed one buffer, so the order in which stdout and stderr were
written is kept.  The buffer is bounded: past ``limit`` bytes of UTF-8 it
keeps nothing more and says so.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["DEFAULT_OUTPUT_LIMIT", "OutputBuffer", "capturing", "current_buffer", "set_buffer"]

#: Output kept per evaluation, in bytes of UTF-8.
DEFAULT_OUTPUT_LIMIT = 1024 * 1024

_buffer: contextvars.ContextVar[OutputBuffer | None] = contextvars.ContextVar(
    "manhole_output", default=None
)


class OutputBuffer:
    """What one evaluation printed, up to ``limit`` bytes of UTF-8.

    Writes after :meth:`close` (a task the evaluation left running, printing
    later) go to the real stream instead; :meth:`write` returns False then.
    """

    def __init__(self, limit: int = DEFAULT_OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.size = 0
        self.truncated = False
        self.closed = False
        self._parts: list[str] = []
        self._lock = threading.Lock()  # to_thread workers share the context

    def write(self, text: str) -> bool:
        with self._lock:
            if self.closed:
                return False
            if self.truncated:
                return True
            size = len(text.encode("utf-8", "surrogatepass"))
            if self.size + size > self.limit:
                room = self.limit - self.size
                # Cut on a character boundary that fits.
                part = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
                self._parts.append(part)
                self.size += len(part.encode("utf-8", "surrogatepass"))
                self.truncated = True
                return True
            self._parts.append(text)
            self.size += size
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def getvalue(self) -> str:
        """The text so far, with a note at the end if some was dropped."""
        with self._lock:
            text = "".join(self._parts)
            if self.truncated:
                if text and not text.endswith("\n"):
                    text += "\n"
                text += f"[output truncated: more than {_describe_size(self.limit)}]\n"
            return text


def _describe_size(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def current_buffer() -> OutputBuffer | None:
    """The buffer the current context writes to, if any."""
    return _buffer.get()


class _ContextStream:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that writes to the
    current evaluation's buffer, or to ``real`` outside evaluations."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        buffer = _buffer.get()
        if buffer is None or not buffer.write(text):
            return self._real.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _buffer.get() is None:
            self._real.flush()

    def isatty(self) -> bool:
        # Captured output is not a terminal (pydoc then does not page).
        return False if _buffer.get() is not None else self._real.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_install_lock = threading.Lock()
_active = 0
_saved: dict[str, tuple[Any, _ContextStream]] = {}


def _install() -> None:
    global _active
    with _install_lock:
        _active += 1
        if _active > 1:
            return
        for name in ("stdout", "stderr"):
            real = getattr(sys, name)
            proxy = _ContextStream(real)
            _saved[name] = (real, proxy)
            setattr(sys, name, proxy)


def _uninstall() -> None:
    global _active
    with _install_lock:
        _active -= 1
        if _active > 0:
            return
        for name, (real, proxy) in _saved.items():
            # Only undo our own change: if something replaced the stream
            # meanwhile, leave its choice alone.
            if getattr(sys, name) is proxy:
                setattr(sys, name, real)
        _saved.clear()


@contextmanager
def capturing() -> Iterator[None]:
    """Keep the context-aware proxies in ``sys.stdout``/``sys.stderr``
    while the block runs (nested and concurrent uses share them)."""
    _install()
    try:
        yield
    finally:
        _uninstall()


def set_buffer(buffer: OutputBuffer | None) -> contextvars.Token[OutputBuffer | None]:
    """Make the current context write into *buffer* (see :class:`OutputBuffer`)."""
    return _buffer.set(buffer)
