"""The user front and personal servers in one process, over real UNIX
sockets and TCP: the relay, its failures, and what users cannot do."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import broker
from services.web import (
    ASGIResource,
    File,
    Homes,
    PersonalService,
    Publisher,
    RelayedRequest,
    Request,
    Resource,
    UserDirectory,
    WebService,
    WSGIResource,
)

from . import apps
from ._helpers import get, raw_exchange, status_of


def make_home(base: Path, name: str, page: str | None = None) -> Path:
    home = base / name
    (home / "public_html").mkdir(parents=True)
    (home / "public_html" / "index.html").write_text(page or f"<p>{name}'s page</p>")
    return home


@contextlib.asynccontextmanager
async def personal(home: Path, resource: Resource, **kw: object) -> AsyncIterator[PersonalService]:
    service = PersonalService(resource=resource, socket_path=str(home / ".pb-web.sock"),
                              show_banner=False, **kw)  # type: ignore[arg-type]
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=1)


@contextlib.asynccontextmanager
async def front(base: Path, **kw: object) -> AsyncIterator[WebService]:
    directory = UserDirectory(Homes(str(base)), **kw)  # type: ignore[arg-type]
    service = WebService(resource=directory, port=0, directory=directory, show_banner=False)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=1)


async def test_the_user_list_links_users_with_a_site_and_escapes_names(tmp_path: Path) -> None:
    make_home(tmp_path, "alice")
    make_home(tmp_path, "bob")
    (tmp_path / "carol").mkdir()           # no public_html, no socket: not listed
    (tmp_path / "x<y").mkdir()             # not a user name: not listed
    async with front(tmp_path) as web:
        status, _, body = await get(web.port, "/")
        assert status == 200
        assert b'href="/~alice/"' in body and b'href="/~bob/"' in body
        assert b"carol" not in body and b"x<y" not in body


async def test_tilde_serves_public_html_and_twistd_relays_to_the_personal_server(
        tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web, personal(alice, apps.site):
        assert (await get(web.port, "/~alice/"))[2] == b"<p>alice's page</p>"
        status, _, body = await get(web.port, "/alice.twistd/info/a%20b?x=1")
        seen = json.loads(body)
        assert status == 200
        assert seen["path"] == "/info/a%20b" and seen["query"] == "x=1"
        assert seen["root_path"] == "/alice.twistd"
        assert seen["client"][0] == "127.0.0.1"
        assert (await get(web.port, "/alice.twistd"))[1]["location"] == "/alice.twistd/"
        # the listing now shows the personal server too
        assert b'href="/alice.twistd/"' in (await get(web.port, "/"))[2]


async def test_the_relay_sets_forwarding_headers_like_a_reverse_proxy(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web, personal(alice, apps.site):
        _, _, body = await get(web.port, "/alice.twistd/info",
                               headers={"X-Forwarded-For": "10.0.0.1", "Connection": "keep-alive",
                                        "Host": "example.org"})
        headers = json.loads(body)["headers"]
        assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == "example.org"
        assert headers["forwarded"] == "for=127.0.0.1;proto=http;host=example.org"
        assert "connection" not in headers


async def test_bodies_stream_both_ways_through_the_relay(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    data = os.urandom(3_000_000)
    async with front(tmp_path) as web, personal(alice, apps.site):
        status, _, body = await get(web.port, "/alice.twistd/info", "POST", data)
        assert status == 200
        assert json.loads(body) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        status, headers, body = await get(web.port, "/alice.twistd/zeros/5000000")
        assert status == 200 and headers["content-length"] == "5000000" and body == bytes(5000000)
        mount = web.directory.mounts["alice"]
        assert mount.requests == 2 and mount.bytes_in == len(data)
        assert mount.bytes_out >= 5000000


async def test_head_and_errors_come_back_through_the_relay(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web, personal(alice, apps.site):
        status, headers, body = await get(web.port, "/alice.twistd/zeros/1000", "HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == "1000"
        assert (await get(web.port, "/alice.twistd/nothing"))[0] == 404
        assert (await get(web.port, "/alice.twistd/info", "DELETE"))[0] == 405


async def test_a_missing_personal_server_is_a_502_within_a_second_and_comes_back(
        tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web:
        started = time.monotonic()
        status, _, body = await get(web.port, "/alice.twistd/info")
        assert status == 502 and b"not running" in body
        assert time.monotonic() - started < 1.0
        async with personal(alice, apps.site):
            assert (await get(web.port, "/alice.twistd/info"))[0] == 200
        status, _, _ = await get(web.port, "/alice.twistd/info")   # gone again
        assert status == 502
        async with personal(alice, apps.site):                    # and back: first try works
            assert (await get(web.port, "/alice.twistd/info"))[0] == 200


async def test_a_hung_personal_server_is_a_504_and_others_are_served(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    bob = make_home(tmp_path, "bob")
    async with front(tmp_path, relay_timeout=0.5) as web, personal(alice, apps.site), \
            personal(bob, apps.site):
        hung = asyncio.ensure_future(get(web.port, "/alice.twistd/slow"))
        for _ in range(3):
            assert (await get(web.port, "/bob.twistd/info"))[0] == 200
        status, _, body = await asyncio.wait_for(hung, 5)
        assert status == 504 and b"did not answer within 0.5 s" in body


async def test_a_client_that_goes_away_cancels_the_work_in_the_personal_server(
        tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    before = apps.Slow.cancelled
    async with front(tmp_path) as web, personal(alice, apps.site):
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        writer.write(b"GET /alice.twistd/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.3)
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if apps.Slow.cancelled > before:
                break
            await asyncio.sleep(0.02)
        assert apps.Slow.cancelled == before + 1


async def test_the_front_refuses_what_the_user_does_not_own(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another uid")
    alice = make_home(tmp_path, "alice")
    mallory = make_home(tmp_path, "mallory")
    async with front(tmp_path) as web, personal(alice, apps.site), personal(mallory, apps.site):
        os.chown(alice / "public_html", 4242, -1)
        os.chown(mallory / ".pb-web.sock", 4242, -1)
        caplog.set_level(logging.WARNING)
        assert (await get(web.port, "/~alice/"))[0] == 404
        assert (await get(web.port, "/mallory.twistd/info"))[0] == 502
        assert (await get(web.port, "/alice.twistd/info"))[0] == 200
        assert (await get(web.port, "/~mallory/"))[0] == 200
        logged = caplog.text
        assert "public_html: it is owned by uid 4242, not by alice" in logged
        assert "owned by uid 4242, not by mallory" in logged


async def test_the_personal_socket_is_owner_only(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with personal(alice, apps.site):
        assert (alice / ".pb-web.sock").stat().st_mode & 0o777 == 0o600


TRAVERSALS = ["/alice.twistd/../bob.twistd/", "/alice.twistd/%2e%2e/bob/public_html/index.html",
              "/alice.twistd/..%2f..%2fbob%2fpublic_html%2findex.html",
              "/~alice/..%2f..%2fbob%2fpublic_html%2findex.html", "/~alice/../~bob/",
              "/~alice%2f..%2fbob/", "/~..%2fbob/", "/..%2fbob.twistd/", "/~./", "/~../"]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_users_cannot_reach_each_other_s_files(tmp_path: Path, path: str) -> None:
    alice = make_home(tmp_path, "alice", "alice")
    bob = make_home(tmp_path, "bob", "BOB-SECRET")
    async with front(tmp_path) as web, personal(alice, File(alice / "public_html")), \
            personal(bob, File(bob / "public_html")):
        out = await raw_exchange(web.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close"
                                           b"\r\n\r\n" % path.encode())
        assert b"BOB-SECRET" not in out
        assert status_of(out) in (301, 400, 404), out[:300]


async def test_a_personal_server_refuses_a_malformed_relayed_request(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    async with personal(alice, apps.site):
        conn = await broker.connect(path=str(alice / ".pb-web.sock"))
        try:
            root = await conn.root()
            with pytest.raises(broker.RemoteError):
                await root.call_remote("handle", "not a request", None)
            good = RelayedRequest("GET", "/info", [["host", "x"]], None, "http", "1.1", "/m")
            status, headers, body, rest = await root.call_remote("handle", good, None)
            assert status == 200 and rest is None  # a small page: all in one answer
            assert json.loads(body)["root_path"] == "/m"
            # A copy whose state breaks the rules is a protocol error: the
            # connection goes, the personal server stays.
            with pytest.raises(broker.PBError, match="target must start with /"):
                bad = RelayedRequest("GET", "no-slash", [], None, "http", "1.1", "")
                await root.call_remote("handle", bad, None)
        finally:
            await conn.close()
        conn = await broker.connect(path=str(alice / ".pb-web.sock"))
        root = await conn.root()
        assert (await root.call_remote("handle", good, None)) is not None
        await conn.close()


async def test_a_starlette_app_behind_a_personal_server_with_its_lifespan(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    app = ASGIResource(apps.starlette_app)
    apps.LIFESPAN_EVENTS.clear()
    async with front(tmp_path) as web:
        async with personal(alice, app, apps=[app]):
            assert apps.LIFESPAN_EVENTS == ["startup"]
            status, _, body = await get(web.port, "/alice.twistd/hello")
            assert status == 200
            assert body == (b"hello from starlette at /alice.twistd/hello "
                            b"root_path='/alice.twistd' started=True")
            data = os.urandom(1_500_000)
            status, _, body = await get(web.port, "/alice.twistd/upload", "POST", data)
            assert json.loads(body) == {"bytes": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest()}
            status, headers, body = await get(web.port, "/alice.twistd/stream")
            assert body == b"part 0\npart 1\npart 2\n"
            assert (await get(web.port, "/alice.twistd/missing"))[0] == 404
        assert apps.LIFESPAN_EVENTS == ["startup", "shutdown"]


async def test_a_wsgi_app_behind_a_personal_server(tmp_path: Path) -> None:
    alice = make_home(tmp_path, "alice")
    app = WSGIResource(apps.wsgi_app)
    async with front(tmp_path) as web, personal(alice, app, apps=[app]):
        status, _, body = await get(web.port, "/alice.twistd/some/path?q=1")
        assert status == 200
        assert body == b"wsgi says hi: SCRIPT_NAME=/alice.twistd PATH_INFO=/some/path QUERY=q=1"
        data = os.urandom(300_000)
        _, _, body = await get(web.port, "/alice.twistd/", "POST", data)
        assert body == f"wsgi got {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()}".encode()


async def test_asgi_and_wsgi_mounted_directly_in_a_tree(tmp_path: Path) -> None:
    from ._helpers import port_of, running
    root = Resource()
    asgi = ASGIResource(apps.starlette_app)
    wsgi = WSGIResource(apps.wsgi_app)
    root.put_child("asgi", asgi)
    root.put_child("wsgi", wsgi)
    await asgi.startup()
    try:
        async with running(root) as server:
            port = port_of(server)
            assert (await get(port, "/asgi/hello"))[2].startswith(
                b"hello from starlette at /asgi/hello root_path='/asgi'")
            assert (await get(port, "/wsgi/x"))[2] == (
                b"wsgi says hi: SCRIPT_NAME=/wsgi PATH_INFO=/x QUERY=")
    finally:
        await asgi.shutdown()
        wsgi.close()


async def test_publisher_counts_requests(tmp_path: Path) -> None:
    publisher = Publisher(apps.site)
    assert publisher.requests == 0


async def test_users_and_static_together_static_answers_the_other_paths(tmp_path: Path) -> None:
    alice = make_home(tmp_path / "homes", "alice")
    site = tmp_path / "site"
    site.mkdir()
    (site / "about.html").write_text("about us")
    directory = UserDirectory(Homes(str(tmp_path / "homes")), fallback=File(site))
    web = WebService(resource=directory, port=0, directory=directory, show_banner=False)
    await web.start()
    try:
        async with personal(alice, apps.site):
            assert (await get(web.port, "/about.html"))[2] == b"about us"
            assert (await get(web.port, "/alice.twistd/info"))[0] == 200
            assert (await get(web.port, "/~alice/"))[0] == 200
            assert b"alice" in (await get(web.port, "/"))[2]
            assert (await get(web.port, "/nothing"))[0] == 404
    finally:
        await web.stop(grace=1)


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64,
                                     b"\xff\xff\xff\xff" + b"x" * 100, b""])
async def test_garbage_on_the_personal_socket_leaves_it_serving(tmp_path: Path,
                                                                 garbage: bytes) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web, personal(alice, apps.site):
        reader, writer = await asyncio.open_unix_connection(str(alice / ".pb-web.sock"))
        writer.write(garbage)
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(2):
                await reader.read()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert (await get(web.port, "/alice.twistd/info"))[0] == 200


class _EvilHeaders(Resource):
    """Sets the headers it is given: a personal server trying to split the
    front's response or to pass a header of its own inside a name."""

    is_leaf = True

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        super().__init__()
        self.headers = headers

    def render_GET(self, request: Request) -> bytes:
        for name, value in self.headers:
            request.set_header(name, value)
        return b"body"


