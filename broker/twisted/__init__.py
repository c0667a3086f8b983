"""The Twisted PB wire dialect, an explicit opt-in.

``broker.serve(root, host, port, dialect="twisted")``,
``broker.connect(host, port, dialect="twisted")`` and
``broker.login(..., dialect="twisted")`` speak Twisted's banana + jelly + PB
protocol (version 6) with the same user-facing objects as the native
dialect.  See docs/protocol.md, "The Twisted dialect".
"""

from ._api import TwistedServer, connect_twisted, login_twisted

__all__ = ["TwistedServer", "connect_twisted", "login_twisted"]
