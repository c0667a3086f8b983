"""The accept loop: listening sockets that survive running out of descriptors.

asyncio's own accept callback, on Python 3.11 and 3.12, answers EMFILE by
logging a traceback and scheduling a retry, then goes on calling accept()
up to ``backlog`` times in the same turn: hundreds of tracebacks and
scheduled retries a second for as long as the process has no descriptor
to spare.  So :class:`Acceptor` accepts by itself, on a duplicate of each
socket asyncio bound (asyncio still resolves the host and sets the socket
options): when out of descriptors it logs once a second, waits a little,
and tries again, so it recovers as soon as a connection closes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Acceptor"]

log = logging.getLogger("broker")

#: accept() failures that say the process or the system is out of something
#: that freeing a connection gives back.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds between accept() attempts while out of descriptors.
RETRY_DELAY = 0.1
#: Seconds between two reports of running out.
REPORT_EVERY = 1.0


class Acceptor:
    """Accepts connections on ``sockets`` (asyncio's bound listening sockets,
    duplicated so that asyncio's server never accepts on them) and hands
    each to ``connect(sock)``, a coroutine function that makes its transport."""

    def __init__(self, sockets: Iterable[Any], backlog: int,
                 connect: Callable[[socket.socket], Any], describe: Callable[[], str]) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect = connect
        self._describe = describe
        self._pending: set[asyncio.Task] = set()
        self._last_report = -REPORT_EVERY
        self._missed = 0
        self._tasks: list[asyncio.Task] = []
        self._sockets: list[socket.socket] = []
        try:
            for listening in sockets:
                sock = socket.socket(listening.family, listening.type, listening.proto,
                                     fileno=os.dup(listening.fileno()))
                self._sockets.append(sock)
                sock.setblocking(False)
                sock.listen(backlog)  # asyncio listens only when it serves
        except BaseException:
            for sock in self._sockets:
                sock.close()
            raise
        self._tasks = [self._loop.create_task(self._accept_forever(sock))
                       for sock in self._sockets]

    def close(self) -> None:
        """Stop accepting and close the sockets, now."""
        for sock in self._sockets:
            if sock.fileno() >= 0:
                # Unwatched before it is closed: the number may be reused at
                # once, and the cancelled sock_accept() must not unwatch
                # that newcomer later (removing cancels its handle).
                self._loop.remove_reader(sock.fileno())
                sock.close()
        for task in self._tasks:
            task.cancel()
        for task in self._pending:  # TLS handshakes still under way
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._pending:
            await asyncio.wait(list(self._pending))

    async def _accept_forever(self, sock: socket.socket) -> None:
        loop = self._loop
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(sock)
                except OSError as exc:
                    if exc.errno in _OUT_OF_RESOURCES:
                        self._out_of_resources(exc)
                        await asyncio.sleep(RETRY_DELAY)
                    elif not isinstance(exc, ConnectionAbortedError):
                        # Not ours to fix (EPERM from a firewall, say): the
                        # listener goes on, a little later.
                        log.warning("%s: accept() failed: %s", self._describe(), exc)
                        await asyncio.sleep(RETRY_DELAY)
                    continue
                task = loop.create_task(self._connect_one(conn))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        finally:
            sock.close()

    async def _connect_one(self, conn: socket.socket) -> None:
        try:
            await self._connect(conn)
        except Exception as exc:  # the peer left during a TLS handshake, say
            conn.close()
            log.debug("%s: a connection failed before it began: %r", self._describe(), exc)

    def _out_of_resources(self, exc: OSError) -> None:
        now = self._loop.time()
        if now - self._last_report < REPORT_EVERY:
            self._missed += 1
            return
        missed, self._missed = self._missed, 0
        self._last_report = now
        log.error("%s: cannot accept connections: %s; retrying every %s s until "
                  "descriptors are free (%d more failures since the last report); "
                  "raise the limit (ulimit -n), or lower max_connections",
                  self._describe(), exc.strerror or exc, RETRY_DELAY, missed)

