"""serve/connect/login for the Twisted dialect (broker._api dispatches here)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .._api import Server
from .._errors import ConnectionLost
from .._limits import DEFAULT_LIMITS, Limits
from .._remote import RemoteReference
from ._asyncio import TwistedConnection, TwistedProtocol

__all__ = ["TwistedServer", "connect_twisted", "login_twisted", "portal_root"]


class TwistedServer(Server):
    """A listening server whose connections speak the Twisted dialect."""

    def _make_protocol(self) -> TwistedProtocol:  # type: ignore[override]
        return TwistedProtocol(root=self.root, limits=self.limits, is_client=False,
                               unsafe_tracebacks=self.unsafe_tracebacks, server=self)


def portal_root(portal: Any, services: frozenset[str] | None) -> Any:
    from ._login import TwistedPortalRoot

    return TwistedPortalRoot(portal, services)


async def connect_twisted(host: str | None = None, port: int | None = None, *,
                          path: str | os.PathLike[str] | None = None, ssl: Any = None,
                          server_hostname: str | None = None, root: Any = None,
                          limits: Limits | None = None, unsafe_tracebacks: bool = False,
                          local_addr: Any = None, timeout: float | None = 30.0,
                          **_native_only: Any) -> TwistedConnection:
    limits = limits or DEFAULT_LIMITS
    loop = asyncio.get_running_loop()

    def factory() -> TwistedProtocol:
        return TwistedProtocol(root=root, limits=limits, is_client=True,
                               unsafe_tracebacks=unsafe_tracebacks)

    # The same address rules as the native connect(): a path or a port, and
    # server_hostname only means something with ssl.
    if path is None and port is None:
        raise ValueError("connect() needs a port (or a path for a UNIX socket)")
    if not ssl:
        server_hostname = None

    async def open_() -> TwistedConnection:
        if path is not None:
            _, protocol = await loop.create_unix_connection(
                factory, os.fspath(path), ssl=ssl, server_hostname=server_hostname)
        else:
            _, protocol = await loop.create_connection(
                factory, host or "127.0.0.1", port, ssl=ssl, server_hostname=server_hostname,
                local_addr=local_addr)
        try:
            await asyncio.shield(protocol._ready)
        except BaseException:
            protocol.start_goodbye("normal", "the dialect negotiation failed")
            raise
        return protocol.connection

    try:
        return await asyncio.wait_for(open_(), timeout)
    except TimeoutError:
        raise ConnectionLost(f"no Twisted PB server answered within {timeout} s") from None


async def login_twisted(host: str | None, port: int | None, username: str | None,
                        password: str | None, *, mind: Any = None,
                        **kwargs: Any) -> RemoteReference:
    conn = await connect_twisted(host, port, **kwargs)
    try:
        if username is None:
            return await conn.login_anonymous(mind=mind)
        return await conn.login(username, password or "", mind=mind)
    except BaseException:
        await conn.close("login failed")
        raise
