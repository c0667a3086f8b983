"""Web administration of a words chat, mounted into the application's web
front (``/words/`` by default) when the ``web`` service runs alongside.

Administrators log in with an account that holds the cred service
``words-admin`` on its keyring; the check goes through the application's
portal, so the same throttle as PB and IRC logins applies.  A login makes
a server-side session named by a random cookie (``HttpOnly``,
``SameSite=Strict``, path limited to the mount).  Every form carries the
session's CSRF token and a POST without the right one is refused with 403,
before anything is read from the store.  Every value shown is escaped.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import cred
from services import get_logger

from ._core import WordsError, check_user_name, name_key

__all__ = ["ADMIN_SERVICE", "AdminSite", "AdminCredService"]

ADMIN_SERVICE = "words-admin"
COOKIE = "words_admin"
#: A form body larger than this is refused before it is read further.
MAX_FORM = 16 * 1024
#: Sessions kept at once (the oldest goes first) and their idle lifetime.
MAX_SESSIONS = 256
SESSION_IDLE = 3600.0

_log = get_logger("pb.words.admin")


def _web() -> Any:
    # Imported late: words works without the web service's modules loaded.
    from services import web
    return web


class AdminPerspective:
    """What a successful admin login yields: the administrator's name."""

    def __init__(self, name: str) -> None:
        self.name = name


class AdminCredService(cred.Service):
    """The cred service ``words-admin``: holding it on one's keyring is the
    administrator permission."""

    def __init__(self) -> None:
        super().__init__(ADMIN_SERVICE)

    def get_perspective(self, name: str) -> AdminPerspective:
        return AdminPerspective(name)


