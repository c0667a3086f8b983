"""The web administration at /words/, driven with http.client against a real
web front in the same application as the words service."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

import cred
from services import Application, plugin_parser
from services.web import NoResource, WebService
from services.words import plugin as words_plugin

from .conftest import PASSWORD, Mind, RawIRC, pb_login, wait_until

ADMIN_PASSWORD = "admin secret"


@contextlib.asynccontextmanager
async def words_with_web(data_dir: Path, *argv: str) -> AsyncIterator[tuple]:
    args = ["--pb-port", "0", "--irc-port", "0", "--user", f"alice:{PASSWORD}",
            "--admin", f"root:{ADMIN_PASSWORD}", *argv]
    options = plugin_parser(words_plugin).parse_args(args)
    application = Application("test", data_dir=data_dir)
    words = words_plugin.build(options, application)
    words.portal.throttle = cred.Throttle(base_delay=0)
    web = WebService("web", resource=NoResource(), port=0, show_banner=False)
    application.add(words)
    application.add(web)
    await application.start()
    try:
        yield words, web
    finally:
        await application.stop(grace=5)


class Browser:
    """A tiny cookie-keeping client over http.client (run in a thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None

    def _request(self, method: str, path: str, body: str | None = None,
                 headers: dict | None = None) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = dict(headers or {})
            if self.cookie:
                sent["Cookie"] = self.cookie
            if body is not None:
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8")
            found = response.getheader("Set-Cookie")
            if found:
                self.cookie = found.split(";")[0]
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            conn.close()

    async def get(self, path: str) -> tuple[int, dict, str]:
        return await asyncio.to_thread(self._request, "GET", path)

    async def post(self, path: str, fields: dict, **kwargs) -> tuple[int, dict, str]:
        return await asyncio.to_thread(self._request, "POST", path, urlencode(fields), **kwargs)

    @staticmethod
    def token(page: str) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    async def login(self, name: str = "root", password: str = ADMIN_PASSWORD) -> str:
        status, headers, page = await self.get("/words/login")
        assert status == 200, page
        before = self.cookie
        status, headers, _ = await self.post(
            "/words/login", {"csrf": self.token(page), "name": name, "password": password})
        assert status == 303 and headers["location"] == "/words/"
        # A new session id at login, sent as a cookie scripts cannot read.
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/words/" in cookie
        assert self.cookie != before
        status, _, page = await self.get("/words/")
        assert status == 200 and "Logged in as root" in page
        return page


async def test_login_create_account_then_it_logs_in_over_irc(tmp_path):
    async with words_with_web(tmp_path / "data") as (words, web):
        browser = Browser(web.port)
        # Not logged in: sent to the login page; a wrong password is a 403.
        status, headers, _ = await browser.get("/words/")
        assert status == 303 and headers["location"] == "/words/login"
        status, _, page = await browser.get("/words/login")
        status, _, page = await browser.post(
            "/words/login", {"csrf": browser.token(page), "name": "root", "password": "nope"})
        assert status == 403 and "Wrong name or password" in page
        # alice is a chat user, not an administrator.
        status, _, page = await browser.post(
            "/words/login", {"csrf": browser.token(page), "name": "alice",
                             "password": PASSWORD})
        assert status == 403

        page = await browser.login()
        status, headers, _ = await browser.post(
            "/words/create", {"csrf": browser.token(page), "name": "dave",
                              "password": "dave's pass"})
        assert status == 303
        status, _, page = await browser.get("/words/")
        assert "Account dave created." in page and "<td>dave</td>" in page

        irc = await RawIRC.connect(words.irc_port, "dave", password="dave's pass")
        irc.send("JOIN #lobby")
        await irc.expect(r" 366 ")
        await irc.close()

        # A duplicate is refused with a message, nothing changes.
        status, _, _ = await browser.post(
            "/words/create", {"csrf": browser.token(page), "name": "dave", "password": "x"})
        status, _, page = await browser.get("/words/")
        assert "Refused:" in page


async def test_set_topic_reaches_irc_and_reset_password_and_delete(tmp_path):
    async with words_with_web(tmp_path / "data") as (words, web):
        irc = await RawIRC.connect(words.irc_port, "alice")
        irc.send("JOIN #lobby")
        await irc.expect(r" 366 ")
        mind = Mind()
        pb = await pb_login(words, "alice", mind)
        await pb.call_remote("join", "lobby")

        browser = Browser(web.port)
        page = await browser.login()
        assert "<td>lobby</td>" in page and "alice (online)" in page
        status, _, _ = await browser.post(
            "/words/topic", {"csrf": browser.token(page), "group": "lobby",
                             "topic": "set from the web"})
        assert status == 303
        line = await irc.expect(r" TOPIC ")
        assert line.endswith(":set from the web") and line.startswith(":root!")
        await mind.wait_for(lambda m: ("topic", "lobby", "set from the web", "root")
                            in m.events)

        status, _, _ = await browser.post(
            "/words/password", {"csrf": browser.token(page), "name": "alice",
                                "password": "new pass"})
        assert status == 303
        with pytest.raises(cred.Unauthorized):
            await words.portal.login(cred.UsernamePassword("alice", PASSWORD), None,
                                     service="words")

        # Deleting the account ends its IRC and PB sessions.
        status, _, _ = await browser.post(
            "/words/delete", {"csrf": browser.token(page), "name": "alice"})
        assert status == 303
        await irc.closed()
        assert any("account deleted by root" in line for line in irc.seen)
        await wait_until(lambda: not words.chat.sessions_of("alice"))
        await wait_until(lambda: "alice" not in words.chat.members("lobby"))
        assert "alice" not in await asyncio.to_thread(words.store.users)
        status, _, page = await browser.get("/words/")
        assert "Account alice deleted (2 session(s) ended)." in page
        await irc.close()


async def test_a_forged_post_is_refused(tmp_path):
    async with words_with_web(tmp_path / "data") as (words, web):
        browser = Browser(web.port)
        page = await browser.login()
        # Logged in, with the cookie, but without the token: 403, no account.
        status, _, body = await browser.post("/words/create", {"name": "eve",
                                                               "password": "x"})
        assert status == 403 and "token" in body
        status, _, _ = await browser.post("/words/create", {"csrf": "forged", "name": "eve",
                                                            "password": "x"})
        assert status == 403
        # Another browser's token does not work with this session either.
        other = Browser(web.port)
        _, _, login = await other.get("/words/login")
        status, _, _ = await browser.post("/words/create", {"csrf": other.token(login),
                                                            "name": "eve", "password": "x"})
        assert status == 403
        # Without the cookie (a cross-site form), the right token is no use.
        stranger = Browser(web.port)
        status, _, _ = await stranger.post("/words/create", {"csrf": browser.token(page),
                                                             "name": "eve", "password": "x"})
        assert status == 403
        assert "eve" not in await asyncio.to_thread(words.store.users)
        # A login form without its token is refused too.
        status, _, _ = await Browser(web.port).post(
            "/words/login", {"name": "root", "password": ADMIN_PASSWORD})
        assert status == 403


async def test_every_value_is_escaped(tmp_path):
    async with words_with_web(tmp_path / "data") as (words, web):
        irc = await RawIRC.connect(words.irc_port, "alice")
        irc.send("JOIN #<b>x</b>")
        await irc.expect(r" 366 ")
        irc.send("TOPIC #<b>x</b> :<script>alert('t')</script> & \"q\"")
        await irc.expect(r" TOPIC ")
        browser = Browser(web.port)
        page = await browser.login()
        assert "<script>" not in page and "<b>" not in page
        assert "&lt;b&gt;x&lt;/b&gt;" in page
        assert "&lt;script&gt;alert(&#x27;t&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in page
        # Set a topic with markup from the web: shown escaped, stored as typed.
        status, _, _ = await browser.post(
            "/words/topic", {"csrf": browser.token(page), "group": "<b>x</b>",
                             "topic": "<img src=x onerror=alert(1)>"})
        assert status == 303
        _, headers, page = await browser.get("/words/")
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
        assert words.chat.group("<b>x</b>").topic == "<img src=x onerror=alert(1)>"
        assert "default-src 'none'" in headers["content-security-policy"]
        await irc.close()


async def test_options_no_web_admin_and_admin_path(tmp_path):
    async with words_with_web(tmp_path / "a", "--no-web-admin") as (words, web):
        status, _, _ = await Browser(web.port).get("/words/login")
        assert status == 404
    async with words_with_web(tmp_path / "b", "--admin-path", "/chat/admin") as (words, web):
        status, _, _ = await Browser(web.port).get("/chat/admin/login")
        assert status == 200
        assert web.mounted_paths == ["/chat/admin/"]
    # Stopped: unmounted, and the admin cred service left the realm.
    assert web.mounted_paths == []
    assert "words-admin" not in words.portal.realm.services
    with pytest.raises(SystemExit):
        plugin_parser(words_plugin).parse_args(["--admin-path", "/"])
