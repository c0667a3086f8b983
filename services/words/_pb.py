"""The PB face: a perspective per login, group references, a cached group view.

A client logs in to the cred service ``words`` (``broker.login(...,
service="words", mind=mind)``) and gets a :class:`WordsPerspective`::

    join(group)             -> a GroupReference (joining creates the group)
    leave(group)            send(group, text)        send_private(user, text)
    list_groups()           set_topic(group, text)   set_away(text | None)
    whois(user)             my_groups()

A :class:`GroupReference` has ``send``, ``leave``, ``set_topic``,
``scrollback`` (the last N lines) and ``view``, which returns the group's
:class:`GroupView`: a ``Cacheable`` (tag ``words.GroupView``) holding
``name``, ``topic``, ``topic_by``, ``topic_at``, ``created`` and
``members`` (name -> ``online``/``away``/``offline``), kept current with
``observe_joined(user, presence)``, ``observe_left(user)``,
``observe_topic(topic, by, at)`` and ``observe_presence(user, presence,
away)``.

The mind (any Referenceable the client passed at login) is called one-way,
once per event, in the order the chat saw them::

    message(group, sender, text, at, kind)    private(sender, text, at, kind)
    joined(group, user)    left(group, user, reason)    topic(group, topic, by, at)
    presence(user, presence, away)

``kind`` is ``"message"`` or ``"notice"``.  A mind that lacks one of these
methods only misses those events (the error is logged on its side).
"""

from __future__ import annotations

import logging
from typing import Any

import broker
import cred

from ._core import (
    Chat,
    Event,
    Joined,
    Left,
    Message,
    PresenceChanged,
    PrivateMessage,
    TopicChanged,
    WordsError,
    check_user_name,
    name_key,
)

__all__ = ["SERVICE_NAME", "GROUP_VIEW_TAG", "WordsPerspective", "GroupReference", "GroupView",
           "PBFace"]

#: The cred service PB clients log in to.
SERVICE_NAME = "words"
GROUP_VIEW_TAG = "words.GroupView"

_log = logging.getLogger("pb.words")

# A refusal from the chat (bad name, not a member, not online) is part of
# the API: the caller gets it as a RemoteError, the server does not log it
# as a crash.
_expected = broker.expected_errors(WordsError)


def _mind_call(event: Event) -> tuple[Any, ...]:
    """The mind's method and arguments for ``event``."""
    if isinstance(event, Message):
        return ("message", event.group, event.sender, event.text, event.at, event.kind)
    if isinstance(event, PrivateMessage):
        return ("private", event.sender, event.text, event.at, event.kind)
    if isinstance(event, Joined):
        return ("joined", event.group, event.user)
    if isinstance(event, Left):
        return ("left", event.group, event.user, event.reason)
    if isinstance(event, TopicChanged):
        return ("topic", event.group, event.topic, event.by, event.at)
    return ("presence", event.user, event.presence, event.away_message)


class GroupView(broker.Cacheable):
    """Members and topic of one group, as every PB observer sees them."""

    cache_tag = GROUP_VIEW_TAG

    def __init__(self, chat: Chat, name: str) -> None:
        self.chat = chat
        self.name = name
        self.observers: list[broker.RemoteCacheObserver] = []

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: Any) -> dict:
        self.observers.append(observer)
        group = self.chat.group(self.name)
        return {"name": group.name, "topic": group.topic, "topic_by": group.topic_by,
                "topic_at": group.topic_at, "created": group.created,
                "members": self.chat.members(group.name)}

    def stopped_observing(self, perspective: Any, observer: Any) -> None:
        try:
            self.observers.remove(observer)
        except ValueError:
            pass

    def tell(self, method: str, *args: Any) -> None:
        for observer in list(self.observers):
            observer.call_remote(method, *args)


class GroupReference(broker.Referenceable):
    """One login's handle on one group."""

    def __init__(self, perspective: WordsPerspective, name: str) -> None:
        self.perspective = perspective
        self.name = name

    @_expected
    def remote_send(self, text: str) -> None:
        self.perspective.perspective_send(self.name, text)

    @_expected
    def remote_notice(self, text: str) -> None:
        self.perspective._chat.send(self.perspective, self.name, text, "notice")

    @_expected
    def remote_leave(self, reason: str = "") -> None:
        self.perspective.perspective_leave(self.name, reason)

    @_expected
    def remote_set_topic(self, text: str) -> None:
        self.perspective.perspective_set_topic(self.name, text)

    @_expected
    def remote_view(self) -> GroupView:
        return self.perspective._face.view(self.name)

    @_expected
    def remote_scrollback(self) -> list[tuple[str, str, float, str]]:
        """The group's last lines, oldest first: ``(sender, text, at, kind)``."""
        group = self.perspective._chat.group(self.name)
        return [(line.sender, line.text, line.at, line.kind) for line in group.scrollback]

    def remote_name(self) -> str:
        return self.name


