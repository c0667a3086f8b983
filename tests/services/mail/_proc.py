"""A ``pb run mail`` child process for the subprocess tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests._child import OutputChild

REPO = Path(__file__).resolve().parents[3]
BANNER = r"mail: smtp://127\.0\.0\.1:(\d+) pop3://127\.0\.0\.1:(\d+)(?: pb://127\.0\.0\.1:(\d+))?"


def child_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONWARNINGS", None)
    env.pop("PYTHONASYNCIODEBUG", None)  # debug mode slows every callback; not what is tested here
    if home is not None:
        env["HOME"] = str(home)
    return env


class MailChild(OutputChild):
    """``pb run --data-dir DATA mail ...`` with the given mail options;
    ``smtp``, ``pop3`` and ``pb`` are its ports once :meth:`ready` returned."""

    def __init__(self, tmp: Path, *mail_args: str, home: Path | None = None) -> None:
        command = [sys.executable, "-W", "error::ResourceWarning", "-m", "clients._cli", "run",
                   "--data-dir", str(tmp / "data"), "--log-level", "warning", "mail", *mail_args]
        super().__init__(command, cwd=tmp, env=child_env(home))
        self.smtp = self.pop3 = self.pb = 0

    def ready(self, timeout: float = 15) -> MailChild:
        match = self.wait_for("stdout", BANNER, timeout)
        self.smtp, self.pop3 = int(match[1]), int(match[2])
        self.pb = int(match[3]) if match[3] else 0
        return self


def domain_args(root: Path, *users: str, password: str) -> list[str]:
    args = ["--domain", f"example.com={root / 'example.com'}",
            "--domain", f"example.org={root / 'example.org'}", "--hostname", "mx.test"]
    for user in users:
        args += ["--user", f"{user}:{password}"]
    return args
