"""Viewables and several cache observers in the Twisted dialect, against the
real Twisted in subprocesses over real sockets."""

from __future__ import annotations

import gc
import json

import pytest

import broker
import cred
from cred.twisted_secret import TwistedSecretChecker

pytest.importorskip("twisted.spread.pb", reason="Twisted is not installed (the test extra "
                    "pulls it in): the Twisted-dialect interop tests need a real Twisted peer")

from .test_twisted_dialect import (PEERS, run_peer, twisted_server,  # noqa: E402,F401
                                   wait_for, wait_for_async)


class Noticeboard(broker.Viewable):
    """One object for every avatar: each call is told which one calls."""

    def __init__(self):
        self.callers = []

    def view_whoami(self, perspective):
        self.callers.append(perspective)
        return perspective.name

    def view_same_avatar(self, perspective, avatar):
        return perspective is avatar


class Avatar(broker.Perspective):
    def __init__(self, name, board):
        self.name = name
        self.board = board

    def perspective_noticeboard(self):
        return self.board


class BoardRealm(cred.Service):
    def __init__(self, board):
        super().__init__("pbecho")
        self.board = board

    def create_perspective(self, name):
        return Avatar(name, self.board)


def board_portal(board):
    users = {"alice": "wonderland", "bob": "builder"}
    keyring = {name: [("pbecho", None)] for name in users}
    return cred.Portal(cred.ServiceRealm(BoardRealm(board)),
                       [TwistedSecretChecker(users), cred.InMemoryChecker(users, keyring=keyring)],
                       throttle=cred.Throttle(base_delay=0))


async def test_a_twisted_client_calling_our_viewable_is_named_by_its_perspective():
    board = Noticeboard()
    server = await broker.serve(board_portal(board), "127.0.0.1", 0, services={"pbecho"},
                                dialect="twisted")
    async with server:
        port = str(server.port)
        alice = json.loads(await run_peer(PEERS / "view_client.py", port, "alice", "wonderland"))
        bob = json.loads(await run_peer(PEERS / "view_client.py", port, "bob", "builder"))
    # [whoami, the caller was the avatar passed back, whoami again, one object id]
    assert alice == ["alice", True, "alice", True]
    assert bob == ["bob", True, "bob", True]
    assert [type(p) for p in board.callers] == [Avatar] * 4
    assert [p.name for p in board.callers] == ["alice", "alice", "bob", "bob"]


async def test_our_client_calling_a_twisted_viewable_is_named_by_its_perspective(
        twisted_server):
    port = twisted_server["portal"]
    for user, password in (("alice", "secret"), ("bob", "builder")):
        me = await broker.login("127.0.0.1", port, user, password, dialect="twisted")
        async with me:
            board = await me.call_remote("noticeboard")
            assert await board.call_remote("whoami") == user
            assert await board.call_remote("same_avatar", me) is True
            assert await me.call_remote("noticeboard") is board


async def test_a_twisted_cacheable_observed_by_several_of_our_copies(twisted_server):
    """Two connections give the Twisted server two observers (two copies);
    a second fetch on one connection is the same copy (``cached``); each copy
    gets every update while held, and dropping one stops only its updates."""
    port = twisted_server["root"]
    async with (broker.connect("127.0.0.1", port, dialect="twisted") as one,
                broker.connect("127.0.0.1", port, dialect="twisted") as two):
        root_one, root_two = await one.root(), await two.root()
        copy_one = await root_one.call_remote("board")
        copy_two = await root_two.call_remote("board")
        assert copy_one is not copy_two
        assert await root_one.call_remote("board") is copy_one
        assert await root_one.call_remote("observers") == 2

        await root_one.call_remote("add", "first")
        await root_two.call_remote("add", "second")
        await wait_for(lambda: copy_one.items == copy_two.items == ["first", "second"])

        late = []
        copy_two.items = late  # what arrives after this line lands here
        del copy_one
        gc.collect()
        await wait_for_async(lambda: root_two.call_remote("observers"), 1)
        await root_two.call_remote("add", "third")
        await wait_for(lambda: late == ["third"])

        del copy_two
        gc.collect()
        await wait_for_async(lambda: root_two.call_remote("observers"), 0)
        # The Twisted side still works, and sends nothing to dropped copies.
        await root_one.call_remote("add", "fourth")
        assert await root_one.call_remote("echo", "still open") == "still open"
    assert late == ["third"]
