"""``pb chat --script`` as a subprocess against a service in the test's loop:
a whole conversation with a PB client and an IRC client."""

from __future__ import annotations

import asyncio
import subprocess

from tests.services.test_echo import apb, assert_no_leaks, pb_command, pb_env

from .conftest import PASSWORD, Mind, RawIRC, pb_login


class ChatChild:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []

    @classmethod
    async def start(cls, tmp_path, port: int, user: str, password: str = PASSWORD) -> "ChatChild":
        proc = await asyncio.create_subprocess_exec(
            *pb_command("chat", f"127.0.0.1:{port}", "--user", user, "--password-stdin",
                        "--script"),
            cwd=tmp_path, env=pb_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        child = cls(proc)
        child.send(password)
        return child

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, text: str, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"pb chat ended before {text!r}; saw {self.out}")
                line = raw.decode().rstrip("\n")
                self.out.append(line)
                if text in line:
                    return line

    async def finish(self) -> tuple[int, str, str]:
        self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), 20)
        self.out.extend(out.decode().splitlines())
        return self.proc.returncode, "\n".join(self.out), err.decode()


async def test_pb_chat_script_drives_a_conversation_with_pb_and_irc_users(words, tmp_path):
    bob_mind = Mind()
    bob = await pb_login(words, "bob", bob_mind)
    carol = await RawIRC.connect(words.irc_port, "carol")
    chat = await ChatChild.start(tmp_path, words.pb_port, "alice")
    try:
        chat.send("/join lounge")
        assert (await chat.expect("* talking in #lounge")).endswith("members: alice")
        room = await bob.call_remote("join", "lounge")
        await chat.expect("[#lounge] --> bob joined")
        await room.call_remote("send", "hi alice")
        await chat.expect("[#lounge] <bob> hi alice")
        chat.send("hello bob")
        chat.send("/me waves")
        chat.send("/topic plans for today")
        chat.send("/msg bob psst")
        await bob_mind.wait_for(lambda m: m.of("private"))
        assert bob_mind.of("message") == [
            ("message", "lounge", "alice", "hello bob", "message"),
            ("message", "lounge", "alice", "\x01ACTION waves\x01", "message")]
        assert bob_mind.of("topic") == [("topic", "lounge", "plans for today", "alice")]
        assert bob_mind.of("private") == [("private", "alice", "psst", "message")]
        carol.send("JOIN #lounge")
        await chat.expect("--> carol joined")
        carol.send("PRIVMSG #lounge :\x1b[31mred\x1b[0m and \x01ACTION dances\x01")
        shown = await chat.expect("<carol>")
        assert "\x1b" not in shown and "^[[31mred" in shown
        carol.send("PRIVMSG alice :a private hello")
        await chat.expect("[private] <carol> a private hello")
        carol.send("AWAY :tea")
        await carol.expect(" 306 ")
        chat.send("/names")
        await chat.expect("* #lounge: alice (online), bob (online), carol (away)")
        chat.send("/whois carol")
        await chat.expect("* carol is away, away: tea; in #lounge")
        chat.send("/list")
        await chat.expect("* #lounge (3): plans for today")
        chat.send("/bogus")
        chat.send("/msg nobody hello")
        chat.send("/part")
        await chat.expect("[#lounge] <-- alice left")
        chat.send("orphan text")
        code, out, err = await chat.finish()
    finally:
        if chat.proc.returncode is None:
            chat.proc.kill()
            await chat.proc.wait()
        await carol.close()
        await bob.connection.close()
    assert code == 0, err
    assert "pb chat: unknown command /bogus" in err
    assert "pb chat: 'nobody' is not online" in err
    assert "pb chat: you are in no group: /join NAME first" in err
    assert_no_leaks(err)


async def test_pb_chat_rejoins_my_groups_and_shows_scrollback(words, tmp_path):
    bob = await pb_login(words, "bob", Mind())
    try:
        room = await bob.call_remote("join", "history")
        await room.call_remote("send", "before you came")
    finally:
        await bob.connection.close()
    chat = await ChatChild.start(tmp_path, words.pb_port, "alice")
    chat.send("/join history")
    await chat.expect("<bob> before you came")
    code, out, err = await chat.finish()
    assert code == 0, err
    chat = await ChatChild.start(tmp_path, words.pb_port, "alice")
    await chat.expect("* you are in #history; talking in #history")
    chat.send("still here")
    code, out, err = await chat.finish()
    assert code == 0, err
    assert [line.text for line in words.chat.group("history").scrollback][-1] == "still here"


async def test_a_wrong_password_and_bad_usage_fail_with_a_reason(words, tmp_path):
    chat = await ChatChild.start(tmp_path, words.pb_port, "alice", password="wrong")
    code, out, err = await chat.finish()
    assert code == 1
    assert "login refused for 'alice'" in err and "Traceback" not in err
    code, out, err = await apb("chat", "--user", "alice", cwd=tmp_path)
    assert code == 2 and "missing HOST:PORT" in err
    code, out, err = await apb("chat", "127.0.0.1:1", "--user", "alice", "--password", "x",
                               cwd=tmp_path)
    assert code == 2 and "not taken from the command line" in err
    code, out, err = await apb("chat", "127.0.0.1:1", "--user", "a", "--password-stdin",
                               "--script", input="\n", cwd=tmp_path)
    assert code == 2 and "first line of standard input is empty" in err


async def test_a_script_file_with_sleep_and_the_password_in_the_environment(words, tmp_path):
    script = tmp_path / "bot.txt"
    script.write_text("/join robots\n/sleep 0.1\nbeep boop\n/quit\nnever sent\n")
    with script.open("rb") as stdin:
        proc = await asyncio.create_subprocess_exec(
            *pb_command("chat", f"127.0.0.1:{words.pb_port}", "--user", "alice", "--script"),
            cwd=tmp_path, env=pb_env(PB_PASSWORD=PASSWORD), stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert [line.text for line in words.chat.group("robots").scrollback] == ["beep boop"]
    assert_no_leaks(err.decode())


async def test_pb_chat_at_a_terminal_prints_above_the_line_being_typed(words, tmp_path):
    import os
    import pty

    bob = await pb_login(words, "bob", Mind())
    controller, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *pb_command("chat", f"127.0.0.1:{words.pb_port}", "--user", "alice"),
        cwd=tmp_path, env=pb_env(PB_PASSWORD=PASSWORD, TERM="xterm", HOME=str(tmp_path)),
        stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    screen = bytearray()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        try:
            screen.extend(os.read(controller, 65536))
        except OSError:
            pass

    async def shown(text: bytes) -> None:
        async with asyncio.timeout(10):
            while text not in screen:
                await asyncio.sleep(0.02)

    loop.add_reader(controller, drain)
    try:
        await shown(b"alice> ")
        os.write(controller, b"/join lounge\r")
        await shown(b"talking in #lounge")
        room = await bob.call_remote("join", "lounge")
        os.write(controller, b"half a sen")  # typed, not sent
        await shown(b"half a sen")
        await room.call_remote("send", "interrupting")
        # The line is cleared, the message printed, the prompt and the
        # typed text drawn again below it.
        await shown(b"\r\x1b[2K[#lounge] <bob> interrupting\r\nalice> half a sen")
        os.write(controller, b"tence\r")
        async with asyncio.timeout(10):
            while words.chat.group("lounge").scrollback[-1].text != "half a sentence":
                await asyncio.sleep(0.02)
        os.write(controller, b"/quit\r")
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        loop.remove_reader(controller)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(controller)
        await bob.connection.close()
