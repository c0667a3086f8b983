"""The PB face over real sockets: perspective, group references, the cached
view, mind callbacks once and in order, and the listener's login binding."""

import asyncio
import gc

import pytest

import broker
from clients._cli.chat import RemoteGroupView

from .conftest import Mind, pb_login, wait_until


async def test_two_pb_users_talk_in_a_room_and_each_mind_hears_each_event_once(words):
    alice_mind, bob_mind = Mind(), Mind()
    alice = await pb_login(words, "alice", alice_mind)
    bob = await pb_login(words, "bob", bob_mind)
    try:
        room = await alice.call_remote("join", "lobby")
        await bob.call_remote("join", "Lobby")
        for n in range(20):
            await room.call_remote("send", f"line {n}")
        await bob.call_remote("send", "lobby", "hi alice")
        await alice.call_remote("set_topic", "lobby", "plans")
        await bob.call_remote("leave", "lobby", "later")
        await alice_mind.wait_for(lambda m: m.of("left"))
        await bob_mind.wait_for(lambda m: m.of("left"))
        assert [e for e in bob_mind.events if e[0] != "presence"] == [
            ("joined", "lobby", "bob"),
            *[("message", "lobby", "alice", f"line {n}", "message") for n in range(20)],
            ("topic", "lobby", "plans", "alice"),
            ("left", "lobby", "bob", "later"),
        ]
        assert [e for e in alice_mind.events if e[0] != "presence"] == [
            ("joined", "lobby", "alice"),
            ("joined", "lobby", "bob"),
            ("message", "lobby", "bob", "hi alice", "message"),
            ("topic", "lobby", "plans", "alice"),
            ("left", "lobby", "bob", "later"),
        ]
        groups = await alice.call_remote("list_groups")
        assert groups == [{"name": "lobby", "members": 1, "topic": "plans"}]
        assert [line[:2] for line in await room.call_remote("scrollback")][-1] == (
            "bob", "hi alice")
    finally:
        await alice.connection.close()
        await bob.connection.close()


async def test_the_group_view_is_a_cache_kept_current(words):
    alice = await pb_login(words, "alice", Mind())
    bob = await pb_login(words, "bob", Mind())
    try:
        room = await alice.call_remote("join", "news")
        view = await room.call_remote("view")
        assert isinstance(view, RemoteGroupView)
        assert view.members == {"alice": "online"} and view.topic == ""
        assert await room.call_remote("view") is view
        await bob.call_remote("join", "news")
        await bob.call_remote("set_topic", "news", "breaking")
        await bob.call_remote("set_away", "coffee")
        await wait_until(lambda: view.members.get("bob") == "away")
        assert view.topic == "breaking" and view.topic_by == "bob"
        await bob.call_remote("set_away", None)
        await bob.call_remote("leave", "news")
        await wait_until(lambda: "bob" not in view.members)
        whois = await alice.call_remote("whois", "bob")
        assert whois["presence"] == "online" and whois["groups"] == []
        del view
        gc.collect()
        await wait_until(lambda: not words.face.views["news"].observers)
    finally:
        await alice.connection.close()
        await bob.connection.close()


async def test_private_messages_and_errors_say_what_went_wrong(words):
    bob_mind = Mind()
    alice = await pb_login(words, "alice", Mind())
    bob = await pb_login(words, "bob", bob_mind)
    try:
        await alice.call_remote("send_private", "BOB", "psst")
        await bob_mind.wait_for(lambda m: m.of("private"))
        assert bob_mind.of("private") == [("private", "alice", "psst", "message")]
        with pytest.raises(broker.RemoteError, match="not online"):
            await alice.call_remote("send_private", "carol", "hello?")
        with pytest.raises(broker.RemoteError, match="join it to create it"):
            await alice.call_remote("send", "lobby", "x")
        await bob.call_remote("join", "bobs")
        with pytest.raises(broker.RemoteError, match="join it first"):
            await alice.call_remote("send", "bobs", "x")
        for bad in ["#lobby", "a b", "a,b", "x" * 40, "", 7, None]:
            with pytest.raises(broker.RemoteError, match="name"):
                await alice.call_remote("join", bad)
        await alice.call_remote("join", "lobby")
        for text in ["a\r\nQUIT :x", "nul\x00", "y" * 1001, ""]:
            with pytest.raises(broker.RemoteError, match="message"):
                await alice.call_remote("send", "lobby", text)
        assert await alice.call_remote("whoami") == "alice"
    finally:
        await alice.connection.close()
        await bob.connection.close()


