"""``pb run mail`` as a real process: two virtual domains, smtplib in,
poplib out, swaks and fetchmail where installed, PB, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import poplib
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from ._proc import MailChild, domain_args

pytestmark = pytest.mark.timeout(60)

PASSWORD = "proc-pw-1"
USERS = ("alice@example.com", "carol@example.org")


@pytest.fixture
def server(tmp_path: Path):
    child = MailChild(tmp_path, *domain_args(tmp_path / "mail", *USERS, password=PASSWORD),
                      "--smtp-port", "0", "--pop3-port", "0", "--pb-port", "0", "--allow-plain-auth")
    try:
        yield child.ready()
    finally:
        code, _, stderr = child.stop()
        child.close()
        assert code == 0, stderr
        assert "ResourceWarning" not in stderr and "Traceback" not in stderr, stderr


def _retrieve_all(port: int, user: str) -> list[bytes]:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    client.user(user)
    client.pass_(PASSWORD)
    messages = [b"\n".join(client.retr(i + 1)[1]) for i in range(client.stat()[0])]
    for i in range(len(messages)):
        client.dele(i + 1)
    client.quit()
    return messages


async def _subjects_over_pb(port: int) -> dict[str, list[str]]:
    import broker

    found = {}
    for user in USERS:
        box = await broker.login("127.0.0.1", port, user, PASSWORD, service="mail", perspective=user)
        try:
            found[user] = [m["subject"] for m in await box.call_remote("list", "INBOX")]
        finally:
            await box.connection.close()
    return found


def test_mail_to_two_domains_is_read_back_over_pb_and_pop3(server, tmp_path):
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("sender@remote.test", list(USERS),
                        b"From: sender@remote.test\r\nSubject: both\r\n\r\nto both domains\r\n")
        client.sendmail("sender@remote.test", ["carol@example.org"],
                        b"From: sender@remote.test\r\nSubject: carol only\r\n\r\njust carol\r\n")
    over_pb = asyncio.run(_subjects_over_pb(server.pb))
    assert over_pb == {"alice@example.com": ["both"], "carol@example.org": ["both", "carol only"]}
    alice = _retrieve_all(server.pop3, "alice@example.com")
    carol = _retrieve_all(server.pop3, "carol@example.org")
    assert [b"Subject: both" in m for m in alice] == [True]
    assert [b"Subject: both" in m or b"Subject: carol only" in m for m in carol] == [True, True]
    assert _retrieve_all(server.pop3, "alice@example.com") == []  # deleted at QUIT
    assert (tmp_path / "mail" / "example.org" / "carol" / "new").is_dir()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt-get install swaks)")
def test_swaks_delivers_and_is_refused_relaying(server):
    ok = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.smtp}", "--to", "alice@example.com",
                         "--from", "s@remote.test", "--header", "Subject: via swaks", "--body", "hi"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    relay = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.smtp}", "--to", "victim@elsewhere.test",
                            "--from", "s@remote.test"], capture_output=True, text=True, timeout=30)
    assert relay.returncode != 0 and "554 5.7.1" in relay.stdout
    auth = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.smtp}", "--to", "carol@example.org",
                           "--from", "alice@example.com", "--auth", "LOGIN", "--auth-user", "alice@example.com",
                           "--auth-password", PASSWORD], capture_output=True, text=True, timeout=30)
    assert auth.returncode == 0, auth.stdout
    assert len(_retrieve_all(server.pop3, "alice@example.com")) == 1
    assert len(_retrieve_all(server.pop3, "carol@example.org")) == 1


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed (apt-get install fetchmail)")
def test_fetchmail_retrieves_over_pop3(server, tmp_path):
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        for i in range(3):
            client.sendmail("s@remote.test", ["alice@example.com"],
                            f"From: s@remote.test\r\nSubject: fm {i}\r\n\r\n.dotted {i}\r\n".encode())
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "fetched.mbox"
    rc = home / ".fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 service {server.pop3} protocol POP3 auth password\n'
                  f'  user "alice@example.com" password "{PASSWORD}" sslproto "" no keep\n'
                  f'  mda "/bin/sh -c \'cat >> {out}\'"\n')
    os.chmod(rc, 0o600)
    result = subprocess.run(["fetchmail", "--nodetach", "--nosyslog", "-f", str(rc)],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = out.read_bytes()
    assert all(f"Subject: fm {i}".encode() in fetched for i in range(3))
    assert b"\n.dotted 2\n" in fetched  # dot-stuffing undone by the client
    assert _retrieve_all(server.pop3, "alice@example.com") == []


def test_bad_options_are_usage_errors_that_name_the_problem(tmp_path):
    child = MailChild(tmp_path, "--domain", "not a domain=x")
    code, _, stderr = child.finish()
    child.close()
    assert code != 0 and "--domain" in stderr
    child = MailChild(tmp_path, "--domain", f"example.com={tmp_path}", "--user", "bob@other.test:pw")
    code, _, stderr = child.finish()
    child.close()
    assert code != 0 and "not one of the --domain names" in stderr


@pytest.mark.parametrize("table", ["[[service]]\nplugin = \"mail\"", "[mail]"])
def test_a_toml_file_configures_the_mail_service(tmp_path, table):
    root = tmp_path / "mail"
    (tmp_path / "app.toml").write_text(f"""
