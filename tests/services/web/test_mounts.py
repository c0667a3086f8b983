"""WebService.mount_resource: another service's pages under a path prefix."""

from __future__ import annotations

import logging
import os

import pytest

from services import Application, Service
from services.web import File, Request, Resource, WebService, find_web_service

from ._helpers import get


class Page(Resource):
    is_leaf = True

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def render_GET(self, request: Request) -> str:
        rest = "/".join(request.postpath)
        return f"{self.text} prepath={'/'.join(request.prepath)} rest={rest}"


class Admin(Resource):
    """A small tree, as the chat service's admin would mount."""

    def __init__(self) -> None:
        super().__init__()
        self.put_child("", Page("index"))
        self.put_child("rooms", Page("rooms"))


class SingleRoot(Resource):
    def render_GET(self, request: Request) -> str:
        return "single root"


@pytest.fixture
def site(tmp_path):
    (tmp_path / "index.html").write_text("static index")
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "file.txt").write_text("shadowed")
    (tmp_path / "other.txt").write_text("other file")
    return str(tmp_path)


async def test_mount_before_start_and_unmount_while_running(site):
    web = WebService(resource=File(site), port=0, show_banner=False)
    web.mount_resource("/words/", Admin())
    await web.start()
    try:
        port = web.port
        status, _, body = await get(port, "/words/")
        assert (status, body) == (200, b"index prepath=words/ rest=")
        status, _, body = await get(port, "/words/rooms/lobby?x=1")
        assert (status, body) == (200, b"rooms prepath=words/rooms rest=lobby")
        # The mount shadows the static directory of the same name ...
        assert (await get(port, "/words/file.txt"))[0] == 404
        # ... and the rest of the site is untouched.
        status, _, body = await get(port, "/other.txt")
        assert (status, body) == (200, b"other file")
        # Without its slash: a redirect that keeps the query.
        status, headers, _ = await get(port, "/words?a=1")
        assert status == 301 and headers["location"] == "/words/?a=1"
        assert web.mounted_paths == ["/words/"]

        assert web.unmount_resource("/words") is True
        assert web.unmount_resource("/words/") is False
        status, _, body = await get(port, "/words/file.txt")
        assert (status, body) == (200, b"shadowed")
        assert web.mounted_paths == []
    finally:
        await web.stop()


async def test_mount_while_running_longest_prefix_and_single_page(site):
    web = WebService(resource=File(site), port=0, show_banner=False)
    await web.start()
    try:
        port = web.port
        assert (await get(port, "/admin/words/"))[0] == 404
        web.mount_resource("/admin/", Page("admin"))
        web.mount_resource("/admin/words", SingleRoot())
        status, _, body = await get(port, "/admin/words/")
        assert (status, body) == (200, b"single root")
        status, _, body = await get(port, "/admin/users")
        assert (status, body) == (200, b"admin prepath=admin rest=users")
        # Prefixes are matched on decoded segments, as traversal does.
        status, _, body = await get(port, "/%61dmin/users")
        assert (status, body) == (200, b"admin prepath=admin rest=users")
        # '..' is not resolved by anybody: it is a segment the mounted tree
        # sees (and has no child for), so a mount cannot be left through it.
        status, _, body = await get(port, "/admin/words/../../other.txt")
        assert status == 404 and body != b"other file"
    finally:
        await web.stop()


def test_mount_refuses_bad_prefixes(site):
    web = WebService(resource=File(site), port=0, show_banner=False)
    for bad in ("/", "", "words/", "/a//b/", "/../x/", "/./", "/a%2fb/", "/a\\b/", "/a\x00/"):
        with pytest.raises(ValueError):
            web.mount_resource(bad, Page("x"))
    with pytest.raises(TypeError):
        web.mount_resource("/x/", object())  # type: ignore[arg-type]
    web.mount_resource("/x/", Page("x"))
    with pytest.raises(ValueError, match="already mounted"):
        web.mount_resource("/x", Page("y"))


async def test_another_service_finds_and_mounts(site, tmp_path, caplog):
    """The way the chat service's web admin does it: from its on_start,
    through the application, whichever plug-in was added first."""

    class Words(Service):
        async def on_start(self) -> None:
            web = find_web_service(self)
            assert web is not None
            web.mount_resource("/words/", Admin())

        async def on_stop(self) -> None:
            find_web_service(self).unmount_resource("/words/")

    app = Application("test", data_dir=os.path.join(str(tmp_path), "data"))
    words = Words("words")
    app.add(words)  # added before the web service, on purpose
    web = WebService(resource=File(site), port=0, show_banner=False)
    app.add(web)
    assert find_web_service(app) is web
    assert find_web_service(app, "web") is web
    assert find_web_service(app, "words") is None
    caplog.set_level(logging.INFO)
    await app.start()
    try:
        status, _, body = await get(web.port, "/words/rooms")
        assert (status, body) == (200, b"rooms prepath=words/rooms rest=")
    finally:
        await app.stop()
    assert web.mounted_paths == []
    assert find_web_service(Application("empty", data_dir=str(tmp_path))) is None
