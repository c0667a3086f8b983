"""Durability under kill -9, beyond mail (tests/services/mail/test_crash.py):
the account store, the words store and the relay queue.

A child process writes through the real store in a loop, saying ``try N``
before a write and ``ack N`` once the store has returned (what a server
acknowledges to its client at that point).  The parent kills it with
SIGKILL at random moments and starts it again, then checks that every
acknowledged write is there exactly once, that nothing is there that was
never tried, and that the files are consistent (``PRAGMA integrity_check``,
no half-written queue file).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)

#: Kills per test, and the most time they may take (each test stays under ~20 s).
KILLS = 4
MAX_SECONDS = 15.0


class _Writer:
    """One child writing; its ``try``/``ack`` lines are collected as they come."""

    def __init__(self, code: str, path: Path, start: int, tried: set[int], acked: set[int]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(start)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.last = start - 1
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(tried, acked), daemon=True)
        self._reader.start()

    def _read(self, tried: set[int], acked: set[int]) -> None:
        for line in self.proc.stdout:
            word, _, number = line.strip().partition(" ")
            if word != "ready" and not number.isdigit():
                continue  # a line cut short by the kill
            if word == "ready":
                self.ready.set()
            elif word == "try":
                tried.add(int(number))
                self.last = int(number)
            elif word == "ack":
                acked.add(int(number))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _run_with_kills(code: str, path: Path, *, seed: int) -> tuple[set[int], set[int], int]:
    tried: set[int] = set()
    acked: set[int] = set()
    rng = random.Random(seed)
    kills = 0
    start = 0
    deadline = time.monotonic() + MAX_SECONDS
    while kills < KILLS and time.monotonic() < deadline:
        writer = _Writer(code, path, start, tried, acked)
        ready = writer.ready.wait(15)
        if ready:
            time.sleep(rng.uniform(0.05, 0.6))
        if writer.proc.poll() is not None:
            error = writer.proc.stderr.read()
            writer.kill()
            raise AssertionError(f"the writer died by itself: {error}")
        writer.kill()
        assert ready, "the writer never got ready"
        kills += 1
        start = writer.last + 1
    return tried, acked, kills


def _integrity(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


# -- the account store: pb user add's writes -----------------------------------------

ACCOUNTS_CHILD = """
import sys
from cred import scram
from cred.store import AccountStore
path, n = sys.argv[1], int(sys.argv[2])
store = AccountStore(path, create=True, iterations=scram.MIN_ITERATIONS)
store.add_service("echo") if "echo" not in store.services() else None
print("ready", flush=True)
while True:
    print("try", n, flush=True)
    store.add_user(f"user{n}", f"pw-{n}", keyring=[("echo", None)])
    if n % 3 == 0:
        store.set_password(f"user{n}", f"new-{n}")
    print("ack", n, flush=True)
    n += 1
"""


def test_account_store_keeps_every_acknowledged_user_through_sigkill(tmp_path):
    from cred import scram
    from cred.store import AccountStore

    path = tmp_path / "accounts.sqlite"
    tried, acked, kills = _run_with_kills(ACCOUNTS_CHILD, path, seed=20)
    assert kills >= 3 and len(acked) >= 10, (kills, len(acked))
    _integrity(path)
    with AccountStore(path) as store:
        users = store.users()
        assert len(users) == len(set(users))
        stored = {int(name[4:]) for name in users}
        assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:10]}"
        assert stored <= tried, f"never tried but stored: {sorted(stored - tried)[:10]}"
        for n in sorted(acked):
            verifier = store.verifier(f"user{n}")
            password = f"new-{n}" if n % 3 == 0 else f"pw-{n}"
            assert isinstance(verifier, scram.ScramVerifier)
            assert verifier.check_password(password), f"user{n}'s password is damaged"
            assert store.keyring(f"user{n}") == {("echo", f"user{n}")}
    print(f"accounts: kills={kills} acked={len(acked)} stored={len(stored)}")


# -- the words store: rooms and messages ----------------------------------------------

WORDS_CHILD = """
import sys
from services.words._core import Chat
from services.words._store import WordsStore
path, n = sys.argv[1], int(sys.argv[2])
store = WordsStore(path, scrollback=100000, batch_delay=0.005)
store.open()
chat = Chat(scrollback=100000, max_groups=1000, max_groups_per_user=1000)
store.load(chat)
store.attach(chat)

