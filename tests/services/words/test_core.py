"""The chat core and its SQLite store, in memory and on disk (no sockets)."""

import pytest

from services.words._core import (
    Chat,
    InvalidName,
    InvalidText,
    Joined,
    Left,
    Message,
    NoSuchGroup,
    NoSuchUser,
    NotAMember,
    PresenceChanged,
    PrivateMessage,
    TopicChanged,
    check_group_name,
    check_user_name,
)
from services.words._store import StoreError, WordsStore


class Sink:
    def __init__(self, user):
        self.user = user
        self.events = []

    def deliver(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def clock():
    clock.now += 1.0
    return clock.now


clock.now = 1000.0


@pytest.fixture
def chat():
    return Chat(scrollback=3, max_message=50, clock=clock)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "x" * 32, "élodie", "a-b.c[d]{e}|f"])
def test_good_names_pass_for_users_and_groups(name):
    assert check_user_name(name) == name
    assert check_group_name(name) == name


@pytest.mark.parametrize("name", [
    "", "x" * 33, "a b", "a\tb", "a,b", "#room", "&room", "a!b", "a@b", "a:b", "a*", "a?",
    "a\x00", "a\r", "a\n", "a\x07", 42, None, b"bytes",
])
def test_bad_names_are_refused_with_a_reason(name):
    with pytest.raises(InvalidName) as info:
        check_group_name(name)
    assert str(info.value)
    with pytest.raises(InvalidName):
        check_user_name(name)


def test_join_send_and_leave_reach_every_member_once_in_order(chat):
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    group, joined = chat.join(alice, "Room")
    assert joined and group.name == "Room"
    chat.join(bob, "room")  # case does not matter
    assert chat.join(bob, "ROOM")[1] is False
    chat.send(alice, "room", "hello")
    chat.set_topic(bob, "room", "news")
    chat.leave(bob, "room", "bye")
    assert [type(e) for e in alice.events if not isinstance(e, PresenceChanged)] == [
        Joined, Joined, TopicChanged, Left]
    assert [type(e) for e in bob.events if not isinstance(e, PresenceChanged)] == [
        Joined, Message, TopicChanged, Left]
    assert bob.of(Message)[0].text == "hello"
    assert chat.members("room") == {"alice": "online"}


def test_the_senders_other_sessions_hear_what_it_said(chat):
    phone, laptop = Sink("alice"), Sink("alice")
    chat.connect(phone)
    chat.connect(laptop)
    chat.join(phone, "room")
    chat.send(phone, "room", "hi")
    assert not phone.of(Message)
    assert laptop.of(Message)[0].text == "hi"


def test_messages_are_checked_for_every_face(chat):
    alice = Sink("alice")
    chat.connect(alice)
    chat.join(alice, "room")
    for text in ["a\r\nQUIT", "nul\x00", "x" * 51, "", 12]:
        with pytest.raises(InvalidText):
            chat.send(alice, "room", text)
    with pytest.raises(InvalidText):
        chat.set_topic(alice, "room", "two\nlines")
    chat.join(alice, "room2")
    chat.leave(alice, "room2")
    with pytest.raises(NotAMember):
        chat.send(alice, "room2", "x")
    with pytest.raises(NoSuchGroup):
        chat.send(alice, "nowhere", "x")
    assert not chat.group("room").scrollback


def test_scrollback_keeps_the_last_n(chat):
    alice = Sink("alice")
    chat.connect(alice)
    chat.join(alice, "room")
    for n in range(5):
        chat.send(alice, "room", f"m{n}")
    assert [line.text for line in chat.group("room").scrollback] == ["m2", "m3", "m4"]


def test_private_messages_go_to_online_users_only(chat):
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    chat.send_private(alice, "BOB", "psst")
    assert bob.of(PrivateMessage)[0].sender == "alice"
    chat.disconnect(bob)
    with pytest.raises(NoSuchUser):
        chat.send_private(alice, "bob", "again")


def test_presence_and_away_are_told_to_the_users_rooms(chat):
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    chat.join(alice, "room")
    chat.join(bob, "room")
    chat.set_away(bob, "lunch")
    assert chat.whois("bob")["away"] == "lunch"
    assert alice.of(PresenceChanged)[-1] == PresenceChanged("bob", "away", "lunch")
    chat.set_away(bob, None)
    chat.disconnect(bob)
    assert [e.presence for e in alice.of(PresenceChanged) if e.user == "bob"] == [
        "away", "online", "offline"]
    assert chat.members("room") == {"alice": "online", "bob": "offline"}
    chat.disconnect(bob)  # idempotent


def test_an_ended_session_cannot_act(chat):
    alice = Sink("alice")
    chat.connect(alice)
    chat.disconnect(alice)
    with pytest.raises(Exception, match="log in again"):
        chat.join(alice, "room")


def test_the_store_keeps_groups_members_topics_and_scrollback(tmp_path, chat):
    path = tmp_path / "words.sqlite3"
    store = WordsStore(path, scrollback=3)
    store.open()
    store.load(chat)
    store.attach(chat)
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    chat.join(alice, "Room")
    chat.join(bob, "room")
    chat.join(alice, "other")
    chat.set_topic(alice, "room", "the topic")
    for n in range(5):
        chat.send(alice, "room", f"m{n}")
    chat.send(alice, "other", "elsewhere")
    chat.leave(alice, "other")
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600

    again = Chat(scrollback=3)
    store = WordsStore(path, scrollback=3)
    store.open()
    try:
        assert store.load(again) == 2
    finally:
        store.close()
    room = again.group("ROOM")
    assert room.name == "Room" and room.topic == "the topic" and room.topic_by == "alice"
    assert list(room.members.values()) == ["alice", "bob"]
    assert [line.text for line in room.scrollback] == ["m2", "m3", "m4"]
    assert list(again.group("other").members.values()) == []
    assert [line.text for line in again.group("other").scrollback] == ["elsewhere"]
    assert [g.name for g in again.groups_of("alice")] == ["Room"]


