"""The Twisted dialect on UNIX sockets, both directions, against the real
Twisted (``reactor.connectUNIX`` / ``reactor.listenUNIX``) in subprocesses."""

from __future__ import annotations

import json

import pytest

import broker

pytest.importorskip("twisted.spread.pb", reason="Twisted is not installed (the test extra "
                    "pulls it in): the Twisted-dialect interop tests need a real Twisted peer")

from .test_twisted_dialect import (PEERS, Service, check_client_results,  # noqa: E402
                                   run_peer, start_twisted_server)
from .test_twisted_views_caches import Noticeboard, board_portal  # noqa: E402


async def test_a_twisted_client_connect_unix_uses_our_server(tmp_path):
    service = Service()
    path = tmp_path / "pb.sock"  # a PathLike, as native serve() takes
    server = await broker.serve(service, path=path, dialect="twisted")
    async with server:
        assert server.path == str(path) and server.address == str(path)
        out = await run_peer(PEERS / "client.py", str(path))
    check_client_results(out, service)
    assert not path.exists()  # removed on close, as a native listener's is


async def test_a_twisted_client_logs_in_over_our_unix_socket(tmp_path):
    board = Noticeboard()
    path = str(tmp_path / "portal.sock")
    server = await broker.serve(board_portal(board), path=path, services={"pbecho"},
                                dialect="twisted")
    async with server:
        got = json.loads(await run_peer(PEERS / "view_client.py", path, "alice", "wonderland"))
    assert got == ["alice", True, "alice", True]


async def test_our_client_reaches_a_twisted_server_listening_on_unix(tmp_path):
    async with start_twisted_server(str(tmp_path / "tw.sock")) as where:
        async with broker.connect(path=where["unix"], dialect="twisted") as conn:
            root = await conn.root()
            assert await root.call_remote("echo", [1, "two", b"3"]) == [1, "two", b"3"]
            counter = await root.call_remote("make_counter")
            assert await counter.call_remote("increment") == 1
            assert await root.call_remote("is_counter", counter) is True
        me = await broker.login(None, None, "alice", "secret", path=where["unix_portal"],
                                dialect="twisted")
        async with me:
            assert await me.call_remote("whoami") == "alice"


async def test_the_twisted_dialect_takes_the_same_address_arguments_as_native(tmp_path):
    for dialect in ("native", "twisted"):
        with pytest.raises(ValueError, match="not both"):
            await broker.serve(Service(), "127.0.0.1", path=tmp_path / "x.sock",
                               dialect=dialect)
        with pytest.raises(ValueError, match="needs a port"):
            await broker.connect("127.0.0.1", dialect=dialect)
        with pytest.raises(ValueError, match="needs a port"):
            await broker.login("127.0.0.1", None, "u", "p", dialect=dialect)
        with pytest.raises(FileNotFoundError):
            await broker.connect(path=tmp_path / "nobody.sock", dialect=dialect)
