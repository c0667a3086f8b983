"""The chat itself: users, groups, presence and scrollback, with no I/O.

Every face (PB, IRC) talks to one :class:`Chat` through *sessions*: a
session is whatever object a face keeps per logged-in connection, with a
``user`` attribute (the account name) and a ``deliver(event)`` method.  The
chat calls ``deliver`` synchronously, in the order things happen, so each
session sees each event once and in order; what a session does with it (a
PB one-way call, IRC lines in a buffer) is the face's business and must not
block.

Membership is persistent: a user stays in a group until they leave it, on
or offline, and the group keeps its members, topic and last messages across
restarts (``_store`` listens to :attr:`Chat.listeners`).  Presence (online,
away, offline) is per user and derived from the sessions open.

Names are checked once, here, for every face (:func:`check_user_name`,
:func:`check_group_name`): what IRC cannot carry (spaces, commas, ``!``,
``@``, ``:``, masks, a leading ``#`` or ``&``) is refused for PB too, so the
same room is reachable from both.  Lookups ignore ASCII case, as IRC's
``CASEMAPPING=ascii`` says.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "MAX_NAME_LENGTH", "MAX_TOPIC_LENGTH", "DEFAULT_MAX_MESSAGE", "DEFAULT_SCROLLBACK",
    "WordsError", "InvalidName", "InvalidText", "NoSuchGroup", "NoSuchUser", "NotAMember",
    "LimitReached", "DEFAULT_MAX_GROUPS", "DEFAULT_MAX_GROUPS_PER_USER",
    "Chat", "Group", "Line", "Session",
    "Message", "PrivateMessage", "Joined", "Left", "TopicChanged", "PresenceChanged", "Event",
    "check_user_name", "check_group_name", "check_text", "name_key",
]

MAX_NAME_LENGTH = 32
MAX_TOPIC_LENGTH = 300
DEFAULT_MAX_MESSAGE = 1000
DEFAULT_SCROLLBACK = 100
DEFAULT_MAX_GROUPS = 10_000
DEFAULT_MAX_GROUPS_PER_USER = 100

ONLINE = "online"
AWAY = "away"
OFFLINE = "offline"

# Characters IRC gives a meaning to inside names (separators of a prefix,
# list separators, masks) and that no name may therefore contain.
_FORBIDDEN_IN_NAMES = frozenset(",!@:*?")
# Characters that would end or corrupt an IRC line, or a terminal's: never
# inside a message or a topic, whichever face it came from.
_FORBIDDEN_IN_TEXT = frozenset("\r\n\x00")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class WordsError(Exception):
    """A request the chat refuses; the message says why and what to do."""


class InvalidName(WordsError):
    pass


class InvalidText(WordsError):
    pass


class NoSuchGroup(WordsError):
    pass


class NoSuchUser(WordsError):
    pass


class NotAMember(WordsError):
    pass


class LimitReached(WordsError):
    """A configured bound (groups in the chat, groups per user) is reached."""


def name_key(name: str) -> str:
    """The key a name is looked up by: ASCII letters folded to lower case."""
    return name.translate(_ASCII_LOWER)


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidName(f"a {kind} name must be non-empty text")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{kind} name {name[:MAX_NAME_LENGTH]!r}... is longer than "
                          f"{MAX_NAME_LENGTH} characters")
    for ch in name:
        if ch.isspace() or not ch.isprintable():
            raise InvalidName(f"{kind} name {name!r} contains a space or a control "
                              f"character; use letters, digits and punctuation")
        if ch in _FORBIDDEN_IN_NAMES:
            raise InvalidName(f"{kind} name {name!r} contains {ch!r}; names may not "
                              f"contain any of {''.join(sorted(_FORBIDDEN_IN_NAMES))}")
    if name[0] in "#&":
        raise InvalidName(f"{kind} name {name!r} starts with {name[0]!r}; give the name "
                          f"without it (IRC adds '#' in front of group names)")
    return name


def check_user_name(name: object) -> str:
    """*name* if it can be a user's name on every face, else InvalidName."""
    return _check_name("user", name)


def check_group_name(name: object) -> str:
    """*name* (without IRC's ``#``) if it can name a group, else InvalidName."""
    return _check_name("group", name)


