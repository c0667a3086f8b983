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
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from cred.log import get_logger

__all__ = ["Acceptor"]

log = get_logger("broker")

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
        self._backlog = backlog
        self._pending: set[asyncio.Task] = set()
        self._retries: dict[socket.socket, asyncio.TimerHandle] = {}
        self._last_report = -REPORT_EVERY
        self._missed = 0
        self._closed = False
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
        for sock in self._sockets:
            self._loop.add_reader(sock, self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the sockets, now."""
        if self._closed:
            return
        self._closed = True
        for timer in self._retries.values():
            timer.cancel()
        self._retries.clear()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock)
                sock.close()
        for task in self._pending:  # TLS handshakes still under way
            task.cancel()

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending))

    def _accept(self, sock: socket.socket) -> None:
        # As asyncio does: up to a backlog's worth per readiness event.
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_resources(exc)
                else:
                    # Not ours to fix (EPERM from a firewall, say): the
                    # listener goes on, a little later.
                    log.warning("accept() failed", listener=self._describe(), error=exc)
                self._pause(sock)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect_one(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _pause(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` for RETRY_DELAY: Linux keeps reporting a
        listening socket readable while accept() fails."""
        self._loop.remove_reader(sock)
        self._retries[sock] = self._loop.call_later(RETRY_DELAY, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._retries.pop(sock, None)
        if not self._closed:
            self._loop.add_reader(sock, self._accept, sock)

    async def _connect_one(self, conn: socket.socket) -> None:
        try:
            await self._connect(conn)
        except Exception as exc:  # the peer left during a TLS handshake, say
            conn.close()
            log.debug("a connection failed before it began", listener=self._describe(), error=repr(exc))

    def _out_of_resources(self, exc: OSError) -> None:
        now = self._loop.time()
        if now - self._last_report < REPORT_EVERY:
            self._missed += 1
            return
        missed, self._missed = self._missed, 0
        self._last_report = now
        log.error("cannot accept connections: retrying until descriptors are free; "
                  "raise the limit (ulimit -n), or lower max_connections",
                  listener=self._describe(), error=exc.strerror or exc,
                  retry=f"{RETRY_DELAY:g}s", unreported=missed)
