"""Mount an ASGI 3 application (Starlette, FastAPI, Django…) as a resource.

``ASGIResource(app)`` answers every path under it; the application sees
``root_path`` set to where it is mounted (through a front, that includes
``/alice.twistd``) and ``path`` as the full path, as the ASGI spec says.
Its ``receive`` hands over the body as the client sends it; its ``send``
writes through the request, so a slow client makes ``send`` wait.

The lifespan protocol runs with :meth:`ASGIResource.startup` and
:meth:`ASGIResource.shutdown`, which the service that owns the resource
calls when it starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from ._core import HTTPError, Request, Resource

__all__ = ["ASGIResource"]

_log = logging.getLogger("pb.web.asgi")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class ASGIResource(Resource):
    is_leaf = True

    def __init__(self, app: ASGIApp, *, server: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.app = app
        self.server = server
        self.state: dict[str, Any] = {}
        self._lifespan: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lifespan_supported = False

    # -- lifespan ------------------------------------------------------------------

    async def startup(self, timeout: float = 30.0) -> None:
        """Run the application's lifespan startup; RuntimeError if it failed."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self._lifespan = asyncio.get_running_loop().create_task(self._run_lifespan(scope))
        await self._to_app.put({"type": "lifespan.startup"})
        getter = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait({getter, self._lifespan}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if self._lifespan.done():
                # The application does not speak lifespan (it raised): fine, per the spec.
                self._lifespan = None
                return
            raise RuntimeError(f"the ASGI application did not finish its startup in {timeout:g} s")
        message = getter.result()
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the ASGI application's startup failed: "
                               f"{message.get('message', '')}")
        self.lifespan_supported = True

    async def _run_lifespan(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.lifespan_supported:
                _log.info("the ASGI application does not support lifespan (%r)", exc)
            else:
                _log.error("the ASGI application's lifespan failed", exc_info=exc)

    async def shutdown(self, timeout: float = 30.0) -> None:
        task, self._lifespan = self._lifespan, None
        if task is None:
            return
        try:
            if self.lifespan_supported and not task.done():
                await self._to_app.put({"type": "lifespan.shutdown"})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        message = await self._from_app.get()
                        if message["type"] == "lifespan.shutdown.failed":
                            _log.error("the ASGI application's shutdown failed: %s",
                                       message.get("message", ""))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- requests ------------------------------------------------------------------

    def _scope(self, request: Request) -> Scope:
        mount = request.mount_path
        rest = "/" + "/".join(request.raw_postpath) if request.raw_postpath else ""
        raw_path = (mount + rest) or "/"
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme,
            "path": unquote(raw_path) if "%" in raw_path else raw_path,
            "raw_path": raw_path.encode("latin-1", "replace"),
            "query_string": request.query.encode("latin-1", "replace"),
            "root_path": unquote(mount) if "%" in mount else mount,
            "headers": headers,
            "client": list(request.client) if request.client else None,
            "server": list(self.server) if self.server else None,
            "state": dict(self.state),
        }

    async def render(self, request: Request) -> Any:
        # The body stream and the end-of-exchange event are made only when
        # the application calls receive(): most GETs never do, and these
        # were a measurable part of a small request's cost.
        body: Any = None
        body_done = False
        response_done: asyncio.Event | None = None
        over = False
        started = False

        async def receive() -> dict[str, Any]:
            nonlocal body, body_done, response_done
            if not body_done:
                if body is None:
                    body = request.stream()
                try:
                    chunk = await body.__anext__()
                    return {"type": "http.request", "body": chunk, "more_body": True}
                except StopAsyncIteration:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            # Nothing more will come: wait until the answer is out, then the
            # application may hear that the exchange is over.
            if not over:
                if response_done is None:
                    response_done = asyncio.Event()
                await response_done.wait()
            return {"type": "http.disconnect"}

        def end_exchange() -> None:
            nonlocal over
            over = True
            if response_done is not None:
                response_done.set()

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            kind = message.get("type")
            if kind == "http.response.start":
                if started:
                    raise RuntimeError("http.response.start sent twice")
                started = True
                request.set_status(int(message["status"]))
                request.response_headers.extend(
                    [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                     for name, value in message.get("headers", ())])
            elif kind == "http.response.body":
                if not started:
                    raise RuntimeError("http.response.body before http.response.start")
                if request.finished:
                    return
                await request.write(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    await request.finish()
                    end_exchange()
            else:
                raise RuntimeError(f"unexpected ASGI message type {kind!r}")

        try:
            await self.app(self._scope(request), receive, send)
        finally:
            end_exchange()
        if not started:
            raise HTTPError(500, "the application sent no response")
        if not request.finished:
            await request.finish()
        return None
