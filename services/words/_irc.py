"""The IRC face's protocol, without I/O: lines in, lines out.

Cutting, parsing and writing lines is :mod:`._irc_wire`'s; this module is
the conversation.  :class:`IRCConnection` is one client's state machine.
It is fed lines (:meth:`~IRCConnection.receive_line`), talks to the :class:`~._core.Chat`
directly (the chat is pure too), is a chat *session* (``deliver``), and
leaves its output in :meth:`~IRCConnection.data_to_send`.  The password
check is the one thing it cannot do itself: it sets :attr:`login_request`
and waits for the adapter to call :meth:`login_succeeded` or
:meth:`login_failed` after asking the portal.

Registration, the states of one connection::

    registering --NICK+USER(+CAP END)--> [PASS given] authenticating --ok--> active
                                         [no PASS]    identifying (welcome sent,
                                                      NickServ asks) --IDENTIFY--> authenticating
    authenticating --wrong password--> closing
    any --QUIT, ERROR, too many errors--> closing

Outgoing lines are at most 512 bytes: text too long for one line is sent as
several, cut between UTF-8 characters.  CR, LF and NUL cannot reach another
client: the chat refuses them in messages and topics, and
:func:`~._irc_wire.format_line` checks every parameter again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._core import (
    MAX_NAME_LENGTH,
    MAX_TOPIC_LENGTH,
    Chat,
    Event,
    InvalidName,
    Joined,
    LimitReached,
    Left,
    Message,
    PresenceChanged,
    PrivateMessage,
    TopicChanged,
    WordsError,
    check_group_name,
    check_user_name,
    name_key,
)
from ._irc_wire import (
    MAX_LINE,
    TOO_LONG,
    LineReader,
    TokenBucket,
    _TooLong,
    format_line,
    parse,
    text_lines,
)

__all__ = ["MAX_LINE", "TOO_LONG", "LineReader", "parse", "format_line", "text_lines",
           "IRCWorld", "IRCConnection", "TokenBucket", "NICKSERV"]

NICKSERV = "NickServ"
MAX_TARGETS = 4


class IRCWorld:
    """What every IRC connection of one service shares: the chat, the
    server's name and greeting, and who holds which nick over IRC."""

    def __init__(self, chat: Chat, *, server_name: str = "words", motd: Iterable[str] = (),
                 network: str = "words", created: float | None = None,
                 max_errors: int = 20) -> None:
        self.chat = chat
        self.server_name = server_name
        self.motd = list(motd)
        self.network = network
        self.created = time.time() if created is None else created
        self.max_errors = max_errors
        self.nicks: dict[str, IRCConnection] = {}
        # The lines of the event being fanned out: the same bytes go to every
        # member, so they are made once (bench_words: ~10x less formatting).
        self._event: Any = None
        self._lines: list[bytes] = []

    def lines_for(self, event: Any, build: Callable[[], list[bytes]]) -> list[bytes]:
        if event is not self._event:
            self._lines = build()
            self._event = event
        return self._lines

    def mask(self, name: str) -> str:
        """*name*'s IRC prefix (``nick!user@host``) on this server."""
        return f"{name}!{name}@{self.server_name}"

    def message_lines(self, event: Message) -> list[bytes]:
        """The lines of a group message, made for its first member and
        reused for the others (the hot path of a fan-out: no closure per
        member)."""
        if event is not self._event:
            command = "PRIVMSG" if event.kind == "message" else "NOTICE"
            self._lines = text_lines(self.mask(event.sender), command, f"#{event.group}",
                                     event.text)
            self._event = event
        return self._lines


# Numerics whose last parameter is a value, not text (no ':' unless needed).
_NO_TEXT = frozenset({"004", "221", "324", "329", "333"})

# Numerics used below (RFC 1459/2812, IRCv3 for 417).
RPL_WELCOME, RPL_YOURHOST, RPL_CREATED, RPL_MYINFO, RPL_ISUPPORT = "001", "002", "003", "004", "005"


