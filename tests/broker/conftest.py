import asyncio
import contextlib

import pytest

import broker
from broker.testing import connected_pair


@contextlib.asynccontextmanager
async def _pair(kind, server_root, client_root=None, tmp_path=None, limits=None, **kw):
    if kind in ("memory", "memory-bytewise"):
        server_conn, client_conn = await connected_pair(
            server_root, client_root, limits=limits,
            chunk_size=1 if kind == "memory-bytewise" else None, **kw)
        try:
            yield server_conn, client_conn
        finally:
            await client_conn.close()
            await server_conn.wait_closed()
        return
    if kind == "tcp":
        server = await broker.serve(server_root, "127.0.0.1", 0, limits=limits, **kw)
        connect_args = dict(host="127.0.0.1", port=server.port)
    else:
        path = str(tmp_path / "pb.sock")
        server = await broker.serve(server_root, path=path, limits=limits, **kw)
        connect_args = dict(path=path)
    async with server:
        client_conn = await broker.connect(root=client_root, limits=limits, **connect_args)
        await client_conn.wait_ready()
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        (server_conn,) = server.connections
        try:
            yield server_conn, client_conn
        finally:
            await client_conn.close()


@pytest.fixture(params=["memory", "memory-bytewise", "tcp", "unix"])
def pair(request, tmp_path):
    def make(server_root, client_root=None, **kw):
        return _pair(request.param, server_root, client_root, tmp_path=tmp_path, **kw)
    make.kind = request.param
    return make