@pytest.mark.parametrize("headers", [
    [("X-Evil", "a\r\nSet-Cookie: stolen=1")],  # a value that splits the head
    [("X-Ok", "fine"), ("X:Set-Cookie", "stolen=1")],  # a header inside a name
])
async def test_a_personal_server_cannot_split_the_front_s_response(
        tmp_path: Path, headers: list[tuple[str, str]]) -> None:
    alice = make_home(tmp_path, "alice")
    async with front(tmp_path) as web, personal(alice, _EvilHeaders(headers)):
        out = await raw_exchange(web.port, b"GET /alice.twistd/ HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
        assert status_of(out) == 502
        assert b"stolen" not in out
        assert (await get(web.port, "/"))[0] == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)")
async def test_curl_through_the_relay_chunked_upload_100_continue_and_chunked_download(
        tmp_path: Path) -> None:
    """curl as the client: a chunked upload that waits for 100 Continue,
    relayed to a personal server; a chunked (length-less) download back;
    and a page from the user directory."""
    alice = make_home(tmp_path, "alice")
    data = os.urandom(300_000)
    (tmp_path / "upload.bin").write_bytes(data)
    app = ASGIResource(apps.starlette_app)
    async with front(tmp_path) as web, personal(alice, app, apps=[app]):
        url = f"http://127.0.0.1:{web.port}"
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-v", "--fail", "-H", "Transfer-Encoding: chunked",
            "-H", "Expect: 100-continue", "--data-binary", f"@{tmp_path / 'upload.bin'}",
            f"{url}/alice.twistd/upload",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert json.loads(out) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert b"< HTTP/1.1 100 Continue" in err
        assert b"> Transfer-Encoding: chunked" in err
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-v", "--fail", f"{url}/alice.twistd/stream", f"{url}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert b"< transfer-encoding: chunked" in err.lower()
        assert b"alice.twistd" in out


