"""Fixtures for the mail tests: a running mail service on ephemeral ports,
with two virtual domains and three mailboxes, in this process."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cred
from services import Application, plugin_parser
from services.mail import MailService, plugin

PASSWORD = "s3cret-pw"
USERS = ["alice@example.com", "bob@example.com", "carol@example.org"]


@dataclass
class MailEnv:
    service: MailService
    application: Application
    root: Path

    @property
    def smtp(self) -> int:
        return self.service.smtp_port

    @property
    def pop3(self) -> int:
        return self.service.pop3_port

    def maildir(self, mailbox: str) -> Path:
        local, domain = mailbox.split("@")
        return self.root / domain / local

    def stored(self, mailbox: str) -> list[bytes]:
        box = self.maildir(mailbox)
        return [p.read_bytes() for sub in ("new", "cur") if (box / sub).is_dir()
                for p in sorted((box / sub).iterdir())]


def make_portal(data_dir: Path) -> cred.Portal:
    store = cred.AccountStore(data_dir / "accounts.sqlite3", create=True,
                              iterations=cred.scram.MIN_ITERATIONS)
    return cred.Portal(cred.ServiceRealm(), [cred.StoreChecker(store)],
                       throttle=cred.Throttle(base_delay=0))


async def start_mail(tmp_path: Path, *extra: str, throttle: Any = None, **overrides: Any) -> MailEnv:
    root = tmp_path / "mail"
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    application = Application("test", data_dir=data)
    portal = make_portal(data)
    if throttle is not None:
        portal.throttle = throttle
    application.use_portal(lambda: portal)
    argv = ["--domain", f"example.com={root / 'example.com'}",
            "--domain", f"example.org={root / 'example.org'}",
            "--smtp-port", "0", "--pop3-port", "0", "--hostname", "mx.test",
            *[a for u in USERS for a in ("--user", f"{u}:{PASSWORD}")], *extra]
    options = plugin_parser(plugin).parse_args(argv)
    service = plugin.build(options, application)
    if "give_up_override" in overrides:  # --give-up's minimum is 1 s; tests want it exact
        base, cap, _ = service.retry
        service.retry = (base, cap, overrides.pop("give_up_override"))
    for key, value in overrides.items():
        setattr(service, key, value)
    application.add(service)
    await application.start()
    return MailEnv(service, application, root)


@pytest.fixture
async def mail(tmp_path: Path):
    env = await start_mail(tmp_path, "--allow-plain-auth")
    try:
        yield env
    finally:
        await env.application.stop(grace=2)


def send(port: int, sender: str, recipients: list[str], body: bytes | str, **login: str) -> dict:
    """Send one message with smtplib (blocking; run it in a thread)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        if login:
            client.login(login["user"], login["password"])
        return client.sendmail(sender, recipients, body)


def message(subject: str = "hello", body: str = "Hi there.\r\n", sender: str = "x@remote.test") -> bytes:
    return (f"From: {sender}\r\nTo: someone\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@remote.test>\r\n\r\n{body}").encode()


async def in_thread(func, *args, **kwargs):
    return await asyncio.to_thread(func, *args, **kwargs)
