"""The blocking twin of ``broker.reconnecting``: a login or a connection kept
alive across server restarts, for scripts.

The session runs on the facade's loop thread; ``on_connect`` runs there too
and gets the *async* reference (use ``await`` in it, as in every callback of
the facade).  Results are walked as everywhere in the facade: references in
them become blocking references on the connection of the moment.
"""

from __future__ import annotations

import os
import ssl as _ssl
from collections.abc import Callable
from typing import Any

import broker
import cred

from ._blocking import DEFAULT_TIMEOUT, Connection, _unwrap, _wrap
from ._loop_thread import register_closer, run, unregister_closer

__all__ = ["Reconnecting", "reconnecting"]


class Reconnecting:
    """See :func:`reconnecting`."""

    def __init__(self, session: broker.Reconnecting, timeout: float | None) -> None:
        self._session = session
        self.timeout = timeout
        run(self._start())
        register_closer(id(self), session.close)

    async def _start(self) -> None:
        self._session.start()

    @property
    def async_session(self) -> broker.Reconnecting:
        return self._session

    @property
    def is_connected(self) -> bool:
        return self._session.is_connected

    @property
    def connections(self) -> int:
        """How many times a connection was made."""
        return self._session.connections

    def wait_connected(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Block until connected (``TimeoutError`` past ``timeout``)."""
        run(self._session.wait_connected(timeout))

    def call_remote(self, name: str, /, *args: Any, timeout: Any = None, **kwargs: Any) -> Any:
        """Call ``name`` on the current root or perspective; ``timeout``
        defaults to the session's and covers waiting for a connection."""
        seconds = self.timeout if timeout is None else timeout
        result = run(self._session.call_remote(name, *_unwrap(args), timeout=seconds,
                                               **_unwrap(kwargs)))
        ref = self._session.reference
        if ref is None:
            return result
        return _wrap(result, Connection(ref.connection, self.timeout))

    def close(self) -> None:
        unregister_closer(id(self))
        run(self._session.close())

    def __enter__(self) -> Reconnecting:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"<clients.Reconnecting {state}, {self.connections} connections so far>"


def reconnecting(host: str | None = None, port: int | None = None, *,
                 path: str | os.PathLike[str] | None = None,
                 ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 username: str | None = None, password: str | None = None,
                 service: str | None = None, perspective: str | None = None,
                 on_connect: Callable[[broker.RemoteReference], Any] | None = None,
                 wait: bool = True, initial_delay: float = 0.2, max_delay: float = 30.0,
                 max_attempts: int | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 limits: broker.Limits | None = None,
                 cache: cred.ClientCache | None = None) -> Reconnecting:
    """Keep a connection (with ``username``: a login) alive across server
    restarts, without ``await``::

        with clients.reconnecting("127.0.0.1", 8787, username="alice",
                                  password=pw, service="pbecho") as session:
            session.call_remote("echo", "hi")

    The arguments are ``broker.reconnecting``'s; ``timeout`` (30 s) is each
    call's default, waiting for a connection included.
    """
    session = broker.reconnecting(
        host, port, path=path, ssl=ssl, server_hostname=server_hostname, username=username,
        password=password, service=service, perspective=perspective, limits=limits,
        on_connect=on_connect, wait=wait, initial_delay=initial_delay, max_delay=max_delay,
        max_attempts=max_attempts, connect_timeout=timeout, cache=cache)
    return Reconnecting(session, timeout)
