"""What the streaming benchmark's peers share: sizes, the ops, the client
process's command loop, and resource usage.

Each system runs a server process and a client process (so that each
process's peak RSS is its own).  The client answers JSON lines on stdin:

``{"op": "check", "seconds": 0}``     one transfer, its byte count verified
``{"op": "transfer", "seconds": S}``  whole transfers of :data:`TOTAL` bytes
                                      until ``S`` seconds have passed (at
                                      least one) -> ``{"units": bytes, "elapsed"}``
``{"op": "usage"}``                   CPU seconds, peak and current RSS (KiB)

Servers answer ``{"op": "usage"}`` the same way (``serve_usage_requests``)
and exit when their stdin closes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from _harness import announce, command_loop, loop_factory, time_async
from peers.login_common import serve_usage_requests, usage  # noqa: F401  (re-exported)

HOST = "127.0.0.1"
MiB = 1024 * 1024
TOTAL = 100 * MiB
CHUNK = 256 * 1024
CHUNK_BYTES = bytes(range(256)) * (CHUNK // 256)   # one 256 KiB chunk, not all zeros


def client_main(setup: Callable[[], Awaitable[Callable[[], Awaitable[int]]]], loop: str) -> None:
    """Child side: ``setup()`` connects and returns the transfer coroutine
    function (returns the bytes it received); then answer commands until
    stdin closes."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        transfer = runner.run(setup())
        announce("ready")

        async def check() -> int:
            got = await transfer()
            if got != TOTAL:
                raise AssertionError(f"received {got} bytes, expected {TOTAL}")
            return got

        ops: dict[str, Any] = {"check": check, "transfer": transfer}

        def handle(cmd: dict) -> dict:
            if cmd.get("op") == "usage":
                return usage()
            units, elapsed = runner.run(time_async(ops[cmd["op"]], cmd["seconds"]))
            return {"units": units, "elapsed": elapsed}

        command_loop(handle)
