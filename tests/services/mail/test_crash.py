"""1,000 messages sent while the server is killed with SIGKILL at random
points and restarted: every message answered 250 is in the Maildir exactly
once, no message is there twice, and none is half-written."""

from __future__ import annotations

import hashlib
import random
import signal
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

from ._proc import MailChild, domain_args

pytestmark = pytest.mark.timeout(90)

TOTAL = 1000
SENDERS = 4
PASSWORD = "crash-pw-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _message(n: int) -> bytes:
    lines = [f"line {i:03d} of message {n:04d} " + "x" * 40 for i in range(60)]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    body = "\r\n".join(lines)
    return (f"From: crash@remote.test\r\nSubject: crash {n}\r\nX-Number: {n}\r\n\r\n"
            f"{body}\r\nEND {n} {digest}\r\n").encode()


def _check(stored: bytes) -> int:
    """The message number of a stored message; AssertionError if it is not whole."""
    head, _, body = stored.partition(b"\n\n")
    number = int(head.split(b"X-Number: ")[1].split(b"\n")[0])
    lines = body.decode().split("\n")
    assert lines[-1] == "", f"message {number} does not end in a line end"
    end = lines[-2].split()
    digest = hashlib.sha256("\n".join(lines[:-2]).encode()).hexdigest()
    assert end == ["END", str(number), digest], f"message {number} is damaged"
    return number


def test_acknowledged_mail_survives_sigkill_exactly_once(tmp_path: Path):
    smtp_port, pop3_port = _free_port(), _free_port()
    args = [*domain_args(tmp_path / "mail", "alice@example.com", password=PASSWORD),
            "--smtp-port", str(smtp_port), "--pop3-port", str(pop3_port)]
    children = [MailChild(tmp_path, *args).ready()]
    acked: set[int] = set()
    uncertain: set[int] = set()
    numbers = iter(range(TOTAL))
    lock = threading.Lock()
    done = threading.Event()
    kills = 0

    failures: list[BaseException] = []
    refusals: list[str] = []

    def drop(client: smtplib.SMTP | None) -> None:
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def send_all() -> None:
        client: smtplib.SMTP | None = None
        with lock:
            n = next(numbers, None)
        while n is not None:
            in_data = False
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=10)
                    client.ehlo("crash.test")
                for command, argument in (("mail", "crash@remote.test"), ("rcpt", "alice@example.com")):
                    code, text = getattr(client, command)(argument)
                    if code != 250:
                        # Refused before DATA (a server just starting, say): nothing of this
                        # message was stored.  Start a fresh connection and send it again.
                        raise smtplib.SMTPResponseException(code, text)
                in_data = True
                code, _ = client.data(_message(n))
                with lock:
                    (acked if code == 250 else uncertain).add(n)
            except (OSError, smtplib.SMTPException) as exc:
                drop(client)
                client = None
                if not in_data:
                    if isinstance(exc, smtplib.SMTPResponseException):
                        with lock:
                            refusals.append(f"{exc.smtp_code} {exc.smtp_error!r}")
                    time.sleep(0.02)
                    continue  # nothing of this message reached the server: send it again
                with lock:
                    uncertain.add(n)  # perhaps stored, never acknowledged: not sent again
            with lock:
                n = next(numbers, None)
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                drop(client)

    def sender() -> None:
        # A sender that dies takes the message it held with it, and the
        # accounting below would come up one short without saying why.
        try:
            send_all()
        except BaseException as exc:
            with lock:
                failures.append(exc)
            raise

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    rng = random.Random(1234)
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(rng.uniform(0.05, 0.5))
            if not any(t.is_alive() for t in threads):
                break
            children[-1].signal(signal.SIGKILL)
            children[-1].proc.wait()
            kills += 1
            children.append(MailChild(tmp_path, *args).ready())
        for thread in threads:
            thread.join(timeout=30)
        # One more start: it cleans the tmp files the kills left behind.
        children[-1].signal(signal.SIGKILL)
        children[-1].proc.wait()
        children.append(MailChild(tmp_path, *args).ready())
    finally:
        done.set()
        for child in children:
            child.close()

    box = tmp_path / "mail" / "example.com" / "alice"
    counts: dict[int, int] = {}
    for sub in ("new", "cur"):
        for path in (box / sub).iterdir():
            number = _check(path.read_bytes())
            counts[number] = counts.get(number, 0) + 1
    assert not failures, f"a sender thread died: {failures[0]!r}"
    assert not any(t.is_alive() for t in threads), "a sender thread is stuck"
    assert kills >= 3, f"only {kills} kills happened; the test proves little"
    assert len(refusals) < 50, f"many MAIL/RCPT refusals: {refusals[:5]}"
    assert len(acked) + len(uncertain) == TOTAL, (len(acked), len(uncertain))
    assert len(acked) >= TOTAL - 20 * kills
    missing = sorted(n for n in acked if counts.get(n) != 1)
    assert not missing, f"acknowledged but not stored exactly once: {missing[:20]}"
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not twice, f"stored more than once: {twice[:20]}"
    assert set(counts) <= acked | uncertain
    assert list((box / "tmp").iterdir()) == [], "stale tmp files survived a restart"
    print(f"kills={kills} acked={len(acked)} uncertain={len(uncertain)} stored={len(counts)} "
          f"refused-before-data={len(refusals)} {refusals[:3]}")
