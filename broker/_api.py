"""serve() and connect(): the entry points."""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
import stat
import ipaddress
from collections.abc import Coroutine, Generator, Hashable, Iterable
from typing import Any, Generic, TypeVar

import cred

from ._accept import Acceptor
from ._errors import ConnectionLost
from ._limits import DEFAULT_LIMITS, Limits
from ._connection import Connection
from ._login import login_over
from ._protocol import BrokerProtocol
from ._remote import RemoteReference

T = TypeVar("T")

__all__ = ["serve", "connect", "login", "login_anonymous", "Server"]

#: serve()'s default cap on simultaneous connections.
DEFAULT_MAX_CONNECTIONS = 10_000
#: serve()'s default cap on simultaneous connections from one source: an
#: IPv4 address or an IPv6 /64 (what one host or one customer is given).
DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 256


def source_of(address: Any) -> Hashable | None:
    """What ``max_connections_per_source`` counts a peer under: its IPv4
    address, or its IPv6 /64 prefix (an IPv4-mapped IPv6 address counts as
    the IPv4 one); None for a UNIX socket peer, which is not capped."""
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return None
    host = address[0]
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"


def release_source(counts: dict[Hashable, int], source: Hashable) -> None:
    """One connection fewer from ``source`` in ``counts`` (source -> connections
    open from it); a source with none left is dropped, so the dict holds only
    the sources connected now."""
    count = counts.pop(source) - 1
    if count:
        counts[source] = count