class WordsPerspective(broker.Perspective):
    """One PB login of the user ``user``: a session of the chat."""

    def __init__(self, user: str, face: PBFace) -> None:
        self.user = user
        self._face = face
        self._chat = face.chat
        self._mind: Any = None
        self._connected = False
        #: The chat hands a group's events to all PB sessions at once
        #: (PBFace.deliver_many): one call encoded for every member.
        self.batch = face

    # -- session --------------------------------------------------------------

    def attached(self, mind: Any) -> None:
        self._mind = mind
        self._chat.connect(self)
        self._connected = True

    def detached(self, mind: Any) -> None:
        self._connected = False
        self._chat.disconnect(self)
        self._mind = None

    def end(self, reason: str) -> None:
        """Close this login's connection (its account was deleted)."""
        mind = self._mind
        self.detached(mind)
        # The mind's owner is the broker connection it arrived on.
        owner = getattr(mind, "_pb_owner", None)
        if owner is not None and getattr(owner, "is_open", False):
            owner.start_goodbye("normal", reason)

    def deliver(self, event: Event) -> None:
        mind = self._mind
        if mind is None:
            return
        try:
            mind.call_remote_only(*_mind_call(event))
        except broker.PBError:
            # The connection is closing; detached() follows and ends the session.
            pass

    # -- what the client calls ------------------------------------------------

    @_expected
    def perspective_join(self, group: str) -> GroupReference:
        joined = self._chat.join(self, group)[0]
        return GroupReference(self, joined.name)

    @_expected
    def perspective_leave(self, group: str, reason: str = "") -> None:
        self._chat.leave(self, group, reason)

    @_expected
    def perspective_send(self, group: str, text: str) -> None:
        self._chat.send(self, group, text)

    @_expected
    def perspective_send_private(self, user: str, text: str) -> None:
        self._chat.send_private(self, user, text)

    @_expected
    def perspective_list_groups(self) -> list[dict[str, Any]]:
        return self._chat.list_groups()

    @_expected
    def perspective_my_groups(self) -> list[str]:
        return [group.name for group in self._chat.groups_of(self.user)]

    @_expected
    def perspective_set_topic(self, group: str, text: str) -> None:
        self._chat.set_topic(self, group, text)

    @_expected
    def perspective_set_away(self, text: str | None = None) -> None:
        self._chat.set_away(self, text)

    @_expected
    def perspective_whois(self, user: str) -> dict[str, Any]:
        return self._chat.whois(user)

    @_expected
    def perspective_whoami(self) -> str:
        return self.user

    def __repr__(self) -> str:
        return f"<WordsPerspective {self.user!r}>"


class _WordsCredService(cred.Service):
    """The cred service ``words``: a new perspective for every login, so
    that each login is its own session (its own mind, its own echo rule)."""

    def __init__(self, name: str, face: PBFace) -> None:
        super().__init__(name)
        self.face = face

    def get_perspective(self, name: str) -> WordsPerspective:
        try:
            check_user_name(name)
            self.face.chat.check_identity(name)
        except WordsError as exc:
            # Refused like any login; the log says why.
            _log.info("words login refused: %s", exc)
            raise KeyError(str(exc)) from None
        return WordsPerspective(name, self.face)


class PBFace:
    """The group views (one per group) and the cred service of one chat."""

    def __init__(self, chat: Chat, service_name: str = SERVICE_NAME) -> None:
        self.chat = chat
        self.views: dict[str, GroupView] = {}
        self.cred_service = _WordsCredService(service_name, self)
        chat.listeners.append(self._changed)

    def deliver_many(self, sessions: list[WordsPerspective], event: Event) -> None:
        """One group event for many PB sessions: the mind call is jellied
        once for all of them (``broker.call_many_only``).  A mind whose
        connection is closing is skipped; its session ends with detached()."""
        minds = [session._mind for session in sessions if session._mind is not None]
        if minds:
            broker.call_many_only(minds, *_mind_call(event))

    def view(self, name: str) -> GroupView:
        group = self.chat.group(name)
        key = name_key(group.name)
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = GroupView(self.chat, group.name)
        return view

    def _changed(self, what: str, args: tuple) -> None:
        if what == "join":
            view = self.views.get(name_key(args[0]))
            if view is not None:
                view.tell("joined", args[1], self.chat.presence(args[1]))
        elif what == "leave":
            view = self.views.get(name_key(args[0]))
            if view is not None:
                view.tell("left", args[1])
        elif what == "topic":
            view = self.views.get(name_key(args[0]))
            if view is not None:
                view.tell("topic", args[1], args[2], args[3])
        elif what == "remove_group":
            # Its observers have seen every member leave; later sends of the
            # name make a new view of whatever group takes the name next.
            self.views.pop(name_key(args[0]), None)
        elif what == "presence":
            user, presence, away = args
            for group in self.chat.groups_of(user):
                view = self.views.get(name_key(group.name))
                if view is not None:
                    view.tell("presence", user, presence, away)
