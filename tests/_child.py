"""A long-running child process whose output lines are collected as they come
(shared by the `pb run`, echo, demo and manhole subprocess tests)."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class OutputChild:
    wait_timeout = 15.0

    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str],
                 stdin: Any = None) -> None:
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=stdin,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: dict[str, queue.Queue[str]] = {"stdout": queue.Queue(), "stderr": queue.Queue()}
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.readers = [
            threading.Thread(target=self._pump, args=(name, getattr(self.proc, name)), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for reader in self.readers:
            reader.start()

    def _pump(self, name: str, stream: Any) -> None:
        for line in stream:
            self.lines[name].put(line.rstrip("\n"))

    def wait_for(self, name: str, pattern: str, timeout: float | None = None) -> re.Match[str]:
        timeout = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines[name].get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {name} line matching {pattern!r} within {timeout}s; got {self.seen}"
                ) from None
            self.seen[name].append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 15) -> tuple[int, str, str]:
        """Wait for exit; return (exit code, all stdout, all stderr)."""
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        for name in ("stdout", "stderr"):
            while not self.lines[name].empty():
                self.seen[name].append(self.lines[name].get())
        return code, "\n".join(self.seen["stdout"]), "\n".join(self.seen["stderr"])

    def stop(self, timeout: float = 15) -> tuple[int, str, str]:
        """SIGTERM (if still running), then :meth:`finish`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()
