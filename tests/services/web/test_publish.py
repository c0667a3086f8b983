"""Personal servers that log in to a front over TCP and publish themselves,
the login-binding rule on the front's PB listener, and the admin service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import broker
import cred
from services import ensure_account
from services.web import ADMIN_SERVICE, PUBLISH_SERVICE, Homes, PersonalService, UserDirectory, WebService
from tests._tls import write_tls_files

from . import apps
from ._helpers import get


@contextlib.asynccontextmanager
async def front_with_pb(tmp_path: Path, *, tls: bool = False,
                        **kw: object) -> AsyncIterator[tuple[WebService, cred.Portal]]:
    store = cred.AccountStore(tmp_path / "accounts.sqlite3", create=True)
    portal = cred.Portal(cred.ServiceRealm(), [cred.StoreChecker(store)])
    await ensure_account(store, "alice", "alice-pw", [(PUBLISH_SERVICE, None)])
    await ensure_account(store, "mallory", "mallory-pw", [(PUBLISH_SERVICE, None), ("pbecho", None)])
    await ensure_account(store, "root", "root-pw", [(ADMIN_SERVICE, None)])
    (tmp_path / "homes").mkdir(exist_ok=True)
    directory = UserDirectory(Homes(str(tmp_path / "homes")), **kw)  # type: ignore[arg-type]
    server_ssl = None
    if tls:
        cert, key, _ = write_tls_files(tmp_path)
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(cert, key)
    web = WebService(resource=directory, port=0, directory=directory, portal=portal, pb_port=0,
                     pb_ssl=server_ssl, show_banner=False)
    await web.start()
    try:
        yield web, portal
    finally:
        await web.stop(grace=1)
        store.close()


@contextlib.asynccontextmanager
async def publishing(web: WebService, user: str, password: str,
                     **kw: object) -> AsyncIterator[PersonalService]:
    service = PersonalService(resource=apps.site, publish_to=("127.0.0.1", web.pb_port),
                              user=user, password=password, retry=0.1, show_banner=False,
                              **kw)  # type: ignore[arg-type]
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=1)


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_personal_server_publishes_itself_over_tls_and_leaves_with_its_connection(
        tmp_path: Path) -> None:
    async with front_with_pb(tmp_path, tls=True) as (web, _):
        client_ssl = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with publishing(web, "alice", "alice-pw", publish_ssl=client_ssl) as alice:
            await asyncio.wait_for(alice.published.wait(), 10)
            assert alice.where == "/alice.twistd/"
            status, _, body = await get(web.port, "/alice.twistd/info?x=1")
            assert status == 200 and json.loads(body)["root_path"] == "/alice.twistd"
            assert b'href="/alice.twistd/"' in (await get(web.port, "/"))[2]
        await _until(lambda: "alice" not in web.directory.published)
        assert (await get(web.port, "/alice.twistd/info"))[0] == 404


async def test_the_front_prefers_a_published_server_for_tilde_when_asked(tmp_path: Path) -> None:
    async with front_with_pb(tmp_path, prefer_personal=True) as (web, _):
        async with publishing(web, "alice", "alice-pw") as alice:
            await asyncio.wait_for(alice.published.wait(), 10)
            assert (await get(web.port, "/~alice/info"))[0] == 200


async def test_nobody_publishes_under_another_account_s_name(tmp_path: Path) -> None:
    async with front_with_pb(tmp_path) as (web, _):
        publisher = broker.Root()
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", web.pb_port, "mallory", "mallory-pw",
                               service=PUBLISH_SERVICE, perspective="alice", mind=publisher)
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", web.pb_port, "alice", "wrong",
                               service=PUBLISH_SERVICE, mind=publisher)
        assert web.directory.published == {}


async def test_the_front_s_pb_listener_offers_only_web_s_services(tmp_path: Path) -> None:
    async with front_with_pb(tmp_path) as (web, portal):
        from services.echo import EchoService
        echo = EchoService(portal=portal, port=0, show_banner=False)
        await echo.start()
        try:
            # mallory holds pbecho:mallory, but not through web's listener
            with pytest.raises(broker.Unauthorized):
                await broker.login("127.0.0.1", web.pb_port, "mallory", "mallory-pw",
                                   service="pbecho")
            # and web's services are not reachable through echo's
            with pytest.raises(broker.Unauthorized):
                await broker.login("127.0.0.1", echo.port, "alice", "alice-pw",
                                   service=PUBLISH_SERVICE, mind=broker.Root())
        finally:
            await echo.stop(grace=1)


async def test_the_admin_service_lists_and_unmounts_personal_servers(tmp_path: Path) -> None:
    async with front_with_pb(tmp_path) as (web, _):
        async with publishing(web, "alice", "alice-pw") as alice:
            await asyncio.wait_for(alice.published.wait(), 10)
            await get(web.port, "/alice.twistd/info")
            admin = await broker.login("127.0.0.1", web.pb_port, "root", "root-pw",
                                       service=ADMIN_SERVICE)
            try:
                mounts = await admin.call_remote("mounts")
                assert [(m["name"], m["kind"], m["requests"]) for m in mounts] == [
                    ("alice", "published", 1)]
                assert mounts[0]["bytes_out"] > 0
                assert await admin.call_remote("unmount", "alice") is True
                assert await admin.call_remote("unmount", "nobody") is False
                assert "alice" not in web.directory.published
                stats = await admin.call_remote("stats")
                assert stats["requests"] >= 1
            finally:
                await admin.connection.close()
            # the personal server notices, logs in again and is mounted again
            await _until(lambda: "alice" in web.directory.published)
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", web.pb_port, "alice", "alice-pw",
                               service=ADMIN_SERVICE)


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64,
                                     b"\x7f\xff\xff\xff" + b"x" * 100])
async def test_garbage_on_the_front_s_pb_port_leaves_it_serving(tmp_path: Path,
                                                                 garbage: bytes) -> None:
    async with front_with_pb(tmp_path) as (web, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", web.pb_port)
        writer.write(garbage)
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(2):
                await reader.read()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        async with publishing(web, "alice", "alice-pw") as alice:
            await asyncio.wait_for(alice.published.wait(), 10)
            assert (await get(web.port, "/alice.twistd/info"))[0] == 200
