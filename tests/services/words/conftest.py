"""Fixtures for the words tests: a running service, raw IRC clients, PB minds."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import broker
import cred
from services import Application, plugin_parser
from services.words import WordsService
from services.words import plugin as words_plugin

PASSWORD = "correct horse"


@contextlib.asynccontextmanager
async def running_words(data_dir: Path, *argv: str,
                        users: tuple[str, ...] = ("alice", "bob", "carol")) -> AsyncIterator[WordsService]:
    args = ["--pb-port", "0", "--irc-port", "0", *argv]
    for user in users:
        args += ["--user", f"{user}:{PASSWORD}"]
    options = plugin_parser(words_plugin).parse_args(args)
    application = Application("test", data_dir=data_dir)
    service = words_plugin.build(options, application)
    # Failed logins in these tests should not wait out the real back-off.
    service.portal.throttle = cred.Throttle(base_delay=0)
    application.add(service)
    await application.start()
    try:
        yield service
    finally:
        await application.stop(grace=5)


@pytest.fixture
async def words(tmp_path) -> AsyncIterator[WordsService]:
    async with running_words(tmp_path / "data") as service:
        yield service


class RawIRC:
    """An IRC client written line by line, to see exactly what the server says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[str] = []

    @classmethod
    async def connect(cls, port: int, nick: str | None = None, password: str | None = PASSWORD,
                      **kwargs: Any) -> RawIRC:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
        client = cls(reader, writer)
        if nick is not None:
            if password is not None:
                client.send(f"PASS :{password}")
            client.send(f"NICK {nick}")
            client.send(f"USER {nick} 0 * :{nick} tester")
            if password is not None:
                await client.expect(r" 376 | 422 ")
        return client

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        self.writer.write(data)

    async def expect(self, pattern: str, timeout: float = 5.0) -> str:
        """The next line matching *pattern* (lines before it are kept in ``seen``)."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise AssertionError(f"connection closed before {pattern!r}; "
                                         f"saw {self.seen[-20:]}")
                assert raw.endswith(b"\r\n"), raw
                assert len(raw) <= 512, raw
                line = raw[:-2].decode("utf-8", "replace")
                assert "\r" not in line and "\n" not in line and "\x00" not in line
                self.seen.append(line)
                if re.search(pattern, line):
                    return line

    async def closed(self, timeout: float = 5.0) -> None:
        """Read until the server closes the connection."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    return
                self.seen.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Mind(broker.Referenceable):
    """A PB mind that records every callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.changed = asyncio.Event()

    def _note(self, *event: Any) -> None:
        self.events.append(event)
        self.changed.set()

    def remote_message(self, group, sender, text, at, kind):
        self._note("message", group, sender, text, kind)

    def remote_private(self, sender, text, at, kind):
        self._note("private", sender, text, kind)

    def remote_joined(self, group, user):
        self._note("joined", group, user)

    def remote_left(self, group, user, reason):
        self._note("left", group, user, reason)

    def remote_topic(self, group, topic, by, at):
        self._note("topic", group, topic, by)

    def remote_presence(self, user, presence, away):
        self._note("presence", user, presence, away)

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


async def pb_login(service: WordsService, user: str, mind: Any = None,
                   password: str = PASSWORD) -> Any:
    return await broker.login("127.0.0.1", service.pb_port, user, password, service="words",
                              mind=mind)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