[application]
data_dir = "{tmp_path / 'data'}"
log_level = "warning"

{table}
domain = ["example.com={root / 'example.com'}"]
catch_all = ["example.com=alice"]
user = ["alice@example.com:{PASSWORD}"]
smtp_port = 0
pop3_port = 0
allow_plain_auth = true
max_recipients = 5
""")
    import sys

    from tests._child import OutputChild

    from ._proc import BANNER, child_env
    child = OutputChild([sys.executable, "-m", "clients._cli", "run", "-c", str(tmp_path / "app.toml")],
                        cwd=tmp_path, env=child_env())
    try:
        match = child.wait_for("stdout", BANNER)
        with smtplib.SMTP("127.0.0.1", int(match[1]), timeout=10) as client:
            client.sendmail("s@remote.test", ["anybody@example.com"], b"Subject: toml\r\n\r\nx\r\n")
        assert len(_retrieve_all(int(match[2]), "alice@example.com")) == 1
    finally:
        code, _, stderr = child.stop()
        child.close()
    assert code == 0, stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_starttls_and_stls_work_on_each_event_loop(tmp_path, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install -e '.[uvloop]')")
    import ssl
    import sys

    from tests._child import OutputChild
    from tests._tls import write_tls_files

    from ._proc import BANNER, child_env
    cert, key, ca = write_tls_files(tmp_path)
    command = [sys.executable, "-m", "clients._cli", "run", "--loop", loop, "--data-dir", str(tmp_path / "data"),
               "mail", *domain_args(tmp_path / "mail", *USERS, password=PASSWORD), "--smtp-port", "0",
               "--pop3-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]
    child = OutputChild(command, cwd=tmp_path, env=child_env())
    try:
        match = child.wait_for("stdout", BANNER)
        context = ssl.create_default_context(cafile=str(ca))
        with smtplib.SMTP("127.0.0.1", int(match[1]), timeout=10) as client:
            client.starttls(context=context)
            client.login("alice@example.com", PASSWORD)
            client.sendmail("alice@example.com", ["carol@example.org"], b"Subject: tls\r\n\r\nsecret\r\n")
        pop = poplib.POP3("127.0.0.1", int(match[2]), timeout=10)
        pop.stls(context=context)
        pop.user("carol@example.org")
        pop.pass_(PASSWORD)
        assert b"secret" in b"\n".join(pop.retr(1)[1])
        pop.quit()
    finally:
        code, _, stderr = child.stop()
        child.close()
    assert code == 0, stderr
    assert f"loop={loop}" in stderr or loop == "asyncio"


def test_a_mail_table_is_checked_like_a_service_table(tmp_path):
    from services import ConfigError, load_config

    (tmp_path / "bad.toml").write_text('[mail]\nsmtp_port = "x"\n')
    with pytest.raises(ConfigError, match=r"mail\.smtp_port"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "other.toml").write_text('[mail]\nplugin = "echo"\n')
    with pytest.raises(ConfigError, match=r"leave 'plugin' out"):
        load_config(tmp_path / "other.toml")
    (tmp_path / "unknown.toml").write_text('[nosuchplugin]\nx = 1\n')
    with pytest.raises(ConfigError, match="nosuchplugin"):
        load_config(tmp_path / "unknown.toml")
