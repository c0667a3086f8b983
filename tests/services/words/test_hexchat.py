"""HexChat, the GTK client the issue names, against the IRC face: run headless
on Xvfb and driven by a Python add-on (HexChat's own plugin API), it logs in
with a server password, joins a room a PB client is in, and the two talk.

Needs Debian's ``hexchat``, ``hexchat-python3`` and ``xvfb``.  HexChat
stops at a modal "running as root" dialog, so when the tests run as root it
is started as ``nobody`` (with ``setpriv``), in a directory ``nobody`` may
use."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .conftest import Mind, pb_login, running_words, wait_until

_PYTHON_PLUGIN = glob.glob("/usr/lib/*/hexchat/plugins/python.so")

pytestmark = pytest.mark.skipif(
    shutil.which("hexchat") is None or shutil.which("Xvfb") is None or not _PYTHON_PLUGIN
    or (os.geteuid() == 0 and shutil.which("setpriv") is None),
    reason="HexChat is not installed: apt-get install hexchat hexchat-python3 xvfb")

# What HexChat runs: connect with the server password, join once welcomed,
# say hello once in, and note in a file what the test waits for.
ADDON = '''\
import os
import hexchat

__module_name__ = "words_test"
__module_version__ = "1"
__module_description__ = "drives HexChat for the words tests"


def note(text):
    with open(os.environ["WORDS_HEXCHAT_LOG"], "a", encoding="utf-8") as out:
        out.write(text + "\\n")


def welcomed(word, word_eol, userdata):
    hexchat.command("join #lounge")
    return hexchat.EAT_NONE


def joined(word, word_eol, userdata):
    note("JOINED " + word[1])
    hexchat.command("say hello from hexchat \\u2713")
    return hexchat.EAT_NONE


def heard(word, word_eol, userdata):
    note("HEARD " + word[0] + " " + word[1])
    return hexchat.EAT_NONE


hexchat.hook_server("001", welcomed)
hexchat.hook_print("You Join", joined)
hexchat.hook_print("Channel Message", heard)


def connect(userdata):
    # Once HexChat's main loop runs: at load time there is no window to
    # connect from.  The nick is the config's irc_nick1.
    hexchat.command("server 127.0.0.1 %s hexchat-pw" % os.environ["WORDS_IRC_PORT"])
    return False


hexchat.hook_timer(200, connect)
'''

# No server list at start, no tray icon, no join dialog.
CONFIG = """\
gui_slist_skip = 1
gui_join_dialog = 0
gui_tray = 0
irc_nick1 = frank
irc_nick2 = frank_
irc_user_name = frank
irc_real_name = frank
"""


async def _start(argv: list[str], env: dict[str, str], output: Path) -> asyncio.subprocess.Process:
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    with output.open("w") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def _xvfb(errors: Path) -> tuple[asyncio.subprocess.Process, str]:
    """A private X display; Xvfb picks a free number and writes it to us."""
    read_end, write_end = os.pipe()
    with errors.open("w") as stderr:
        proc = await asyncio.create_subprocess_exec(
            "Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr, pass_fds=(write_end,))
    os.close(write_end)
    loop = asyncio.get_running_loop()
    number = b""
    try:
        # Read up to the newline: Xvfb writes the number and the newline
        # apart, and stops if the pipe is closed between the two.
        async with asyncio.timeout(20):
            while not number.endswith(b"\n"):
                chunk = await loop.run_in_executor(None, os.read, read_end, 64)
                if not chunk:
                    break
                number += chunk
    finally:
        os.close(read_end)
    if not number.strip():
        await _stop(proc)
        pytest.fail(f"Xvfb did not start: {errors.read_text(errors='replace')[-500:]}")
    return proc, ":" + number.decode().strip()


async def test_hexchat_talks_to_a_pb_client(tmp_path):
    async with running_words(tmp_path / "data", "--user", "frank:hexchat-pw") as words:
        mind = Mind()
        pb = await pb_login(words, "bob", mind)
        room = await pb.call_remote("join", "lounge")
        # tmp_path is root's alone; HexChat may run as nobody.
        home = Path(tempfile.mkdtemp(prefix="words-hexchat-"))
        try:
            (home / "config" / "addons").mkdir(parents=True)
            (home / "config" / "addons" / "words_test.py").write_text(ADDON)
            (home / "config" / "hexchat.conf").write_text(CONFIG)
            log = home / "events.log"
            log.touch()
            for path in (home, *home.rglob("*")):
                path.chmod(0o777 if path.is_dir() else 0o666)
            xvfb, display = await _xvfb(tmp_path / "xvfb.log")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                   "DISPLAY": display, "LANG": "C.UTF-8",
                   "WORDS_HEXCHAT_LOG": str(log), "WORDS_IRC_PORT": str(words.irc_port)}
            hexchat = await _start(["hexchat", "-d", str(home / "config")], env,
                                   tmp_path / "hexchat.log")
            try:
                await mind.wait_for(lambda m: ("joined", "lounge", "frank") in m.events,
                                    timeout=30)
                await mind.wait_for(lambda m: ("message", "lounge", "frank",
                                               "hello from hexchat ✓", "message") in m.events,
                                    timeout=20)
                await room.call_remote("send", "hello hexchat ✓")
                await wait_until(lambda: "HEARD bob hello hexchat ✓"
                                 in log.read_text(encoding="utf-8", errors="replace"),
                                 timeout=20)
                assert "JOINED #lounge" in log.read_text(encoding="utf-8")
            finally:
                await _stop(hexchat)
                await _stop(xvfb)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            await pb.connection.close()