class _TimedPage(Resource):
    """Uses asyncio.timeout and current_task() without ever waiting: the
    personal server's eager start must still run it inside a task."""

    is_leaf = True

    async def render_GET(self, request: Request) -> bytes:
        async with asyncio.timeout(5):
            return b"in a task: %d" % (asyncio.current_task() is not None)


class _LatePage(Resource):
    is_leaf = True

    async def render_GET(self, request: Request) -> bytes:
        await asyncio.sleep(0.01)
        return b"late page"


class _FailsEarly(Resource):
    is_leaf = True

    def render_GET(self, request: Request) -> bytes:
        raise ValueError("before any response")


class _FailsMidway(Resource):
    is_leaf = True

    async def render_GET(self, request: Request) -> None:
        request.set_header("Content-Length", "10")
        await request.write(b"12345")
        raise ValueError("after the head")


async def test_the_personal_server_renders_in_the_call_s_own_pass_or_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """remote_handle starts the rendering eagerly: a page that never waits
    is answered at once, one that waits is answered when ready, and errors
    before or after the head come back as they did from a task."""
    alice = make_home(tmp_path, "alice")
    tree = Resource()
    for name, child in (("timed", _TimedPage()), ("late", _LatePage()),
                        ("early", _FailsEarly()), ("midway", _FailsMidway())):
        tree.put_child(name, child)
    caplog.set_level(logging.CRITICAL, "pb.web.relay")
    async with personal(alice, tree):
        conn = await broker.connect(path=str(alice / ".pb-web.sock"))
        try:
            root = await conn.root()

            async def handle(path: str) -> list:
                relayed = RelayedRequest("GET", path, [["host", "x"]], None, "http", "1.1", "")
                return await root.call_remote("handle", relayed, None)

            assert (await handle("/timed"))[::2] == [200, b"in a task: 1"]
            assert (await handle("/late"))[::2] == [200, b"late page"]
            status, _, body, rest = await handle("/early")
            assert status == 500 and b"ValueError" not in body and rest is None
            with pytest.raises(broker.RemoteError, match="after the head"):
                await handle("/midway")
            # The connection is still good for the next request.
            assert (await handle("/timed"))[0] == 200
        finally:
            await conn.close()


async def test_an_asgi_app_hears_disconnect_only_after_its_answer(tmp_path: Path) -> None:
    """receive() after the body waits for the end of the exchange; an app
    that never calls receive() is answered without a body stream."""
    from ._helpers import port_of, running
    heard: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["path"] == "/quiet":
            await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                        "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"quiet"})  # type: ignore[operator]
            return
        body = b""
        while True:
            message = await receive()  # type: ignore[operator]
            body += message["body"]
            if not message["more_body"]:
                break

        async def listen() -> None:
            heard.append((await receive())["type"])  # type: ignore[operator]

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.01)
        assert not heard  # the answer is not out yet
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": []})
        await send({"type": "http.response.body", "body": body[::-1]})  # type: ignore[operator]
        await listener

    async with running(ASGIResource(app)) as server:
        port = port_of(server)
        assert (await get(port, "/echo", "POST", b"abc"))[2] == b"cba"
        assert heard == ["http.disconnect"]
        assert (await get(port, "/quiet"))[2] == b"quiet"