def test_the_store_refuses_a_file_that_is_not_its_own(tmp_path):
    import sqlite3

    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE x (y)")
    conn.close()
    path.chmod(0o600)
    with pytest.raises(StoreError, match="not a words database"):
        WordsStore(path).open()
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError):
        WordsStore(garbage).open()


def test_groups_are_bounded_in_all_and_per_user():
    from services.words._core import LimitReached

    chat = Chat(max_groups=3, max_groups_per_user=2)
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    chat.join(alice, "a")
    chat.join(alice, "b")
    with pytest.raises(LimitReached, match="leave one first"):
        chat.join(alice, "c")
    assert chat.join(alice, "A")[1] is False  # rejoining is not a new group
    chat.join(bob, "c")
    with pytest.raises(LimitReached, match="join an existing one"):
        chat.join(bob, "d")
    chat.join(bob, "a")
    assert sorted(chat.groups) == ["a", "b", "c"]


def test_two_accounts_differing_only_in_case_do_not_share_a_chat_user(chat):
    from services.words._core import WordsError

    chat.connect(Sink("alice"))
    with pytest.raises(WordsError, match="only in case"):
        chat.connect(Sink("Alice"))
    assert chat.sessions_of("ALICE")[0].user == "alice"


def test_administrators_set_topics_remove_members_and_groups(tmp_path, chat):
    path = tmp_path / "words.sqlite3"
    store = WordsStore(path, scrollback=3, batch_delay=0)
    store.open()
    store.attach(chat)
    alice, bob = Sink("alice"), Sink("bob")
    chat.connect(alice)
    chat.connect(bob)
    chat.join(alice, "doomed")
    chat.join(bob, "doomed")
    chat.join(alice, "kept")
    chat.send(alice, "doomed", "last words")
    chat.admin_set_topic("doomed", "closing soon", by="operator")
    assert bob.of(TopicChanged)[-1].by == "operator"
    chat.remove_member("kept", "ALICE")
    with pytest.raises(NotAMember):
        chat.remove_member("kept", "alice")
    chat.remove_group("doomed", "moved to #kept")
    assert [(e.group, e.user, e.reason) for e in bob.of(Left)] == [
        ("doomed", "alice", "moved to #kept"), ("doomed", "bob", "moved to #kept")]
    assert "doomed" not in chat.groups and chat.groups_of("bob") == []
    with pytest.raises(NoSuchGroup):
        chat.remove_group("doomed")
    store.close()
    again = Chat()
    store = WordsStore(path)
    store.open()
    try:
        store.load(again)
    finally:
        store.close()
    assert list(again.groups) == ["kept"] and not again.group("kept").members


def test_one_store_batch_keeps_order_trims_and_forgets_a_removed_group(tmp_path, chat):
    # Everything below reaches the writer as one batch (one transaction):
    # messages go in together and each group is trimmed once, yet a group
    # removed in the middle loses the lines said before, not those after.
    import sqlite3

    path = tmp_path / "words.sqlite3"
    store = WordsStore(path, scrollback=3, batch_delay=0.5)
    store.open()
    store.attach(chat)
    alice = Sink("alice")
    chat.connect(alice)
    chat.join(alice, "room")
    for n in range(6):
        chat.send(alice, "room", f"old{n}")
    chat.remove_group("room")
    chat.join(alice, "room")
    chat.send(alice, "room", "new0")
    chat.send(alice, "room", "new1")
    chat.join(alice, "busy")
    for n in range(50):
        chat.send(alice, "busy", f"b{n}")
    store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT group_key, text FROM lines ORDER BY id").fetchall()
    assert rows == [("room", "new0"), ("room", "new1"),
                    ("busy", "b47"), ("busy", "b48"), ("busy", "b49")]


def test_a_store_without_scrollback_stores_no_lines(tmp_path):
    import sqlite3

    path = tmp_path / "words.sqlite3"
    chat = Chat(scrollback=0)
    store = WordsStore(path, scrollback=0)
    store.open()
    store.attach(chat)
    alice = Sink("alice")
    chat.connect(alice)
    chat.join(alice, "room")
    chat.send(alice, "room", "not kept")
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM lines").fetchone() == (0,)
        assert conn.execute("SELECT name FROM groups").fetchall() == [("room",)]


class Batch:
    """A face that takes a group's events for all its sessions at once."""

    def __init__(self):
        self.calls = []

    def deliver_many(self, sessions, event):
        self.calls.append(([s.user for s in sessions], event))


class BatchedSink(Sink):
    def __init__(self, user, batch):
        super().__init__(user)
        self.batch = batch


def test_sessions_with_a_batch_get_a_group_event_together_the_others_one_by_one(chat):
    batch = Batch()
    sender, plain = Sink("alice"), Sink("bob")
    carol, dave = BatchedSink("carol", batch), BatchedSink("dave", batch)
    for session in (sender, plain, carol, dave):
        chat.connect(session)
        chat.join(session, "room")
    for session in (plain, carol, dave):
        session.events.clear()
    batch.calls.clear()
    chat.send(sender, "room", "hello")
    chat.send(sender, "room", "again")
    assert [text.text for text in plain.of(Message)] == ["hello", "again"]
    # One call per event, for both batched sessions, in order; never the sender.
    assert [(users, event.text) for users, event in batch.calls] == [
        (["carol", "dave"], "hello"), (["carol", "dave"], "again")]
    assert carol.events == dave.events == []