async def test_a_closed_connection_ends_the_session_once(words):
    alice_mind = Mind()
    alice = await pb_login(words, "alice", alice_mind)
    bob = await pb_login(words, "bob", Mind())
    await alice.call_remote("join", "room")
    await bob.call_remote("join", "room")
    await bob.connection.close()
    await alice_mind.wait_for(lambda m: ("presence", "bob", "offline", None) in m.events)
    assert words.chat.members("room") == {"alice": "online", "bob": "offline"}
    assert [e for e in alice_mind.events if e[1:3] == ("bob", "offline")] == [
        ("presence", "bob", "offline", None)]
    await alice.connection.close()
    await wait_until(lambda: not words.chat.is_online("alice"))


async def test_the_pb_listener_offers_only_words(words, tmp_path):
    with pytest.raises(broker.Unauthorized):
        await broker.login("127.0.0.1", words.pb_port, "alice", "correct horse",
                           service="pbecho")
    with pytest.raises(broker.Unauthorized):
        await pb_login(words, "alice", password="wrong")
    with pytest.raises(broker.Unauthorized):
        await pb_login(words, "mallory")


async def test_many_members_each_get_one_copy_in_order(words):
    minds = [Mind() for _ in range(3)]
    users = ["alice", "bob", "carol"]
    perspectives = [await pb_login(words, u, m) for u, m in zip(users, minds)]
    try:
        rooms = [await p.call_remote("join", "busy") for p in perspectives]
        await asyncio.gather(*(r.call_remote("send", f"{u}-{n}")
                               for n in range(10) for r, u in zip(rooms, users)))
        for mind, user in zip(minds, users):
            await mind.wait_for(lambda m: len(m.of("message")) == 20)
            got = [e[3] for e in mind.of("message")]
            assert len(got) == len(set(got)) == 20
            for other in users:
                if other != user:
                    mine = [t for t in got if t.startswith(other)]
                    assert mine == [f"{other}-{n}" for n in range(10)]
    finally:
        for p in perspectives:
            await p.connection.close()


async def test_garbage_arguments_are_refused_and_the_session_goes_on(words):
    alice = await pb_login(words, "alice", Mind())
    try:
        room = await alice.call_remote("join", "room")
        calls = [("join", [1, 2]), ("send", "room", None), ("send", "room", b"bytes"),
                 ("send_private", None, "x"), ("set_topic", "room", 5),
                 ("set_topic", "room", "x" * 301), ("set_away", 5), ("set_away", "a\nb"),
                 ("whois", None), ("whois", "x" * 1000), ("leave", {"a": 1})]
        for name, *args in calls:
            with pytest.raises(broker.RemoteError):
                await alice.call_remote(name, *args)
        for args in [(None,), ("two\nlines",), ("",)]:
            with pytest.raises(broker.RemoteError):
                await room.call_remote("send", *args)
        with pytest.raises(broker.NoSuchMethod):
            await alice.call_remote("_chat")
        await room.call_remote("send", "still working")
        assert words.chat.group("room").scrollback[-1].text == "still working"
    finally:
        await alice.connection.close()


async def test_the_pb_face_on_a_unix_socket(tmp_path):
    from .conftest import PASSWORD, running_words

    path = tmp_path / "words.sock"
    async with running_words(tmp_path / "data", "--pb-socket", str(path)) as words:
        assert words.pb_address == f"pb+unix://{path}"
        mind = Mind()
        alice = await broker.login(path=path, username="alice", password=PASSWORD,
                                   service="words", mind=mind)
        try:
            await alice.call_remote("join", "local")
            assert await alice.call_remote("my_groups") == ["local"]
        finally:
            await alice.connection.close()
