"""The application: the root of the service tree and what plug-ins share.

An :class:`Application` is the :class:`MultiService` the runner starts and
stops.  Besides its children it holds what the services of one server have
in common: the data directory (created with mode 0700 when the application
starts) and the login portal, which the first plug-in that needs one creates
and later plug-ins reuse (:meth:`Application.use_portal`).
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._logging import get_logger
from ._service import MultiService, Service

__all__ = ["Application"]

_log = get_logger("pb.application")


class Application(MultiService):
    """The root service of a server process.

    ``portal`` is None until a plug-in sets one (typed as Any: it is a
    ``cred.Portal`` once that layer exists).  ``services`` maps the top-level
    services by name.
    """

    def __init__(self, name: str, *, data_dir: Path | str = Path("pb-data")) -> None:
        super().__init__(name)
        self.data_dir = Path(data_dir)
        self.portal: Any = None
        self.stop_reason: str | None = None
        self._stop_requested = asyncio.Event()

    @property
    def services(self) -> Mapping[str, Service]:
        """The top-level services by name (a read-only live view)."""
        return MappingProxyType(self._children)

    def use_portal(self, factory: Callable[[], Any]) -> Any:
        """Return ``self.portal``, first setting it to ``factory()`` if it is None.

        Plug-ins that offer login call this from ``build()`` so that all the
        services of one application share one portal (one account store, one
        set of realms); a plug-in that needs a particular realm registers it
        on the portal it gets back.
        """
        if self.portal is None:
            self.portal = factory()
        return self.portal

    def make_data_dir(self) -> Path:
        """Create the data directory (mode 0700) if it is missing; return it.

        Called when the application starts; a plug-in may call it earlier
        from ``build()``.  An existing directory is left as it is, with a
        warning if other users can read it.
        """
        path = self.data_dir
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"data directory {str(path)!r} is not a directory")
        if not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)  # mkdir's mode is filtered by the umask
            _log.debug("created data directory", path=str(path))
        elif path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            _log.warning(
                "data directory is accessible by other users; consider chmod 700",
                path=str(path),
            )
        return path

    async def on_start(self) -> None:
        self.make_data_dir()

    # -- asking the runner to stop ---------------------------------------

    def request_stop(self, reason: str = "requested") -> None:
        """Ask whoever runs the application to stop it (the runner does so
        gracefully, as on SIGTERM).  The first reason given is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop_requested.set()

    async def wait_for_stop_request(self) -> str:
        """Wait until :meth:`request_stop` is called; return its reason."""
        await self._stop_requested.wait()
        assert self.stop_reason is not None
        return self.stop_reason
