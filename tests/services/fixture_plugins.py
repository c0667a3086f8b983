"""Plug-ins for the tests of the application framework and ``pb run``.

Registered in-process by the unit tests, and loaded by the ``pb run``
subprocess tests through ``PB_EXTRA_PLUGINS=tests.services.fixture_plugins``
(the module's ``plugins`` list).

* ``line-echo``: a TCP line echo server on 127.0.0.1 (ephemeral port by
  default) that prints its address in its banner, says ``bye`` to connected
  clients when it stops, and can be told to fail on start
  (``--fail-start``) or to take a while to stop (``--slow-stop SECONDS``).
* ``ticker``: built asynchronously; an owned task writes a counter into the
  data directory; it shares the application's portal.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services import Application, Service, ServicePlugin


class LineEchoService(Service):
    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_start: bool = False,
        slow_stop: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.host = host
        self.port = port
        self.fail_start = fail_start
        self.slow_stop = slow_stop
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def on_start(self) -> None:
        if self.fail_start:
            raise RuntimeError("asked to fail (--fail-start)")
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so that the connection's task is ours to cancel
        # rather than one asyncio starts and nobody owns.  The writer is
        # registered here, not when the task first runs: a stop coming in
        # between cancels the task before its finally can close anything.
        # A connection accepted once the stop began is closed at once.
        if not self.running:
            writer.close()
            return
        self._writers.add(writer)
        self.create_task(self._serve(reader, writer), name=f"{self.name}:connection")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def on_stop(self) -> None:
        assert self._server is not None
        self._server.close()  # stop accepting
        try:
            for writer in list(self._writers):
                writer.write(b"bye\n")
            if self.slow_stop:
                await asyncio.sleep(self.slow_stop)  # in-flight work finishing
        finally:
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    def banner(self) -> str:
        return f"line-echo {self.name} listening on {self.host}:{self.port}"


class LineEchoPlugin(ServicePlugin):
    name = "line-echo"
    description = "echo lines back over TCP (a test fixture)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--fail-start", action="store_true")
        parser.add_argument("--slow-stop", type=float, default=0.0, metavar="SECONDS")

    def build(self, options: argparse.Namespace, application: Application) -> Service:
        return LineEchoService(
            self.name,
            host=options.host,
            port=options.port,
            fail_start=options.fail_start,
            slow_stop=options.slow_stop,
        )


class FakePortal:
    """Stands in for cred's Portal until that layer exists."""

    def __init__(self) -> None:
        self.realms: list[str] = []


class TickerService(Service):
    def __init__(self, name: str, data_dir: Path, interval: float) -> None:
        super().__init__(name)
        self.data_dir = data_dir
        self.interval = interval
        self.ticks = 0

    @property
    def path(self) -> Path:
        return self.data_dir / f"{self.name}.ticks"

    async def on_start(self) -> None:
        self.create_task(self._tick(), name=f"{self.name}:tick")

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            self.path.write_text(f"{self.ticks}\n")
            await asyncio.sleep(self.interval)

    def banner(self) -> str:
        return f"ticker {self.name} writing {self.path}"


class TickerPlugin(ServicePlugin):
    name = "ticker"
    description = "count in a file in the data directory (a test fixture)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--interval", type=float, default=0.05)
        parser.add_argument("--realm", default="ticks")

    async def build(self, options: argparse.Namespace, application: Application) -> Service:
        await asyncio.sleep(0)  # builds may be async
        portal = application.use_portal(FakePortal)
        portal.realms.append(options.realm)
        return TickerService(self.name, application.data_dir, options.interval)


line_echo = LineEchoPlugin()
ticker = TickerPlugin()
plugins = [line_echo, ticker]
