"""Maildir and Maildir++ storage, durable before anything is acknowledged.

A delivery (:meth:`Maildir.deliver`) writes the message to ``tmp/`` under a
unique name, fsyncs the file, renames it into ``new/`` and fsyncs ``new/``:
only when this returns may the SMTP side answer 250.  A crash at any point
leaves either nothing visible or the whole message in ``new/``; a partial
file can only be in ``tmp/``, which readers never look at and
:meth:`Maildir.clean_tmp` empties at start.

Names follow the Maildir spec (``TIME.M<usec>P<pid>Q<n>R<random>.HOST``)
with Courier's ``,S=<bytes on disk>`` and ``,W=<bytes with CRLF line ends>``
so that POP3 can answer ``LIST`` without opening files.  Messages are kept
with LF line ends, as every Maildir reader expects; the SMTP and POP3 sides
convert.  Folders are Maildir++: ``.Name`` directories beside ``cur/``, each
a Maildir with a ``maildirfolder`` marker; deleting through a folder-aware
protocol (the PB face) moves to ``.Trash``.

Everything here blocks (it is disk I/O); the asyncio side runs it in worker
threads.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Maildir", "MessageInfo", "MaildirError", "INBOX", "TRASH", "check_folder_name"]

INBOX = "INBOX"
TRASH = "Trash"

#: tmp/ files older than this are garbage even if their writer may live (the spec's 36 hours).
STALE_TMP_SECONDS = 36 * 3600

_counter = itertools.count(1)
_counter_lock = threading.Lock()
_FOLDER = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\- ]{0,63}\Z")
# A name this module wrote: time, then M<usec>P<pid>Q<n>R<hex>, then the host.
_OWN_NAME = re.compile(r"\d+\.M\d+P(?P<pid>\d+)Q\d+R[0-9a-f]+\.(?P<host>[^,:]+)")
_SIZE_FIELDS = re.compile(r",([SW])=(\d+)")


class MaildirError(Exception):
    """A Maildir operation failed: the message names the path and the problem."""


def _host() -> str:
    # The spec: '/' and ':' in the host name are written as octal escapes.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


# Looked up once, not per message: gethostname and getrandom are system
# calls that release the GIL, so each was a hand-off between the delivery
# thread and the event loop's (strace of bench_mail's ``pb`` row: one uname
# and one getrandom per message).  The pid is still read per name
# (os.getpid keeps the GIL) so that a forked child names its own files.
_HOST = _host()
# R<random> only has to make a name unique together with time, pid and
# counter, not secret: random's generator, seeded from the OS (again in a
# forked child), does that without a system call per message.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def unique_name(size: int, wire_size: int) -> str:
    """A new Maildir base name (unique across hosts, processes and calls)."""
    now = time.time()
    with _counter_lock:
        n = next(_counter)
        salt = _random.getrandbits(64)
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    return (f"{seconds}.M{usec}P{os.getpid()}Q{n}R{salt:016x}.{_HOST}"
            f",S={size},W={wire_size}")


def check_folder_name(name: str) -> str:
    """A Maildir++ folder name: INBOX, or 1-64 letters, digits, ``_``, ``-``
    and inner spaces (no dots: this store does not nest folders)."""
    if name == INBOX:
        return name
    if not isinstance(name, str) or not _FOLDER.match(name):
        raise MaildirError(f"bad folder name {str(name)[:40]!r}: use 1-64 letters, digits, '_', '-' or spaces")
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """fsync of one directory, shared by the deliveries waiting on it.

    Bench row ``pb`` of bench/bench_mail.py (10 concurrent senders): the
    directory fsync is one of a delivery's two disk flushes, and concurrent
    deliveries into one Maildir each paid it in turn.  Here a caller that
    finds a flush already running waits for the *next* one (the running one
    may have started before its rename), and that next flush is done once
    for every rename made before it began.  Each caller still returns only
    after a flush that started after its own rename completed: its entry is
    durable, exactly as with a flush of its own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0   # renames registered so far (tickets handed out)
        self._durable = 0     # every ticket <= this is covered by a finished flush
        self._running = False
        self.flushes = 0

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._durable < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                covers = self._requested  # every rename registered before this flush starts
                self._cond.release()
                try:
                    _fsync_dir(self.path)
                    flushed = True
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                if flushed:
                    self.flushes += 1
                    self._durable = max(self._durable, covers)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of a folder: ``key`` is its base name (stable, the POP3
    UIDL), ``subdir`` ``new`` or ``cur``, ``flags`` the Maildir info flags."""

    key: str
    subdir: str
    filename: str
    size: int        # bytes on disk (LF line ends)
    wire_size: int   # bytes with CRLF line ends (POP3 LIST)
    flags: str
    mtime: float


class Maildir:
    """The Maildir at *path* (created with mode 0700 when ``create``)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._new_sync = GroupSync(self.path / "new")
        self._create_lock = threading.Lock()
        if create:
            self.create()

    def create(self) -> None:
        # Under a lock: a delivery that finds the directories made by another
        # thread must not return before that thread has fsync'd them.
        with self._create_lock:
            made = not self.path.exists()
            for sub in ("tmp", "new", "cur"):
                try:
                    (self.path / sub).mkdir(mode=0o700, parents=True)
                    made = True
                except FileExistsError:
                    pass
            if made and self.fsync:
                # A first delivery's fsync of new/ does not make new/ itself (nor
                # the Maildir) durable: their entries live in the parents.
                _fsync_dir(self.path)
                _fsync_dir(self.path.parent)

    def exists(self) -> bool:
        return all((self.path / sub).is_dir() for sub in ("tmp", "new", "cur"))

    # -- folders ---------------------------------------------------------------

    def folder(self, name: str, *, create: bool = True) -> Maildir:
        """The Maildir++ folder *name* (INBOX is this Maildir itself)."""
        check_folder_name(name)
        if name == INBOX:
            return self
        sub = Maildir(self.path / f".{name}", create=create, fsync=self.fsync)
        if create:
            marker = sub.path / "maildirfolder"
            if not marker.exists():
                marker.touch(mode=0o600)
        elif not sub.exists():
            raise MaildirError(f"no folder {name!r} in {self.path}")
        return sub

    def folders(self) -> list[str]:
        """INBOX and every Maildir++ folder, sorted after INBOX."""
        names = []
        try:
            with os.scandir(self.path) as scan:
                entries = list(scan)
        except FileNotFoundError:
            return [INBOX]
        for entry in entries:
            if entry.name.startswith(".") and entry.is_dir() and _FOLDER.match(entry.name[1:]):
                names.append(entry.name[1:])
        return [INBOX, *sorted(names)]

    # -- delivery --------------------------------------------------------------

    def deliver(self, content: bytes) -> str:
        """Store *content* (LF line ends) durably in ``new/``; return its key.

        The order is the durability argument: write and fsync the file in
        ``tmp/``, rename into ``new/``, fsync ``new/``.  On any error the
        tmp file is removed and :class:`MaildirError` says what failed.
        """
        wire = len(content) + content.count(b"\n") - content.count(b"\r\n")
        key = unique_name(len(content), wire)
        tmp = self.path / "tmp" / key
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise MaildirError(f"cannot create {tmp}: {exc.strerror}") from exc
        try:
            try:
                view = memoryview(content)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path / "new" / key)
            if self.fsync:
                self._new_sync.sync()
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise MaildirError(f"cannot store a message in {self.path}: {exc.strerror or exc}") from exc
        return key

    def clean_tmp(self, *, max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove what no writer will finish in ``tmp/``: files older than
        *max_age*, and files this module named for this host whose writing
        process is gone (a crash).  Returns how many were removed."""
        removed = 0
        host = _host()
        now = time.time()
        try:
            with os.scandir(self.path / "tmp") as scan:
                entries = list(scan)
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                stale = now - entry.stat().st_mtime > max_age
                match = _OWN_NAME.match(entry.name)
                if not stale and match and match["host"] == host:
                    stale = not _pid_alive(int(match["pid"]))
                if stale:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- reading ---------------------------------------------------------------

    def messages(self) -> list[MessageInfo]:
        """Every message in ``new/`` and ``cur/``, oldest first (by name,
        which starts with the delivery time)."""
        found = []
        for subdir in ("new", "cur"):
            try:
                with os.scandir(self.path / subdir) as scan:
                    entries = list(scan)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                found.append(self._info(subdir, entry))
        found = [info for info in found if info is not None]
        found.sort(key=lambda info: _order_of(info.key))
        return found

    def _info(self, subdir: str, entry: os.DirEntry) -> MessageInfo | None:
        key, _, info = entry.name.partition(":")
        flags = info[2:] if info.startswith("2,") else ""
        sizes = dict(_SIZE_FIELDS.findall(key))
        try:
            st = entry.stat()
        except FileNotFoundError:
            return None  # deleted meanwhile
        size = int(sizes["S"]) if "S" in sizes else st.st_size
        if "W" in sizes:
            wire = int(sizes["W"])
        else:  # delivered by someone else: count the line ends once
            try:
                data = Path(entry.path).read_bytes()
            except FileNotFoundError:
                return None
            wire = len(data) + data.count(b"\n") - data.count(b"\r\n")
        return MessageInfo(key, subdir, entry.name, size, wire, flags, st.st_mtime)

    def find(self, key: str) -> MessageInfo:
        """The message *key*; MaildirError if it is gone."""
        if "/" in key or key.startswith(".") or not key:
            raise MaildirError(f"bad message key {key[:40]!r}")
        for subdir in ("new", "cur"):
            directory = self.path / subdir
            plain = directory / key
            if plain.exists():
                return self._info(subdir, _Entry(plain))  # type: ignore[return-value]
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.startswith(key + ":"):
                            info = self._info(subdir, entry)
                            if info is not None:
                                return info
            except FileNotFoundError:
                continue
        raise MaildirError(f"no message {key!r} in {self.path} (deleted or moved?)")

    def file_of(self, info: MessageInfo) -> Path:
        return self.path / info.subdir / info.filename

    def read(self, info: MessageInfo) -> bytes:
        try:
            return self.file_of(info).read_bytes()
        except FileNotFoundError:
            raise MaildirError(f"message {info.key!r} is gone from {self.path}") from None

    def iter_chunks(self, info: MessageInfo, size: int = 64 * 1024) -> Iterator[bytes]:
        try:
            with open(self.file_of(info), "rb") as handle:
                while chunk := handle.read(size):
                    yield chunk
        except FileNotFoundError:
            raise MaildirError(f"message {info.key!r} is gone from {self.path}") from None

    # -- changes ---------------------------------------------------------------

    def remove(self, info: MessageInfo) -> None:
        """Delete for good (POP3's DELE at QUIT); a message already gone is fine."""
        try:
            os.unlink(self.file_of(info))
        except FileNotFoundError:
            pass

    def mark_seen(self, info: MessageInfo) -> None:
        """Move to ``cur/`` with the S flag (what a reader does after reading)."""
        flags = "".join(sorted(set(info.flags) | {"S"}))
        target = self.path / "cur" / f"{info.key}:2,{flags}"
        try:
            os.rename(self.file_of(info), target)
        except FileNotFoundError:
            pass

    def move_to(self, info: MessageInfo, other: Maildir) -> str:
        """Move the message into *other* (a folder of the same Maildir), keeping
        its key and flags; durable on return."""
        flags = info.flags
        target = other.path / "cur" / (f"{info.key}:2,{flags}")
        try:
            os.rename(self.file_of(info), target)
        except FileNotFoundError:
            raise MaildirError(f"message {info.key!r} is gone from {self.path}") from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise MaildirError(f"{other.path} is on another file system than {self.path}") from exc
            raise
        if self.fsync:
            _fsync_dir(other.path / "cur")
            _fsync_dir(self.path / info.subdir)
        return info.key


class _Entry:
    """Enough of os.DirEntry for :meth:`Maildir._info` on a known path."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.name = path.name

    def stat(self) -> os.stat_result:
        return os.stat(self.path)


_ORDER = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)")


def _order_of(key: str) -> tuple[int, int, int, str]:
    """Delivery order: seconds, then microseconds and counter (numerically)."""
    match = _ORDER.match(key)
    if match:
        return int(match[1]), int(match[2]), int(match[3]), key
    head = key.split(".", 1)[0]
    # isascii: "²".isdigit() is True but int("²") fails (found by the maildir fuzz harness).
    return (int(head) if head.isascii() and head.isdigit() else 0), 0, 0, key


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
