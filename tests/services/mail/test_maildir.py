"""Maildir storage: durable delivery, names, stale tmp, folders."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from services.mail import Maildir, MaildirError
from services.mail._maildir import INBOX, TRASH

pytestmark = pytest.mark.timeout(30)


def test_delivery_goes_through_tmp_with_fsync_then_rename_then_dir_fsync(tmp_path, monkeypatch):
    box = Maildir(tmp_path / "box")
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 2)[-2])
        real_fsync(fd)

    def rename(a, b) -> None:
        calls.append("rename")
        real_rename(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    key = box.deliver(b"Subject: x\n\nbody\n")
    assert calls == ["fsync:tmp", "rename", "fsync:box"]
    assert (tmp_path / "box" / "new" / key).read_bytes() == b"Subject: x\n\nbody\n"
    assert list((tmp_path / "box" / "tmp").iterdir()) == []


def test_names_are_unique_and_carry_both_sizes(tmp_path):
    box = Maildir(tmp_path / "box", fsync=False)
    keys = {box.deliver(b"a\nb\n") for _ in range(200)}
    assert len(keys) == 200
    info = box.messages()[0]
    assert (info.size, info.wire_size) == (4, 6)
    assert {m.key for m in box.messages()} == keys


def test_messages_come_back_in_delivery_order(tmp_path):
    box = Maildir(tmp_path / "box", fsync=False)
    keys = [box.deliver(f"n {i}\n".encode()) for i in range(50)]
    assert [m.key for m in box.messages()] == keys


def test_a_failed_write_leaves_no_tmp_file_and_says_where(tmp_path, monkeypatch):
    box = Maildir(tmp_path / "box")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(MaildirError, match="No space left"):
        box.deliver(b"x\n")
    assert list((tmp_path / "box" / "tmp").iterdir()) == []
    assert list((tmp_path / "box" / "new").iterdir()) == []


def test_stale_tmp_files_are_cleaned_but_a_live_writers_are_kept(tmp_path):
    box = Maildir(tmp_path / "box")
    tmp = tmp_path / "box" / "tmp"
    old = tmp / "123.foreign.host"
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 40 * 3600,) * 2)
    fresh_foreign = tmp / "456.foreign.otherhost"
    fresh_foreign.write_bytes(b"being written elsewhere")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = os.uname().nodename
    crashed = tmp / f"{int(time.time())}.M1P{dead}Q1Rabcdef.{host},S=1,W=1"
    crashed.write_bytes(b"half")
    mine = tmp / f"{int(time.time())}.M1P{os.getpid()}Q1Rabcdef.{host},S=1,W=1"
    mine.write_bytes(b"in progress")
    assert box.clean_tmp() == 2
    assert sorted(p.name for p in tmp.iterdir()) == sorted([fresh_foreign.name, mine.name])


def test_folders_trash_moves_and_seen_flags(tmp_path):
    box = Maildir(tmp_path / "box", fsync=False)
    key = box.deliver(b"Subject: a\n\nx\n")
    info = box.find(key)
    assert info.subdir == "new"
    box.mark_seen(info)
    info = box.find(key)
    assert (info.subdir, info.flags) == ("cur", "S")
    trash = box.folder(TRASH)
    assert (tmp_path / "box" / ".Trash" / "maildirfolder").exists()
    box.move_to(info, trash)
    assert box.messages() == []
    assert trash.find(key).flags == "S"
    assert box.folders() == [INBOX, TRASH]
    for bad in ("../x", ".hidden", "a/b", "", "x" * 65, "a.b"):
        with pytest.raises(MaildirError):
            box.folder(bad)
    with pytest.raises(MaildirError):
        box.find("../../etc/passwd")


def test_messages_delivered_by_others_are_read_too(tmp_path):
    box = Maildir(tmp_path / "box")
    (tmp_path / "box" / "cur" / "1.foreign.host:2,RS").write_bytes(b"a\r\nb\n")
    (info,) = box.messages()
    assert (info.key, info.flags, info.size, info.wire_size) == ("1.foreign.host", "RS", 5, 6)


def test_group_sync_each_caller_returns_after_a_flush_that_began_after_it_asked(tmp_path, monkeypatch):
    import threading
    import time

    from services.mail import _maildir

    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    flush_numbers = iter(range(1000))

    def slow_fsync(path):
        with lock:
            n = next(flush_numbers)
            events.append(("start", n))
        time.sleep(0.3)
        with lock:
            events.append(("end", n))

    monkeypatch.setattr(_maildir, "_fsync_dir", slow_fsync)
    group = _maildir.GroupSync(tmp_path)
    callers = 8
    barrier = threading.Barrier(callers)

    def caller(i: int) -> None:
        barrier.wait()
        with lock:
            events.append(("enter", i))
        group.sync()
        with lock:
            events.append(("return", i))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for i in range(callers):
        entered = events.index(("enter", i))
        returned = events.index(("return", i))
        covering = [n for kind, n in events[entered:returned] if kind == "start"
                    and ("end", n) in events[entered:returned]]
        assert covering, f"caller {i} returned without a flush begun after it asked: {events}"
    # Eight callers, far fewer flushes: the point of sharing them.
    assert group.flushes < callers


def test_group_sync_error_reaches_the_caller_and_the_next_one_flushes_again(tmp_path, monkeypatch):
    from services.mail import _maildir

    calls = []

    def failing(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(_maildir, "_fsync_dir", failing)
    group = _maildir.GroupSync(tmp_path)
    with pytest.raises(OSError):
        group.sync()
    group.sync()
    assert len(calls) == 2 and group.flushes == 1


@pytest.mark.parametrize("name", ["²", "²³.x", "١٢.y", "12.host", "x"])
def test_a_foreign_name_with_unicode_digits_is_listed_not_a_crash(tmp_path, name):
    # Found by the maildir fuzz harness: "²".isdigit() is True, int("²") fails.
    box = Maildir(tmp_path / "box")
    (tmp_path / "box" / "new" / name).write_bytes(b"Subject: x\n\nbody\n")
    (found,) = box.messages()
    assert found.key == name and box.read(found) == b"Subject: x\n\nbody\n"


def test_a_first_delivery_that_lost_the_race_to_make_the_maildir_retries(tmp_path):
    from services.mail._server import MailService

    path = tmp_path / "fresh"

    class Raced(Maildir):
        """Fails its first delivery for want of tmp/, and another delivery
        makes the Maildir just after: what concurrent first deliveries do."""

        failed = False

        def deliver(self, content: bytes) -> str:
            if not self.failed:
                self.failed = True
                try:
                    return super().deliver(content)
                finally:
                    Maildir(path)  # the other thread's create()
            return super().deliver(content)

    box = Raced(path, create=False)
    key = MailService._store(box, b"Subject: raced\n\nbody\n")
    assert [info.key for info in box.messages()] == [key]


def test_concurrent_first_deliveries_to_a_new_maildir_all_succeed(tmp_path):
    import threading

    from services.mail._server import MailService

    box = Maildir(tmp_path / "new", create=False)
    start = threading.Barrier(16)
    results: list[object] = []

    def deliver(n: int) -> None:
        start.wait()
        try:
            results.append(MailService._store(box, b"Subject: %d\n\nbody\n" % n))
        except Exception as exc:  # collected: the assertion below names it
            results.append(exc)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(result, str) for result in results), results
    assert len(box.messages()) == 16


def test_a_forked_child_does_not_repeat_its_parents_names():
    from services.mail._maildir import unique_name

    def random_part(name: str) -> str:
        return name.split("R", 1)[1].split(".", 1)[0]

    unique_name(1, 1)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next name, then out at once
        os.write(writer, unique_name(1, 1).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 4096).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    parent = unique_name(1, 1)
    # Same counter value in both, so the random part is what keeps them apart
    # (with the pid); the generator is reseeded in the child.
    assert random_part(child) != random_part(parent)
    assert f"P{pid}Q" in child and f"P{os.getpid()}Q" in parent
