"""docs/words.md: the example bot runs as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from tests.services.test_echo import pb_env

from .conftest import PASSWORD, Mind, pb_login

DOC = Path(__file__).resolve().parents[3] / "docs" / "words.md"


def _bot_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    bots = [block for block in blocks if block.startswith('"""dicebot')]
    assert len(bots) == 1, "docs/words.md should hold one dicebot example"
    return bots[0]


async def test_the_example_bot_from_the_docs_answers_in_a_room(words, tmp_path):
    script = tmp_path / "dicebot.py"
    script.write_text(_bot_source())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), f"127.0.0.1:{words.pb_port}", "games",
        env=pb_env(BOT_USER="carol", BOT_PASSWORD=PASSWORD), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mind = Mind()
    alice = await pb_login(words, "alice", mind)
    try:
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).decode().strip() == "dicebot ready"
        room = await alice.call_remote("join", "games")
        await room.call_remote("send", "!roll")
        await mind.wait_for(lambda m: any(e[2] == "carol" for e in m.of("message")))
        answer = [e for e in mind.of("message") if e[2] == "carol"][0]
        assert re.fullmatch(r"alice rolled [1-6]", answer[3])
    finally:
        await alice.connection.close()
        proc.terminate()
        out, err = await proc.communicate()
    assert b"Traceback" not in err or b"KeyboardInterrupt" in err, err
