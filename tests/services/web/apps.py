"""Applications the web tests publish through personal servers (importable
by the subprocesses through PYTHONPATH)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from services.web import Request, Resource

LIFESPAN_EVENTS: list[str] = []


class Info(Resource):
    """Answers what the personal server saw, as JSON; POST hashes the body."""

    is_leaf = True

    def render_GET(self, request: Request) -> bytes:
        return json.dumps({"path": request.path, "query": request.query,
                           "root_path": request.root_path, "client": request.client,
                           "headers": dict(request.headers)}).encode()

    async def render_POST(self, request: Request) -> bytes:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.stream():
            digest.update(chunk)
            total += len(chunk)
        return json.dumps({"bytes": total, "sha256": digest.hexdigest()}).encode()


class Zeros(Resource):
    """GET /N streams N zero bytes, 1 MiB per write."""

    is_leaf = True

    async def render_GET(self, request: Request) -> None:
        size = int(request.postpath[0]) if request.postpath and request.postpath[0] else 0
        request.set_header("Content-Length", str(size))
        block = bytes(1 << 20)
        while size > 0:
            n = min(size, len(block))
            await request.write(block[:n])
            size -= n


class Slow(Resource):
    """Never answers (until cancelled); records the cancellation."""

    is_leaf = True
    cancelled = 0

    async def render_GET(self, request: Request) -> bytes:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            type(self).cancelled += 1
            raise
        return b""


site = Resource()
site.put_child("info", Info())
site.put_child("zeros", Zeros())
site.put_child("slow", Slow())


# -- a real Starlette application ----------------------------------------------------


async def _hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"hello from starlette at {request.url.path} "
                             f"root_path={request.scope.get('root_path')!r} "
                             f"started={request.app.state.started}")


async def _upload(request: StarletteRequest) -> JSONResponse:
    digest = hashlib.sha256()
    total = 0
    async for chunk in request.stream():
        digest.update(chunk)
        total += len(chunk)
    return JSONResponse({"bytes": total, "sha256": digest.hexdigest()})


async def _stream(request: StarletteRequest) -> StreamingResponse:
    async def parts() -> Any:
        for i in range(3):
            yield f"part {i}\n".encode()
    return StreamingResponse(parts(), media_type="text/plain")


from contextlib import asynccontextmanager  # noqa: E402


@asynccontextmanager
async def _lifespan(app: Starlette) -> Any:
    LIFESPAN_EVENTS.append("startup")
    app.state.started = True
    yield
    LIFESPAN_EVENTS.append("shutdown")


starlette_app = Starlette(routes=[Route("/hello", _hello), Route("/upload", _upload, methods=["POST"]),
                                  Route("/stream", _stream)], lifespan=_lifespan)


# -- a WSGI application --------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        text = f"wsgi got {len(body)} bytes sha256={hashlib.sha256(body).hexdigest()}"
    else:
        text = (f"wsgi says hi: SCRIPT_NAME={environ['SCRIPT_NAME']} "
                f"PATH_INFO={environ['PATH_INFO']} QUERY={environ['QUERY_STRING']}")
    data = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
