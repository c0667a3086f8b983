"""docs/coming-from-twisted.md, "Migrating one process at a time", runs as
written: each step's programs are taken from the doc, run as subprocesses
against each other (the real Twisted on the other side), and the client's
output is compared with the doc's console block."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("twisted.spread.pb", reason="Twisted is not installed (the test extra "
                    "pulls it in): the Twisted-dialect interop tests need a real Twisted peer")

from tests.clients.test_readme_tour import free_port, wait_for_port  # noqa: E402
from tests.services.test_echo import pb, pb_env  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "coming-from-twisted.md"
#: The ports the doc's programs use, each replaced by a free one here.
DOC_PORTS = ("8787", "8788")


def steps() -> list[str]:
    text = DOC.read_text()
    section = text.split("\n## Migrating one process at a time\n", 1)[1].split("\n## ", 1)[0]
    return section.split("\n### ")[1:]


def programs(step: str) -> dict[str, str]:
    return dict(re.findall(r"\*\*`(\w+\.py)`\*\*\n\n```python\n(.*?)```", step, re.S))


def setup_commands(step: str) -> list[list[str]]:
    return [shlex.split(line) for block in re.findall(r"```sh\n(.*?)```", step, re.S)
            for line in block.splitlines() if line.strip()]


def session(step: str) -> tuple[str, str, list[str]]:
    """(server program, client program, the client's expected output)."""
    (block,) = re.findall(r"```console\n(.*?)```", step, re.S)
    lines = block.splitlines()
    server = re.fullmatch(r"\$ python (\w+\.py) &", lines[0])[1]
    client = re.fullmatch(r"\$ python (\w+\.py)", lines[1])[1]
    return server, client, lines[2:]


def test_the_doc_has_both_steps_with_their_programs():
    first, second = steps()
    assert first.startswith("Step 1") and second.startswith("Step 2")
    assert set(programs(first)) == {"twisted_server.py", "our_client.py"}
    assert set(programs(second)) == {"our_server.py", "twisted_client.py"}


@pytest.mark.parametrize("index", [0, 1], ids=["step1-twisted-server", "step2-our-server"])
def test_a_migration_step_runs_as_written(tmp_path, index):
    step = steps()[index]
    ports = {doc_port: free_port() for doc_port in DOC_PORTS}
    for name, source in programs(step).items():
        for doc_port, port in ports.items():
            source = source.replace(doc_port, port)
        (tmp_path / name).write_text(source)
    env = pb_env()
    for command in setup_commands(step):
        assert command[0] == "pb", command
        done = pb(*command[1:], cwd=tmp_path, input="guest\n", env=env)
        assert done.returncode == 0, done.stderr
    server_name, client_name, expected = session(step)
    server = subprocess.Popen([sys.executable, server_name], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(ports["8787"], server)
        client = subprocess.run([sys.executable, client_name], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == expected
        assert server.poll() is None, server.communicate()[1]
    finally:
        server.kill()
        server.communicate()
