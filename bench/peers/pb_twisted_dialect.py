"""Ours in the Twisted PB dialect (``dialect="twisted"``), two ways round.

* ``twisted-client->pb``: our server, ``broker.serve(EchoRoot(), host, 0,
  dialect="twisted")``, driven by the unchanged Twisted PB client of
  ``peers.twisted_pb`` (a reactor in its own process).  Compare with the
  ``twisted-pb`` row (the same client against Twisted's own server): only
  the server half differs.
* ``pb->twisted-server``: our asyncio client, ``broker.connect(host, port,
  dialect="twisted")``, driving Twisted's own PB server.

    python -m peers.pb_twisted_dialect serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

import asyncio

from _harness import AsyncDriver, ChildDriver, announce, serve_main
from peers.common import HOST, async_ops


def unavailable() -> str | None:
    try:
        import twisted.spread.pb  # noqa: F401

        import broker.twisted  # noqa: F401
    except Exception as exc:
        return f"needs twisted and broker.twisted ({type(exc).__name__}: {exc})"
    return None


async def _serve() -> None:
    import broker

    class EchoRoot(broker.Root):
        def remote_echo(self, x):
            return x

    server = await broker.serve(EchoRoot(), HOST, 0, dialect="twisted")
    announce(server.port)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    serve_main("peers.pb_twisted_dialect", _serve, argv)


def driver(name: str, children, runners, loop: str = "asyncio") -> ChildDriver:
    """Twisted's client against our server in the Twisted dialect."""
    server = children.start("peers.pb_twisted_dialect", "serve", "--loop", loop)
    client = children.start("peers.twisted_pb", "client", "--port", str(server.port))
    if client.handshake != "ready":
        raise RuntimeError(f"twisted client: {client.handshake}")
    return ChildDriver(name, client)


def client_driver(name: str, children, runners, loop: str = "asyncio") -> AsyncDriver:
    """Our client in the Twisted dialect against Twisted's server."""
    import broker

    server = children.start("peers.twisted_pb", "serve")
    runner = runners.get(loop)

    async def open_root():
        conn = await broker.connect(HOST, server.port, dialect="twisted")
        return conn, await conn.root()

    conn, root = runner.run(open_root())

    def call(value):
        return root.call_remote("echo", value)

    async def connect_once() -> None:
        c = await broker.connect(HOST, server.port, dialect="twisted")
        r = await c.root()
        await r.call_remote("echo", "hello")
        await c.close()

    drv = AsyncDriver(name, runner, async_ops(call, connect_once))
    drv.close = lambda: runner.run(conn.close())  # type: ignore[attr-defined]
    return drv


class ClientSide:
    """``System.module`` for the ``pb->twisted-server`` row."""

    unavailable = staticmethod(unavailable)
    driver = staticmethod(client_driver)


if __name__ == "__main__":
    main()
