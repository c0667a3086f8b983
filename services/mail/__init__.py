"""The ``mail`` service: SMTP in, Maildir storage, POP3 out, smarthost
relay with a durable queue, and mailboxes over PB.  See ``docs/mail.md``.

``pb run mail --domain example.com=DIR --user alice@example.com:secret``
runs it; :data:`plugin` is the plug-in ``pb run`` finds through the
``perspective_broker.services`` entry point.
"""

from ._core import Address, AddressError, Domain, MailCore, parse_address
from ._maildir import Maildir, MaildirError, MessageInfo
from ._pb import MailError, MailPerspective
from ._plugin import MailPlugin, plugin
from ._server import SERVICE_NAME, MailService

__all__ = [
    "SERVICE_NAME",
    "Address",
    "AddressError",
    "Domain",
    "MailCore",
    "MailError",
    "MailPerspective",
    "MailPlugin",
    "MailService",
    "Maildir",
    "MaildirError",
    "MessageInfo",
    "parse_address",
    "plugin",
]