class Server:
    """A listening server.  It owns every connection it accepted: closing the
    server closes them too (asyncio's own Server.close does not)."""

    def __init__(self, root: Any, limits: Limits, unsafe_tracebacks: bool,
                 registry: Any, max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
                 max_connections_per_source: int | None = DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
                 ) -> None:
        self.root = root
        self.limits = limits
        self.unsafe_tracebacks = unsafe_tracebacks
        self.registry = registry
        self._server: asyncio.base_events.Server | None = None
        self._acceptor: Acceptor | None = None
        self._protocols: set[BrokerProtocol] = set()
        self._path: str | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_connections = max_connections
        self._max_per_source = max_connections_per_source
        #: source -> connections open from it (those that were let in)
        self._per_source: dict[Hashable, int] = {}

    def _make_protocol(self) -> BrokerProtocol:
        return BrokerProtocol(root=self.root, limits=self.limits,
                              unsafe_tracebacks=self.unsafe_tracebacks, server=self,
                              registry=self.registry)

    def _connection_made(self, protocol: BrokerProtocol) -> None:
        if self._closing:
            protocol.start_goodbye("shutdown", "the server is shutting down")
            return
        cap = self._max_connections
        if cap is not None and len(self._protocols) >= cap:
            # Counted with sockets still lingering after an error close: each
            # holds a descriptor and a buffer until it is really gone.
            protocol.refuse(
                "limit-exceeded",
                f"the server already has {len(self._protocols)} connections "
                f"(max_connections={cap}); try again later")
            return
        cap = self._max_per_source
        if cap is not None:
            source = source_of(protocol.peer_address)
            if source is not None:
                count = self._per_source.get(source, 0)
                if count >= cap:
                    protocol.refuse(
                        "limit-exceeded",
                        f"the server already has {count} connections from {source} "
                        f"(max_connections_per_source={cap}); close some, or try again later")
                    return
                self._per_source[source] = count + 1
                protocol.counted_source = source
        self._protocols.add(protocol)
        self._idle.clear()

    def _connection_lost(self, protocol: BrokerProtocol) -> None:
        source = protocol.counted_source
        if source is not None:
            protocol.counted_source = None
            release_source(self._per_source, source)
        self._protocols.discard(protocol)
        if not self._protocols:
            self._idle.set()

    # -- addresses ----------------------------------------------------------

    @property
    def sockets(self) -> tuple:
        return tuple(self._server.sockets) if self._server else ()

    @property
    def address(self) -> Any:
        """The first listening address: ``(host, port)`` for TCP, the path for UNIX."""
        if self._path is not None:
            return self._path
        socks = self.sockets
        return socks[0].getsockname()[:2] if socks else None

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.sockets]

    @property
    def port(self) -> int | None:
        addr = self.address
        return addr[1] if isinstance(addr, tuple) else None

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def connections(self) -> list[Connection]:
        return [p.connection for p in self._protocols if p.is_open]

    # -- lifecycle ----------------------------------------------------------

    def close(self, reason: str = "the server is shutting down") -> None:
        """Stop listening and close every connection now (GOODBYE first)."""
        self._stop_listening()
        for protocol in list(self._protocols):
            protocol.start_goodbye("shutdown", reason)

    async def shutdown(self, grace: float = 10.0,
                       reason: str = "the server is shutting down") -> None:
        """Stop accepting, let calls in progress finish (up to ``grace``
        seconds), then say GOODBYE to every peer and close."""
        self._stop_listening()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and any(p.calls_in_progress or p.core.running
                                             for p in self._protocols):
            await asyncio.sleep(0.01)
        self.close(reason)
        await self.wait_closed()

    def _stop_listening(self) -> None:
        self._closing = True
        if self._acceptor is not None:
            self._acceptor.close()
        if self._server is not None:
            self._server.close()
        if self._path is not None:
            try:
                if stat.S_ISSOCK(os.stat(self._path).st_mode):
                    os.unlink(self._path)
            except OSError:
                pass

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection are closed."""
        if self._server is not None:
            await self._server.wait_closed()
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
        await self._idle.wait()

    async def serve_forever(self) -> None:
        """Serve until cancelled (then close everything)."""
        try:
            await asyncio.Future()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()
        await self.wait_closed()

    def describe(self) -> str:
        address = self.address
        if isinstance(address, tuple):
            return f"server on {address[0]}:{address[1]}"
        return f"server on {address}"

    def __repr__(self) -> str:
        return f"<broker.Server {self.address!r} connections={len(self._protocols)}>"


async def serve(root: Any, host: str | None = None, port: int = 0, *,
                path: str | os.PathLike[str] | None = None,
                ssl: _ssl.SSLContext | None = None,
                limits: Limits | None = None,
                unsafe_tracebacks: bool = False,
                registry: Any = None,
                backlog: int = 128,
                max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
                max_connections_per_source: int | None = DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
                services: Iterable[str] | None = None,
                dialect: str = "native") -> Server:
    """Publish ``root`` on TCP ``host:port`` (port 0 picks one) or on the UNIX
    socket ``path``; each connection's ``root()`` reaches it.

    ``root`` may be a ``Root``/``Referenceable``, or a ``cred.Portal`` (then
    clients log in with ``login()``).  With a portal, ``services`` names the
    cred services this listener offers: a login through it to any other
    service of the portal is refused like every failed login (None: all of
    them, for a portal that no other listener shares).  A connection past
    ``max_connections`` (None: no cap), or past ``max_connections_per_source``
    from one IPv4 address or IPv6 /64 (UNIX socket peers are not counted), is
    told ``GOODBYE limit-exceeded`` and closed.  ``dialect="twisted"``
    speaks Twisted PB's wire protocol instead (see broker/twisted).
    """
    for name, value in (("max_connections", max_connections),
                        ("max_connections_per_source", max_connections_per_source)):
        if value is not None and (type(value) is not int or value <= 0):
            raise ValueError(f"{name} must be a positive int or None, not {value!r}")
    twisted = _twisted_dialect(dialect)
    root = _publishable(root, _offered(services), twisted)
    server = (twisted.TwistedServer if twisted else Server)(root, limits or DEFAULT_LIMITS, unsafe_tracebacks, registry, max_connections,
                    max_connections_per_source)
    loop = asyncio.get_running_loop()
    # asyncio binds (resolving the host, setting the socket options) but
    # never accepts: the Acceptor does, and survives running out of
    # descriptors (see broker/_accept.py).
    if path is not None:
        if host is not None:
            raise ValueError("serve() takes a host/port or a path, not both")
        server._path = os.fspath(path)
        server._server = await loop.create_unix_server(
            server._make_protocol, server._path, backlog=backlog, start_serving=False)
    else:
        server._server = await loop.create_server(
            server._make_protocol, host or "127.0.0.1", port, backlog=backlog,
            start_serving=False)
    handshake = server.limits.handshake_timeout

    def connect(sock: Any) -> Any:
        return loop.connect_accepted_socket(
            server._make_protocol, sock, ssl=ssl,
            ssl_handshake_timeout=handshake if ssl is not None else None)

    try:
        server._acceptor = Acceptor(server._server.sockets, backlog, connect, server.describe)
    except BaseException:
        server._stop_listening()
        raise
    return server


def _offered(services: Iterable[str] | None) -> frozenset[str] | None:
    if services is None:
        return None
    if isinstance(services, str):  # a lone name would be offered letter by letter
        raise TypeError(f"services must be a collection of service names, not the string "
                        f"{services!r}; write services={{{services!r}}}")
    offered = frozenset(services)
    bad = [name for name in offered if not isinstance(name, str) or not name]
    if bad:
        raise TypeError(f"services must be non-empty strings, not {bad[0]!r}")
    return offered


def _twisted_dialect(dialect: str) -> Any:
    """broker.twisted for ``dialect="twisted"``, None for the native dialect."""
    if dialect == "native":
        return None
    if dialect == "twisted":
        from . import twisted

        return twisted._api
    raise ValueError(f"unknown dialect {dialect!r}; use 'native' or 'twisted'")


def _publishable(root: Any, services: frozenset[str] | None = None, twisted: Any = None) -> Any:
    try:
        from cred import Portal
    except ImportError:  # pragma: no cover - cred is part of the distribution
        Portal = ()
    if isinstance(root, Portal):
        if twisted:
            return twisted.portal_root(root, services)
        from ._login import PortalRoot

        return PortalRoot(root, services)
    if services is not None:
        raise TypeError("serve(services=...) binds logins, so it needs a cred.Portal as the "
                        f"root, not {type(root).__qualname__}")
    return root


class Opening(Generic[T]):
    """What :func:`connect` and :func:`login` return: await it for the
    connection (or perspective), or use it directly as an async context
    manager, which closes the connection on the way out::

        async with broker.connect(host, port) as conn: ...
        async with broker.login(host, port, user, pw, service="s") as me: ...

    (``async with await broker.connect(...)`` keeps working too.)
    """

    __slots__ = ("_coro", "_value")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._value: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._value = value = await self._coro
        return value

    async def __aexit__(self, *exc_info: Any) -> None:
        value = self._value
        if value is not None:
            await value.__aexit__(*exc_info)  # type: ignore[attr-defined]


def connect(host: str | None = None, port: int | None = None, *,
            path: str | os.PathLike[str] | None = None,
            ssl: _ssl.SSLContext | None = None,
            server_hostname: str | None = None,
            root: Any = None,
            limits: Limits | None = None,
            unsafe_tracebacks: bool = False,
            registry: Any = None,
            local_addr: tuple[str, int] | None = None,
            timeout: float | None = 30.0, dialect: str = "native") -> Opening[Connection]:
    """Connect to a server; ``root`` optionally publishes an object of ours
    that the server can reach (connections are symmetric).  Await the
    result, or use it as ``async with broker.connect(...) as conn``.
    ``dialect="twisted"`` talks to a Twisted PB server."""
    twisted = _twisted_dialect(dialect)
    if twisted:
        return Opening(twisted.connect_twisted(
            host, port, path=path, ssl=ssl, server_hostname=server_hostname, root=root,
            limits=limits, unsafe_tracebacks=unsafe_tracebacks, local_addr=local_addr,
            timeout=timeout))
    return Opening(_connect(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                            root=root, limits=limits, unsafe_tracebacks=unsafe_tracebacks,
                            registry=registry, local_addr=local_addr, timeout=timeout))


async def _connect(host: str | None, port: int | None, *, path: Any, ssl: Any,
                   server_hostname: Any, root: Any, limits: Limits | None,
                   unsafe_tracebacks: bool, registry: Any, local_addr: Any,
                   timeout: float | None) -> Connection:
    protocol = await _open(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                           root=root, limits=limits, unsafe_tracebacks=unsafe_tracebacks,
                           registry=registry, local_addr=local_addr, timeout=timeout)
    protocol.flush_at_end_of_turn()  # the HELLO, unless a first call takes it sooner
    return protocol.connection


async def _open(host: str | None, port: int | None, *, path: Any, ssl: Any, server_hostname: Any,
                root: Any = None, limits: Limits | None, unsafe_tracebacks: bool = False,
                registry: Any = None, local_addr: Any, timeout: float | None) -> BrokerProtocol:
    """Connect; our HELLO stays queued until the caller sends something."""
    loop = asyncio.get_running_loop()
    limits = limits or DEFAULT_LIMITS

    def factory() -> BrokerProtocol:
        return BrokerProtocol(root=_publishable(root) if root is not None else None,
                              limits=limits, unsafe_tracebacks=unsafe_tracebacks,
                              registry=registry, hello_with_first_message=True)

    try:
        async with asyncio.timeout(timeout):
            if path is not None:
                _, protocol = await loop.create_unix_connection(
                    factory, os.fspath(path), ssl=ssl,
                    server_hostname=server_hostname if ssl else None)
            else:
                if port is None:
                    raise ValueError("connect() needs a port (or a path for a UNIX socket)")
                _, protocol = await loop.create_connection(
                    factory, host or "127.0.0.1", port, ssl=ssl, local_addr=local_addr,
                    server_hostname=server_hostname if ssl else None)
    except TimeoutError:
        raise ConnectionLost(f"could not connect within {timeout} s") from None
    return protocol


def login(host: str | None = None, port: int | None = None,
          username: str = "", password: str = "", *,
          service: str | None = None, perspective: str | None = None,
          mind: Any = None, path: str | os.PathLike[str] | None = None,
          ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
          limits: Limits | None = None, local_addr: tuple[str, int] | None = None,
          timeout: float | None = 30.0, cache: cred.ClientCache | None = None,
          dialect: str = "native") -> Opening[RemoteReference]:
    """Connect and log in; the perspective's ``RemoteReference``.

    ``service`` names the cred service to log in to; without one the server
    picks the only service the account may use, or refuses naming the ones
    it may.  ``cache`` is what the SCRAM client remembers between logins
    (``cred.default_client_cache`` unless given).

    Its connection is ``perspective.connection``; close that when done, or
    use ``async with broker.login(...) as me`` (or ``async with me``),
    which closes it on the way out.  ``dialect="twisted"`` logs in to a
    Twisted PB server (its ``service``/``perspective`` are not sent: Twisted
    has no such request).
    """
    twisted = _twisted_dialect(dialect)
    if twisted:
        return Opening(twisted.login_twisted(
            host, port, username, password, mind=mind, path=path, ssl=ssl,
            server_hostname=server_hostname, limits=limits, local_addr=local_addr,
            timeout=timeout))
    return Opening(_login(host, port, username, password, service=service,
                          perspective=perspective, mind=mind, path=path, ssl=ssl,
                          server_hostname=server_hostname, limits=limits,
                          local_addr=local_addr, timeout=timeout, cache=cache))


async def _login(host: str | None, port: int | None, username: str, password: str, *,
                 service: str | None, perspective: str | None, mind: Any, path: Any,
                 ssl: Any, server_hostname: Any, limits: Limits | None, local_addr: Any,
                 timeout: float | None, cache: cred.ClientCache | None) -> RemoteReference:
    # The login's first call carries our HELLO: no flush of its own.
    conn = (await _open(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                        limits=limits, local_addr=local_addr, timeout=timeout)).connection
    try:
        return await login_over(conn, username, password, service=service,
                                perspective=perspective, mind=mind, cache=cache)
    except BaseException:
        await conn.close("login failed")
        raise


async def login_anonymous(host: str | None = None, port: int | None = None, *,
                          service: str | None = None, perspective: str | None = None,
                          mind: Any = None, path: str | os.PathLike[str] | None = None,
                          ssl: _ssl.SSLContext | None = None,
                          server_hostname: str | None = None,
                          limits: Limits | None = None,
                          timeout: float | None = 30.0) -> RemoteReference:
    """Connect and log in anonymously, where the service allows it."""
    conn = await connect(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                         limits=limits, timeout=timeout)
    try:
        return await conn.login_anonymous(service=service, perspective=perspective, mind=mind)
    except BaseException:
        await conn.close("login failed")
        raise
