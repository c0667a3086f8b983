import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cred import AccountStore, Portal, ScramClient, Service, ServiceRealm, StoreChecker, Throttle

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret pass"


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def pb(workdir, *args, stdin="", env=None):
    """Run ``pb user ...`` as a real subprocess in ``workdir``."""
    environment = {k: v for k, v in os.environ.items() if k != "PB_DATA_DIR"}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clients._cli", "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=workdir,
        env=environment,
        timeout=30,
    )


def test_add_creates_the_database_under_pb_data_with_mode_0600(workdir):
    result = pb(workdir, "add", "alice", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    db = workdir / "pb-data" / "accounts.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    with AccountStore(db) as store:
        assert store.users() == ["alice"]
        assert store.verifier("alice").check_password(PASSWORD)
    assert PASSWORD.encode() not in db.read_bytes()


def test_pb_data_dir_environment_variable_and_db_option_choose_the_file(workdir):
    assert pb(workdir, "add-service", "pbecho", env={"PB_DATA_DIR": str(workdir / "d")}).returncode == 0
    assert (workdir / "d" / "accounts.sqlite3").exists()
    assert pb(workdir, "add-service", "words", "--db", str(workdir / "x.db")).returncode == 0
    assert pb(workdir, "services", "--db", str(workdir / "x.db")).stdout == "words\n"


def test_the_whole_life_of_an_account(workdir):
    assert pb(workdir, "add-service", "pbecho").returncode == 0
    assert pb(workdir, "add-service", "words").returncode == 0
    added = pb(workdir, "add", "alice", "--service", "pbecho", "-s", "words:moderator", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "pbecho:alice" in added.stdout
    assert pb(workdir, "add", "bob", stdin="pw\n").returncode == 0
    assert pb(workdir, "grant", "bob", "pbecho").returncode == 0
    assert pb(workdir, "list").stdout == "alice\tpbecho:alice words:moderator\nbob\tpbecho:bob\n"
    assert pb(workdir, "revoke", "alice", "words:moderator").returncode == 0
    assert pb(workdir, "passwd", "bob", "--iterations", "5000", stdin="new password\n").returncode == 0
    assert pb(workdir, "remove", "alice").returncode == 0
    assert pb(workdir, "list").stdout == "bob\tpbecho:bob\n"
    assert pb(workdir, "services").stdout == "pbecho\nwords\n"
    with AccountStore(workdir / "pb-data" / "accounts.sqlite3") as store:
        verifier = store.verifier("bob")
        assert verifier.iterations == 5000 and verifier.check_password("new password")


async def test_an_account_made_with_pb_user_can_log_in_over_scram(workdir):
    assert pb(workdir, "add-service", "pbecho").returncode == 0
    assert pb(workdir, "add", "alice", "-s", "pbecho", stdin=PASSWORD + "\r\n").returncode == 0
    echo = Service("pbecho")
    echo.perspectives["alice"] = "alice's perspective"
    with AccountStore(workdir / "pb-data" / "accounts.sqlite3") as store:
        portal = Portal(ServiceRealm(echo), [StoreChecker(store)], throttle=Throttle(base_delay=0))
        client = ScramClient("alice", PASSWORD)
        challenge = await portal.begin_scram(client.first())
        result = await challenge.finish(await client.final_async(challenge.server_first), service="pbecho")
        client.verify(result.server_final)
    assert result.avatar == "alice's perspective"


@pytest.mark.parametrize(
    "args",
    [["list"], ["services"], ["passwd", "alice"], ["remove", "alice"], ["grant", "alice", "pbecho"],
     ["revoke", "alice", "pbecho"], ["remove-service", "pbecho"]],
)
def test_a_missing_database_is_reported_with_the_fix(workdir, args):
    result = pb(workdir, *args, stdin="pw\n")
    assert result.returncode == 1
    assert "no account database at pb-data/accounts.sqlite3" in result.stderr
    assert "pb user add" in result.stderr and "--db" in result.stderr
    assert not (workdir / "pb-data").exists()


def test_duplicate_unknown_and_empty_are_reported_with_the_fix(workdir):
    assert pb(workdir, "add", "alice", stdin="pw\n").returncode == 0
    duplicate = pb(workdir, "add", "alice", stdin="pw\n")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr and "pb user passwd" in duplicate.stderr
    unknown_user = pb(workdir, "grant", "bob", "pbecho")
    assert unknown_user.returncode == 1 and "no user named 'bob'" in unknown_user.stderr
    unknown_service = pb(workdir, "grant", "alice", "pbecho")
    assert unknown_service.returncode == 1
    assert "no service named 'pbecho'" in unknown_service.stderr
    assert "pb user add-service pbecho" in unknown_service.stderr
    also_unknown = pb(workdir, "add", "carol", "-s", "mail", stdin="pw\n")
    assert also_unknown.returncode == 1 and "pb user add-service mail" in also_unknown.stderr
    empty = pb(workdir, "add", "dave", stdin="\n")
    assert empty.returncode == 2 and "empty password" in empty.stderr
    no_input = pb(workdir, "passwd", "alice", stdin="")
    assert no_input.returncode == 2 and "empty password" in no_input.stderr
    not_granted = pb(workdir, "revoke", "alice", "x:y")
    assert not_granted.returncode == 1 and "does not hold x:y" in not_granted.stderr
    with AccountStore(workdir / "pb-data" / "accounts.sqlite3") as store:
        assert store.users() == ["alice"]


def test_a_missing_database_with_a_service_is_not_created_by_a_failed_add(workdir):
    result = pb(workdir, "add", "alice", "-s", "pbecho", stdin="pw\n")
    assert result.returncode == 1 and "pb user add-service pbecho" in result.stderr
    assert not (workdir / "pb-data").exists()


def test_bad_names_and_options_are_usage_errors(workdir):
    assert pb(workdir, "add", "with space", stdin="pw\n").returncode == 2
    assert pb(workdir, "add-service", "a:b").returncode == 2
    assert pb(workdir, "add", "alice", "--iterations", "10", stdin="pw\n").returncode == 2
    assert pb(workdir, "add", "alice", "-s", "svc:", stdin="pw\n").returncode == 2
    assert not (workdir / "pb-data").exists()


def test_passwords_are_never_taken_from_the_command_line(workdir):
    result = pb(workdir, "add", "alice", PASSWORD, stdin="")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    assert not (workdir / "pb-data").exists()


def test_only_the_first_line_of_standard_input_is_the_password(workdir):
    assert pb(workdir, "add", "alice", stdin="first line\nsecond line\n").returncode == 0
    with AccountStore(workdir / "pb-data" / "accounts.sqlite3") as store:
        assert store.verifier("alice").check_password("first line")


class TTY:
    def isatty(self):
        return True


def test_an_interactive_prompt_asks_twice_and_refuses_a_mismatch(monkeypatch):
    from clients._cli import user

    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr(user.sys, "stdin", TTY())
    monkeypatch.setattr(user.getpass, "getpass", lambda prompt="": next(answers))
    with pytest.raises(user._InputError, match="do not match"):
        user._read_password()
    assert user._read_password() == "same"


def test_pb_help_lists_the_user_command(workdir):
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "clients._cli", "--help"],
        capture_output=True, text=True, cwd=workdir, env=environment, timeout=30,
    )
    assert "user" in out.stdout