class Session:
    user = "alice"
    def deliver(self, event):
        pass

session = Session()
chat.connect(session)
print("ready", flush=True)
while True:
    print("try", n, flush=True)
    room = f"room{n % 7}"
    chat.join(session, room)  # a member already: nothing changes
    chat.send(session, room, f"message {n}")
    if n % 5 == 0:
        chat.set_topic(session, room, f"topic {n}")
    store.flush()
    print("ack", n, flush=True)
    n += 1
"""


def test_words_store_keeps_every_acknowledged_message_once_through_sigkill(tmp_path):
    path = tmp_path / "words.sqlite"
    tried, acked, kills = _run_with_kills(WORDS_CHILD, path, seed=21)
    assert kills >= 3 and len(acked) >= 10, (kills, len(acked))
    _integrity(path)
    conn = sqlite3.connect(path)
    try:
        texts = [row[0] for row in conn.execute("SELECT text FROM lines WHERE kind = 'message'")]
        rooms = {row[0] for row in conn.execute("SELECT name FROM groups")}
    finally:
        conn.close()
    numbers = [int(text.split()[1]) for text in texts]
    twice = sorted(n for n in set(numbers) if numbers.count(n) > 1)
    assert not twice, f"stored twice: {twice[:10]}"
    stored = set(numbers)
    assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:10]}"
    assert stored <= tried
    assert {f"room{n % 7}" for n in acked} <= rooms
    # And the store loads again into a chat with each room's lines in order.
    from services.words._core import Chat
    from services.words._store import WordsStore
    store = WordsStore(path, scrollback=100000)
    store.open()
    chat = Chat(scrollback=100000, max_groups=1000, max_groups_per_user=1000)
    store.load(chat)
    store.close()
    for group in chat.groups.values():
        order = [int(line.text.split()[1]) for line in group.scrollback if line.kind == "message"]
        assert order == sorted(order), f"{group.name}'s lines came back out of order"
    print(f"words: kills={kills} acked={len(acked)} stored={len(stored)}")


# -- the relay queue: enqueue and remove ------------------------------------------------

QUEUE_CHILD = """
import hashlib, sys
from services.mail._queue import RelayQueue
path, n = sys.argv[1], int(sys.argv[2])
queue = RelayQueue(path)
print("ready", flush=True)
while True:
    body = (f"Subject: {n}\\n\\n" + f"line of message {n}\\n" * (50 + n % 200)).encode()
    digest = hashlib.sha256(body).hexdigest()
    print("try", n, flush=True)
    qid = queue.enqueue("a@example.org", [f"to{n}@example.net"], body + f"END {digest}\\n".encode())
    print("ack", n, flush=True)
    if n % 4 == 3:
        # Delivered: the runner's remove, acknowledged by "removed".
        queue.remove(qid)
        print("removed", n, flush=True)
    n += 1
"""


def test_relay_queue_keeps_every_acknowledged_message_whole_through_sigkill(tmp_path):
    from services.mail._queue import RelayQueue

    path = tmp_path / "queue"
    tried, acked, kills = _run_with_kills(QUEUE_CHILD, path, seed=22)
    assert kills >= 3 and len(acked) >= 10, (kills, len(acked))
    queue = RelayQueue(path)  # a restart: it cleans tmp/
    assert list((path / "tmp").iterdir()) == []
    counts: dict[int, int] = {}
    for qid in queue.ids():
        message, content = queue.load(qid)
        body, _, end = content.rstrip(b"\n").rpartition(b"\n")
        assert end == b"END " + hashlib.sha256(body + b"\n").hexdigest().encode(), f"{qid} is damaged"
        n = int(message.recipients[0][2:].split("@")[0])
        counts[n] = counts.get(n, 0) + 1
    assert not [n for n, c in counts.items() if c > 1], "a message is queued twice"
    # Removed ones (n % 4 == 3) may still be there only if the kill came
    # between the ack and the removal; every other acknowledged one must be.
    kept = {n for n in acked if n % 4 != 3}
    assert kept <= set(counts), f"acknowledged but lost: {sorted(kept - set(counts))[:10]}"
    assert set(counts) <= tried
    print(f"queue: kills={kills} acked={len(acked)} queued={len(counts)}")
    json.dumps(sorted(counts))  # (the ids are plain numbers: nothing else slipped in)
    assert os.access(path / "queue", os.W_OK)