def check_text(what: str, text: object, limit: int) -> str:
    """*text* if it is at most *limit* characters without CR, LF or NUL."""
    if not isinstance(text, str):
        raise InvalidText(f"a {what} must be text, not {type(text).__name__}")
    if len(text) > limit:
        raise InvalidText(f"the {what} is {len(text)} characters long; the limit is {limit}")
    bad = _FORBIDDEN_IN_TEXT.intersection(text)
    if bad:
        raise InvalidText(f"the {what} contains {', '.join(sorted(map(repr, bad)))}; "
                          f"send one line per message")
    return text


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Something said in a group.  ``kind`` is ``"message"`` or ``"notice"``
    (IRC's NOTICE: automated text that nobody should answer automatically)."""

    group: str
    sender: str
    text: str
    at: float
    kind: str = "message"


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    recipient: str
    sender: str
    text: str
    at: float
    kind: str = "message"


@dataclass(frozen=True, slots=True)
class Joined:
    group: str
    user: str
    presence: str


@dataclass(frozen=True, slots=True)
class Left:
    group: str
    user: str
    reason: str


@dataclass(frozen=True, slots=True)
class TopicChanged:
    group: str
    topic: str
    by: str
    at: float


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A member went online, away (with a message), back, or offline.
    Delivered once per session that shares a group with the user."""

    user: str
    presence: str
    away_message: str | None


Event = Message | PrivateMessage | Joined | Left | TopicChanged | PresenceChanged


class Session(Protocol):
    """What a face registers with :meth:`Chat.connect`.

    A session may also have a ``batch`` attribute: an object whose
    ``deliver_many(sessions, event)`` the chat calls once for all of a
    group's sessions with the same batch, instead of each one's
    ``deliver`` (None, or no such attribute: one by one).
    """

    user: str

    def deliver(self, event: Event) -> None: ...


# -- state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One scrollback entry."""

    sender: str
    text: str
    at: float
    kind: str = "message"


@dataclass
class Group:
    name: str
    created: float
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    #: member key -> display name, in joining order
    members: dict[str, str] = field(default_factory=dict)
    scrollback: collections.deque[Line] = field(default_factory=collections.deque)


@dataclass
class _User:
    name: str
    sessions: list[Any] = field(default_factory=list)
    away: str | None = None
    signed_on: float = 0.0
    #: group keys, for presence fan-out
    groups: set[str] = field(default_factory=set)

    @property
    def presence(self) -> str:
        if not self.sessions:
            return OFFLINE
        return AWAY if self.away is not None else ONLINE


class Chat:
    """All the rooms and people of one words service.

    ``clock`` returns seconds since the epoch (time.time by default; tests
    pass their own).  ``listeners`` are called with every change, after the
    sessions: ``_store`` persists from there, the PB face updates its group
    views.  Listener errors propagate: a store that cannot write is a fault
    the caller should see.
    """

    def __init__(self, *, scrollback: int = DEFAULT_SCROLLBACK,
                 max_message: int = DEFAULT_MAX_MESSAGE,
                 max_groups: int = DEFAULT_MAX_GROUPS,
                 max_groups_per_user: int = DEFAULT_MAX_GROUPS_PER_USER,
                 clock: Callable[[], float] = time.time) -> None:
        if type(scrollback) is not int or scrollback < 0:
            raise ValueError(f"scrollback must be an int >= 0, not {scrollback!r}")
        if type(max_message) is not int or max_message < 1:
            raise ValueError(f"max_message must be an int >= 1, not {max_message!r}")
        self.scrollback = scrollback
        self.max_message = max_message
        # Every group is kept (and stored) until an administrator removes it:
        # without a bound, one account could fill the disk with empty rooms.
        self.max_groups = max_groups
        self.max_groups_per_user = max_groups_per_user
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self._users: dict[str, _User] = {}
        self.listeners: list[Callable[[str, tuple], None]] = []

    # -- loading (from the store, before anyone connects) ---------------------

    def restore_group(self, name: str, created: float, topic: str, topic_by: str,
                      topic_at: float, members: Iterable[str], lines: Iterable[Line]) -> Group:
        group = Group(name, created, topic, topic_by, topic_at,
                      scrollback=collections.deque(lines, maxlen=self.scrollback))
        for member in members:
            group.members[name_key(member)] = member
            self._user(member).groups.add(name_key(name))
        self.groups[name_key(name)] = group
        return group

    # -- sessions and presence ------------------------------------------------

    def check_identity(self, name: str) -> None:
        """WordsError if another name that differs from *name* only in ASCII
        case is in the chat already: two accounts (``Alice``, ``alice``) that
        the account store tells apart must not share one chat user."""
        user = self._users.get(name_key(check_user_name(name)))
        if user is not None and user.name != name:
            raise WordsError(f"the chat already has a user {user.name!r}, which differs from "
                             f"{name!r} only in case; log in as {user.name!r} or use "
                             f"another account")

    def connect(self, session: Session) -> None:
        """*session* (of ``session.user``) is online from now on."""
        self.check_identity(session.user)
        user = self._user(session.user)
        before = user.presence
        if not user.sessions:
            user.signed_on = self.clock()
        user.sessions.append(session)
        self._presence_changed(user, before)

    def disconnect(self, session: Session) -> None:
        """*session* is gone; idempotent."""
        user = self._users.get(name_key(session.user))
        if user is None or session not in user.sessions:
            return
        before = user.presence
        user.sessions.remove(session)
        if not user.sessions:
            user.away = None  # away is a state of being online
        self._presence_changed(user, before)

    def set_away(self, session: Session, message: str | None) -> None:
        user = self._online(session)
        if message is not None:
            check_text("away message", message, MAX_TOPIC_LENGTH)
            message = message or "away"
        before, old = user.presence, user.away
        user.away = message
        if old != message:
            self._presence_changed(user, before, force=True)

    def presence(self, name: str) -> str:
        user = self._users.get(name_key(name))
        return OFFLINE if user is None else user.presence

    def is_online(self, name: str) -> bool:
        return self.presence(name) != OFFLINE

    def sessions_of(self, name: str) -> list[Any]:
        user = self._users.get(name_key(name))
        return [] if user is None else list(user.sessions)

    def _presence_changed(self, user: _User, before: str, force: bool = False) -> None:
        now = user.presence
        if now == before and not force:
            return
        event = PresenceChanged(user.name, now, user.away)
        seen: set[int] = set()
        for key in sorted(user.groups):
            group = self.groups.get(key)
            if group is not None:
                self._fan_out(group, event, seen=seen)
        for session in user.sessions:
            if id(session) not in seen:
                session.deliver(event)
        self._notify("presence", (user.name, now, user.away))

    # -- groups ---------------------------------------------------------------

    def join(self, session: Session, name: str) -> tuple[Group, bool]:
        """Join (creating it if needed) the group *name*; returns ``(group,
        joined)``, joined False if the user was a member already."""
        user = self._online(session)
        key = name_key(check_group_name(name))
        group = self.groups.get(key)
        ukey = name_key(user.name)
        if group is not None and ukey in group.members:
            return group, False
        if len(user.groups) >= self.max_groups_per_user:
            raise LimitReached(f"{user.name!r} is in {len(user.groups)} groups, the most "
                               f"allowed; leave one first")
        if group is None:
            if len(self.groups) >= self.max_groups:
                raise LimitReached(f"the chat has {len(self.groups)} groups, the most allowed; "
                                   f"join an existing one or ask an administrator")
            group = Group(name, self.clock(),
                          scrollback=collections.deque(maxlen=self.scrollback))
            self.groups[key] = group
            self._notify("group", (group.name, group.created))
        group.members[ukey] = user.name
        user.groups.add(key)
        self._fan_out(group, Joined(group.name, user.name, user.presence))
        self._notify("join", (group.name, user.name))
        return group, True

    def leave(self, session: Session, name: str, reason: str = "") -> Group:
        user = self._online(session)
        group = self._member_group(user, name)
        reason = check_text("reason", reason, MAX_TOPIC_LENGTH)
        self._drop_member(group, user.name, reason)
        return group

    def _drop_member(self, group: Group, name: str, reason: str) -> None:
        key = name_key(name)
        member = group.members[key]
        self._fan_out(group, Left(group.name, member, reason))  # the leaver hears it too
        del group.members[key]
        user = self._users.get(key)
        if user is not None:
            user.groups.discard(name_key(group.name))
        self._notify("leave", (group.name, member))

    # -- administration: the operator's tools (manhole, a web page), no session

    def admin_set_topic(self, name: str, topic: str, by: str = "admin") -> TopicChanged:
        """Set a group's topic as *by*, without being a member."""
        group = self.group(name)
        check_text("topic", topic, MAX_TOPIC_LENGTH)
        check_text("name", by, MAX_NAME_LENGTH)
        group.topic, group.topic_by, group.topic_at = topic, by, self.clock()
        event = TopicChanged(group.name, topic, by, group.topic_at)
        self._fan_out(group, event)
        self._notify("topic", (group.name, topic, by, group.topic_at))
        return event

    def remove_member(self, name: str, user: str,
                      reason: str = "removed by an administrator") -> None:
        """Take *user* out of the group *name* (online or not)."""
        group = self.group(name)
        if not isinstance(user, str) or name_key(user) not in group.members:
            raise NotAMember(f"{user!r} is not in {group.name!r}")
        self._drop_member(group, user, check_text("reason", reason, MAX_TOPIC_LENGTH))

    def remove_group(self, name: str, reason: str = "the group was removed") -> None:
        """Delete the group *name*: every member leaves it (and hears so),
        then it is gone with its topic and scrollback."""
        group = self.group(name)
        reason = check_text("reason", reason, MAX_TOPIC_LENGTH)
        for member in list(group.members.values()):
            self._drop_member(group, member, reason)
        del self.groups[name_key(group.name)]
        self._notify("remove_group", (group.name,))

    def send(self, session: Session, name: str, text: str, kind: str = "message") -> Message:
        """Say *text* in the group *name*: every member's sessions but the
        sender's own get it (the sender's other sessions do)."""
        user = self._online(session)
        group = self._member_group(user, name)
        check_text("message", text, self.max_message)
        if not text:
            raise InvalidText("an empty message says nothing; type some text")
        event = Message(group.name, user.name, text, self.clock(), kind)
        if self.scrollback:
            group.scrollback.append(Line(user.name, text, event.at, kind))
        self._fan_out(group, event, skip=session)
        self._notify("message", (group.name, user.name, text, event.at, kind))
        return event

    def send_private(self, session: Session, to: str, text: str,
                     kind: str = "message") -> PrivateMessage:
        """Send *text* to the user *to*'s open sessions; NoSuchUser if none."""
        user = self._online(session)
        check_text("message", text, self.max_message)
        if not text:
            raise InvalidText("an empty message says nothing; type some text")
        target = self._users.get(name_key(to)) if isinstance(to, str) else None
        if target is None or not target.sessions:
            raise NoSuchUser(f"{to!r} is not online; private messages go to people who are")
        event = PrivateMessage(target.name, user.name, text, self.clock(), kind)
        for other in list(target.sessions):
            if other is not session:
                other.deliver(event)
        return event

    def set_topic(self, session: Session, name: str, topic: str) -> TopicChanged:
        user = self._online(session)
        group = self._member_group(user, name)
        check_text("topic", topic, MAX_TOPIC_LENGTH)
        group.topic, group.topic_by, group.topic_at = topic, user.name, self.clock()
        event = TopicChanged(group.name, topic, user.name, group.topic_at)
        self._fan_out(group, event)
        self._notify("topic", (group.name, topic, user.name, group.topic_at))
        return event

    def group(self, name: str) -> Group:
        group = self.groups.get(name_key(name)) if isinstance(name, str) else None
        if group is None:
            raise NoSuchGroup(f"there is no group {name!r}; join it to create it")
        return group

    def groups_of(self, name: str) -> list[Group]:
        user = self._users.get(name_key(name))
        if user is None:
            return []
        return [self.groups[key] for key in sorted(user.groups) if key in self.groups]

    def list_groups(self) -> list[dict[str, Any]]:
        return [{"name": g.name, "members": len(g.members), "topic": g.topic}
                for g in sorted(self.groups.values(), key=lambda g: name_key(g.name))]

    def members(self, name: str) -> dict[str, str]:
        """Member name -> presence, in joining order."""
        return {member: self.presence(member) for member in self.group(name).members.values()}

    def whois(self, name: str) -> dict[str, Any]:
        user = self._users.get(name_key(name)) if isinstance(name, str) else None
        if user is None:
            raise NoSuchUser(f"nobody called {name!r} has been here")
        return {"name": user.name, "presence": user.presence, "away": user.away,
                "groups": [g.name for g in self.groups_of(user.name)],
                "sessions": len(user.sessions),
                "signed_on": user.signed_on if user.sessions else None}

    # -- helpers --------------------------------------------------------------

    def _user(self, name: str) -> _User:
        key = name_key(name)
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _User(name)
        return user

    def _online(self, session: Session) -> _User:
        user = self._users.get(name_key(session.user))
        if user is None or session not in user.sessions:
            raise WordsError("this session is not connected to the chat (it ended); log in again")
        return user

    def _member_group(self, user: _User, name: str) -> Group:
        group = self.group(name)
        if name_key(user.name) not in group.members:
            raise NotAMember(f"{user.name!r} is not in {group.name!r}; join it first")
        return group

    def _fan_out(self, group: Group, event: Event, *, skip: Any = None,
                 seen: set[int] | None = None) -> None:
        # Sessions that name a ``batch`` get the event together, through it
        # (the PB face encodes one call for all its members); the others
        # one by one.  Each session still sees its events in order.
        batches: dict[int, tuple[Any, list[Session]]] = {}
        for key in list(group.members):
            member = self._users.get(key)
            if member is None:
                continue
            for session in list(member.sessions):
                if session is skip:
                    continue
                if seen is not None:
                    if id(session) in seen:
                        continue
                    seen.add(id(session))
                batch = getattr(session, "batch", None)
                if batch is None:
                    session.deliver(event)
                else:
                    batches.setdefault(id(batch), (batch, []))[1].append(session)
        for batch, sessions in batches.values():
            batch.deliver_many(sessions, event)

    def _notify(self, what: str, args: tuple) -> None:
        for listener in list(self.listeners):
            listener(what, args)
