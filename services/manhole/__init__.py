"""The manhole: a Python console inside a running server, for admins.

``pb run manhole`` (or the ``demo``) serves the cred service ``manhole`` on
127.0.0.1:8788 or a UNIX socket; an account holding ``manhole:NAME`` on its
keyring (``pb user grant NAME manhole``) logs in with ``pb manhole`` and
evaluates Python on the server's event loop, with ``application``,
``services`` and ``portal`` at hand.  See ``docs/manhole.md``.

The parts: :mod:`._evaluator` (the pure core: completeness, running,
capture, completion), :mod:`._capture` (per-evaluation stdout/stderr),
:mod:`._perspective` (the PB face) and :mod:`._service` (the service and
its plug-in).
"""

from ._capture import DEFAULT_OUTPUT_LIMIT
from ._evaluator import Evaluator, default_namespace
from ._perspective import ManholePerspective, ManholeRealmService
from ._service import (
    DEFAULT_PORT,
    SERVICE_NAME,
    ManholePlugin,
    ManholeService,
    check_bind_options,
    is_loopback,
    plugin,
    server_tls_context,
)

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "Evaluator",
    "ManholePerspective",
    "ManholePlugin",
    "ManholeRealmService",
    "ManholeService",
    "check_bind_options",
    "default_namespace",
    "is_loopback",
    "plugin",
    "server_tls_context",
]
