"""Ours: the asyncio broker (``broker`` package), used through its public API.

Server: ``broker.serve(EchoRoot(), "127.0.0.1", 0)`` where ``EchoRoot`` is a
``broker.Root`` with ``remote_echo(self, x): return x``.  Client:
``conn = await broker.connect(host, port)``, ``root = await conn.root()``,
``await root.call_remote("echo", x)``, ``await conn.close()``.

    python -m peers.pb serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

import asyncio

from _harness import AsyncDriver, announce, serve_main
from peers.common import HOST, async_ops


def unavailable() -> str | None:
    """Why ours cannot run yet, or None."""
    try:
        import broker
    except Exception as exc:  # pragma: no cover - depends on the tree
        return f"broker not importable yet ({type(exc).__name__}: {exc})"
    missing = [n for n in ("serve", "connect", "Root") if not hasattr(broker, n)]
    if missing:
        return f"broker has no {', '.join(missing)} yet"
    return None


# --------------------------------------------------------------------------
# server process


async def _serve() -> None:
    import broker

    class EchoRoot(broker.Root):
        def remote_echo(self, x):
            return x

    server = await broker.serve(EchoRoot(), HOST, 0)
    announce(server.port)
    serve_forever = getattr(server, "serve_forever", None)
    if serve_forever is not None:
        await serve_forever()
    else:  # keep the loop running; the process ends with its parent
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    serve_main("peers.pb", _serve, argv)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, runners, loop: str = "asyncio") -> AsyncDriver:
    import broker

    child = children.start("peers.pb", "serve", "--loop", loop)
    runner = runners.get(loop)

    async def open_root():
        conn = await broker.connect(HOST, child.port)
        return conn, await conn.root()

    conn, root = runner.run(open_root())

    def call(value):
        return root.call_remote("echo", value)

    async def connect_once() -> None:
        c = await broker.connect(HOST, child.port)
        r = await c.root()
        await r.call_remote("echo", "hello")
        await c.close()

    drv = AsyncDriver(name, runner, async_ops(call, connect_once))
    drv.close = lambda: runner.run(conn.close())  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
