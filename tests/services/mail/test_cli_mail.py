"""``pb mail`` as a real subprocess against ``pb run mail``."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from ._proc import MailChild, child_env, domain_args

pytestmark = pytest.mark.timeout(60)

PASSWORD = "cli-pw-1"


@pytest.fixture
def server(tmp_path: Path):
    child = MailChild(tmp_path, *domain_args(tmp_path / "mail", "alice@example.com", "bob@example.com",
                                             password=PASSWORD),
                      "--smtp-port", "0", "--pop3-port", "0", "--pb-port", "0")
    try:
        yield child.ready()
    finally:
        code, _, stderr = child.stop()
        child.close()
        assert code == 0, stderr


def pb_mail(port: int, user: str, stdin: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients._cli", "mail", f"127.0.0.1:{port}", "--user", user,
                           "--password-stdin", *extra], input=stdin, capture_output=True, text=True,
                          timeout=30, env=child_env())


def test_script_mode_lists_reads_sends_and_deletes(server):
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("x@remote.test", ["alice@example.com"],
                        b"From: x@remote.test\r\nSubject: for the cli\r\n\r\nread me\r\n")
    script = "\n".join([PASSWORD, '["folders"]', '["list", "INBOX"]'])
    result = pb_mail(server.pb, "alice@example.com", script + "\n", "--script")
    assert result.returncode == 0, result.stderr
    folders, listing = (json.loads(line) for line in result.stdout.splitlines())
    assert folders == {"ok": True, "result": ["INBOX"]}
    (entry,) = listing["result"]
    assert entry["subject"] == "for the cli"
    key = entry["key"]
    script = "\n".join([PASSWORD, json.dumps(["read", "INBOX", key]), json.dumps(["delete", "INBOX", key]),
                        json.dumps(["send", ["bob@example.com"], "hi bob", "from the cli\n"]),
                        json.dumps(["send", ["someone@elsewhere.test"], "relay?", "no\n"]),
                        '["nonsense"]', "not json"])
    result = pb_mail(server.pb, "alice@example.com", script + "\n", "--script")
    assert result.returncode == 1  # some commands failed, as they should
    read, deleted, sent, relay, nonsense, garbage = (json.loads(line) for line in result.stdout.splitlines())
    assert "read me" in read["result"]
    assert deleted["result"] == "moved to Trash"
    assert sent["ok"] and not relay["ok"] and "550 5.7.1" in relay["error"]
    assert not nonsense["ok"] and not garbage["ok"]
    result = pb_mail(server.pb, "bob@example.com", PASSWORD + '\n["list"]\n', "--script")
    assert json.loads(result.stdout)["result"][0]["subject"] == "hi bob"


def test_interactive_mode_reads_human_commands(server):
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("x@remote.test", ["alice@example.com"],
                        b"From: x@remote.test\r\nSubject: human\r\n\r\nhello human\r\n")
    result = pb_mail(server.pb, "alice@example.com",
                     f"{PASSWORD}\nlist\nread 1\nread 9\nmove 1 Archive\nfolders\nquit\n")
    assert result.returncode == 0, result.stderr
    assert "human" in result.stdout and "hello human" in result.stdout
    assert "no message 9" in result.stdout and "moved to Archive" in result.stdout
    assert "Archive" in result.stdout.split("moved to Archive")[1]


def test_a_wrong_password_or_no_server_fails_with_a_message(server):
    result = pb_mail(server.pb, "alice@example.com", "wrong\n", "--script")
    assert result.returncode == 1 and "login refused" in result.stderr
    result = pb_mail(1, "alice@example.com", "x\n", "--script")
    assert result.returncode == 1 and "cannot reach" in result.stderr
    result = subprocess.run([sys.executable, "-m", "clients._cli", "mail", "--user", "a"], capture_output=True,
                            text=True, timeout=30, env=child_env())
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
