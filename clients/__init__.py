"""Clients for Perspective Broker servers: the blocking facade and the ``pb`` command.

The blocking facade has the names of the async API, without ``await``::

    import clients

    with clients.connect("127.0.0.1", 8787) as conn:
        print(conn.root().call_remote("echo", "hi"))

    with clients.login("127.0.0.1", 8787, "alice", "secret", service="pbecho") as me:
        print(me.call_remote("echo", "hi"))

One event loop on a daemon thread serves every blocking connection in the
process; it starts on first use and stops at interpreter exit or on
:func:`shutdown`.  Errors are the broker's own (``broker.RemoteError``, ...).
Callbacks (minds, ``Referenceable`` arguments, disconnect callbacks) run on
that loop's thread and must use the async API there.  See
``docs/how-to/blocking-clients.md``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._blocking import (
        DEFAULT_TIMEOUT,
        USE_CONNECTION_TIMEOUT,
        Connection,
        RemoteReference,
        RemoteStream,
        connect,
        login,
        login_anonymous,
        shutdown,
    )
    from ._reconnecting import Reconnecting, reconnecting

__all__ = [
    "connect",
    "login",
    "login_anonymous",
    "shutdown",
    "Connection",
    "RemoteReference",
    "RemoteStream",
    "DEFAULT_TIMEOUT",
    "USE_CONNECTION_TIMEOUT",
    "reconnecting",
    "Reconnecting",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``pb run`` and ``pb user`` (which live
    # in this package) do not pay for importing the broker.
    if name in ("reconnecting", "Reconnecting"):
        from . import _reconnecting

        return getattr(_reconnecting, name)
    if name in __all__:
        from . import _blocking

        return getattr(_blocking, name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
