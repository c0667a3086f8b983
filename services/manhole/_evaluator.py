"""The manhole's core: evaluate Python source in a namespace, on the loop.

No sockets and no PB here: an :class:`Evaluator` holds one session's
namespace and turns a piece of source into a result dict::

    {"output": str,         # what stdout and stderr received, in order
     "value": str | None,   # repr of the last expression's value, if any
     "error": str | None,   # the formatted traceback (or SyntaxError)
     "more": bool}          # the source is an incomplete block: send more

Rules, as in the interactive interpreter:

* Completeness follows :mod:`codeop` (``exec`` mode, top-level ``await``
  allowed), plus the interactive rule that a compound statement at the end
  (``def``, ``for``, ``if``, ...) is only finished by an empty line, so that
  ``"def f():\\n    return 1"`` still asks for more while
  ``"def f():\\n    return 1\\n"`` runs.  Several statements may come in one
  block; the value of a final expression statement is reported (and stored
  in ``_``), like the REPL does for its one statement.
* The code runs on the running event loop, in a task of its own, so it can
  touch live objects and ``await`` them.  :meth:`Evaluator.interrupt` (or
  cancelling :meth:`Evaluator.run`) cancels that task, which reports
  ``KeyboardInterrupt``.  Code that blocks instead of awaiting cannot be
  reached by a cancellation; given a :class:`~._watchdog.Watchdog`, each
  stretch of it between awaits is interrupted past the watchdog's limit.
* Output is captured per evaluation (see :mod:`._capture`), bounded to
  ``output_limit`` bytes; ``value`` and ``error`` are bounded too.
* ``SystemExit`` and ``KeyboardInterrupt`` raised by the code are reported
  like any exception: nothing the code raises escapes into the server.
"""

from __future__ import annotations

import __future__
import ast
import asyncio
import builtins
import codeop
import contextvars
import inspect
import itertools
import linecache
import re
import traceback
from collections.abc import Callable
from types import CodeType
from typing import Any

from ._capture import DEFAULT_OUTPUT_LIMIT, OutputBuffer, capturing, set_buffer
from ._watchdog import Watchdog

__all__ = ["Evaluator", "DEFAULT_OUTPUT_LIMIT", "TEXT_LIMIT", "COMPLETION_LIMIT"]

#: Characters kept of a value's repr and of a traceback.
TEXT_LIMIT = 256 * 1024

#: Completions returned at most.
COMPLETION_LIMIT = 1000

_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag

_COMPOUND = (
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor,
    ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match,
    *((ast.TryStar,) if hasattr(ast, "TryStar") else ()),
)

_sessions = itertools.count(1)


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated: {len(text) - limit} more characters]\n"


class _Guarded:
    """Await a coroutine, guarding each step it takes on the loop (the code
    between two of its awaits) with *guard*."""

    def __init__(self, coroutine: Any, guard: Callable[[], Any]) -> None:
        self._coroutine = coroutine
        self._guard = guard

    def __await__(self) -> Any:
        coroutine = self._coroutine
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            with self._guard():
                try:
                    if thrown is not None:
                        yielded = coroutine.throw(thrown)
                    else:
                        yielded = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value
            try:
                sent, thrown = (yield yielded), None
            except BaseException as exc:  # cancellation, passed on to the code
                sent, thrown = None, exc


class _Blocked:
    """Stands in for ``exit``/``quit``/``input``, which would stop the
    server or wait on its terminal."""

    def __init__(self, name: str, advice: str) -> None:
        self._name = name
        self._advice = advice

    def __repr__(self) -> str:
        return self._advice

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{self._name}() is not available in the manhole: {self._advice}")


LEAVE = "leave the manhole with Ctrl-D (the server keeps running)"


def default_namespace(**names: Any) -> dict[str, Any]:
    """A fresh namespace: ``__builtins__``, ``asyncio``, harmless ``exit``,
    ``quit`` and ``input``, and *names*."""
    namespace: dict[str, Any] = {
        "__name__": "__manhole__",
        "__builtins__": builtins,
        "asyncio": asyncio,
        "exit": _Blocked("exit", LEAVE),
        "quit": _Blocked("quit", LEAVE),
        "input": _Blocked("input", "the code runs in the server, which has no terminal"),
    }
    namespace.update(names)
    return namespace


