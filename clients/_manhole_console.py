"""The manhole's terminal client: one-shot runs and the interactive console.

Both speak to a manhole perspective (``services.manhole``) with the async
broker API:

* :func:`run_once` logs in, runs one piece of source, logs out: what
  ``pb manhole -c CODE`` and ``pb manhole < script.py`` do, inside
  ``asyncio.run``;
* :class:`Console` is the interactive loop.  It owns the terminal in the
  main thread (``input()`` with readline: line editing, history, Tab
  completion through ``perspective_complete``, Ctrl-C), while the
  connection lives on an event loop in a helper thread (:class:`LoopThread`,
  itself an ``asyncio.run``), so keepalives flow while the user types and
  Ctrl-C reaches the main thread as ``KeyboardInterrupt``.

The server decides whether input is complete (``more``): the console keeps
the lines of the current block and sends them all each time, showing
``... `` until the server runs them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import ssl as _ssl
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import broker

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HISTORY_ENV",
    "Console",
    "LoopThread",
    "Target",
    "history_path",
    "login",
    "parse_address",
    "run_once",
    "show_result",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788
SERVICE = "manhole"
HISTORY_ENV = "PB_MANHOLE_HISTORY"
HISTORY_LENGTH = 1000
PS1 = ">>> "
PS2 = "... "
INDENT = "    "
#: How long Tab completion may wait for the server.
COMPLETE_TIMEOUT = 3.0
#: After Ctrl-C, how long to wait for the interrupted evaluation's report.
INTERRUPT_WAIT = 5.0


@dataclass(frozen=True)
class Target:
    """Where the manhole listens: TCP ``host:port`` or a UNIX socket path."""

    host: str | None = DEFAULT_HOST
    port: int | None = DEFAULT_PORT
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = self.host or DEFAULT_HOST
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_address(text: str | None) -> Target:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` or ``:PORT`` (missing parts
    default to 127.0.0.1 and 8788); ValueError if malformed."""
    if text is None or text == "":
        return Target()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}; write [::1]:8788")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected :PORT after ']' in {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"write an IPv6 address in brackets: [{text}]:{DEFAULT_PORT}")
    port = DEFAULT_PORT
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"bad port {port_text!r} in {text!r}")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ValueError(f"port {port} is out of range (1..65535)")
    try:
        host.encode("idna")  # what the resolver will do with it
    except UnicodeError:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(f"{shown!r} is not a valid host name: dot-separated labels of "
                         f"1 to 63 characters") from None
    return Target(host or DEFAULT_HOST, port)


def history_path() -> Path:
    """``$PB_MANHOLE_HISTORY``, else ``~/.pb_manhole_history``."""
    override = os.environ.get(HISTORY_ENV)
    if override:
        return Path(override).expanduser()
    return Path("~/.pb_manhole_history").expanduser()


async def login(target: Target, user: str, password: str, *,
                ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                timeout: float | None = 30.0) -> Any:
    """Log in to the manhole at *target*; return the perspective reference.

    Raises ``broker.Unauthorized``, ``OSError`` (refused, unreachable) or
    ``broker.ConnectionLost`` (timed out).
    """
    async with asyncio.timeout(timeout):
        return await broker.login(
            target.host if target.path is None else None,
            target.port if target.path is None else None,
            user, password, service=SERVICE, path=target.path, ssl=ssl,
            server_hostname=server_hostname, timeout=timeout,
        )


async def run_once(target: Target, user: str, password: str, source: str, *,
                   ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                   timeout: float | None = 30.0) -> dict[str, Any]:
    """Log in, evaluate *source* as one block, log out; return the result dict."""
    perspective = await login(target, user, password, ssl=ssl,
                              server_hostname=server_hostname, timeout=timeout)
    try:
        return await perspective.call_remote("run", source, timeout=timeout)
    finally:
        await perspective.connection.close("done")


def show_result(result: dict[str, Any], stdout: TextIO, stderr: TextIO) -> bool:
    """Print a result: output and value to *stdout*, the error to *stderr*.
    True if the code raised."""
    output = result.get("output") or ""
    if output:
        stdout.write(output)
    value = result.get("value")
    if value is not None:
        if output and not output.endswith("\n"):
            stdout.write("\n")
        stdout.write(f"{value}\n")
    stdout.flush()
    error = result.get("error")
    if error:
        if output and not output.endswith("\n") and value is None:
            stdout.write("\n")
            stdout.flush()
        stderr.write(error if error.endswith("\n") else error + "\n")
        stderr.flush()
        return True
    return False


