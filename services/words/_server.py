"""The IRC face's asyncio adapter: sockets in, :class:`~._irc.IRCConnection` out.

One :class:`IRCServer` listens on a plain port and, given a certificate, a
TLS port; it owns every connection and closes them all when it closes.

Per connection, in this order:

* bytes go through a :class:`~._irc.LineReader` (512-byte lines, checked
  before anything is buffered);
* complete lines wait in a queue of at most ``max_queued`` lines and are
  handled at the flood-control rate (a :class:`~._irc.TokenBucket`): a
  client that sends faster is slowed down, and one whose queue overflows
  is disconnected ("Excess Flood");
* a client's answers to its own lines are written at once; what other
  clients' events leave for it (a fan-out) is written once per loop turn,
  every waiting client in one pass, so that several messages to one
  client in the same turn make one socket write and a fan-out is one tight
  loop of writes after the chat has done its part;
* when the kernel and asyncio hold more than ``max_output`` bytes unsent
  for one client (it stopped reading), that client is dropped, so a
  fan-out to the others never waits for it;
* password checks go to the portal (``service="words"``, offered only
  ``{"words"}``, throttled per account and per source like PB logins).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import socket
import ssl as _ssl
from dataclasses import dataclass
from typing import Any

import cred

from ._irc import IRCConnection, IRCWorld, LineReader, TokenBucket

__all__ = ["IRCLimits", "IRCServer"]

_log = logging.getLogger("pb.words.irc")


@dataclass(frozen=True)
class IRCLimits:
    """Per-connection limits of the IRC face (all configurable)."""

    #: lines a second handled once the burst is spent
    flood_rate: float = 5.0
    #: lines handled at once before the rate applies
    flood_burst: int = 20
    #: lines waiting to be handled; one more disconnects ("Excess Flood")
    max_queued: int = 100
    #: unsent output bytes for one client; more disconnects it (slow reader)
    max_output: int = 256 * 1024
    #: the kernel's send buffer per IRC socket (SO_SNDBUF)
    socket_send_buffer: int = 64 * 1024
    #: seconds to log in after connecting
    registration_timeout: float = 60.0
    #: simultaneous IRC connections
    max_connections: int = 1000
    #: simultaneous IRC connections from one IPv4 address or IPv6 /64
    max_per_source: int = 256
    #: seconds a closing connection may take to flush its last lines
    close_timeout: float = 5.0
    #: seconds of silence before the server PINGs a client; as long again
    #: without an answer closes it ("Ping timeout")
    ping_interval: float = 120.0


def _source_key(host: str) -> str:
    """The unit a per-source limit counts: an IPv4 address, or an IPv6 /64
    (one customer's share of addresses)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _IRCProtocol(asyncio.Protocol):
    def __init__(self, server: IRCServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.machine: IRCConnection | None = None
        self.reader = LineReader()
        self.queue: collections.deque[Any] = collections.deque()
        self.bucket = TokenBucket(self.limits.flood_rate, self.limits.flood_burst)
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.logout: Any = None
        self.gone = False
        self.heard = True  # something arrived since the last keepalive check
        self.pinged = False
        self.keepalive: asyncio.TimerHandle | None = None
        self.source = ""
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(asyncio.Transport): uvloop's transports are not
        # subclasses, and pb run picks uvloop where it is installed.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else "local"
        self.host = host
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Bound the kernel's share too: by default it may grow to megabytes
            # per socket, which would hide a reader that stopped reading.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.socket_send_buffer)
        self.machine = IRCConnection(self.server.world, peer=host)
        self.machine.wakeup = self._flush_soon
        server = self.server
        self.source = _source_key(host)
        reason = None
        if server.closing:
            reason = "the server is shutting down"
        elif len(server.protocols) >= self.limits.max_connections:
            reason = f"too many connections (max {self.limits.max_connections}); try later"
        elif server.per_source.get(self.source, 0) >= self.limits.max_per_source:
            reason = (f"too many connections from your address (max "
                      f"{self.limits.max_per_source}); close some first")
        server.protocols.add(self)
        server.per_source[self.source] = server.per_source.get(self.source, 0) + 1
        if reason is not None:
            self.machine.close(reason)
            self._flush()
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.limits.registration_timeout, self._registration_late)
        self.keepalive = loop.call_later(self.limits.ping_interval, self._check_alive)

    def data_received(self, data: bytes) -> None:
        machine = self.machine
        if machine is None or machine.closing:
            return
        self.heard = True
        self.pinged = False
        for line in self.reader.feed(data):
            if len(self.queue) >= self.limits.max_queued:
                self.queue.clear()
                machine.close("Excess Flood")
                self._flush()
                return
            self.queue.append(line)
        self._process()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = True
        for handle in (self.timer, self.deadline, self.keepalive):
            if handle is not None:
                handle.cancel()
        self.queue.clear()
        if self.machine is not None:
            self.machine.connection_lost()
        if self.logout is not None:
            logout, self.logout = self.logout, None
            logout()
        server = self.server
        if self in server.protocols:
            server.protocols.discard(self)
            left = server.per_source.get(self.source, 1) - 1
            if left > 0:
                server.per_source[self.source] = left
            else:
                server.per_source.pop(self.source, None)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- work -----------------------------------------------------------------

    def _process(self) -> None:
        self.timer = None
        machine = self.machine
        assert machine is not None
        while self.queue and not machine.closing and machine.login_request is None:
            wait = self.bucket.take()
            if wait > 0:
                # Slowed down: handle the rest later; reading goes on, so a
                # client that keeps flooding overflows the queue.
                self.timer = asyncio.get_running_loop().call_later(wait, self._process)
                break
            machine.receive_line(self.queue.popleft())
            if machine.login_request is not None:
                self.server.start_login(self)
        self._flush()

    def _flush_soon(self) -> None:
        """Write this connection's output with the others' at the end of
        this loop turn (its machine calls this when output starts to wait)."""
        server = self.server
        server.waiting.append(self)
        if not server.flush_scheduled:
            server.flush_scheduled = True
            asyncio.get_running_loop().call_soon(server.flush_waiting)

    def _flush(self) -> None:
        machine, transport = self.machine, self.transport
        if machine is None or transport is None or self.gone:
            return
        data = machine.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
            if transport.get_write_buffer_size() > self.limits.max_output:
                _log.info("slow reader dropped: peer=%s nick=%s unsent=%d", self.host,
                          machine.nick, transport.get_write_buffer_size())
                machine.closing = True
                transport.abort()
                return
        if machine.closing and not transport.is_closing():
            transport.close()
            # A peer that reads nothing would keep a closing socket forever.
            asyncio.get_running_loop().call_later(self.limits.close_timeout, transport.abort)

    def _check_alive(self) -> None:
        machine = self.machine
        if machine is None or machine.closing or self.gone:
            return
        if self.heard:
            self.heard = False
        elif self.pinged:
            machine.close(f"Ping timeout: {2 * self.limits.ping_interval:g} seconds")
            self._flush()
            return
        else:
            self.pinged = True
            machine.ping()
            self._flush()
        self.keepalive = asyncio.get_running_loop().call_later(
            self.limits.ping_interval, self._check_alive)

    def _registration_late(self) -> None:
        machine = self.machine
        if machine is not None and machine.state != "active" and machine.login_request is None:
            machine.close("registration timed out: log in within "
                          f"{self.limits.registration_timeout:g} s")
            self._flush()

    async def login(self) -> None:
        machine = self.machine
        assert machine is not None and machine.login_request is not None
        nick, password = machine.login_request
        try:
            result = await self.server.portal.login(
                cred.UsernamePassword(nick, password), None, service=self.server.service_name,
                offered={self.server.service_name}, source=self.host)
        except cred.Unauthorized:
            if not self.gone:
                machine.login_failed()
        except Exception:
            _log.exception("IRC login of %r could not be checked", nick)
            if not self.gone:
                machine.login_failed()
        else:
            if self.gone:
                result.logout()
                return
            self.logout = result.logout
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None
            machine.login_succeeded()
        if not self.gone:
            self._process()

    def abort(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.abort()


class IRCServer:
    """The IRC listeners of one words service and every connection they took."""

    def __init__(self, world: IRCWorld, portal: Any, *, service_name: str = "words",
                 limits: IRCLimits | None = None) -> None:
        self.world = world
        self.portal = portal
        self.service_name = service_name
        self.limits = limits or IRCLimits()
        self.protocols: set[_IRCProtocol] = set()
        #: open connections per source (IPv4 address, IPv6 /64)
        self.per_source: dict[str, int] = {}
        self.listeners: list[asyncio.base_events.Server] = []
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: connections whose machine has output from other connections'
        #: events, written by flush_waiting at the end of the loop turn
        self.waiting: list[_IRCProtocol] = []
        self.flush_scheduled = False

    def flush_waiting(self) -> None:
        """Write the output of every connection that waits for it, in the
        order their output started to wait."""
        self.flush_scheduled = False
        waiting, self.waiting = self.waiting, []
        for protocol in waiting:
            try:
                protocol._flush()
            except Exception:
                # One broken connection must not leave the others' output
                # waiting (their machines would not ask again).
                _log.exception("IRC output could not be written: peer=%s", protocol.host)
                protocol.abort()

    async def listen(self, host: str, port: int, *, ssl: _ssl.SSLContext | None = None,
                     path: str | None = None) -> int | str:
        """Listen on TCP *host*:*port* (or the UNIX socket *path*); returns the
        port (or path)."""
        loop = asyncio.get_running_loop()
        if path is not None:
            listener = await loop.create_unix_server(lambda: _IRCProtocol(self), path, ssl=ssl)
            self.listeners.append(listener)
            return path
        listener = await loop.create_server(lambda: _IRCProtocol(self), host, port, ssl=ssl)
        self.listeners.append(listener)
        return listener.sockets[0].getsockname()[1]

    def start_login(self, protocol: _IRCProtocol) -> None:
        # The task belongs to this server: close() cancels and awaits it.
        task = asyncio.get_running_loop().create_task(protocol.login())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float = 1.0) -> None:
        """Stop listening, tell every client, close; abort what lingers."""
        self.closing = True
        for listener in self.listeners:
            listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for protocol in list(self.protocols):
            if protocol.machine is not None:
                protocol.machine.close("the server is shutting down")
                protocol._flush()
        waiting = [p.closed for p in self.protocols]
        if waiting:
            done, pending = await asyncio.wait(waiting, timeout=grace)
            if pending:
                for protocol in list(self.protocols):
                    protocol.abort()
                await asyncio.wait(pending, timeout=1.0)
        for listener in self.listeners:
            await listener.wait_closed()
        self.listeners.clear()