# -- garbage, oversize and truncated input ---------------------------------------------
#
# The matrices run ``pb``'s main() in this process (a subprocess costs half a
# second); standard input is a real text layer over bytes, and a non-UTF-8
# argument is what Python's own argv decoding makes of it.  One real
# subprocess per kind of input checks the decoding at the edges.


def pb_main(monkeypatch, capsys, db, *args, stdin=b"", errors="strict"):
    from clients._cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8",
                                                       errors=errors))
    args = [os.fsdecode(a) if isinstance(a, bytes) else a for a in args]
    try:
        code = main(["user", *args, "--db", str(db)])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def pb_raw(workdir, *args, stdin=b"", env=None):
    """``pb user ...`` as a subprocess, with bytes in and out."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PB_DATA_DIR", "PYTHONIOENCODING")}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "clients._cli", "user", *args],
        input=stdin, capture_output=True, cwd=workdir, env=environment, timeout=30,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


@pytest.fixture
def accounts(tmp_path):
    db = tmp_path / "pb-data" / "accounts.sqlite3"
    with AccountStore(db, create=True) as store:
        store.add_service("pbecho")
        store.add_user("alice", "pw", keyring=[("pbecho", None)])
    return db


BAD_NAMES = [b"", b"x" * 300, b"a\x01b", b"a\x1b[31mred", b"tab\there", b"a\xffb", b"\xc3"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_usage_errors_for_every_action(monkeypatch, capsys, accounts, name):
    before = accounts.read_bytes()
    for args in (
        ["add", name], ["passwd", name], ["remove", name], ["grant", name, "pbecho"],
        ["revoke", name, "pbecho"], ["grant", "alice", name], ["revoke", "alice", name],
        ["add-service", name], ["remove-service", name], ["add", "bob", "-s", name],
    ):
        code, out, err = pb_main(monkeypatch, capsys, accounts, *args, stdin=b"pw\n")
        assert code == 2, (args, err)
        assert err.startswith("pb user: ") or "usage:" in err, err
        assert "name" in err or "SERVICE" in err, err
        assert out == ""
    assert accounts.read_bytes() == before


def test_a_non_utf8_name_on_a_real_command_line(accounts):
    result = pb_raw(accounts.parent, "remove", b"al\xffice", "--db", str(accounts))
    assert result.returncode == 2
    assert result.stderr == b"pb user: user name 'al\\udcffice' contains whitespace or control characters\n"


@pytest.mark.parametrize("stdin, errors", [
    (b"\xff\xfe garbage\n", "strict"),            # a UTF-8 locale
    (b"\xff\xfe garbage\n", "surrogateescape"),   # the C.UTF-8 locale's way
    (b"pass\x00word\n", "strict"),                 # SASLprep prohibits it
    (b"\xc3", "strict"),                           # a truncated character
], ids=["strict", "surrogateescape", "nul", "truncated-utf8"])
def test_a_password_that_is_not_usable_text_is_a_usage_error(monkeypatch, capsys, accounts,
                                                             stdin, errors):
    before = accounts.read_bytes()
    for args in (["add", "bob"], ["passwd", "alice"]):
        code, _, err = pb_main(monkeypatch, capsys, accounts, *args, stdin=stdin, errors=errors)
        assert code == 2, err
        assert err.startswith("pb user: ") and "password" in err, err
    assert accounts.read_bytes() == before


def test_garbage_on_a_real_standard_input(accounts):
    result = pb_raw(accounts.parent, "add", "bob", "--db", str(accounts), stdin=b"\xff\xfe\n",
                    env={"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 2
    assert result.stderr.startswith(b"pb user: ") and b"UTF-8" in result.stderr


def test_a_huge_password_line_is_taken_whole(monkeypatch, capsys, accounts):
    password = "long " * 200_000  # a megabyte
    code, _, err = pb_main(monkeypatch, capsys, accounts, "passwd", "alice",
                           stdin=password.encode() + b"\n")
    assert code == 0, err
    with AccountStore(accounts) as store:
        assert store.verifier("alice").check_password(password)


DAMAGES = ["garbage", "truncated", "damaged-pages", "directory", "under-a-file"]


def damage(db, how):
    """Spoil the database at *db* as *how* says; return the path to point --db at."""
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    if how == "garbage":
        db.write_bytes(bytes(range(256)) * 40)
    elif how == "truncated":
        db.write_bytes(data[:100])
    elif how == "damaged-pages":
        db.write_bytes(data[:page_size] + b"\xff" * (len(data) - page_size))
    elif how == "directory":
        return db.parent
    elif how == "under-a-file":
        return db / "inside.sqlite3"
    return db


@pytest.mark.parametrize("how", DAMAGES)
def test_a_database_that_is_not_one_is_reported_without_a_traceback(monkeypatch, capsys, accounts, how):
    target = damage(accounts, how)
    for args in (["list"], ["services"], ["add", "bob"], ["passwd", "alice"], ["grant", "alice", "pbecho"],
                 ["remove", "alice"], ["add-service", "mail"]):
        code, out, err = pb_main(monkeypatch, capsys, target, *args, stdin=b"pw\n")
        assert code == 1, (args, err)
        assert err.startswith("pb user: ") and str(target) in err, (args, err)


def test_a_damaged_database_on_a_real_command_line(accounts):
    damage(accounts, "damaged-pages")
    result = pb_raw(accounts.parent, "list", "--db", str(accounts))
    assert result.returncode == 1
    assert result.stderr.startswith(b"pb user: ") and b"malformed" in result.stderr


def test_list_says_when_there_are_no_users(workdir):
    assert pb(workdir, "add-service", "pbecho").returncode == 0
    result = pb(workdir, "list")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no users in" in result.stderr and "pb user add NAME" in result.stderr


@pytest.mark.parametrize("name, reason", [
    ("a:b", "contains ':', which separates SERVICE:PERSPECTIVE"),
    ("tab\there", "whitespace or control characters"),
    ("bell\x07", "whitespace or control characters"),
    ("esc\x1b[31m", "whitespace or control characters"),
])
def test_add_refuses_the_keyring_separator_and_control_characters(workdir, name, reason):
    result = pb(workdir, "add", name, stdin="pw\n")
    assert result.returncode == 2
    assert reason in result.stderr
    assert pb(workdir, "grant", "alice", f"svc:{name}").returncode != 0

@pytest.mark.parametrize(
    "args",
    [["list"], ["services"], ["add", "alice"], ["add-service", "pbecho"], ["passwd", "alice"],
     ["grant", "alice", "pbecho"], ["remove", "alice"]],
)
def test_an_empty_database_file_is_refused_with_its_path_and_left_empty(workdir, args):
    db = workdir / "pb-data" / "accounts.sqlite3"
    db.parent.mkdir()
    db.touch()  # `: > accounts.sqlite3`
    result = pb(workdir, *args, stdin="pw\n")
    assert result.returncode == 1, result.stderr
    assert "pb-data/accounts.sqlite3 is empty (0 bytes), not an account database" in result.stderr
    assert "restore it from a backup" in result.stderr
    assert db.stat().st_size == 0
    assert os.listdir(db.parent) == ["accounts.sqlite3"]
