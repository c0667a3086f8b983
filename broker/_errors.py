"""The broker's error tree.

::

    PBError
     ├── ConnectionLost        the connection closed while a call was pending
     │    └── DeadReference    a reference whose connection is gone, or whose
     │                         object the peer no longer has
     ├── RemoteError           the remote method raised (type name, message,
     │                         traceback text only if the server allows it)
     │    └── NoSuchMethod     no such remote_/view_/perspective_ method
     ├── CallTimeout           no answer within the call's timeout
     ├── ProtocolError         the wire protocol was broken (connection closed)
     │    ├── RemoteProtocolError  by the peer: what it sent is not allowed
     │    └── LocalProtocolError   by this side: asked to do what the
     │                             connection's state does not allow
     ├── InsecureJelly         a value the receiver refuses to construct
     ├── LimitExceeded         a configured limit was hit
     └── Unauthorized          login refused

``InsecureJelly`` and ``LimitExceeded`` also derive from jelly's errors of the
same name, so code that only knows jelly catches them too.
"""

from __future__ import annotations

import jelly

__all__ = [
    "PBError",
    "ConnectionLost",
    "DeadReference",
    "RemoteError",
    "NoSuchMethod",
    "CallTimeout",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "InsecureJelly",
    "LimitExceeded",
    "Unauthorized",
]


class PBError(Exception):
    """Base of every error the broker raises."""


class ConnectionLost(PBError):
    """The connection closed before the call was answered."""


class DeadReference(ConnectionLost):
    """The reference can no longer be used: its connection is closed, or the
    peer no longer holds the object it named."""


class RemoteError(PBError):
    """The remote method raised an exception that is not a registered copy.

    ``remote_type`` is the qualified name of the remote exception's class,
    ``remote_message`` its text, ``remote_traceback`` the formatted traceback
    when the server was started with ``unsafe_tracebacks=True`` (else None).
    """

    def __init__(self, remote_type: str, remote_message: str,
                 remote_traceback: str | None = None) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        text = f"{remote_type}: {remote_message}" if remote_message else remote_type
        if remote_traceback:
            text = f"{text}\n--- remote traceback ---\n{remote_traceback}"
        super().__init__(text)


class NoSuchMethod(RemoteError):
    """The target has no reachable method of that name."""

    def __init__(self, message: str) -> None:
        super().__init__("broker.NoSuchMethod", message)


class CallTimeout(PBError):
    """The call was not answered within its timeout; it was cancelled remotely."""


class ProtocolError(PBError):
    """The wire protocol was broken; the connection is closed."""


class RemoteProtocolError(ProtocolError):
    """The peer sent what the protocol does not allow in the connection's
    state (docs/protocol.md, "Connection states"); the core has queued a
    GOODBYE saying why."""


class LocalProtocolError(ProtocolError):
    """This side asked the core for something its state does not allow (a
    bug in the adapter, never the peer's doing)."""


class InsecureJelly(PBError, jelly.InsecureJelly):
    """The peer sent something the receiver does not agree to construct."""


class LimitExceeded(PBError, jelly.LimitExceeded):
    """A configured limit was hit; the message names it and how to raise it."""


class Unauthorized(PBError):
    """Login was refused (the message never says which part was wrong)."""
