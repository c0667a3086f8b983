"""A connection, or a login, kept alive across server restarts.

:func:`reconnecting` returns a :class:`Reconnecting` session.  A background
task connects (and logs in, given a user name), waits until the connection
closes, then connects again after a back-off with jitter, for as long as the
session is open, or until ``max_attempts`` failures in a row.  Calls go to
the current root (or perspective):

* made while connected, they are sent at once;
* made while disconnected, they wait for the next connection (within their
  ``timeout``), or fail at once with ``ConnectionLost`` when the session was
  opened with ``wait=False``;
* sent, and then cut off by a lost connection, they fail with
  ``ConnectionLost``: a call that may have reached the server is never sent
  again behind the caller's back.

``on_connect(reference)`` runs after every (re)connection, before waiting
calls go out: the place to fetch caches and references again, since those
of the last connection died with it.  A refused login stops the session
(a wrong password does not get better by retrying).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any

import cred
from cred.log import get_logger

from ._errors import ConnectionLost, Unauthorized
from ._limits import Limits
from ._remote import RemoteReference

__all__ = ["Reconnecting", "reconnecting"]

log = get_logger("broker.reconnecting")


class Reconnecting:
    """See :func:`reconnecting`."""

    def __init__(self, host: str | None, port: int | None, *,
                 path: str | os.PathLike[str] | None, ssl: _ssl.SSLContext | None,
                 server_hostname: str | None, username: str | None, password: str | None,
                 service: str | None, perspective: str | None, mind: Any,
                 limits: Limits | None,
                 on_connect: Callable[[RemoteReference], Any] | None, wait: bool,
                 initial_delay: float, max_delay: float, max_attempts: int | None,
                 connect_timeout: float | None, cache: cred.ClientCache | None = None) -> None:
        if initial_delay <= 0 or max_delay < initial_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be None or at least 1, not {max_attempts}")
        self._target = dict(host=host, port=port, path=path, ssl=ssl,
                            server_hostname=server_hostname, limits=limits,
                            timeout=connect_timeout)
        self._login = (username, password, service, perspective, mind)
        self._cache = cache
        self.on_connect = on_connect
        self.wait = wait
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        #: The current root or perspective; None while disconnected.
        self.reference: RemoteReference | None = None
        #: How many times a connection was made (1 after the first).
        self.connections = 0
        self._connected: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._failure: BaseException | None = None  # why the session ended

    # -- the session -----------------------------------------------------------

    def start(self) -> Reconnecting:
        if self._task is None:
            self._connected = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._keep_connected())
        return self

    async def __aenter__(self) -> Reconnecting:
        return self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        ref = self.reference
        return ref is not None and ref.is_alive

    async def wait_connected(self, timeout: float | None = None) -> RemoteReference:
        """The current reference, once connected (``CallTimeout``-like
        ``TimeoutError`` past ``timeout``; the session's failure if it ended)."""
        self.start()
        assert self._connected is not None
        async with asyncio.timeout(timeout):
            while True:
                if self._failure is not None:
                    raise self._failure
                ref = self.reference
                if ref is not None and ref.is_alive:
                    return ref
                self._connected.clear()
                await self._connected.wait()

    async def call_remote(self, name: str, /, *args: Any, timeout: float | None = None,
                          **kwargs: Any) -> Any:
        """Call ``name`` on the current root or perspective (see the module's
        docstring for what happens while disconnected)."""
        ref = self.reference
        if ref is None or not ref.is_alive:
            if self._failure is not None:
                raise self._failure
            if not self.wait:
                raise ConnectionLost("not connected (reconnecting); the call was not sent")
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                ref = await self.wait_connected(timeout)
            except TimeoutError:
                raise ConnectionLost(f"not connected within {timeout} s (reconnecting); "
                                     f"the call {name!r} was not sent") from None
            if timeout is not None:
                timeout = max(timeout - (loop.time() - started), 0.001)
        return await ref.call_remote(name, *args, timeout=timeout, **kwargs)

    async def close(self) -> None:
        """End the session and close its connection."""
        task, self._task = self._task, None
        if self._failure is None:
            self._failure = ConnectionLost("the reconnecting session was closed")
        if self._connected is not None:
            self._connected.set()  # wake waiting calls: they see the failure
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ref, self.reference = self.reference, None
        if ref is not None:
            await ref.connection.close()

    # -- the background task -------------------------------------------------------

    async def _keep_connected(self) -> None:
        from ._api import connect, login

        failures = 0
        while True:
            username, password, service, perspective, mind = self._login
            try:
                if username is not None:
                    ref = await login(username=username, password=password or "",
                                      service=service, perspective=perspective, mind=mind,
                                      cache=self._cache,
                                      **self._target)
                else:
                    conn = await connect(**self._target)
                    try:
                        ref = await conn.root()
                    except BaseException:
                        await conn.close()
                        raise
            except Unauthorized as exc:
                self._end(exc)
                return
            except (OSError, ConnectionLost, TimeoutError) as exc:
                failures += 1
                if self.max_attempts is not None and failures >= self.max_attempts:
                    self._end(ConnectionLost(
                        f"gave up reconnecting after {failures} failed attempts; the last: {exc}"))
                    return
                delay = min(self.max_delay, self.initial_delay * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: clients must not come back in step
                log.info("cannot connect", error=exc, retry=f"{delay:.1f}s")
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.connections += 1
            if self.on_connect is not None:
                await _run_callback(self.on_connect, ref)
            self.reference = ref
            assert self._connected is not None
            self._connected.set()
            reason = await ref.connection.wait_closed()
            self.reference = None
            log.info("connection lost; reconnecting", reason=reason)

    def _end(self, exc: BaseException) -> None:
        self._failure = exc
        if self._connected is not None:
            self._connected.set()


async def _run_callback(callback: Callable[[RemoteReference], Any], ref: RemoteReference) -> None:
    try:
        result = callback(ref)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("on_connect callback failed", callback=repr(callback))


def reconnecting(host: str | None = None, port: int | None = None, *,
                 path: str | os.PathLike[str] | None = None,
                 ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 username: str | None = None, password: str | None = None,
                 service: str | None = None, perspective: str | None = None,
                 mind: Any = None, limits: Limits | None = None,
                 on_connect: Callable[[RemoteReference], Awaitable[Any] | Any] | None = None,
                 wait: bool = True, initial_delay: float = 0.2, max_delay: float = 30.0,
                 max_attempts: int | None = None,
                 connect_timeout: float | None = 10.0,
                 cache: cred.ClientCache | None = None) -> Reconnecting:
    """A session that keeps a connection — or, with ``username``, a login —
    alive across server restarts::

        async with broker.reconnecting("127.0.0.1", 8787, username="alice",
                                       password=pw, service="pbecho") as session:
            await session.call_remote("echo", "hi", timeout=5)

    Back-off starts at ``initial_delay`` seconds, doubles up to
    ``max_delay``, with jitter; ``max_attempts`` failures in a row end the
    session (None: never).  ``wait=False`` makes calls fail at once while
    disconnected instead of waiting for the next connection.  ``cache``
    is the ``cred.ClientCache`` each login uses (the default one unless
    given).
    """
    return Reconnecting(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                        username=username, password=password, service=service,
                        perspective=perspective, mind=mind, limits=limits,
                        on_connect=on_connect, wait=wait, initial_delay=initial_delay,
                        max_delay=max_delay, max_attempts=max_attempts,
                        connect_timeout=connect_timeout, cache=cache)
