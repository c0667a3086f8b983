"""broker: the Perspective Broker protocol over asyncio.

Publish an object with :func:`serve`, reach it with :func:`connect`, call it
with ``await ref.call_remote("name", ...)``.  See docs/protocol.md for the
wire protocol and docs/ for guides.
"""

from ._api import Server, connect, login, login_anonymous, serve
from ._caching import Cacheable, RemoteCache, RemoteCacheObserver, register_cache, unregister_cache
from ._errors import (
    CallTimeout,
    ConnectionLost,
    DeadReference,
    InsecureJelly,
    LimitExceeded,
    LocalProtocolError,
    NoSuchMethod,
    PBError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    Unauthorized,
)
from ._failures import expected_errors
from ._fanout import call_many, call_many_only
from ._flavors import Perspective, Referenceable, Root, Viewable
from ._limits import DEFAULT_LIMITS, Limits
from ._threads import in_thread, use_thread_pool
from ._connection import Connection
from ._reconnecting import Reconnecting, reconnecting
from ._remote import RemoteReference
from ._streaming import RemoteStream, collect, stream_bytes, stream_file

__all__ = [
    "serve", "connect", "login", "login_anonymous", "Server", "Connection",
    "Referenceable", "Root", "Perspective", "Viewable", "RemoteReference",
    "call_many", "call_many_only", "Cacheable", "RemoteCache", "RemoteCacheObserver", "register_cache", "unregister_cache",
    "RemoteStream", "stream_bytes", "stream_file", "collect", "expected_errors",
    "in_thread", "use_thread_pool", "reconnecting", "Reconnecting",
    "Limits", "DEFAULT_LIMITS",
    "PBError", "ConnectionLost", "DeadReference", "RemoteError", "NoSuchMethod",
    "CallTimeout", "ProtocolError", "InsecureJelly", "LimitExceeded", "Unauthorized",
    "LocalProtocolError", "RemoteProtocolError",
]
