"""Persistence: the chat's groups, memberships, topics and scrollback in SQLite.

The file is ``<data_dir>/words.sqlite3``, beside the account store
(``accounts.sqlite3``), which checks its own ``application_id`` and so
cannot hold other tables cleanly.  Created with mode 0600, like it.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    groups(key PRIMARY KEY, name, created, topic, topic_by, topic_at)
    members(group_key → groups, user, PRIMARY KEY (group_key, user))
    lines(id INTEGER PRIMARY KEY, group_key → groups, sender, text, at, kind)

Writes never run on the event loop: :meth:`WordsStore.record` (a
``Chat`` listener) queues the change, and one writer thread applies the
queue in order, a batch per transaction (the changes of up to
``batch_delay`` seconds, 50 ms by default).  :meth:`close` drains the
queue first, so a clean stop loses nothing; a crash of the process loses
at most the changes of the last batch.  The scrollback table is trimmed to
the configured length per group once per batch; with a scrollback of 0 no
line is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ._core import Chat, Line, name_key

__all__ = ["WordsStore", "SCHEMA_VERSION", "APPLICATION_ID", "FILE_NAME"]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x50427764  # "PBwd"
FILE_NAME = "words.sqlite3"

_SCHEMA = """
CREATE TABLE groups (
    key      TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    created  REAL NOT NULL,
    topic    TEXT NOT NULL DEFAULT '',
    topic_by TEXT NOT NULL DEFAULT '',
    topic_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE members (
    group_key TEXT NOT NULL REFERENCES groups(key) ON DELETE CASCADE,
    user      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (group_key, user)
);
CREATE TABLE lines (
    id        INTEGER PRIMARY KEY,
    group_key TEXT NOT NULL REFERENCES groups(key) ON DELETE CASCADE,
    sender    TEXT NOT NULL,
    text      TEXT NOT NULL,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL
);
CREATE INDEX lines_by_group ON lines (group_key, id);
"""

_INSERT_LINE = "INSERT INTO lines (group_key, sender, text, at, kind) VALUES (?, ?, ?, ?, ?)"

_STOP = object()
_log = logging.getLogger("pb.words.store")


class StoreError(Exception):
    pass


class WordsStore:
    """The words database at *path*; :meth:`load` fills a :class:`Chat`,
    :meth:`attach` makes it record the chat's changes from then on."""

    def __init__(self, path: str | os.PathLike[str], *, scrollback: int = 100,
                 batch_delay: float = 0.05) -> None:
        self.path = Path(path)
        self.scrollback = scrollback
        #: seconds the writer waits after a change for more to come
        self.batch_delay = batch_delay
        self._conn: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._seq = 0
        # Changes made on the event loop wait here and go to the writer in
        # one hand-over per batch_delay: waking the writer thread for every
        # message let it take the GIL in the middle of a fan-out, between
        # two members' socket writes (bench_words rows pb and irc, p99).
        self._pending: list[tuple[str, tuple]] = []
        self._pending_lock = threading.Lock()
        self._hand_over_handle: asyncio.TimerHandle | None = None
        #: the first error the writer met (the service logs it; later
        #: writes are still attempted)
        self.error: BaseException | None = None

    # -- opening --------------------------------------------------------------

    def open(self) -> None:
        """Open (creating with mode 0600 if missing) and check the schema.
        Blocking: call it from a worker thread."""
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        except OSError as exc:
            raise StoreError(f"cannot create the words database {path}: "
                             f"{exc.strerror or exc}") from None
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, timeout=10.0,
                               check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            app_id, version, tables = conn.execute(
                "SELECT (SELECT application_id FROM pragma_application_id),"
                " (SELECT user_version FROM pragma_user_version),"
                " (SELECT count(*) FROM sqlite_master)").fetchone()
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
                raise StoreError(f"{path} is an SQLite file but not a words database; "
                                 f"move it away or point data_dir elsewhere")
            if version > SCHEMA_VERSION:
                raise StoreError(f"words database {path} has schema version {version}, newer "
                                 f"than this perspective-broker understands: upgrade it")
            if version == 0:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use the words database {path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def load(self, chat: Chat) -> int:
        """Put every stored group into *chat*; returns how many.  Blocking."""
        conn = self._require()
        groups = conn.execute(
            "SELECT key, name, created, topic, topic_by, topic_at FROM groups").fetchall()
        for key, name, created, topic, topic_by, topic_at in groups:
            members = [row[0] for row in conn.execute(
                "SELECT user FROM members WHERE group_key = ? ORDER BY seq", (key,))]
            lines = [Line(*row) for row in reversed(conn.execute(
                "SELECT sender, text, at, kind FROM lines WHERE group_key = ? "
                "ORDER BY id DESC LIMIT ?", (key, chat.scrollback)).fetchall())]
            chat.restore_group(name, created, topic, topic_by, topic_at, members, lines)
        row = conn.execute("SELECT max(seq) FROM members").fetchone()
        self._seq = (row[0] or 0) if row else 0
        return len(groups)

    # -- recording ------------------------------------------------------------

    def attach(self, chat: Chat) -> None:
        """Record *chat*'s changes from now on (starts the writer thread)."""
        self._require()
        self._thread = threading.Thread(target=self._write_loop, name="words-store",
                                        daemon=True)
        self._thread.start()
        chat.listeners.append(self.record)

    def record(self, what: str, args: tuple) -> None:
        """A Chat listener: queue the change for the writer (never blocks)."""
        if what == "presence":
            return  # presence is not state that survives a restart
        if what == "join":
            self._seq += 1
            args = (*args, self._seq)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop (tools, tests)
            self._queue.put((what, args))
            return
        with self._pending_lock:
            self._pending.append((what, args))
        if self._hand_over_handle is None and self.batch_delay:
            self._hand_over_handle = loop.call_later(self.batch_delay, self._hand_over)
        elif not self.batch_delay:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the writer what waits on the loop's side, in one item."""
        self._hand_over_handle = None
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if pending:
            self._queue.put(("batch", pending))

    def flush(self) -> None:
        """Wait until everything queued so far is written.  Blocking."""
        self._hand_over()
        done = threading.Event()
        self._queue.put(("flush", (done,)))
        done.wait()

    def close(self) -> None:
        """Write what is queued, stop the writer, close.  Blocking."""
        handle = self._hand_over_handle
        if handle is not None:
            handle.cancel()
        self._hand_over()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the words database is not open")
        return self._conn

    def _write_loop(self) -> None:
        conn = self._require()
        while True:
            batch = [self._queue.get()]
            if (batch[0] is not _STOP and batch[0][0] != "batch" and self.batch_delay
                    and self._queue.qsize() < 1000):
                # Gather what follows for a moment: one transaction (and one
                # GIL hand-over with the event loop) per burst of chat, not
                # per message.
                time.sleep(self.batch_delay)
            # Take whatever else is waiting: one transaction per burst.
            while len(batch) < 5000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            waiters = []
            changes: list[tuple[str, tuple]] = []
            for item in batch:
                if item is _STOP:
                    stop = True
                elif item[0] == "flush":
                    waiters.append(item[1][0])
                elif item[0] == "batch":
                    changes += item[1]
                else:
                    changes.append(item)
            try:
                conn.execute("BEGIN")
                self._apply_all(conn, changes)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if self.error is None:
                    self.error = exc
                _log.error("chat changes could not be saved to %s: %s", self.path, exc)
            for waiter in waiters:
                waiter.set()
            if stop:
                return

    def _apply_all(self, conn: sqlite3.Connection, changes: list[tuple[str, tuple]]) -> None:
        """Apply *changes* in order, in the caller's transaction.  Runs of
        messages go in with one ``executemany``, and each group's scrollback
        is trimmed once at the end rather than once per message: the writer
        holds the GIL (which the event loop wants for the next fan-out) for a
        few statements per batch instead of two per message."""
        lines: list[tuple[str, str, str, float, str]] = []
        touched: set[str] = set()
        for what, args in changes:
            if what == "message":
                if self.scrollback:
                    group, sender, text, at, kind = args
                    key = name_key(group)
                    lines.append((key, sender, text, at, kind))
                    touched.add(key)
                continue
            if lines:  # before a change that could remove their group
                conn.executemany(_INSERT_LINE, lines)
                lines = []
            self._apply(conn, what, args)
        if lines:
            conn.executemany(_INSERT_LINE, lines)
        # Keep the last N of each group: ids only grow, so every line older
        # than the N-th newest goes.
        for key in touched:
            conn.execute(
                "DELETE FROM lines WHERE group_key = ? AND id < (SELECT min(id) FROM "
                "(SELECT id FROM lines WHERE group_key = ? ORDER BY id DESC LIMIT ?))",
                (key, key, self.scrollback))

    def _apply(self, conn: sqlite3.Connection, what: str, args: tuple) -> None:
        if what == "group":
            name, created = args
            conn.execute("INSERT OR IGNORE INTO groups (key, name, created) VALUES (?, ?, ?)",
                         (name_key(name), name, created))
        elif what == "join":
            group, user, seq = args
            conn.execute("INSERT OR REPLACE INTO members (group_key, user, seq) VALUES (?, ?, ?)",
                         (name_key(group), user, seq))
        elif what == "leave":
            group, user = args
            conn.execute("DELETE FROM members WHERE group_key = ? AND user = ?",
                         (name_key(group), user))
        elif what == "remove_group":
            # members and lines go with it (ON DELETE CASCADE)
            conn.execute("DELETE FROM groups WHERE key = ?", (name_key(args[0]),))
        elif what == "topic":
            group, topic, by, at = args
            conn.execute("UPDATE groups SET topic = ?, topic_by = ?, topic_at = ? WHERE key = ?",
                         (topic, by, at, name_key(group)))
