"""The README's five-minute tour, run as written.

Every ``**`name.py`**`` block of the tour is written to a file, the servers
are started, and each ``$ command`` of the tour's console blocks is run and
its output compared with the lines the README shows under it; the blocking
``>>>`` session runs through doctest.  Only the port numbers are changed
(to free ones), so that the test does not depend on 8789 and 8790 being
free.  A sample that stops working fails here instead of in a reader's
terminal.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PORTS = ("8789", "8790")


def tour() -> str:
    text = README.read_text()
    start = text.index("## A five-minute tour")
    end = text.index("### Look inside a running server", start)  # needs `pb run demo`'s fixed ports
    return text[start:end]


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def wait_for_port(port: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def test_the_readme_tour_works_as_written(tmp_path):
    text = tour()
    ports = {old: free_port() for old in PORTS}

    def localise(s: str) -> str:
        for old, new in ports.items():
            s = s.replace(old, new)
        return s

    files = dict(re.findall(r"\*\*`([\w.]+\.py)`\*\*\s*```python\n(.*?)```", text, re.S))
    assert set(files) == {"server.py", "client.py", "login_server.py", "login_client.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(localise(code))

    commands = []  # (command, expected output lines)
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *output = chunk.rstrip("\n").split("\n")
            commands.append((command, output))
    assert len(commands) == 5

    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PB_PASSWORD", None)
    def argv_of(command: str) -> list[str]:
        argv = shlex.split(localise(command))
        if argv[0] == "python":
            return [sys.executable, *argv[1:]]
        if argv[0] == "pb":
            return [sys.executable, "-m", "clients._cli", *argv[1:]]
        return argv

    (session,) = re.findall(r"```pycon\n(.*?)```", text, re.S)
    (tmp_path / "session.txt").write_text(localise(session))

    def start(argv):
        return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    # The servers (`python x.py &`) first, all at once; then every other
    # command and the >>> session (through doctest), all at once.
    servers = {}
    try:
        for command, output in commands:
            if command.endswith("&"):
                assert output == []
                argv = argv_of(command[:-1])
                port = re.search(r"\b(\d{4,5})\b", (tmp_path / argv[1]).read_text())[1]
                servers[port] = start(argv)
        for port, proc in servers.items():
            wait_for_port(port, proc)
        clients = [(command, output, start(argv_of(command)))
                   for command, output in commands if not command.endswith("&")]
        doctest = start([sys.executable, "-m", "doctest", "session.txt"])
        for command, output, proc in clients:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, (command, stderr)
            assert stdout.splitlines() == output, command
        stdout, stderr = doctest.communicate(timeout=60)
        assert doctest.returncode == 0, stdout + stderr
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                _, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
            assert "Traceback" not in stderr, stderr  # SIGTERM ends them without one