@dataclass
class _Session:
    csrf: str
    user: str | None = None
    seen: float = field(default_factory=time.monotonic)
    flash: str = ""
    logout: Any = None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class AdminSite:
    """The pages, as a ``services.web`` resource tree (see :meth:`resource`).

    ``service`` is the running :class:`WordsService` (its chat, its account
    store, its portal); ``mount`` the path prefix, e.g. ``/words/``.
    """

    def __init__(self, service: Any, mount: str = "/words/") -> None:
        self.service = service
        self.mount = "/" + mount.strip("/") + "/"
        self.sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()

    # -- sessions -------------------------------------------------------------

    def _cookie(self, request: Any) -> str | None:
        header = request.get_header("cookie")
        if not header:
            return None
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                return value
        return None

    def _session(self, request: Any) -> _Session | None:
        key = self._cookie(request)
        session = self.sessions.get(key) if key else None
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > SESSION_IDLE:
            self._drop(key)  # type: ignore[arg-type]
            return None
        session.seen = now
        self.sessions.move_to_end(key)  # type: ignore[arg-type]
        return session

    def _new_session(self, request: Any) -> _Session:
        while len(self.sessions) >= MAX_SESSIONS:
            self._drop(next(iter(self.sessions)))
        key = secrets.token_urlsafe(32)
        session = self.sessions[key] = _Session(csrf=secrets.token_urlsafe(32))
        request.add_header("Set-Cookie", f"{COOKIE}={key}; Path={self.mount}; HttpOnly; "
                                         f"SameSite=Strict")
        return session

    def _drop(self, key: str) -> None:
        session = self.sessions.pop(key, None)
        if session is not None and session.logout is not None:
            session.logout()

    def close(self) -> None:
        for key in list(self.sessions):
            self._drop(key)

    # -- requests -------------------------------------------------------------

    async def _form(self, request: Any) -> dict[str, str]:
        kind = (request.get_header("content-type") or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise _web().HTTPError(415, "send the form as application/x-www-form-urlencoded")
        length = request.get_header("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_FORM:
            raise _web().HTTPError(413, f"the form is larger than {MAX_FORM} bytes")
        body = await request.read(limit=MAX_FORM)
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise _web().HTTPError(400, "the form is not valid UTF-8 form data") from None
        return {key: values[0] for key, values in fields.items()}

    def _check_token(self, session: _Session | None, form: dict[str, str]) -> None:
        token = form.get("csrf", "")
        if session is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise _web().HTTPError(403, "the form's token is missing or wrong "
                                        "(reload the page and try again)")

    def _redirect(self, request: Any, where: str = "") -> bytes:
        request.set_status(303)
        request.set_header("Location", self.mount + where)
        return b""

    # -- pages ----------------------------------------------------------------

    def _page(self, title: str, body: str) -> str:
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{_esc(title)}</title></head>\n<body>\n{body}</body></html>\n")

    def _secure_headers(self, request: Any) -> None:
        request.set_header("Cache-Control", "no-store")
        request.set_header("X-Frame-Options", "DENY")
        request.set_header("Content-Security-Policy",
                           "default-src 'none'; form-action 'self'; frame-ancestors 'none'")

    def login_page(self, request: Any, session: _Session, message: str = "") -> str:
        self._secure_headers(request)
        note = f"<p class=\"error\">{_esc(message)}</p>\n" if message else ""
        return self._page("words administration: log in", (
            "<h1>words administration</h1>\n" + note +
            f"<form method=\"post\" action=\"{_esc(self.mount)}login\">\n"
            f"<input type=\"hidden\" name=\"csrf\" value=\"{_esc(session.csrf)}\">\n"
            "<label>Name <input name=\"name\" autocomplete=\"username\"></label>\n"
            "<label>Password <input name=\"password\" type=\"password\" "
            "autocomplete=\"current-password\"></label>\n"
            "<button>Log in</button>\n</form>\n"))

    async def index_page(self, request: Any, session: _Session) -> str:
        self._secure_headers(request)
        service = self.service
        chat = service.chat
        store = service.store
        users = await asyncio.to_thread(self._chat_accounts, store)
        token = f"<input type=\"hidden\" name=\"csrf\" value=\"{_esc(session.csrf)}\">"
        action = _esc(self.mount)
        parts = [f"<h1>words administration</h1>\n<p>Logged in as {_esc(session.user)}. "
                 f"<form method=\"post\" action=\"{action}logout\">{token}"
                 "<button>Log out</button></form></p>\n"]
        if session.flash:
            parts.append(f"<p class=\"flash\">{_esc(session.flash)}</p>\n")
            session.flash = ""
        parts.append("<h2>Rooms</h2>\n<table>\n<tr><th>Room</th><th>Topic</th>"
                     "<th>Members</th><th>Set topic</th></tr>\n")
        if chat is not None:
            for group in sorted(chat.groups.values(), key=lambda g: name_key(g.name)):
                members = ", ".join(f"{_esc(name)} ({_esc(presence)})"
                                    for name, presence in chat.members(group.name).items())
                parts.append(
                    f"<tr><td>{_esc(group.name)}</td><td>{_esc(group.topic)}</td>"
                    f"<td>{members}</td><td><form method=\"post\" action=\"{action}topic\">"
                    f"{token}<input type=\"hidden\" name=\"group\" value=\"{_esc(group.name)}\">"
                    f"<input name=\"topic\" value=\"{_esc(group.topic)}\">"
                    "<button>Set</button></form></td></tr>\n")
        parts.append("</table>\n<h2>Accounts</h2>\n<table>\n<tr><th>Account</th>"
                     "<th>Presence</th><th>Reset password</th><th>Delete</th></tr>\n")
        for user in users:
            presence = chat.presence(user) if chat is not None else "offline"
            parts.append(
                f"<tr><td>{_esc(user)}</td><td>{_esc(presence)}</td>"
                f"<td><form method=\"post\" action=\"{action}password\">{token}"
                f"<input type=\"hidden\" name=\"name\" value=\"{_esc(user)}\">"
                "<input name=\"password\" type=\"password\" autocomplete=\"new-password\">"
                "<button>Reset</button></form></td>"
                f"<td><form method=\"post\" action=\"{action}delete\">{token}"
                f"<input type=\"hidden\" name=\"name\" value=\"{_esc(user)}\">"
                "<button>Delete</button></form></td></tr>\n")
        parts.append(
            "</table>\n<h2>New account</h2>\n"
            f"<form method=\"post\" action=\"{action}create\">{token}"
            "<label>Name <input name=\"name\"></label> "
            "<label>Password <input name=\"password\" type=\"password\" "
            "autocomplete=\"new-password\"></label> <button>Create</button></form>\n")
        return self._page("words administration", "".join(parts))

    def _chat_accounts(self, store: cred.AccountStore) -> list[str]:
        service = self.service.service_name
        return [name for name in store.users()
                if any(svc == service for svc, _ in store.keyring(name))]

    # -- actions --------------------------------------------------------------

    async def login(self, request: Any, session: _Session | None) -> Any:
        form = await self._form(request)
        self._check_token(session, form)
        assert session is not None
        name, password = form.get("name", ""), form.get("password", "")
        try:
            interface, avatar, logout = await self.service.portal.login(
                cred.UsernamePassword(name, password), None, service=ADMIN_SERVICE,
                offered={ADMIN_SERVICE}, source=request.client[0] if request.client else None)
        except cred.Unauthorized:
            _log.info("admin login refused", user=name)
            request.set_status(403)
            return self.login_page(request, session, "Wrong name or password, or this "
                                                     "account may not administer the chat.")
        # A fresh session id on login: a cookie planted before cannot ride it.
        old = self._cookie(request)
        if old:
            self.sessions.pop(old, None)
        fresh = self._new_session(request)
        fresh.user, fresh.logout = avatar.name, logout
        _log.info("admin logged in", user=avatar.name)
        return self._redirect(request)

    async def act(self, request: Any, session: _Session | None, what: str) -> Any:
        form = await self._form(request)
        self._check_token(session, form)
        assert session is not None
        if session.user is None:
            return self._redirect(request, "login")
        if what == "logout":
            self._drop(self._cookie(request) or "")
            return self._redirect(request, "login")
        handler = {"create": self._create, "delete": self._delete,
                   "password": self._password, "topic": self._topic}[what]
        try:
            session.flash = await handler(form, session.user)
        except (WordsError, cred.CredError, ValueError) as exc:
            session.flash = f"Refused: {exc}"
        _log.info("admin action", user=session.user, action=what, outcome=session.flash)
        return self._redirect(request)

    async def _create(self, form: dict[str, str], by: str) -> str:
        name, password = form.get("name", ""), form.get("password", "")
        check_user_name(name)
        if not password:
            raise ValueError("the password is empty")
        service = self.service.service_name
        await asyncio.to_thread(self.service.store.add_user, name, password,
                                keyring=[(service, None)])
        return f"Account {name} created."

    async def _delete(self, form: dict[str, str], by: str) -> str:
        name = form.get("name", "")
        store = self.service.store
        await asyncio.to_thread(store.remove_user, name)
        ended = self.service.end_sessions(name, f"account deleted by {by}")
        return f"Account {name} deleted ({ended} session(s) ended)."

    async def _password(self, form: dict[str, str], by: str) -> str:
        name, password = form.get("name", ""), form.get("password", "")
        if not password:
            raise ValueError("the password is empty")
        await asyncio.to_thread(self.service.store.set_password, name, password)
        return f"Password of {name} reset."

    async def _topic(self, form: dict[str, str], by: str) -> str:
        chat = self.service.chat
        if chat is None:
            raise WordsError("the chat is not running")
        group = form.get("group", "")
        chat.admin_set_topic(group, form.get("topic", ""), by=by)
        return f"Topic of {group} set."

    def resource(self) -> Any:
        return _make_resource(self)


_ACTIONS = ("create", "delete", "password", "topic", "logout")


def _make_resource(site: AdminSite) -> Any:
    web = _web()

    class AdminResource(web.Resource):
        """``/words/`` (index), ``/words/login`` and one path per action."""

        is_leaf = True

        async def render_GET(self, request: Any) -> Any:
            rest = [s for s in request.postpath if s]
            session = site._session(request)
            if rest == ["login"]:
                if session is None:
                    session = site._new_session(request)
                elif session.user is not None:
                    return site._redirect(request)
                return site.login_page(request, session)
            if rest:
                raise web.HTTPError(404, "no such administration page")
            if session is None or session.user is None:
                return site._redirect(request, "login")
            return await site.index_page(request, session)

        async def render_POST(self, request: Any) -> Any:
            rest = [s for s in request.postpath if s]
            session = site._session(request)
            if rest == ["login"]:
                return await site.login(request, session)
            if len(rest) == 1 and rest[0] in _ACTIONS:
                return await site.act(request, session, rest[0])
            raise web.HTTPError(404, "no such administration action")

    return AdminResource()