class IRCConnection:
    """One IRC client's connection; a session of the chat once logged in."""

    #: Delivered to one by one (a group message's lines are already made
    #: once per fan-out, in the world's cache).
    batch = None

    def __init__(self, world: IRCWorld, peer: str = "?") -> None:
        self.world = world
        self.chat = world.chat
        self.peer = peer
        self.state = "registering"
        self.nick: str | None = None
        self.user: str = ""  # the account name once logged in (the nick)
        self.username: str | None = None
        self.password: str | None = None
        self.cap_negotiating = False
        self.login_request: tuple[str, str] | None = None
        self.closing = False
        self.close_reason = ""
        self.errors = 0
        self._out: list[bytes] = []
        self._welcomed = False
        self._in_chat = False
        #: Called (no arguments) when events from other connections leave
        #: output here and none was waiting before; the adapter sets it to
        #: write that output out (at once, or once per loop turn).
        self.wakeup: Callable[[], None] | None = None

    # -- output ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def _send(self, line: bytes) -> None:
        self._out.append(line)

    def _numeric(self, code: str, *params: str) -> None:
        self._send(format_line(self.world.server_name, code, self.nick or "*", *params,
                               trailing=len(params) > 0 and code not in _NO_TEXT))

    def _server_notice(self, text: str) -> None:
        for line in text_lines(self.world.server_name, "NOTICE", self.nick or "*", text):
            self._send(line)

    def _from_nickserv(self, text: str) -> None:
        for line in text_lines(f"{NICKSERV}!{NICKSERV}@{self.world.server_name}", "NOTICE",
                               self.nick or "*", text):
            self._send(line)

    def _mask(self, name: str) -> str:
        return self.world.mask(name)

    def close(self, reason: str) -> None:
        """Say ERROR and ask the adapter to close once the output is sent."""
        if self.closing:
            return
        self._send(format_line(None, "ERROR", f"Closing link: {self.nick or '*'}[{self.peer}] "
                                              f"({reason})"))
        self.closing = True
        self.close_reason = reason

    def end(self, reason: str) -> None:
        """Close from outside (an administrator deleted the account)."""
        self.close(reason)
        if self._in_chat:
            self._in_chat = False
            self.chat.disconnect(self)
        if self.wakeup is not None:
            self.wakeup()

    def ping(self) -> None:
        """A keepalive PING; any line the client sends counts as the answer."""
        self._send(format_line(None, "PING", self.world.server_name, trailing=True))

    def connection_lost(self) -> None:
        """The adapter's socket is gone: leave the chat, free the nick."""
        self.closing = True
        if self._in_chat:
            self._in_chat = False
            self.chat.disconnect(self)
        if self.nick is not None and self.world.nicks.get(name_key(self.nick)) is self:
            del self.world.nicks[name_key(self.nick)]

    # -- input ----------------------------------------------------------------

    def receive_line(self, line: bytes | _TooLong) -> None:
        if self.closing:
            return
        if line is TOO_LONG:
            self._numeric("417", "Input line was too long: a line is at most 512 bytes "
                                 "with its CR-LF; send shorter messages")
            self._count_error()
            return
        assert isinstance(line, bytes)
        command = parse(line)
        if command is None:
            return
        handler = _HANDLERS.get(command.command)
        if handler is None:
            if self.state == "active":
                self._numeric("421", command.command[:32], "Unknown command")
            else:
                self._numeric("451", "You have not registered")
            self._count_error()
            return
        needs, min_params = handler.state, handler.min_params
        if needs == "identified" and self.state not in ("identifying", "active"):
            self._numeric("451", "You have not registered")
            return
        if needs == "active" and self.state != "active":
            if self.state == "identifying":
                self._numeric("451", f"You have not identified: /msg {NICKSERV} IDENTIFY "
                                     f"<password>")
            else:
                self._numeric("451", "You have not registered")
            return
        if len(command.params) < min_params:
            self._numeric("461", command.command, "Not enough parameters")
            self._count_error()
            return
        try:
            handler.func(self, command.params)
        except WordsError as exc:
            self._server_notice(f"{command.command} refused: {exc}")

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors > self.world.max_errors:
            self.close("too many errors")

    # -- registration ---------------------------------------------------------

    def _cap(self, params: list[str]) -> None:
        sub = params[0].upper()
        if sub == "LS":
            if self.state == "registering":
                self.cap_negotiating = True
            self._send(format_line(self.world.server_name, "CAP", self.nick or "*", "LS", ""))
        elif sub == "LIST":
            self._send(format_line(self.world.server_name, "CAP", self.nick or "*", "LIST", ""))
        elif sub == "REQ":
            self._send(format_line(self.world.server_name, "CAP", self.nick or "*", "NAK",
                                   params[1] if len(params) > 1 else "", trailing=True))
        elif sub == "END":
            if self.cap_negotiating:
                self.cap_negotiating = False
                self._maybe_register()
        else:
            self._numeric("410", sub[:32], "Invalid CAP command")

    def _pass(self, params: list[str]) -> None:
        if self.state != "registering":
            self._numeric("462", "You may not reregister")
            return
        # One parameter by the RFC, but some clients (the irc library among
        # them) send a password with spaces without the ':' it needs.
        self.password = " ".join(params)

    def _nick(self, params: list[str]) -> None:
        wanted = params[0]
        if self.state not in ("registering",):
            if self.nick is not None and name_key(wanted) == name_key(self.nick):
                return
            self._numeric("447", f"Cannot change nickname: your nick is your account name "
                                 f"({self.nick}); reconnect to use another account")
            return
        try:
            check_user_name(wanted)
        except InvalidName as exc:
            self._numeric("432", wanted[:MAX_NAME_LENGTH], f"Erroneous nickname: {exc}")
            return
        key = name_key(wanted)
        holder = self.world.nicks.get(key)
        if holder is not None and holder is not self:
            self._numeric("433", wanted, "Nickname is already in use over IRC; "
                                         "disconnect the other client or pick another account")
            return
        if self.nick is not None and self.world.nicks.get(name_key(self.nick)) is self:
            del self.world.nicks[name_key(self.nick)]
        self.world.nicks[key] = self
        self.nick = wanted
        self._maybe_register()

    def _user_command(self, params: list[str]) -> None:
        if self.state != "registering" or self.username is not None:
            self._numeric("462", "You may not reregister")
            return
        self.username = params[0]
        self._maybe_register()

    def _maybe_register(self) -> None:
        if self.state != "registering" or self.cap_negotiating:
            return
        if self.nick is None or self.username is None:
            return
        if self.password is not None:
            self.state = "authenticating"
            self.login_request = (self.nick, self.password)
            self.password = None
            return
        self.state = "identifying"
        self._welcome()
        self._from_nickserv(f"This server needs your account's password: type "
                            f"/msg {NICKSERV} IDENTIFY <password> (or reconnect with the "
                            f"password set as the server password).")

    def _identify(self, text: str) -> None:
        words = text.split(" ", 1)
        if len(words) == 2 and words[0].upper() == "IDENTIFY":
            password = words[1]
        elif len(words) == 1 and words[0].upper() != "IDENTIFY":
            password = words[0]  # the seeds' bot took the bare password
        else:
            self._from_nickserv(f"Usage: /msg {NICKSERV} IDENTIFY <password>")
            return
        if self.state != "identifying":
            self._from_nickserv("You are already identified.")
            return
        self.state = "authenticating"
        self.login_request = (self.nick or "", password)

    def login_succeeded(self) -> None:
        """The portal took the password: join the chat."""
        self.login_request = None
        if self.closing:
            return
        self.user = self.nick or ""
        try:
            self.chat.connect(self)
        except WordsError as exc:
            self._numeric("464", f"{exc}")
            self.close("login refused")
            return
        self.state = "active"
        self._in_chat = True
        if not self._welcomed:
            self._welcome()
        else:
            self._from_nickserv(f"You are now identified as {self.user}.")
        for group in self.chat.groups_of(self.user):
            self._show_join(group.name)
            self._show_scrollback(group.name)

    def login_failed(self) -> None:
        """The portal refused: one clear notice, then the connection closes."""
        self.login_request = None
        self._numeric("464", f"Password incorrect for {self.nick}, or the account may not use "
                             f"words: check the password, or ask an administrator to grant "
                             f"words:{self.nick}")
        self.close("login failed")

    def _welcome(self) -> None:
        self._welcomed = True
        world = self.world
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(world.created))
        self._numeric(RPL_WELCOME, f"Welcome to the {world.network} chat, {self._mask(self.nick or '*')}")
        self._numeric(RPL_YOURHOST, f"Your host is {world.server_name}, running "
                                    f"perspective-broker words")
        self._numeric(RPL_CREATED, f"This server was created {created}")
        self._numeric(RPL_MYINFO, world.server_name, "pb-words-1", "a", "nt")
        self._numeric(RPL_ISUPPORT, "CASEMAPPING=ascii", "CHANTYPES=#", "PREFIX=",
                      "CHANMODES=,,,nt", f"NICKLEN={MAX_NAME_LENGTH}",
                      f"CHANNELLEN={MAX_NAME_LENGTH + 1}", f"TOPICLEN={MAX_TOPIC_LENGTH}",
                      f"AWAYLEN={MAX_TOPIC_LENGTH}", f"MAXTARGETS={MAX_TARGETS}",
                      f"CHANLIMIT=#:{self.chat.max_groups_per_user}",
                      f"NETWORK={world.network}", "are supported by this server")
        self._motd([])

    # -- commands available once active -----------------------------------

    def _motd(self, params: list[str]) -> None:
        if not self.world.motd:
            self._numeric("422", "MOTD File is missing")
            return
        self._numeric("375", f"- {self.world.server_name} Message of the day -")
        for text in self.world.motd:
            self._numeric("372", f"- {text}")
        self._numeric("376", "End of /MOTD command.")

    def _ping(self, params: list[str]) -> None:
        self._send(format_line(self.world.server_name, "PONG", self.world.server_name, params[0],
                               trailing=True))

    def _pong(self, params: list[str]) -> None:
        pass

    def _quit(self, params: list[str]) -> None:
        self.close(f"Quit: {params[0][:100]}" if params else "Quit")

    def _channel(self, target: str) -> str | None:
        """The group named by ``#name``, or None after a numeric saying why."""
        if not target.startswith("#"):
            self._numeric("403", target[:MAX_NAME_LENGTH + 1], "No such channel (channels "
                                                               "start with #)")
            return None
        try:
            return check_group_name(target[1:])
        except InvalidName as exc:
            self._numeric("479", target[:MAX_NAME_LENGTH + 1], f"Illegal channel name: {exc}")
            return None

    def _join(self, params: list[str]) -> None:
        if params[0] == "0":
            for group in self.chat.groups_of(self.user):
                self.chat.leave(self, group.name, "left all channels")
            return
        for target in params[0].split(",")[:MAX_TARGETS]:
            name = self._channel(target)
            if name is None:
                continue
            try:
                group, joined = self.chat.join(self, name)
            except LimitReached as exc:
                self._numeric("405", target, f"You have joined too many channels: {exc}")
                continue
            if joined:
                self._show_scrollback(group.name)

    def _part(self, params: list[str]) -> None:
        reason = params[1] if len(params) > 1 else ""
        for target in params[0].split(",")[:MAX_TARGETS]:
            name = self._channel(target)
            if name is None:
                continue
            group = self.chat.groups.get(name_key(name))
            if group is None:
                self._numeric("403", target, "No such channel")
            elif name_key(self.user) not in group.members:
                self._numeric("442", target, "You're not on that channel")
            else:
                self.chat.leave(self, name, reason[:MAX_TOPIC_LENGTH])

    def _privmsg(self, params: list[str], kind: str = "message") -> None:
        command = "PRIVMSG" if kind == "message" else "NOTICE"
        if not params or not params[0]:
            self._numeric("411", f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            self._numeric("412", "No text to send")
            return
        text = params[1]
        for target in params[0].split(",")[:MAX_TARGETS]:
            if name_key(target) == name_key(NICKSERV):
                if kind == "message":
                    self._identify(text)
                continue
            if self.state != "active":
                self._numeric("451", f"You have not identified: /msg {NICKSERV} IDENTIFY "
                                     f"<password>")
                continue
            if target.startswith("#"):
                name = self._channel(target)
                if name is None:
                    continue
                group = self.chat.groups.get(name_key(name))
                if group is None:
                    self._numeric("403", target, "No such channel")
                elif name_key(self.user) not in group.members:
                    self._numeric("404", target, "Cannot send to channel (join it first)")
                else:
                    self.chat.send(self, name, text, kind)
            else:
                if not self.chat.is_online(target):
                    if kind == "message":
                        self._numeric("401", target[:MAX_NAME_LENGTH], "No such nick (nobody "
                                                                      "by that name is online)")
                    continue
                self.chat.send_private(self, target, text, kind)
                away = self.chat.whois(target)["away"]
                if away is not None and kind == "message":
                    self._numeric("301", target, away)

    def _notice(self, params: list[str]) -> None:
        self._privmsg(params, "notice")

    def _nickserv_command(self, params: list[str]) -> None:
        # /nickserv IDENTIFY pw and /ns IDENTIFY pw, sent as commands by some clients.
        self._identify(" ".join(params))

    def _topic(self, params: list[str]) -> None:
        name = self._channel(params[0])
        if name is None:
            return
        group = self.chat.groups.get(name_key(name))
        if group is None:
            self._numeric("403", params[0], "No such channel")
            return
        if len(params) == 1:
            self._show_topic(group.name)
            return
        if name_key(self.user) not in group.members:
            self._numeric("442", params[0], "You're not on that channel")
            return
        self.chat.set_topic(self, group.name, params[1][:MAX_TOPIC_LENGTH])

    def _names(self, params: list[str]) -> None:
        if not params:
            self._numeric("366", "*", "End of /NAMES list")
            return
        for target in params[0].split(",")[:MAX_TARGETS]:
            name = self._channel(target) if target.startswith("#") else None
            if name is not None and name_key(name) in self.chat.groups:
                self._show_names(self.chat.groups[name_key(name)].name)
            else:
                self._numeric("366", target[:MAX_NAME_LENGTH + 1], "End of /NAMES list")

    def _list(self, params: list[str]) -> None:
        self._numeric("321", "Channel", "Users  Name")
        for info in self.chat.list_groups():
            self._numeric("322", f"#{info['name']}", str(info["members"]), info["topic"])
        self._numeric("323", "End of /LIST")

    def _who(self, params: list[str]) -> None:
        mask = params[0] if params else "*"
        if mask.startswith("#"):
            group = self.chat.groups.get(name_key(mask[1:]))
            names = list(group.members.values()) if group is not None else []
            channel = f"#{group.name}" if group is not None else mask
        else:
            names = [mask] if self.chat.is_online(mask) else []
            channel = "*"
        for member in names:
            presence = self.chat.presence(member)
            flag = "H" if presence == "online" else "G"
            self._numeric("352", channel, member, self.world.server_name, self.world.server_name,
                          member, flag, f"0 {member}")
        self._numeric("315", mask[:MAX_NAME_LENGTH + 1], "End of /WHO list")

    def _whois(self, params: list[str]) -> None:
        target = params[-1].split(",")[0]
        try:
            info = self.chat.whois(target)
        except WordsError:
            info = None
        if info is None or info["presence"] == "offline":
            self._numeric("401", target[:MAX_NAME_LENGTH], "No such nick (nobody by that name "
                                                          "is online)")
        else:
            name = info["name"]
            self._numeric("311", name, name, self.world.server_name, "*", name)
            if info["groups"]:
                self._numeric("319", name, " ".join(f"#{g}" for g in info["groups"]))
            self._numeric("312", name, self.world.server_name, "perspective-broker words")
            if info["away"] is not None:
                self._numeric("301", name, info["away"])
        self._numeric("318", target[:MAX_NAME_LENGTH], "End of /WHOIS list")

    def _away(self, params: list[str]) -> None:
        if params and params[0]:
            self.chat.set_away(self, params[0][:MAX_TOPIC_LENGTH])
            self._numeric("306", "You have been marked as being away")
        else:
            self.chat.set_away(self, None)
            self._numeric("305", "You are no longer marked as being away")

    def _mode(self, params: list[str]) -> None:
        target = params[0]
        if target.startswith("#"):
            group = self.chat.groups.get(name_key(target[1:]))
            if group is None:
                self._numeric("403", target[:MAX_NAME_LENGTH + 1], "No such channel")
            elif len(params) == 1:
                self._numeric("324", f"#{group.name}", "+nt")
                self._numeric("329", f"#{group.name}", str(int(group.created)))
            elif params[1].lstrip("+") in ("b", "e", "I"):
                # Ban/exception/invite lists, asked for by clients on join: empty.
                end = {"b": ("368", "ban"), "e": ("349", "exception"), "I": ("347", "invite")}
                code, what = end[params[1].lstrip("+")]
                self._numeric(code, f"#{group.name}", f"End of channel {what} list")
            else:
                self._numeric("482", f"#{group.name}", "Channel modes cannot be changed here")
        elif name_key(target) == name_key(self.user):
            self._numeric("221", "+")
        else:
            self._numeric("502", "Can't change mode for other users")

    def _userhost(self, params: list[str]) -> None:
        replies = [f"{n}={'-' if self.chat.presence(n) == 'away' else '+'}{n}@"
                   f"{self.world.server_name}" for n in params[:5] if self.chat.is_online(n)]
        self._numeric("302", " ".join(replies))

    def _ison(self, params: list[str]) -> None:
        names = " ".join(params).split()[:32]
        self._numeric("303", " ".join(n for n in names if self.chat.is_online(n)))

    # -- showing state ----------------------------------------------------

    def _show_join(self, name: str) -> None:
        self._send(format_line(self._mask(self.user), "JOIN", f"#{name}"))
        self._show_topic(name, quiet=True)
        self._show_names(name)

    def _show_topic(self, name: str, quiet: bool = False) -> None:
        group = self.chat.group(name)
        if group.topic:
            self._numeric("332", f"#{group.name}", group.topic)
            self._numeric("333", f"#{group.name}", group.topic_by or self.world.server_name,
                          str(int(group.topic_at)))
        elif not quiet:
            self._numeric("331", f"#{group.name}", "No topic is set")

    def _show_names(self, name: str) -> None:
        group = self.chat.group(name)
        channel = f"#{group.name}"
        head = len(format_line(self.world.server_name, "353", self.nick or "*", "=", channel,
                               "x y")) - 3
        batch: list[str] = []
        size = head
        for member in group.members.values():
            if batch and size + len(member.encode()) + 1 > MAX_LINE:
                self._numeric("353", "=", channel, " ".join(batch))
                batch, size = [], head
            batch.append(member)
            size += len(member.encode()) + 1
        if batch:
            self._numeric("353", "=", channel, " ".join(batch))
        self._numeric("366", channel, "End of /NAMES list")

    def _show_scrollback(self, name: str) -> None:
        group = self.chat.group(name)
        if not group.scrollback:
            return
        for line in group.scrollback:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(line.at))
            for out in text_lines(self.world.server_name, "NOTICE", f"#{group.name}",
                                  f"[{stamp}Z] <{line.sender}> {line.text}"):
                self._send(out)
        for out in text_lines(self.world.server_name, "NOTICE", f"#{group.name}",
                              f"-- end of the last {len(group.scrollback)} messages --"):
            self._send(out)

    # -- the chat's events ------------------------------------------------

    def deliver(self, event: Event) -> None:
        if self.closing:
            return
        kind = type(event)
        world = self.world
        # Wake the adapter only when output starts to wait: it writes
        # everything waiting at once, so more events before then ride along.
        idle = not self._out
        if kind is Message:
            self._out += world.message_lines(event)
        elif kind is PrivateMessage:
            command = "PRIVMSG" if event.kind == "message" else "NOTICE"
            self._out.extend(text_lines(self._mask(event.sender), command, self.user,
                                        event.text))
        elif kind is Joined:
            if name_key(event.user) == name_key(self.user):
                self._show_join(event.group)
            else:
                self._out.extend(world.lines_for(event, lambda: [
                    format_line(self._mask(event.user), "JOIN", f"#{event.group}")]))
        elif kind is Left:
            self._out.extend(world.lines_for(event, lambda: [
                format_line(self._mask(event.user), "PART", f"#{event.group}", event.reason,
                            trailing=True)]))
        elif kind is TopicChanged:
            self._out.extend(world.lines_for(event, lambda: text_lines(
                self._mask(event.by), "TOPIC", f"#{event.group}", event.topic)))
        elif kind is PresenceChanged:
            return  # IRC shows presence on request (WHO, WHOIS), not as events
        if idle and self.wakeup is not None:
            self.wakeup()


