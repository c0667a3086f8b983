"""Ours, streaming: a remote method returns an async iterator, the client
iterates the ``RemoteStream`` it gets.

Server (``broker.Root``), one of two sources:

* ``--source gen``: ``remote_fetch(total)`` is an async generator yielding
  the same 256 KiB ``bytes`` object until ``total`` bytes are out (no data
  held, nothing produced per chunk: the transport is what is measured);
* ``--source bytes``: ``remote_fetch(total)`` returns
  ``broker.stream_bytes(DATA[:total])``, ``DATA`` being 100 MiB of bytes the
  server made at start (so its RSS includes those 100 MiB; each chunk is
  copied out of it by ``stream_bytes``).

Client (its own process)::

    stream = await root.call_remote("fetch", 100 * 2**20)
    async for chunk in stream:        # default window: 8 pulls in flight
        received += len(chunk)        # chunks are dropped at once

    python -m peers.stream_pb serve [--source gen|bytes] [--loop asyncio|uvloop]
    python -m peers.stream_pb client --port N [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse

from _harness import ChildDriver, announce, run_loop
from peers.stream_common import CHUNK, CHUNK_BYTES, HOST, TOTAL, client_main, serve_usage_requests


def unavailable() -> str | None:
    try:
        import broker
    except Exception as exc:  # pragma: no cover - depends on the tree
        return f"broker not importable ({type(exc).__name__}: {exc})"
    missing = [n for n in ("serve", "connect", "Root", "stream_bytes") if not hasattr(broker, n)]
    return f"broker has no {', '.join(missing)} yet" if missing else None


# --------------------------------------------------------------------------
# processes


async def _serve(source: str) -> None:
    import broker

    if source == "gen":
        class StreamRoot(broker.Root):
            async def remote_fetch(self, total: int):
                chunk = CHUNK_BYTES
                left = total
                while left >= CHUNK:
                    yield chunk
                    left -= CHUNK
                if left:
                    yield chunk[:left]
    else:
        data = bytes(range(256)) * (TOTAL // 256)

        class StreamRoot(broker.Root):  # type: ignore[no-redef]
            def remote_fetch(self, total: int):
                return broker.stream_bytes(memoryview(data)[:total])

    server = await broker.serve(StreamRoot(), HOST, 0)
    announce(server.port)
    await server.serve_forever()


def _client(port: int, loop: str) -> None:
    async def setup():
        import broker

        conn = await broker.connect(HOST, port)
        root = await conn.root()

        async def transfer() -> int:
            stream = await root.call_remote("fetch", TOTAL)
            received = 0
            async for chunk in stream:
                received += len(chunk)
            return received

        return transfer

    client_main(setup, loop)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.stream_pb")
    p.add_argument("mode", choices=["serve", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--source", default="gen", choices=["gen", "bytes"])
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args(argv)
    if args.mode == "serve":
        serve_usage_requests()
        run_loop(lambda: _serve(args.source), args.loop)
    else:
        _client(args.port, args.loop)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, loop: str = "asyncio", source: str = "gen") -> ChildDriver:
    server = children.start("peers.stream_pb", "serve", "--source", source, "--loop", loop)
    client = children.start("peers.stream_pb", "client", "--port", str(server.port), "--loop", loop)
    if client.handshake != "ready":
        raise RuntimeError(f"pb client: {client.handshake}")
    drv = ChildDriver(name, client)
    drv.server = server  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
