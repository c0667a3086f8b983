"""The relay queue: mail for other domains, on disk until the smarthost takes it.

Each queued message is one file, written like a Maildir delivery (``tmp/``,
fsync, rename into ``queue/``, fsync the directory) before the SMTP client
gets its 250.  The file starts with one JSON line, the envelope::

    {"from": "a@x", "to": ["b@y", ...], "queued": 1733000000.0}

followed by the message (LF line ends).  Retry state (attempts, next try,
recipients still pending) lives beside it in ``state/<id>.json``, replaced
atomically; losing it only makes a retry come early.

:class:`RelayQueue` is the disk side (blocking); :class:`QueueRunner` is
the asyncio loop that hands messages to the smarthost with :mod:`smtplib`
in a worker thread, backs off exponentially after a temporary failure, and
after ``give_up`` seconds (or at once on a permanent 5xx) sends the sender a
bounce (a DSN, RFC 3464) and drops the message.  A message the smarthost
accepted is removed; a crash between its 250 and that removal sends it
twice, never zero times.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import os
import secrets
import smtplib
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cred.log import get_logger

from ._maildir import _fsync_dir

__all__ = ["QueueFull", "QueuedMessage", "QueueRunner", "RelayQueue", "make_bounce"]

log = get_logger("pb.mail.queue")

MAX_ENVELOPE_LINE = 1 << 20
#: Default bound on the queue's size on disk (--queue-max-bytes).
DEFAULT_QUEUE_MAX_BYTES = 1 << 30


class QueueFull(Exception):
    """The relay queue is at its size limit: try again later (SMTP 452 4.3.1)."""


@dataclass
class QueuedMessage:
    id: str
    sender: str
    recipients: list[str]
    queued: float
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    failed: dict[str, str] = field(default_factory=dict)  # recipient -> permanent error


class RelayQueue:
    """The queue directory *path* (``tmp/``, ``queue/``, ``state/``).

    ``max_bytes`` bounds the bytes of queued messages: a smarthost that is
    down for days must not let relayed mail fill the disk the Maildirs live
    on.  :meth:`has_room` is asked before a message is accepted (the SMTP
    side answers 452 4.3.1 when there is none); :meth:`enqueue` checks again.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True,
                 max_bytes: int = DEFAULT_QUEUE_MAX_BYTES) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        for sub in ("tmp", "queue", "state"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in (self.path / "tmp").iterdir():
            stale.unlink(missing_ok=True)  # half-written by a process that died: never acknowledged
        self._sizes: dict[str, int] = {}
        for entry in os.scandir(self.path / "queue"):
            if not entry.name.startswith("."):
                self._sizes[entry.name] = entry.stat().st_size
        self.bytes = sum(self._sizes.values())

    def has_room(self, size: int = 0) -> bool:
        """Whether a message of *size* bytes still fits under ``max_bytes``."""
        return self.bytes + size <= self.max_bytes

    def enqueue(self, sender: str, recipients: list[str], content: bytes) -> str:
        """Store durably; return the queue id.  :class:`QueueFull` if it
        does not fit under ``max_bytes``."""
        qid = f"{int(time.time())}.{secrets.token_hex(8)}"
        head = json.dumps({"from": sender, "to": recipients, "queued": time.time()}).encode() + b"\n"
        size = len(head) + len(content)
        with self._lock:
            if not self.has_room(size):
                raise QueueFull(f"the relay queue holds {self.bytes} bytes; "
                                f"{size} more would pass its limit of {self.max_bytes}")
            self.bytes += size  # reserved now, so concurrent enqueues cannot overshoot together
            self._sizes[qid] = size
        tmp = self.path / "tmp" / qid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, head)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path / "queue" / qid)
            if self.fsync:
                _fsync_dir(self.path / "queue")
        except BaseException:
            tmp.unlink(missing_ok=True)
            self._forget(qid)
            raise
        return qid

    def _forget(self, qid: str) -> None:
        with self._lock:
            self.bytes -= self._sizes.pop(qid, 0)

    def ids(self) -> list[str]:
        return sorted(p.name for p in (self.path / "queue").iterdir() if not p.name.startswith("."))

    def load(self, qid: str) -> tuple[QueuedMessage, bytes]:
        with open(self.path / "queue" / qid, "rb") as handle:
            head = handle.readline(MAX_ENVELOPE_LINE)
            content = handle.read()
        envelope = json.loads(head)
        message = QueuedMessage(qid, envelope["from"], list(envelope["to"]), float(envelope["queued"]))
        try:
            state = json.loads((self.path / "state" / f"{qid}.json").read_bytes())
            message.attempts = int(state["attempts"])
            message.next_try = float(state["next_try"])
            message.last_error = str(state.get("last_error", ""))
            message.recipients = [r for r in state.get("pending", message.recipients)]
            message.failed = dict(state.get("failed", {}))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        return message, content

    def save_state(self, message: QueuedMessage) -> None:
        tmp = self.path / "state" / f".{message.id}.tmp"
        tmp.write_text(json.dumps({
            "attempts": message.attempts, "next_try": message.next_try,
            "last_error": message.last_error, "pending": message.recipients,
            "failed": message.failed,
        }))
        os.replace(tmp, self.path / "state" / f"{message.id}.json")

    def remove(self, qid: str) -> None:
        (self.path / "queue" / qid).unlink(missing_ok=True)
        if self.fsync:
            _fsync_dir(self.path / "queue")
        (self.path / "state" / f"{qid}.json").unlink(missing_ok=True)
        self._forget(qid)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_bounce(message: QueuedMessage, content: bytes, *, hostname: str,
                reasons: dict[str, str]) -> bytes:
    """A delivery status notification (RFC 3464) for the failed recipients,
    with the original headers attached; LF line ends."""
    boundary = f"=_pb_{secrets.token_hex(8)}"
    headers = content.split(b"\n\n", 1)[0]
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{message.sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: <{secrets.token_hex(12)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to these recipients:",
        "",
        *(f"  <{rcpt}>: {reason}" for rcpt, reason in reasons.items()),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        "",
    ]
    for rcpt, reason in reasons.items():
        lines += [f"Final-Recipient: rfc822; {rcpt}", "Action: failed",
                  f"Status: {'5.0.0' if reason[:1] == '5' else '4.4.7'}",
                  f"Diagnostic-Code: smtp; {reason.replace(chr(10), ' ')[:300]}", ""]
    lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    text = "\n".join(lines).encode("utf-8") + b"\n" + headers + b"\n\n" + f"--{boundary}--\n".encode()
    return text


class QueueRunner:
    """Delivers the queue to the smarthost ``(host, port)``.

    ``retry_base``/``retry_max`` shape the back-off (base · 2^attempts, capped);
    ``give_up`` is how long a message may wait in all.  ``bounce`` stores a
    DSN for the sender (the service decides: a local mailbox or the queue).
    ``tls``: an SSL context; then STARTTLS is required before anything is
    sent (the smarthost's certificate is checked against its host name).
    ``login``: ``(user, password)`` for AUTH, only ever sent over TLS or to
    a loopback smarthost.
    """

    def __init__(self, queue: RelayQueue, smarthost: tuple[str, int], *,
                 bounce: Callable[[str, bytes], Awaitable[None]], hostname: str,
                 retry_base: float = 60.0, retry_max: float = 3600.0,
                 give_up: float = 5 * 86400.0, timeout: float = 60.0,
                 tls: ssl.SSLContext | None = None, login: tuple[str, str] | None = None) -> None:
        if login is not None and tls is None and not _is_loopback(smarthost[0]):
            raise ValueError("a smarthost login is only sent over TLS (or to a loopback smarthost)")
        self.tls = tls
        self.login = login
        self.queue = queue
        self.smarthost = smarthost
        self.bounce = bounce
        self.hostname = hostname
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.give_up = give_up
        self.timeout = timeout
        self.delivered = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was queued: look at the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            self._wake.clear()
            next_due = await self.run_once()
            delay = max(0.05, next_due - time.time()) if next_due is not None else 3600.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def run_once(self) -> float | None:
        """One pass over the queue; returns when the next retry is due."""
        next_due: float | None = None
        for qid in await asyncio.to_thread(self.queue.ids):
            try:
                message, content = await asyncio.to_thread(self.queue.load, qid)
            except (FileNotFoundError, ValueError, KeyError) as exc:
                log.error("queued message unreadable; left for a human", id=qid, error=repr(exc),
                          directory=str(self.queue.path / "queue"))
                continue
            now = time.time()
            if message.next_try > now:
                next_due = message.next_try if next_due is None else min(next_due, message.next_try)
                continue
            await self._attempt(message, content)
            if message.recipients:
                next_due = message.next_try if next_due is None else min(next_due, message.next_try)
        return next_due

    async def _attempt(self, message: QueuedMessage, content: bytes) -> None:
        try:
            refused = await asyncio.to_thread(self._send, message, content)
            temporary = {r: e for r, e in refused.items() if not e.startswith("5")}
            for rcpt, error in refused.items():
                if error.startswith("5"):
                    message.failed[rcpt] = error
            message.recipients = [r for r in message.recipients if r in temporary]
            message.last_error = "; ".join(temporary.values())
        except smtplib.SMTPAuthenticationError as exc:
            # Our login is wrong: the operator's to fix, not the sender's fault. Keep the mail.
            message.last_error = f"smarthost refused our login ({exc.smtp_code}): check --smarthost-user"
            log.error("relay: the smarthost refused our login",
                      smarthost=f"{self.smarthost[0]}:{self.smarthost[1]}", error=str(exc.smtp_error))
        except smtplib.SMTPResponseException as exc:
            error = f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
            if 500 <= exc.smtp_code < 600:
                for rcpt in message.recipients:
                    message.failed[rcpt] = error
                message.recipients = []
            message.last_error = error
        except smtplib.SMTPRecipientsRefused as exc:
            for rcpt, (code, text) in exc.recipients.items():
                reason = f"{code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}"
                if 500 <= code < 600:
                    message.failed[rcpt] = reason
            message.recipients = [r for r in message.recipients if r not in message.failed]
            message.last_error = "recipients refused"
        except (OSError, smtplib.SMTPException) as exc:
            message.last_error = f"smarthost {self.smarthost[0]}:{self.smarthost[1]} unreachable: {exc!r}"
        message.attempts += 1
        if message.recipients and time.time() - message.queued > self.give_up:
            for rcpt in message.recipients:
                message.failed[rcpt] = f"4.4.7 gave up after {message.attempts} attempts: {message.last_error}"
            message.recipients = []
        if message.failed and message.sender:
            # Bounce first: if that fails, the message (and its failures) stay queued.
            await self.bounce(message.sender, make_bounce(message, content, hostname=self.hostname,
                                                          reasons=message.failed))
        if message.failed:
            log.warning("relay failed for good", id=message.id, failed=",".join(sorted(message.failed)))
            message.failed = {}
        if not message.recipients:
            await asyncio.to_thread(self.queue.remove, message.id)
            self.delivered += 1
            return
        delay = min(self.retry_max, self.retry_base * (2 ** min(message.attempts - 1, 30)))
        message.next_try = time.time() + delay
        log.info("relay deferred", id=message.id, attempt=message.attempts,
                 retry_in=f"{delay:.0f}s", error=message.last_error)
        await asyncio.to_thread(self.queue.save_state, message)

    def _send(self, message: QueuedMessage, content: bytes) -> dict[str, str]:
        host, port = self.smarthost
        with smtplib.SMTP(host, port, local_hostname=self.hostname, timeout=self.timeout) as client:
            client.ehlo()
            if self.tls is not None:
                if not client.has_extn("starttls"):
                    # Temporary: the smarthost may be misconfigured for a while; never send in clear.
                    raise smtplib.SMTPResponseException(
                        454, "smarthost offers no STARTTLS; not sending in clear")
                client.starttls(context=self.tls)
                client.ehlo()
            if self.login is not None:
                client.login(*self.login)
            # smtplib dot-stuffs and sends CRLF; the stored message has LF line ends.
            data = content.replace(b"\n", b"\r\n")
            options = ["SMTPUTF8"] if not message.sender.isascii() or not all(
                r.isascii() for r in message.recipients) else []
            if client.has_extn("size"):
                options.append(f"SIZE={len(data)}")
            refused = client.sendmail(message.sender, message.recipients, data, mail_options=options)
        return {rcpt: f"{code} {text.decode('utf-8', 'replace')}" for rcpt, (code, text) in refused.items()}