@dataclass(frozen=True, slots=True)
class _Handler:
    func: Callable[[IRCConnection, list[str]], None]
    min_params: int
    state: str  # "any" or "active"


_HANDLERS: dict[str, _Handler] = {
    "CAP": _Handler(IRCConnection._cap, 1, "any"),
    "PASS": _Handler(IRCConnection._pass, 1, "any"),
    "NICK": _Handler(IRCConnection._nick, 1, "any"),
    "USER": _Handler(IRCConnection._user_command, 4, "any"),
    "PING": _Handler(IRCConnection._ping, 1, "any"),
    "PONG": _Handler(IRCConnection._pong, 0, "any"),
    "QUIT": _Handler(IRCConnection._quit, 0, "any"),
    "PRIVMSG": _Handler(IRCConnection._privmsg, 0, "identified"),
    "NICKSERV": _Handler(IRCConnection._nickserv_command, 1, "identified"),
    "NS": _Handler(IRCConnection._nickserv_command, 1, "identified"),
    "NOTICE": _Handler(IRCConnection._notice, 0, "active"),
    "MOTD": _Handler(IRCConnection._motd, 0, "active"),
    "JOIN": _Handler(IRCConnection._join, 1, "active"),
    "PART": _Handler(IRCConnection._part, 1, "active"),
    "TOPIC": _Handler(IRCConnection._topic, 1, "active"),
    "NAMES": _Handler(IRCConnection._names, 0, "active"),
    "LIST": _Handler(IRCConnection._list, 0, "active"),
    "WHO": _Handler(IRCConnection._who, 0, "active"),
    "WHOIS": _Handler(IRCConnection._whois, 1, "active"),
    "AWAY": _Handler(IRCConnection._away, 0, "active"),
    "MODE": _Handler(IRCConnection._mode, 1, "active"),
    "USERHOST": _Handler(IRCConnection._userhost, 1, "active"),
    "ISON": _Handler(IRCConnection._ison, 1, "active"),
}