class Evaluator:
    """One session's namespace and its evaluations (one at a time).

    ``label`` names the typed code in tracebacks: the third evaluation of
    session 7 is the file ``<manhole:7.3>``, whose lines tracebacks show.
    """

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        *,
        label: str = "manhole",
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        text_limit: int = TEXT_LIMIT,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.watchdog = watchdog if watchdog is not None else Watchdog(0)
        self.namespace = namespace if namespace is not None else default_namespace()
        self.namespace.setdefault("__builtins__", builtins)
        self.label = label
        self.output_limit = output_limit
        self.text_limit = text_limit
        self._session = next(_sessions)
        self._compiler = codeop.CommandCompiler()
        self._compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._count = 0
        self._filenames: list[str] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[tuple[str | None, str | None]] | None = None
        self._closed = False
        #: Called with the source of each evaluation about to run (logging).
        self.on_run: Callable[[str], Any] | None = None

    # -- completeness ----------------------------------------------------

    def is_complete(self, source: str) -> bool:
        """False if *source* is an unfinished block; SyntaxError (or
        ValueError, OverflowError for bad literals) if it is invalid."""
        code = self._compiler(source, f"<{self.label}>", "exec")
        if code is None:
            return False
        # codeop's "exec" mode takes "def f():\n    return 1" as complete;
        # at a prompt a block at the end ends with an empty line.
        if source.rstrip(" \t\f").endswith("\n"):
            return True
        tree = compile(source, f"<{self.label}>", "exec",
                       ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, True)
        return not (tree.body and isinstance(tree.body[-1], _COMPOUND))

    # -- running -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while an evaluation's code is running."""
        return self._task is not None and not self._task.done()

    async def run(self, source: str) -> dict[str, Any]:
        """Evaluate *source*; see the module docstring for the result.

        Evaluations of one session run one after another.  Cancelling this
        call cancels the code it runs.
        """
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, not {type(source).__name__}")
        if self._closed:
            raise RuntimeError("this manhole session is closed")
        result: dict[str, Any] = {"output": "", "value": None, "error": None, "more": False}
        try:
            complete = self.is_complete(source)
        except (SyntaxError, ValueError, OverflowError) as exc:
            result["error"] = self._format_syntax_error(exc)
            return result
        if not complete:
            result["more"] = True
            return result
        if not source.strip():
            return result
        async with self._lock:
            if self.on_run is not None:
                self.on_run(source)
            filename = self._remember(source)
            try:
                codes = self._compile(source, filename)
            except (SyntaxError, ValueError, OverflowError) as exc:
                result["error"] = self._format_syntax_error(exc)
                return result
            buffer = OutputBuffer(self.output_limit)
            context = contextvars.copy_context()
            context.run(set_buffer, buffer)
            caller = asyncio.current_task()
            cancels = caller.cancelling() if caller is not None else 0
            with capturing():
                task = asyncio.get_running_loop().create_task(
                    self._execute(codes), name=f"{self.label}:{self._count}", context=context
                )
                self._task = task
                try:
                    value, error = await task
                finally:
                    if not task.done():  # we were cancelled: so is the code
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                    self._task = None
                    buffer.close()
            if caller is not None and caller.cancelling() > cancels:
                # Our caller was cancelled while the code ran: the code
                # reported the interruption, the caller still gets its
                # CancelledError (cancellation is never swallowed).
                raise asyncio.CancelledError()
            result["output"] = buffer.getvalue()
            result["value"] = value
            result["error"] = error
            return result

    def interrupt(self) -> bool:
        """Cancel the running evaluation (as Ctrl-C would); False if none."""
        task = self._task
        if task is None or task.done():
            return False
        task.cancel("interrupted")
        return True

    def close(self) -> None:
        """End the session: cancel what runs, forget the typed lines."""
        self._closed = True
        self.interrupt()
        for filename in self._filenames:
            linecache.cache.pop(filename, None)
        self._filenames.clear()

    def _remember(self, source: str) -> str:
        self._count += 1
        # session.count: distinct sessions never share linecache entries.
        filename = f"<{self.label}:{self._session}.{self._count}>"
        lines = [line + "\n" for line in source.splitlines()]
        linecache.cache[filename] = (len(source), None, lines, filename)
        self._filenames.append(filename)
        return filename

    def _compile(self, source: str, filename: str) -> list[tuple[CodeType, bool]]:
        """The code objects to run in order, each flagged True if its value
        is the one to report."""
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | (self._compiler.compiler.flags & _FUTURE_FLAGS)
        tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | flags, True)
        body = tree.body
        codes: list[tuple[CodeType, bool]] = []
        last = body[-1] if body else None
        if isinstance(last, ast.Expr):
            if body[:-1]:
                module = ast.Module(body=body[:-1], type_ignores=[])
                codes.append((compile(module, filename, "exec", flags, True), False))
            expression = ast.Expression(body=last.value)
            codes.append((compile(expression, filename, "eval", flags, True), True))
        else:
            codes.append((compile(tree, filename, "exec", flags, True), False))
        return codes

    async def _execute(self, codes: list[tuple[CodeType, bool]]) -> tuple[str | None, str | None]:
        namespace = self.namespace
        guard = self.watchdog.guard
        try:
            value: Any = None
            for code, is_value in codes:
                with guard():
                    outcome = eval(code, namespace)
                if code.co_flags & inspect.CO_COROUTINE:
                    outcome = await _Guarded(outcome, guard)
                if is_value:
                    value = outcome
            if value is None:
                return None, None
            namespace["_"] = value
            with guard():
                text = repr(value)
            return _clip(text, self.text_limit), None
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                return None, self._format_interrupt(exc)
            return None, self._format_error(exc)
        except BaseException as exc:  # SystemExit too: nothing escapes into the server
            return None, self._format_error(exc)

    # -- formatting ----------------------------------------------------------

    def _user_traceback(self, exc: BaseException) -> Any:
        """The traceback from the first frame of typed code on."""
        tb = exc.__traceback__
        prefix = f"<{self.label}:"
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(prefix):
            tb = tb.tb_next
        return tb if tb is not None else exc.__traceback__

    def _format_error(self, exc: BaseException) -> str:
        try:
            lines = traceback.format_exception(type(exc), exc, self._user_traceback(exc))
        except Exception as failure:  # a hostile __str__, say
            lines = [f"{type(exc).__name__} (unprintable: {type(failure).__name__})\n"]
        return _clip("".join(lines), self.text_limit)

    def _format_interrupt(self, exc: BaseException) -> str:
        lines = traceback.format_exception(type(exc), exc, self._user_traceback(exc))
        return _clip("".join(lines[:-1]) + "KeyboardInterrupt\n", self.text_limit)

    def _format_syntax_error(self, exc: BaseException) -> str:
        return _clip("".join(traceback.format_exception_only(type(exc), exc)), self.text_limit)

    # -- completion -------------------------------------------------------------

    def complete(self, text: str, *, limit: int = COMPLETION_LIMIT) -> list[str]:
        """Completions of *text* (a name or ``dotted.attr`` prefix) in the
        namespace, as :mod:`rlcompleter` finds them (callables end in ``(``).

        Attribute completion evaluates the part before the last dot, as
        the interactive interpreter does (properties run).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not text.strip():
            return []  # the client indents instead
        import rlcompleter  # here: importing it sets up readline, servers need not

        completer = rlcompleter.Completer(self.namespace)
        found: list[str] = []
        seen: set[str] = set()
        if "." in text and not _DOTTED.fullmatch(text):
            # rlcompleter only knows name.name.prefix; this is the
            # services['demo'].ge<Tab> case.
            return self._complete_subscripted(text, limit)
        for state in range(limit * 2):
            try:
                match = completer.complete(text, state)
            except Exception:
                break
            if match is None:
                break
            if match not in seen:
                seen.add(match)
                found.append(match)
                if len(found) >= limit:
                    break
        return found

    def _complete_subscripted(self, text: str, limit: int) -> list[str]:
        """Attributes of ``expr.prefix`` where ``expr`` is names, attributes
        and subscripts by literal keys (``services['demo'].ge``): evaluated
        as the interpreter's completer would, but never a call."""
        expr, _, prefix = text.rpartition(".")
        try:
            tree = ast.parse(expr, mode="eval")
        except SyntaxError:
            return []
        if not all(isinstance(node, _LOOKUPS) for node in ast.walk(tree)):
            return []
        try:
            obj = eval(compile(tree, "<completion>", "eval"), self.namespace)
        except Exception:
            return []
        import rlcompleter

        postfix = rlcompleter.Completer(self.namespace)._callable_postfix
        found = []
        for name in sorted(set(dir(obj))):
            if not name.startswith(prefix) or (name.startswith("_") and not prefix.startswith("_")):
                continue
            word = f"{expr}.{name}"
            try:
                word = postfix(getattr(obj, name), word)  # "(" or "()", as rlcompleter does
            except Exception:
                pass
            found.append(word)
            if len(found) >= limit:
                break
        return found


#: What an expression before a completed attribute may be made of.
_LOOKUPS = (ast.Expression, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Load)
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.\w*)*")
