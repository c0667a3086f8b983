"""The manhole over PB: the perspective an admin logs in to, and the cred
service that makes one per login.

Who may log in is the portal's business: the account's keyring must hold
``manhole:NAME`` (``pb user grant NAME manhole``).  Each login gets a fresh
:class:`ManholePerspective` with its own namespace, which lives as long as
that login; logging out (or the connection closing) cancels what it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import broker
import cred
from services import get_logger

from ._evaluator import Evaluator

__all__ = ["ManholePerspective", "ManholeRealmService", "SOURCE_PREVIEW"]

#: Characters of each evaluated source written to the log.
SOURCE_PREVIEW = 200

_log = get_logger("pb.manhole")


class ManholePerspective(broker.Perspective):
    """One admin's session: ``run``, ``complete`` and ``interrupt``.

    ``name`` is the perspective name: the account name for a
    ``manhole:NAME`` grant (what ``pb user grant NAME manhole`` gives).
    """

    def __init__(self, name: str, evaluator: Evaluator,
                 on_close: Callable[[ManholePerspective], None] | None = None) -> None:
        self.name = name
        self.evaluator = evaluator
        self._on_close = on_close
        self._closed = False
        evaluator.on_run = self._log_source

    def _log_source(self, source: str) -> None:
        preview = source if len(source) <= SOURCE_PREVIEW else source[:SOURCE_PREVIEW] + "..."
        _log.info("evaluating", admin=self.name, source=preview)

    async def perspective_run(self, source: str) -> dict[str, Any]:
        """Evaluate *source* in this session's namespace.

        Returns ``{"output", "value", "error", "more"}``: see
        :mod:`services.manhole._evaluator`.  Cancelling the call (CANCEL)
        cancels the evaluation.
        """
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, not {type(source).__name__}")
        return await self.evaluator.run(source)

    def perspective_complete(self, text: str) -> list[str]:
        """Completions of *text* in this session's namespace."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return self.evaluator.complete(text)

    def perspective_interrupt(self) -> bool:
        """Cancel the running evaluation (Ctrl-C); False if nothing runs."""
        interrupted = self.evaluator.interrupt()
        if interrupted:
            _log.info("interrupted", admin=self.name)
        return interrupted

    def attached(self, mind: Any) -> None:
        _log.info("admin logged in", admin=self.name)

    def detached(self, mind: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the session (idempotent): cancel its evaluation."""
        if self._closed:
            return
        self._closed = True
        self.evaluator.close()
        _log.info("admin logged out", admin=self.name)
        if self._on_close is not None:
            self._on_close(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ManholePerspective {self.name!r} {state}>"


class ManholeRealmService(cred.Service):
    """The cred service ``manhole``: every login gets a new session from
    ``make_session(perspective_name)``, never a shared one."""

    def __init__(self, name: str, make_session: Callable[[str], ManholePerspective]) -> None:
        super().__init__(name)
        self._make_session = make_session

    def get_perspective(self, name: str) -> ManholePerspective:
        return self._make_session(name)

    def logout(self, perspective_name: str | None, avatar: Any, mind: Any) -> None:
        if isinstance(avatar, ManholePerspective):
            avatar.close()
