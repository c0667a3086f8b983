"""words: a chat service with a PB face and an IRC face over the same rooms.

``pb run words`` serves PB (cred service ``words``) and IRC; see
``docs/words.md``.  The pieces, one concept each:

* ``_core``: users, groups, presence, scrollback, name rules (no I/O);
* ``_store``: the groups, members, topics and scrollback in SQLite;
* ``_irc_wire``: IRC lines: cutting, parsing, writing, flood bucket (sans-IO);
* ``_irc``: the per-connection IRC state machine (sans-IO);
* ``_server``: the asyncio adapter that feeds it from sockets (and TLS);
* ``_pb``: the PB perspective, group references and their cached view;
* ``_service``: the service that starts and stops all of the above;
* ``_plugin``: options (the keys of a ``[[service]]`` table too), building it.
"""

from ._core import (
    DEFAULT_MAX_MESSAGE,
    DEFAULT_SCROLLBACK,
    MAX_NAME_LENGTH,
    Chat,
    InvalidName,
    InvalidText,
    NoSuchGroup,
    NoSuchUser,
    NotAMember,
    WordsError,
    check_group_name,
    check_user_name,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE", "DEFAULT_SCROLLBACK", "MAX_NAME_LENGTH",
    "Chat", "WordsError", "InvalidName", "InvalidText", "NoSuchGroup", "NoSuchUser",
    "NotAMember", "check_group_name", "check_user_name",
]

from ._plugin import WordsPlugin, plugin  # noqa: E402  (after the core: it imports services)
from ._service import WordsService  # noqa: E402

__all__ += ["WordsPlugin", "WordsService", "plugin"]
