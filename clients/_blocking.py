"""The blocking facade: the broker's client API without ``await``.

Every object here wraps its asynchronous counterpart from :mod:`broker` and
runs each operation on the shared loop thread (:mod:`clients._loop_thread`),
blocking the calling thread until it is done.  Any thread may call; the loop
thread itself may not (callbacks run there, and must use the async API).

Values crossing the facade:

* results are walked recursively through ``list``, ``tuple``, ``set``,
  ``frozenset`` and ``dict`` (keys and values): every
  ``broker.RemoteReference`` becomes a blocking :class:`RemoteReference` and
  every ``broker.RemoteStream`` a blocking :class:`RemoteStream`.  Containers
  that hold none are returned as they are (no copy).  Other objects —
  registered copies, ``RemoteCache`` instances — are returned untouched, and
  references *inside* them stay asynchronous.
* arguments are walked the same way in reverse: a blocking reference is
  replaced by the asynchronous one it wraps, so it travels home as the
  peer's own object.
"""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
from collections.abc import Callable, Iterator
from typing import Any

import broker
import cred
from broker._login import login_over  # Connection.login, with the client's cache

from . import _loop_thread
from ._loop_thread import run

__all__ = ["DEFAULT_TIMEOUT", "Connection", "RemoteReference", "RemoteStream",
           "connect", "login", "login_anonymous", "shutdown"]

#: Seconds allowed for connecting, for logging in, and for each call and
#: each stream item, unless ``connect(timeout=...)`` or the call says otherwise.
DEFAULT_TIMEOUT = 30.0

#: Container walks stop this deep (jelly refuses deeper values anyway).
_MAX_DEPTH = 100


class _Default:
    """The type of :data:`USE_CONNECTION_TIMEOUT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "USE_CONNECTION_TIMEOUT"


#: The default of ``timeout=`` on calls: the connection's timeout.
USE_CONNECTION_TIMEOUT: Any = _Default()


def shutdown() -> None:
    """Close every blocking connection and stop the facade's loop thread.

    Runs at interpreter exit anyway; call it to clean up earlier (tests, a
    long-running program done with PB).  A later blocking call starts the
    loop again.
    """
    _loop_thread.shutdown()


# -- walking values ---------------------------------------------------------------

#: What a leaf function returns for a value it does not replace.
_KEEP: Any = object()


def _walk(value: Any, leaf: Callable[[Any], Any], depth: int = 0) -> Any:
    """``value`` with ``leaf`` applied through containers.

    ``leaf(v)`` returns what replaces ``v``, or :data:`_KEEP` to leave it
    (and look inside it if it is a container).  A container in which
    nothing was replaced is returned as it is, not copied.
    """
    replaced = leaf(value)
    if replaced is not _KEEP:
        return replaced
    if depth >= _MAX_DEPTH:
        return value
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        items = [_walk(item, leaf, depth + 1) for item in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if kind is list else kind(items)
    if kind is dict:
        pairs = [(_walk(k, leaf, depth + 1), _walk(v, leaf, depth + 1))
                 for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items())):
            return value
        return dict(pairs)
    return value


def _wrap(value: Any, conn: Connection) -> Any:
    """Results: asynchronous references and streams become blocking ones."""
    def leaf(item: Any) -> Any:
        kind = type(item)
        if kind is broker.RemoteReference:
            return RemoteReference(item, conn)
        if kind is broker.RemoteStream:
            return RemoteStream(item, conn)
        return _KEEP

    return _walk(value, leaf)


def _unwrap_leaf(item: Any) -> Any:
    return item._ref if type(item) is RemoteReference else _KEEP


def _unwrap(value: Any) -> Any:
    """Arguments: blocking references go home as the asynchronous ones they wrap."""
    return _walk(value, _unwrap_leaf)


class _Watchers:
    """Blocking callbacks on an asynchronous object's disconnect: each is
    registered on the loop thread and called with the blocking wrapper."""

    __slots__ = ("_target", "_wrapper", "_registered")

    def __init__(self, target: Any, wrapper: Any) -> None:
        self._target = target  # a broker.Connection or broker.RemoteReference
        self._wrapper = wrapper
        self._registered: dict[Any, Callable[[Any], Any]] = {}

    def add(self, callback: Callable[[Any], Any]) -> None:
        wrapper = self._wrapper

        def watcher(_async_object: Any) -> Any:
            return callback(wrapper)

        async def add() -> None:
            self._target.notify_on_disconnect(watcher)

        run(add())
        self._registered[callback] = watcher

    def remove(self, callback: Callable[[Any], Any]) -> None:
        watcher = self._registered.pop(callback, None)
        if watcher is not None:
            async def remove() -> None:
                self._target.dont_notify_on_disconnect(watcher)

            run(remove())


def _resolve_timeout(timeout: Any, conn: Connection) -> float | None:
    return conn.timeout if timeout is USE_CONNECTION_TIMEOUT else timeout


async def _bounded(awaitable: Any, timeout: float | None, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise broker.CallTimeout(f"{what} did not finish within {timeout} s") from None


# -- connections --------------------------------------------------------------------

class Connection:
    """A blocking connection (wraps a ``broker.Connection``).

    Use it as a context manager, or call :meth:`close`.  ``timeout`` is the
    default for every call made through it (``None``: wait for ever).
    """

    def __init__(self, connection: broker.Connection, timeout: float | None) -> None:
        self._conn = connection
        self.timeout = timeout
        self._watchers = _Watchers(connection, self)

    @property
    def async_connection(self) -> broker.Connection:
        """The underlying ``broker.Connection`` (use it only on the loop thread)."""
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    @property
    def peer_address(self) -> Any:
        return self._conn.peer_address

    def root(self) -> RemoteReference:
        """The server's root object."""
        return RemoteReference(run(self._conn.root()), self)

    def login(self, username: str, password: str, *, service: str | None = None,
              perspective: str | None = None, mind: Any = None,
              cache: cred.ClientCache | None = None) -> RemoteReference:
        """Log in over this connection; return the perspective's reference.

        ``service`` as for ``broker.login``.  ``mind`` (a local
        ``broker.Referenceable``) is what the perspective may call back; its
        methods run on the loop thread.  ``cache`` is what the SCRAM client
        remembers between logins (``cred.default_client_cache`` unless
        given).  Raises ``broker.Unauthorized``.  Bounded by the
        connection's timeout.
        """
        coro = login_over(self._conn, username, password, service=service,
                          perspective=perspective, mind=_unwrap(mind), cache=cache)
        return RemoteReference(run(_bounded(coro, self.timeout, "login")), self)

    def login_anonymous(self, *, service: str | None = None, perspective: str | None = None,
                        mind: Any = None) -> RemoteReference:
        """Log in without credentials, where the service allows it."""
        coro = self._conn.login_anonymous(service=service, perspective=perspective,
                                          mind=_unwrap(mind))
        return RemoteReference(run(_bounded(coro, self.timeout, "anonymous login")), self)

    def close(self, reason: str = "closed by the application") -> None:
        """Say GOODBYE and close; calls still waiting fail with ``ConnectionLost``.
        Closing a closed connection does nothing."""
        _loop_thread.unregister_closer(id(self._conn))
        if self._conn.is_open:  # else closed already (by the peer, or by shutdown())
            run(self._conn.close(reason))

    def wait_closed(self, timeout: float | None = None) -> str:
        """Block until the connection is closed (by either side); return why.
        Raises ``TimeoutError`` if it is still open after ``timeout`` seconds."""
        return run(self._conn.wait_closed(), timeout)

    def notify_on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        """Run ``callback(connection)`` once when the connection closes.

        It runs on the loop thread: it must not make blocking calls.
        """
        self._watchers.add(callback)

    def dont_notify_on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        self._watchers.remove(callback)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<clients.Connection {state} peer={self.peer_address}>"


