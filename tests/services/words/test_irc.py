"""The IRC face over real sockets: a real IRC client library, raw sockets,
ii from Debian where installed, TLS, and the abuse a public port gets."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl

import pytest

import irc.client_aio
from tests._tls import write_tls_files

from .conftest import PASSWORD, Mind, RawIRC, pb_login, running_words, wait_until


class LibClient:
    """A client built on the ``irc`` library (jaraco/irc), asyncio flavour."""

    def __init__(self) -> None:
        self.reactor = irc.client_aio.AioReactor(loop=asyncio.get_running_loop())
        self.events: list[irc.client.Event] = []
        self.changed = asyncio.Event()
        self.reactor.add_global_handler("all_events", self._note)
        self.connection = self.reactor.server()

    def _note(self, connection, event) -> None:
        self.events.append(event)
        self.changed.set()

    async def connect(self, port: int, nick: str, password: str | None = PASSWORD) -> None:
        await self.connection.connect("127.0.0.1", port, nick, password=password)

    async def wait_for(self, kind: str, predicate=lambda e: True, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event.type == kind and predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        if self.connection.is_connected():
            self.connection.disconnect("bye")
        await asyncio.sleep(0)


async def test_an_irc_library_client_and_a_pb_client_share_a_room(words):
    client = LibClient()
    mind = Mind()
    pb = await pb_login(words, "bob", mind)
    try:
        await client.connect(words.irc_port, "alice")
        welcome = await client.wait_for("welcome")
        assert welcome.target == "alice"
        await client.wait_for("featurelist")
        assert client.connection.features.network == "words"
        client.connection.join("#lounge")
        await client.wait_for("join", lambda e: e.target == "#lounge")
        await client.wait_for("endofnames")
        room = await pb.call_remote("join", "lounge")
        await client.wait_for("join", lambda e: e.source.nick == "bob")
        await room.call_remote("send", "hello from PB ✓")
        got = await client.wait_for("pubmsg")
        assert got.source.nick == "bob" and got.arguments == ["hello from PB ✓"]
        client.connection.privmsg("#lounge", "hello from IRC")
        client.connection.action("#lounge", "waves")
        client.connection.privmsg("bob", "a private word")
        client.connection.topic("#lounge", "IRC and PB")
        await mind.wait_for(lambda m: m.of("topic"))
        assert mind.of("message") == [
            ("message", "lounge", "alice", "hello from IRC", "message"),
            ("message", "lounge", "alice", "\x01ACTION waves\x01", "message")]
        assert mind.of("private") == [("private", "alice", "a private word", "message")]
        await pb.call_remote("send_private", "alice", "back at you")
        private = await client.wait_for("privmsg")
        assert private.arguments == ["back at you"]
        await client.wait_for("topic", lambda e: e.arguments == ["IRC and PB"])
    finally:
        await client.close()
        await pb.connection.close()
    await wait_until(lambda: not words.chat.is_online("alice"))


async def test_registration_with_cap_ls_answers_welcome_isupport_and_motd(tmp_path):
    async with running_words(tmp_path / "data", "--motd", "be nice") as words:
        client = await RawIRC.connect(words.irc_port)
        try:
            client.send("CAP LS 302")
            client.send(f"PASS :{PASSWORD}")
            client.send("NICK alice")
            client.send("USER alice 0 * :Alice")
            assert await client.expect(r"CAP") == ":words CAP * LS :"
            client.send("CAP REQ :multi-prefix")
            await client.expect(r"^:words CAP alice NAK :?multi-prefix$")
            client.send("CAP END")
            for code in ("001", "002", "003", "004"):
                await client.expect(rf"^:words {code} alice ")
            isupport = await client.expect(r" 005 ")
            assert "CASEMAPPING=ascii" in isupport and "CHANTYPES=#" in isupport
            assert (await client.expect(r" 372 ")).endswith(":- be nice")
            await client.expect(r" 376 ")
            client.send("PING :abc")
            assert await client.expect("PONG") == ":words PONG words :abc"
            client.send("MODE alice +i")
            await client.expect(r" 221 alice \+")
            client.send("MOTD")
            await client.expect(r" 376 ")
            client.send("FROBNICATE now")
            await client.expect(r" 421 alice FROBNICATE :Unknown command")
            client.send("JOIN")
            await client.expect(r" 461 alice JOIN ")
            client.send("QUIT :done")
            await client.expect(r"^ERROR :Closing link")
            await client.closed()
        finally:
            await client.close()


async def test_channel_commands_answer_like_an_ircd(words):
    alice = await RawIRC.connect(words.irc_port, "alice")
    bob = await RawIRC.connect(words.irc_port, "bob")
    try:
        alice.send("JOIN #Room,#other,&bad")
        await alice.expect(r"^:alice!alice@words JOIN #Room$")
        await alice.expect(r" 366 alice #Room ")
        await alice.expect(r" 403 alice &bad ")
        bob.send("JOIN #room")
        await bob.expect(r" 353 bob = #Room :alice bob")
        await alice.expect(r"^:bob!bob@words JOIN #Room$")
        bob.send("TOPIC #room :the plan")
        await alice.expect(r"^:bob!bob@words TOPIC #Room :the plan$")
        alice.send("TOPIC #room")
        await alice.expect(r" 332 alice #Room :the plan")
        alice.send("NAMES #room")
        await alice.expect(r" 353 alice = #Room :alice bob")
        alice.send("LIST")
        assert await alice.expect(r" 322 ") == ":words 322 alice #other 1 :"
        await alice.expect(r" 322 alice #Room 2 :the plan")
        await alice.expect(r" 323 ")
        bob.send("AWAY :lunch")
        await bob.expect(r" 306 ")
        alice.send("WHO #room")
        await alice.expect(r" 352 alice #Room bob words words bob G :0 bob")
        await alice.expect(r" 315 ")
        alice.send("WHOIS bob")
        await alice.expect(r" 311 alice bob bob words \* :?bob$")
        await alice.expect(r" 319 alice bob :?#Room$")
        await alice.expect(r" 301 alice bob :lunch")
        await alice.expect(r" 318 ")
        alice.send("PRIVMSG bob :are you there?")
        await alice.expect(r" 301 alice bob :lunch")
        await bob.expect(r"^:alice!alice@words PRIVMSG bob :are you there\?$")
        bob.send("AWAY")
        await bob.expect(r" 305 ")
        alice.send("MODE #room")
        await alice.expect(r" 324 alice #Room \+nt")
        alice.send("MODE #room b")
        await alice.expect(r" 368 alice #Room ")
        alice.send("MODE #room +o bob")
        await alice.expect(r" 482 ")
        alice.send("WHOIS nobody")
        await alice.expect(r" 401 alice nobody ")
        alice.send("PRIVMSG nobody :hi")
        await alice.expect(r" 401 alice nobody ")
        alice.send("PRIVMSG #nowhere :hi")
        await alice.expect(r" 403 alice #nowhere ")
        alice.send("PART #other :bye")
        await alice.expect(r"^:alice!alice@words PART #other :bye$")
        alice.send("PRIVMSG #other :hi")
        await alice.expect(r" 404 alice #other ")
        alice.send("PART #other")
        await alice.expect(r" 442 alice #other ")
        bob.send("NOTICE #room :a notice")
        await alice.expect(r"^:bob!bob@words NOTICE #Room :a notice$")
        alice.send("NICK carol")
        await alice.expect(r" 447 ")
        alice.send("USER x 0 * :y")
        await alice.expect(r" 462 ")
        alice.send("ISON bob nobody alice")
        await alice.expect(r" 303 alice :bob alice")
    finally:
        await alice.close()
        await bob.close()


async def test_scrollback_is_shown_on_join_and_rooms_come_back_on_login(words):
    alice = await RawIRC.connect(words.irc_port, "alice")
    try:
        alice.send("JOIN #log")
        await alice.expect(r" 366 ")
        for n in range(3):
            alice.send(f"PRIVMSG #log :line {n}")
        alice.send("PING sync")
        await alice.expect("PONG")
    finally:
        await alice.close()
    bob = await RawIRC.connect(words.irc_port, "bob")
    try:
        bob.send("JOIN #log")
        await bob.expect(r" 366 ")
        assert (await bob.expect(r"NOTICE #log")).endswith("<alice> line 0")
        await bob.expect(r"<alice> line 2$")
        await bob.expect(r"end of the last 3 messages")
    finally:
        await bob.close()
    again = await RawIRC.connect(words.irc_port, "alice", password=None)
    try:
        again.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
        await again.expect(r"identified as alice")
        await again.expect(r"^:alice!alice@words JOIN #log$")
        await again.expect(r" 353 alice = #log :alice bob")
    finally:
        await again.close()


async def test_nick_collisions_and_bad_nicks_get_numerics(words):
    first = await RawIRC.connect(words.irc_port, "alice")
    second = await RawIRC.connect(words.irc_port)
    try:
        second.send(f"PASS :{PASSWORD}")
        second.send("NICK ALICE")
        await second.expect(r" 433 \* ALICE ")
        second.send("NICK #chan")
        await second.expect(r" 432 ")
        second.send("NICK " + "x" * 40)
        await second.expect(r" 432 ")
        second.send("NICK bob")
        second.send("USER bob 0 * :Bob")
        await second.expect(r" 001 bob ")
        first.send("PRIVMSG bob :hi")
        await second.expect(r"PRIVMSG bob :hi")
    finally:
        await first.close()
        await second.close()
    # the nick is free again once its holder is gone
    await wait_until(lambda: "alice" not in words.irc.world.nicks)


async def test_a_wrong_password_gets_one_clear_notice_then_the_connection_closes(words):
    client = await RawIRC.connect(words.irc_port)
    try:
        client.send("PASS wrong")
        client.send("NICK alice")
        client.send("USER alice 0 * :x")
        notice = await client.expect(r" 464 ")
        assert "Password incorrect for alice" in notice
        await client.expect(r"^ERROR ")
        await client.closed()
    finally:
        await client.close()
    bot = await RawIRC.connect(words.irc_port)
    try:
        bot.send("NICK bob")
        bot.send("USER bob 0 * :x")
        asked = await bot.expect(r"NickServ")
        assert asked.startswith(":NickServ!NickServ@words NOTICE bob :")
        bot.send("JOIN #early")
        await bot.expect(r" 451 bob :You have not identified")
        bot.send("PRIVMSG NickServ :not-the-password")
        await bot.expect(r" 464 ")
        await bot.closed()
    finally:
        await bot.close()
    assert words.chat.groups.get("early") is None


async def test_garbage_oversize_and_truncated_lines_leave_the_server_up(words):
    watcher = await RawIRC.connect(words.irc_port, "bob")
    client = await RawIRC.connect(words.irc_port, "alice")
    try:
        watcher.send("JOIN #room")
        client.send("JOIN #room")
        await watcher.expect(r"alice!alice@words JOIN")
        client.send(b"PRIVMSG #room :" + b"x" * 600 + b"\r\n")
        await client.expect(r" 417 alice :Input line was too long")
        client.send(b"\xff\xfe\x00garbage\r\n\r\n:::\r\n \r\n\x01\x02\x03\r\n")
        client.send(b"PRIVMSG #room :bad \xff utf-8\r\n")
        await watcher.expect(r"PRIVMSG #Room|PRIVMSG #room")
        assert watcher.seen[-1].endswith(":bad \ufffd utf-8")
        data = "PRIVMSG #room :split ✓ here\r\n".encode()
        cut = data.index("✓".encode()) + 1
        client.send(data[:cut])
        await asyncio.sleep(0.05)
        client.send(data[cut:])
        assert (await watcher.expect(r"PRIVMSG")).endswith(":split ✓ here")
        client.send(b"PRIVMSG #room :carriage\rreturn\r\n")
        client.send(b"PRIVMSG #room :nul\x00byte\r\n")
        await client.expect(r"NOTICE alice :PRIVMSG refused: .*contains '\\r'")
        await client.expect(r"NOTICE alice :PRIVMSG refused: .*contains '\\x00'")
        client.send("PRIVMSG #room :still fine")
        assert (await watcher.expect(r"PRIVMSG")).endswith(":still fine")
        client.send(b"PRIVMSG #room :never finish")  # truncated: no end of line
    finally:
        await client.close()
    try:
        watcher.send("PING after")
        await watcher.expect("PONG")
        assert not any("never finish" in line for line in watcher.seen)
    finally:
        await watcher.close()


async def test_a_flooding_client_is_slowed_then_disconnected(tmp_path):
    async with running_words(tmp_path / "data", "--flood-rate", "2", "--flood-burst", "3",
                             "--max-queued", "8") as words:
        calm = await RawIRC.connect(words.irc_port, "bob")
        flooder = await RawIRC.connect(words.irc_port, "alice")
        try:
            calm.send("JOIN #room")
            flooder.send("JOIN #room")
            await calm.expect("alice!alice@words JOIN")
            await flooder.expect(r" 366 ")
            await asyncio.sleep(1.0)  # let the bucket refill after registering
            # Slowed: a few lines over the burst are still handled, later.
            for n in range(6):
                flooder.send(f"PRIVMSG #room :slow {n}")
            for n in range(6):
                await calm.expect(rf":slow {n}$")
            # Flooded: far more than the queue holds.
            flooder.send(b"".join(b"PRIVMSG #room :flood\r\n" for _ in range(200)))
            await flooder.expect(r"^ERROR :Closing link: .*Excess Flood")
            await flooder.closed()
            calm.send("PING still-here")
            await calm.expect("PONG")
            assert sum(":flood" in line for line in calm.seen) <= 8
        finally:
            await calm.close()
            await flooder.close()


async def test_a_slow_reader_is_dropped_and_the_room_keeps_talking(tmp_path):
    async with running_words(tmp_path / "data", "--max-output", "8192", "--flood-burst", "1000",
                             "--max-queued", "1000") as words:
        fast = await RawIRC.connect(words.irc_port, "bob")
        sender = await RawIRC.connect(words.irc_port, "carol")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", words.irc_port))
        sock.setblocking(False)
        slow = None
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
            slow = RawIRC(reader, writer)
            slow.send(f"PASS :{PASSWORD}")
            slow.send("NICK alice")
            slow.send("USER alice 0 * :slow")
            await slow.expect(" 376 | 422 ")
            slow.send("JOIN #room")
            await slow.expect(" 366 ")
            fast.send("JOIN #room")
            sender.send("JOIN #room")
            await fast.expect("carol!carol@words JOIN")
            # alice stops reading: her transport pauses its own reads too.
            writer.transport.pause_reading()
            text = "x" * 400
            for n in range(300):
                sender.send(f"PRIVMSG #room :{n} {text}")
                if n % 20 == 19:
                    sender.send(f"PING {n}")
                    await sender.expect(f"PONG .*{n}")
            await wait_until(lambda: not words.chat.is_online("alice"), timeout=10)
            for n in range(300):
                await fast.expect(rf":{n} x+$")
        finally:
            if slow is not None:
                await slow.close()
            else:
                sock.close()
            await fast.close()
            await sender.close()


async def test_irc_over_tls_when_a_certificate_is_given(tmp_path):
    cert, key, ca = write_tls_files(tmp_path)
    async with running_words(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key),
                             "--irc-tls-port", "0") as words:
        assert words.irc_tls_port and words.irc_tls_port != words.irc_port
        assert f"ircs://127.0.0.1:{words.irc_tls_port}" in words.banner()
        context = ssl.create_default_context(cafile=str(ca))
        client = await RawIRC.connect(words.irc_tls_port, "alice", ssl=context,
                                      server_hostname="localhost")
        try:
            client.send("PING tls")
            await client.expect("PONG words :tls")
        finally:
            await client.close()


@pytest.mark.skipif(shutil.which("ii") is None,
                    reason="ii (Debian package 'ii') is not installed: apt-get install ii")
async def test_ii_from_debian_talks_to_a_pb_client(words, tmp_path):
    mind = Mind()
    pb = await pb_login(words, "bob", mind)
    room = await pb.call_remote("join", "lounge")
    base = tmp_path / "ii"
    env = dict(os.environ, WORDS_PW=PASSWORD)
    proc = await asyncio.create_subprocess_exec(
        "ii", "-s", "127.0.0.1", "-p", str(words.irc_port), "-n", "alice", "-i", str(base),
        "-k", "WORDS_PW", "-f", "alice via ii", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        server_dir = base / "127.0.0.1"
        await wait_until(lambda: (server_dir / "in").exists(), timeout=10)
        await wait_until(lambda: words.chat.is_online("alice"), timeout=10)

        def write_fifo(path, line):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)

        write_fifo(server_dir / "in", "/j #lounge")
        channel = server_dir / "#lounge"
        await wait_until(lambda: (channel / "in").exists(), timeout=10)
        write_fifo(channel / "in", "hello from ii")
        await mind.wait_for(lambda m: any(e[3] == "hello from ii" for e in m.of("message")))
        await room.call_remote("send", "hello ii")
        await wait_until(lambda: (channel / "out").exists()
                         and "hello ii" in (channel / "out").read_text(), timeout=10)
        assert "<bob> hello ii" in (channel / "out").read_text()
    finally:
        proc.terminate()
        await proc.communicate()
        await pb.connection.close()


async def test_silent_clients_are_pinged_then_dropped_and_limits_have_numerics(tmp_path):
    async with running_words(tmp_path / "data", "--ping-interval", "0.2",
                             "--max-groups-per-user", "1") as words:
        client = await RawIRC.connect(words.irc_port, "alice")
        try:
            client.send("JOIN #one,#two")
            await client.expect(r" 366 alice #one ")
            await client.expect(r" 405 alice #two :You have joined too many channels")
            isupport = [line for line in client.seen if " 005 " in line][0]
            assert "CHANLIMIT=#:1" in isupport
            await client.expect(r"^PING :words$")
            client.send("PONG :words")
            await client.expect(r"^PING :words$")
            # no answer this time
            await client.expect(r"^ERROR :Closing link: .*Ping timeout")
            await client.closed()
        finally:
            await client.close()
        await wait_until(lambda: not words.chat.is_online("alice"))


@pytest.mark.skipif(shutil.which("weechat-headless") is None,
                    reason="WeeChat is not installed: apt-get install weechat-headless")
async def test_weechat_talks_to_a_pb_client(tmp_path):
    async with running_words(tmp_path / "data", "--user", "dave:weechat-pw") as words:
        mind = Mind()
        pb = await pb_login(words, "bob", mind)
        room = await pb.call_remote("join", "lounge")
        home = tmp_path / "weechat"
        commands = ";".join([
            "/set logger.file.flush_delay 0",
            f"/set logger.file.path {home}/logs",
            f"/server add words 127.0.0.1/{words.irc_port} -password=weechat-pw -nicks=dave "
            "-autojoin=#lounge",
            "/set irc.server.words.command \"/wait 1 /msg #lounge hello from weechat\"",
            "/connect words",
        ])
        proc = await asyncio.create_subprocess_exec(
            "weechat-headless", "--dir", str(home), "--run-command", commands,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            await mind.wait_for(lambda m: ("message", "lounge", "dave", "hello from weechat",
                                           "message") in m.events, timeout=20)
            await room.call_remote("send", "hello weechat ✓")
            logs = home / "logs"

            def logged() -> bool:
                return any("hello weechat ✓" in path.read_text(errors="replace")
                           for path in logs.glob("*lounge*"))

            await wait_until(lambda: logs.exists() and logged(), timeout=20)
        finally:
            proc.terminate()
            await proc.wait()
            await pb.connection.close()


@pytest.mark.skipif(shutil.which("irssi") is None,
                    reason="irssi is not installed: apt-get install irssi")
async def test_irssi_in_a_terminal_talks_to_a_pb_client(tmp_path):
    import pty

    async with running_words(tmp_path / "data", "--user", "erin:irssi-pw") as words:
        mind = Mind()
        pb = await pb_login(words, "bob", mind)
        room = await pb.call_remote("join", "lounge")
        home = tmp_path / "irssi"
        home.mkdir()
        controller, terminal = pty.openpty()
        env = dict(os.environ, TERM="xterm", HOME=str(tmp_path), LANG="C.UTF-8")
        proc = await asyncio.create_subprocess_exec(
            "irssi", f"--home={home}", "-c", "127.0.0.1", "-p", str(words.irc_port),
            "-w", "irssi-pw", "-n", "erin", stdin=terminal, stdout=terminal, stderr=terminal,
            env=env, start_new_session=True)
        os.close(terminal)
        screen = bytearray()

        def drain() -> None:
            try:
                screen.extend(os.read(controller, 65536))
            except OSError:
                pass

        loop = asyncio.get_running_loop()
        loop.add_reader(controller, drain)
        try:
            await wait_until(lambda: words.chat.is_online("erin"), timeout=20)
            os.write(controller, b"/join #lounge\r")
            await mind.wait_for(lambda m: ("joined", "lounge", "erin") in m.events, timeout=20)
            os.write(controller, "hello from irssi ✓\r".encode())
            await mind.wait_for(lambda m: ("message", "lounge", "erin", "hello from irssi ✓",
                                           "message") in m.events, timeout=20)
            await room.call_remote("send", "hello irssi")
            await wait_until(lambda: b"hello irssi" in screen, timeout=20)
            os.write(controller, b"/quit\r")
            async with asyncio.timeout(10):
                await proc.wait()
        finally:
            loop.remove_reader(controller)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(controller)
            await pb.connection.close()


async def test_a_wrong_irc_password_counts_in_the_same_throttle_as_pb_logins(words):
    import cred

    words.portal.throttle = cred.Throttle(base_delay=30)
    assert words.portal.throttle.delay_for("alice", "127.0.0.1") == 0
    client = await RawIRC.connect(words.irc_port)
    try:
        client.send("PASS :wrong")
        client.send("NICK alice")
        client.send("USER alice 0 * :x")
        await client.expect(r" 464 ")
        await client.closed()
    finally:
        await client.close()
    # The next try for alice, over IRC or PB, waits out the back-off first.
    assert words.portal.throttle.delay_for("alice", "127.0.0.1") > 0
    assert words.portal.throttle.delay_for("bob", "127.0.0.1") > 0  # the source counts too


async def test_connections_from_one_address_are_capped(tmp_path):
    async with running_words(tmp_path / "data", "--max-irc-per-source", "2") as words:
        first = await RawIRC.connect(words.irc_port, "alice")
        second = await RawIRC.connect(words.irc_port, "bob")
        third = await RawIRC.connect(words.irc_port)
        try:
            await third.expect(r"^ERROR :Closing link: .*too many connections from your address")
            await third.closed()
            await third.close()
            await wait_until(lambda: words.irc.per_source == {"127.0.0.1": 2})
            await second.close()
            await wait_until(lambda: words.irc.per_source == {"127.0.0.1": 1})
            third = await RawIRC.connect(words.irc_port, "carol")
            first.send("PING ok")
            await first.expect("PONG")
        finally:
            for client in (first, second, third):
                await client.close()
        await wait_until(lambda: not words.irc.per_source and not words.irc.protocols)


def test_the_source_of_a_limit_is_an_address_or_an_ipv6_64():
    from services.words._server import _source_key

    assert _source_key("192.0.2.7") == "192.0.2.7"
    assert _source_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert _source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert _source_key("local") == "local"


async def test_removing_a_group_parts_irc_clients_and_empties_pb_views(words):
    from clients._cli.chat import RemoteGroupView  # noqa: F401  (registers the view)

    mind = Mind()
    pb = await pb_login(words, "bob", mind)
    irc_client = await RawIRC.connect(words.irc_port, "alice")
    try:
        room = await pb.call_remote("join", "doomed")
        view = await room.call_remote("view")
        irc_client.send("JOIN #doomed")
        await irc_client.expect(r" 366 ")
        await wait_until(lambda: "alice" in view.members)
        words.chat.admin_set_topic("doomed", "closing", by="operator")
        await irc_client.expect(r"^:operator!operator@words TOPIC #doomed :closing$")
        words.chat.remove_group("doomed", "closed by the operator")
        await irc_client.expect(r"^:alice!alice@words PART #doomed :closed by the operator$")
        await wait_until(lambda: view.members == {})
        await mind.wait_for(lambda m: ("left", "doomed", "bob", "closed by the operator")
                            in m.events)
        irc_client.send("PRIVMSG #doomed :anyone?")
        await irc_client.expect(r" 403 alice #doomed ")
    finally:
        await irc_client.close()
        await pb.connection.close()


async def test_a_burst_in_one_write_reaches_every_member_once_and_in_order(tmp_path):
    # Forty lines in one write are handled in one server loop turn: the IRC
    # members get them written together (one write each per turn), the PB
    # member as calls; each message exactly once, in order per room, also
    # with a second room's messages interleaved in the same burst.
    async with running_words(tmp_path / "data", "--flood-burst", "1000",
                             "--max-queued", "1000", users=("alice", "bob", "carol", "dave")) as words:
        sender = await RawIRC.connect(words.irc_port, "alice")
        bob = await RawIRC.connect(words.irc_port, "bob")
        carol = await RawIRC.connect(words.irc_port, "carol")
        mind = Mind()
        dave = await pb_login(words, "dave", mind)
        try:
            for client, room in ((sender, "one"), (bob, "one"), (carol, "one"),
                                 (bob, "two"), (sender, "two")):
                client.send(f"JOIN #{room}")
                await client.expect(" 366 ")
            await dave.call_remote("join", "one")
            await bob.expect("dave!dave@words JOIN #one")
            await carol.expect("dave!dave@words JOIN #one")
            burst = b"".join(f"PRIVMSG #{'one' if n % 4 else 'two'} :n{n}\r\n".encode()
                             for n in range(40))
            sender.send(burst)
            sender.send("PING :after")
            await sender.expect("PONG .*after")
            one = [f"n{n}" for n in range(40) if n % 4]
            two = [f"n{n}" for n in range(40) if not n % 4]
            await mind.wait_for(lambda m: len(m.of("message")) >= len(one))
            assert [e[3] for e in mind.of("message")] == one
            await carol.expect(f":{one[-1]}$")
            assert [line.rsplit(":", 1)[1] for line in carol.seen
                    if "PRIVMSG #one" in line] == one
            await bob.expect(f":{one[-1]}$|:{two[-1]}$")
            bob.send("PING :end")
            await bob.expect("PONG .*end")
            said = [line for line in bob.seen if " PRIVMSG #" in line]
            assert [line.rsplit(":", 1)[1] for line in said if "#one" in line] == one
            assert [line.rsplit(":", 1)[1] for line in said if "#two" in line] == two
            assert not [line for line in sender.seen if " PRIVMSG #" in line]
        finally:
            await sender.close()
            await bob.close()
            await carol.close()


async def test_a_connection_whose_output_cannot_be_written_does_not_hold_up_the_room(words):
    # Output from a fan-out is written for every waiting client in one
    # pass; one that fails there is dropped and the others still get theirs.
    sender = await RawIRC.connect(words.irc_port, "alice")
    bob = await RawIRC.connect(words.irc_port, "bob")
    carol = await RawIRC.connect(words.irc_port, "carol")
    try:
        for client in (sender, carol, bob):
            client.send("JOIN #room")
            await client.expect(" 366 ")
        await sender.expect("bob!bob@words JOIN")
        broken = next(p for p in words.irc.protocols
                      if p.machine is not None and p.machine.nick == "carol")

        def fail() -> None:
            raise OSError("injected: this connection cannot be written")

        broken._flush = fail
        sender.send("PRIVMSG #room :still here")
        await bob.expect(":still here$")
        await wait_until(lambda: not words.chat.is_online("carol"))
        sender.send("PRIVMSG #room :and again")
        await bob.expect(":and again$")
    finally:
        await sender.close()
        await bob.close()
        await carol.close()