class LoopThread:
    """An event loop (``asyncio.run``) in a daemon thread, for a program
    whose main thread belongs to the terminal.  :meth:`submit` runs a
    coroutine there and returns a ``concurrent.futures.Future``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pb-manhole-loop", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        # Signals are the terminal's business: with SIGINT blocked here (and
        # in the threads this one starts), Ctrl-C reaches the main thread,
        # interrupting the wait for an evaluation.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # pragma: no cover - reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        assert self._loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run *coro* in the loop and wait for its result (Ctrl-C cancels it)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


class Console:
    """The interactive manhole: ``>>> ``/``... `` prompts, readline
    editing and history, Tab completion, Ctrl-C to interrupt, Ctrl-D to
    leave.  :meth:`interact` returns the exit code (0, or 1 when the
    connection was lost)."""

    def __init__(self, loop: LoopThread, perspective: Any, *,
                 timeout: float | None = None,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 input_func: Callable[[str], str] = input,
                 history: Path | None = None, banner: str | None = None) -> None:
        self.loop = loop
        self.perspective = perspective
        self.timeout = timeout
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.input = input_func
        self.history = history
        self.banner = banner
        self._matches: list[str] = []
        self._readline: Any = None

    # -- remote calls --------------------------------------------------------

    async def _call(self, name: str, *args: Any, timeout: float | None) -> Any:
        return await self.perspective.call_remote(name, *args, timeout=timeout)

    def evaluate(self, source: str) -> dict[str, Any] | None:
        """Run *source*; on Ctrl-C interrupt it remotely and return what it
        reports (a second Ctrl-C, or silence, gives up on it: None)."""
        future = self.loop.submit(self._call("run", source, timeout=self.timeout))
        try:
            return future.result()
        except KeyboardInterrupt:
            self.stdout.write("\n")  # after the ^C the terminal echoed
            self.stdout.flush()
        self.loop.submit(self._call("interrupt", timeout=INTERRUPT_WAIT))
        try:
            return future.result(INTERRUPT_WAIT)
        except KeyboardInterrupt:
            future.cancel()  # CANCEL: the server cancels the call
            self.stderr.write("\nKeyboardInterrupt (the evaluation was cancelled)\n")
            self.stderr.flush()
            return None
        except concurrent.futures.TimeoutError:
            # No answer at all: the server's loop is held by code that does
            # not await, and reads nothing until its watchdog interrupts it.
            future.cancel()
            self.stderr.write(
                "\nKeyboardInterrupt: the server did not answer; the code is blocking its "
                "event loop without awaiting.\nThe server interrupts such code after its "
                "manhole block limit (--block-limit, 5 s by default).\n")
            self.stderr.flush()
            return None

    def complete(self, text: str) -> list[str]:
        try:
            matches = self.loop.call(self._call("complete", text, timeout=COMPLETE_TIMEOUT),
                                     COMPLETE_TIMEOUT + 1)
        except Exception:
            return []
        return [m for m in matches if isinstance(m, str)] if isinstance(matches, list) else []

    # -- readline ---------------------------------------------------------------

    def _completer(self, text: str, state: int) -> str | None:
        if state == 0:
            readline = self._readline
            before = ""
            if readline is not None:
                before = readline.get_line_buffer()[:readline.get_begidx()]
            if not text.strip() and not before.strip():
                self._matches = [INDENT]  # Tab at the start of a line indents
            elif not text.strip():
                self._matches = []
            else:
                self._matches = self.complete(text)
        return self._matches[state] if state < len(self._matches) else None

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            return
        self._readline = readline
        readline.set_completer(self._completer)
        # Brackets, quotes and dots stay in the word, so that the server
        # sees services['demo'].ge whole, not the part after ].
        readline.set_completer_delims(" \t\n`~!@#$%^&*()-=+{}\\|;:,<>/?")
        if "libedit" in (readline.__doc__ or ""):  # pragma: no cover - macOS
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(HISTORY_LENGTH)
        if self.history is not None:
            try:
                readline.read_history_file(self.history)
            except (FileNotFoundError, PermissionError):
                pass
            except OSError as exc:
                self.stderr.write(f"pb manhole: cannot read history {self.history}: {exc}\n")

    def _teardown_readline(self) -> None:
        readline = self._readline
        if readline is None:
            return
        readline.set_completer(None)
        if self.history is not None:
            try:
                self.history.touch(mode=0o600, exist_ok=True)
                readline.write_history_file(self.history)
            except OSError as exc:
                self.stderr.write(f"pb manhole: cannot save history {self.history}: {exc}\n")

    # -- the loop -------------------------------------------------------------------

    def interact(self) -> int:
        self._setup_readline()
        try:
            return self._interact()
        finally:
            self._teardown_readline()

    def _interact(self) -> int:
        if self.banner:
            self.stdout.write(self.banner + "\n")
            self.stdout.flush()
        lines: list[str] = []
        while True:
            try:
                line = self.input(PS2 if lines else PS1)
            except EOFError:
                self.stdout.write("\n")
                self.stdout.flush()
                return 0
            except KeyboardInterrupt:
                self.stdout.write("\nKeyboardInterrupt\n")
                self.stdout.flush()
                lines = []
                continue
            lines.append(line)
            source = "\n".join(lines)
            if not source.strip():
                lines = []
                continue
            try:
                result = self.evaluate(source)
            except broker.CallTimeout as exc:
                self.stderr.write(f"pb manhole: {exc} (--timeout sets the limit; 0: none)\n")
                self.stderr.flush()
                lines = []
                continue
            except (broker.ConnectionLost, OSError) as exc:
                self.stderr.write(f"pb manhole: the connection was lost: {exc}\n")
                self.stderr.flush()
                return 1
            except broker.PBError as exc:
                self.stderr.write(f"pb manhole: {exc}\n")
                self.stderr.flush()
                lines = []
                continue
            if result is not None and result.get("more"):
                continue
            lines = []
            if result is not None:
                show_result(result, self.stdout, self.stderr)