async def _open(host: str | None, port: int | None, path: Any, ssl: Any,
                server_hostname: str | None, timeout: float | None, root: Any,
                limits: Any) -> broker.Connection:
    conn = await broker.connect(host, port, path=path, ssl=ssl,
                                server_hostname=server_hostname, root=root,
                                limits=limits, timeout=timeout)
    key = id(conn)
    _loop_thread.register_closer(key, lambda: conn.close("the client is shutting down"))
    try:
        conn.notify_on_disconnect(lambda _c: _loop_thread.unregister_closer(key))
    except broker.DeadReference:
        _loop_thread.unregister_closer(key)
    return conn


def connect(host: str | None = None, port: int | None = None, *,
            path: str | os.PathLike[str] | None = None,
            ssl: _ssl.SSLContext | None = None,
            server_hostname: str | None = None,
            timeout: float | None = DEFAULT_TIMEOUT,
            root: Any = None,
            limits: broker.Limits | None = None) -> Connection:
    """Connect to a server at ``host:port`` (or the UNIX socket ``path``).

    ``timeout`` bounds the connect and is the default timeout of every call
    made through the connection (``None``: no limit).  ``root`` publishes a
    local object the server can reach, as in ``broker.connect``.  Failing to
    connect raises ``OSError`` (refused, unreachable) or
    ``broker.ConnectionLost`` (timed out).
    """
    conn = run(_open(host, port, path, ssl, server_hostname, timeout, root, limits))
    return Connection(conn, timeout)


def login(host: str | None = None, port: int | None = None, username: str = "",
          password: str = "", *, service: str | None = None,
          perspective: str | None = None, mind: Any = None,
          cache: cred.ClientCache | None = None,
          path: str | os.PathLike[str] | None = None,
          ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
          timeout: float | None = DEFAULT_TIMEOUT,
          limits: broker.Limits | None = None) -> RemoteReference:
    """Connect and log in; return the perspective's blocking reference.

    The reference owns its connection: leaving ``with clients.login(...) as
    p:`` (or ``p.connection.close()``) closes it.
    """
    conn = connect(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                   timeout=timeout, limits=limits)
    try:
        ref = conn.login(username, password, service=service, perspective=perspective,
                         mind=mind, cache=cache)
    except BaseException:
        conn.close("login failed")
        raise
    ref._owns_connection = True
    return ref


