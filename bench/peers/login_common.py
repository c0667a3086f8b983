"""What the login benchmark's peers share: the account, the ops, and a
resource-usage channel for servers.

Ops (each returns how many logins it did):

``check``   one login + echo, the answer verified, and a wrong password
            refused (raises otherwise)
``login``   one login: new connection, log in as alice, ``echo("hi")``,
            close (waiting until the connection is closed)  -> 1
``login8``  8 of those in flight at once, all awaited         -> 8
``usage``   not a login: this process's CPU seconds and RSS (see :func:`usage`)

Servers answer ``{"op": "usage"}`` JSON lines on stdin with their own
:func:`usage` (``serve_usage_requests``), and exit when stdin closes, so the
benchmark can charge server CPU to each window.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
from typing import Any, Awaitable, Callable

HOST = "127.0.0.1"
USER = "alice"
PASSWORD = "pw"
SERVICE = "pbecho"
HI = "hi"
CONCURRENCY = 8

OPS = ("check", "login", "login8")


def usage() -> dict:
    """This process: CPU seconds (user + system, all threads), peak RSS and
    current RSS in KiB."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss, "rss_kib": current_rss_kib()}


def current_rss_kib() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


def serve_usage_requests() -> None:
    """Child side (servers): answer ``{"op": "usage"}`` lines on stdin with
    :func:`usage` from a daemon thread; exit the process at stdin EOF (the
    benchmark closed it or died), like ``_harness.exit_with_parent``."""
    from _harness import command_loop

    def handle(cmd: dict) -> dict:
        if cmd.get("op") != "usage":
            raise ValueError(f"unknown op {cmd.get('op')!r}")
        return usage()

    def run() -> None:
        try:
            command_loop(handle)
        finally:
            os._exit(0)

    threading.Thread(target=run, name="usage-requests", daemon=True).start()


def async_login_ops(login_once: Callable[[], Awaitable[Any]],
                    check_more: Callable[[], Awaitable[Any]] | None = None
                    ) -> dict[str, Callable[[], Awaitable[int]]]:
    """The ops of an in-process asyncio client, from its one-login coroutine:
    ``check`` runs ``check_more`` (if any) and 8 logins at once."""

    async def check() -> int:
        if check_more is not None:
            await check_more()
        await asyncio.gather(*[login_once() for _ in range(CONCURRENCY)])
        return 1

    async def login() -> int:
        await login_once()
        return 1

    async def login8() -> int:
        await asyncio.gather(*[login_once() for _ in range(CONCURRENCY)])
        return CONCURRENCY

    return {"check": check, "login": login, "login8": login8}


def async_driver(module: str, name: str, children: Any, runners: Any, loop: str,
                 make_ops: Callable[[int], dict]) -> Any:
    """Start ``module``'s server child and drive ``make_ops(port)`` on ``loop``."""
    from _harness import AsyncDriver

    server = children.start(module, "serve", "--loop", loop)
    drv = AsyncDriver(name, runners.get(loop), make_ops(server.port))
    drv.server = server  # for usage requests
    return drv
