"""The PB face: folders, listing, streamed fetch, delete/move/send, new-mail minds."""

from __future__ import annotations

import asyncio

import pytest

import broker

from .conftest import PASSWORD, in_thread, message, send, start_mail

pytestmark = pytest.mark.timeout(30)


class Mind(broker.Referenceable):
    def __init__(self) -> None:
        self.new: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()

    def remote_new_mail(self, folder: str, key: str) -> None:
        self.new.append((folder, key))
        self.arrived.set()


@pytest.fixture
async def pbmail(tmp_path):
    env = await start_mail(tmp_path, "--allow-plain-auth", "--pb-port", "0")
    try:
        yield env
    finally:
        await env.application.stop(grace=2)


async def _login(env, user="alice@example.com", perspective=None, mind=None, password=PASSWORD):
    return await broker.login("127.0.0.1", env.service.pb_port, user, password, service="mail",
                              perspective=perspective or user, mind=mind)


async def test_list_fetch_delete_to_trash_and_move(pbmail):
    for i in range(2):
        await in_thread(send, pbmail.smtp, "x@remote.test", ["alice@example.com"],
                        message(f"pb{i}", body=("A" * 999 + "\r\n") * 300))
    box = await _login(pbmail)
    try:
        assert await box.call_remote("folders") == ["INBOX"]
        listing = await box.call_remote("list", "INBOX")
        assert [m["subject"] for m in listing] == ["pb0", "pb1"]
        assert listing[0]["from"] == "x@remote.test" and not listing[0]["seen"]
        assert listing[0]["return_path"] == "x@remote.test"
        stream = await box.call_remote("fetch", "INBOX", listing[0]["key"])
        data = await broker.collect(stream)
        assert data.count(b"A") == 299_700 and b"Subject: pb0\n" in data
        assert (await box.call_remote("list", "INBOX"))[0]["seen"]
        assert await box.call_remote("count", "INBOX") == {"messages": 2, "unseen": 1}
        assert [m["subject"] for m in await box.call_remote("list", "INBOX", 1, 5)] == ["pb1"]
        with pytest.raises(broker.RemoteError, match="count <= 1000"):
            await box.call_remote("list", "INBOX", 0, 10_000)
        assert await box.call_remote("delete", "INBOX", listing[0]["key"]) == "moved to Trash"
        assert await box.call_remote("move", "INBOX", listing[1]["key"], "Archive") == "moved to Archive"
        assert await box.call_remote("folders") == ["INBOX", "Archive", "Trash"]
        assert await box.call_remote("list", "INBOX") == []
        trash = await box.call_remote("list", "Trash")
        assert [m["subject"] for m in trash] == ["pb0"]
        assert await box.call_remote("delete", "Trash", trash[0]["key"]) == "deleted"
        assert await box.call_remote("list", "Trash") == []
        with pytest.raises(broker.RemoteError, match="bad folder name"):
            await box.call_remote("list", "../../etc")
        with pytest.raises(broker.RemoteError, match="no message"):
            await box.call_remote("fetch", "INBOX", "nope")
    finally:
        await box.connection.close()


async def test_send_goes_through_the_smtp_rules_and_minds_hear_of_new_mail(pbmail):
    mind = Mind()
    bob = await _login(pbmail, "bob@example.com", mind=mind)
    alice = await _login(pbmail)
    try:
        text = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: over pb\r\n\r\nhello bob\r\n"
        assert await alice.call_remote("send", ["bob@example.com"], text) == "sent to 1 recipient(s)"
        await asyncio.wait_for(mind.arrived.wait(), 5)
        assert mind.new[0][0] == "INBOX"
        (stored,) = pbmail.stored("bob@example.com")
        assert b"with PB" in stored and b"Subject: over pb\nTo: " not in stored and b"hello bob\n" in stored
        with pytest.raises(broker.RemoteError, match="550 5.7.1"):
            await alice.call_remote("send", ["x@elsewhere.test"], text)  # no smarthost: no relay
        with pytest.raises(broker.RemoteError, match="bare CR"):
            await alice.call_remote("send", ["bob@example.com"], b"Subject: x\r\n\r\nsmuggle\r.\r\n")
        with pytest.raises(broker.RemoteError, match="No such user"):
            await alice.call_remote("send", ["nobody@example.com"], text)
    finally:
        await alice.connection.close()
        await bob.connection.close()


async def test_another_users_mailbox_and_other_services_are_refused(pbmail):
    with pytest.raises(broker.Unauthorized):
        await _login(pbmail, "alice@example.com", perspective="bob@example.com")
    with pytest.raises(broker.Unauthorized):
        await _login(pbmail, password="wrong")
    with pytest.raises(broker.Unauthorized):
        await broker.login("127.0.0.1", pbmail.service.pb_port, "alice@example.com", PASSWORD,
                           service="pbecho")