def login_anonymous(host: str | None = None, port: int | None = None, *,
                    service: str | None = None, perspective: str | None = None,
                    mind: Any = None, path: str | os.PathLike[str] | None = None,
                    ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                    timeout: float | None = DEFAULT_TIMEOUT,
                    limits: broker.Limits | None = None) -> RemoteReference:
    """Connect and log in anonymously; the reference owns its connection."""
    conn = connect(host, port, path=path, ssl=ssl, server_hostname=server_hostname,
                   timeout=timeout, limits=limits)
    try:
        ref = conn.login_anonymous(service=service, perspective=perspective, mind=mind)
    except BaseException:
        conn.close("login failed")
        raise
    ref._owns_connection = True
    return ref


# -- references -----------------------------------------------------------------------

async def _call(ref: broker.RemoteReference, name: str, args: tuple, kwargs: dict,
                timeout: float | None) -> Any:
    return await ref.call_remote(name, *args, timeout=timeout, **kwargs)


async def _call_only(ref: broker.RemoteReference, name: str, args: tuple,
                     kwargs: dict) -> None:
    ref.call_remote_only(name, *args, **kwargs)


class RemoteReference:
    """A blocking handle on a remote object (wraps a ``broker.RemoteReference``).

    Two wrappers of the same remote object compare equal.  As a context
    manager it releases the reference on exit — or, for the reference
    :func:`login` returned, closes the connection it owns.
    """

    __slots__ = ("_ref", "_connection", "_owns_connection", "_watchers", "__weakref__")

    def __init__(self, reference: broker.RemoteReference, connection: Connection) -> None:
        self._ref = reference
        self._connection = connection
        self._owns_connection = False
        self._watchers: _Watchers | None = None

    @property
    def async_reference(self) -> broker.RemoteReference:
        """The underlying ``broker.RemoteReference`` (use it only on the loop thread)."""
        return self._ref

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def is_alive(self) -> bool:
        return self._ref.is_alive

    def call_remote(self, name: str, /, *args: Any, timeout: Any = USE_CONNECTION_TIMEOUT,
                    **kwargs: Any) -> Any:
        """Call the remote method ``name`` and return its result.

        ``timeout`` defaults to the connection's (30 s unless ``connect``
        said otherwise); ``None`` waits for ever.  Past it the call raises
        ``broker.CallTimeout`` and is cancelled remotely; so is a call
        interrupted by KeyboardInterrupt.  Remote failures raise the
        broker's errors (``RemoteError``, ``NoSuchMethod``, ...) or a
        registered copyable exception.
        """
        seconds = _resolve_timeout(timeout, self._connection)
        result = run(_call(self._ref, name, _unwrap(args), _unwrap(kwargs), seconds))
        return _wrap(result, self._connection)

    def call_remote_only(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send the call without wanting an answer (returns once it is sent)."""
        run(_call_only(self._ref, name, _unwrap(args), _unwrap(kwargs)))

    def release(self) -> None:
        """Tell the peer we are done with its object now; later calls raise
        ``broker.DeadReference``."""
        if self._ref.is_alive:
            run(self._ref.release())

    def notify_on_disconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """Run ``callback(reference)`` once when the connection is lost.

        It runs on the loop thread: it must not make blocking calls.
        """
        if self._watchers is None:
            self._watchers = _Watchers(self._ref, self)
        self._watchers.add(callback)

    def dont_notify_on_disconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        if self._watchers is not None:
            self._watchers.remove(callback)

    def __enter__(self) -> RemoteReference:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._owns_connection:
            self._connection.close()
        elif self._ref.is_alive:
            self.release()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteReference):
            return self._ref is other._ref
        return NotImplemented

    def __hash__(self) -> int:
        return hash(id(self._ref))

    def __repr__(self) -> str:
        return repr(self._ref)


# -- streams ----------------------------------------------------------------------------

_END = object()


async def _next_item(stream: broker.RemoteStream, timeout: float | None) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await stream.__anext__()
    except StopAsyncIteration:
        return _END
    except TimeoutError:
        raise broker.CallTimeout(f"no stream item within {timeout} s") from None


class RemoteStream:
    """A blocking iterator over a remote stream (wraps ``broker.RemoteStream``).

    ``for item in stream:`` pulls items with the async stream's window of
    requests in flight.  Each item must arrive within the connection's
    timeout (``broker.CallTimeout`` otherwise, which ends the stream).
    ``close()`` — or leaving ``with stream:`` — stops the producer.
    """

    def __init__(self, stream: broker.RemoteStream, connection: Connection) -> None:
        self._stream = stream
        self._connection = connection

    @property
    def async_stream(self) -> broker.RemoteStream:
        return self._stream

    @property
    def window(self) -> int:
        return self._stream.window

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = run(_next_item(self._stream, self._connection.timeout))
        if item is _END:
            raise StopIteration
        return _wrap(item, self._connection)

    def close(self) -> None:
        ref = self._stream._ref
        if ref is not None and ref.is_alive:
            run(self._stream.aclose())

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<clients.RemoteStream over {self._stream._ref!r}>"
