"""``pb chat``: a terminal chat client for the words service, over PB."""

from __future__ import annotations

from typing import Any

import broker

GROUP_VIEW_TAG = "words.GroupView"


@broker.register_cache(GROUP_VIEW_TAG)
class RemoteGroupView(broker.RemoteCache):
    """Our copy of a group's members and topic (the server's ``GroupView``)."""

    name: str
    topic: str
    topic_by: str
    members: dict[str, str]

    def set_copyable_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("members"), dict):
            raise broker.InsecureJelly("a words.GroupView state is a dict with members")
        super().set_copyable_state(state)

    def observe_joined(self, user: str, presence: str) -> None:
        self.members[user] = presence

    def observe_left(self, user: str) -> None:
        self.members.pop(user, None)

    def observe_topic(self, topic: str, by: str, at: float) -> None:
        self.topic, self.topic_by, self.topic_at = topic, by, at

    def observe_presence(self, user: str, presence: str, away: str | None) -> None:
        if user in self.members:
            self.members[user] = presence
