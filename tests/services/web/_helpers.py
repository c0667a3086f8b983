"""Helpers shared by the web tests: a server in the test's loop, raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
from collections.abc import AsyncIterator
from typing import Any

from services.web import HTTPLimits, HTTPServer, Resource


@contextlib.asynccontextmanager
async def running(resource: Resource, *, debug: bool = False,
                  **limits: Any) -> AsyncIterator[HTTPServer]:
    server = HTTPServer(resource, limits=HTTPLimits(**limits), debug=debug)
    await server.listen("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


def port_of(server: HTTPServer) -> int:
    return server.addresses[0][1]


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0,
                       half_close: bool = False) -> bytes:
    """Send ``data``, read until the server closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        out = bytearray()
        try:
            async with asyncio.timeout(read_timeout):
                while chunk := await reader.read(65536):
                    out += chunk
        except TimeoutError:
            pass
        return bytes(out)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def get(port: int, path: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (in a thread): status, headers, body."""

    def run() -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    return await asyncio.to_thread(run)
