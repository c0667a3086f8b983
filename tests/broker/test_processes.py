"""State sharing and streaming across real processes."""

import asyncio
import json
import subprocess
import sys
import textwrap

import broker
from broker import Cacheable, Root

from .test_caching import SharedList, wait_for

OBSERVER_CLIENT = textwrap.dedent("""
    import asyncio, json, sys
    import broker

    @broker.register_cache("tests.SharedList")
    class Copy(broker.RemoteCache):
        def observe_append(self, item):
            self.items.append(item)

    async def main(port, connections, expected):
        copies = []
        conns = []
        for _ in range(connections):
            conn = await broker.connect("127.0.0.1", port)
            conns.append(conn)
            root = await conn.root()
            copies.append(await root.call_remote("get"))
            await root.call_remote("ready")
        print("ready", flush=True)
        while any(len(c.items) < expected for c in copies):
            await asyncio.sleep(0.01)
        print(json.dumps([c.items for c in copies]), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
""")


class ListHolder(Root):
    def __init__(self):
        self.shared = SharedList()
        self.ready = 0

    def remote_get(self):
        return self.shared

    def remote_ready(self):
        self.ready += 1


async def test_three_observers_in_two_client_processes_see_every_change_in_order():
    holder = ListHolder()
    n = 200
    async with await broker.serve(holder, "127.0.0.1", 0) as server:
        procs = [subprocess.Popen([sys.executable, "-c", OBSERVER_CLIENT, str(server.port),
                                   str(count), str(n)], stdout=subprocess.PIPE, text=True)
                 for count in (2, 1)]
        try:
            for proc in procs:
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
                assert line.strip() == "ready"
            assert len(holder.shared.observers) == 3
            for i in range(n):
                holder.shared.append(i)
                if i % 50 == 0:
                    await asyncio.sleep(0)
            results = [json.loads(await asyncio.wait_for(
                asyncio.to_thread(proc.stdout.readline), 20)) for proc in procs]
            assert results == [[list(range(n))] * 2, [list(range(n))]]
            # one client process disconnects abruptly: its observer goes, once
            procs[1].kill()
            procs[1].wait()
            await wait_for(lambda: len(holder.shared.stopped) == 1, timeout=5)
            await asyncio.sleep(0.1)
            assert len(holder.shared.stopped) == 1
            assert len(holder.shared.observers) == 2
            holder.shared.append("after")
            assert len(server.connections) == 2
            for conn in server.connections:
                assert len(conn._protocol.core.refs.caches_out) == 1
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                proc.stdout.close()


STREAM_SERVER = textwrap.dedent("""
    import asyncio, resource
    import broker

    CHUNK = 256 * 1024

    class Big(broker.Root):
        def remote_stream(self, total):
            async def gen():
                block = bytes(range(256)) * (CHUNK // 256)
                sent = 0
                while sent < total:
                    yield block
                    sent += CHUNK
            return gen()

        def remote_peak_rss_kib(self):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def main():
        server = await broker.serve(Big(), "127.0.0.1", 0)
        print(server.port, flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")

STREAM_CLIENT = textwrap.dedent("""
    import asyncio, json, resource, sys, time
    import broker

    async def main(port, total):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        async with await broker.connect("127.0.0.1", port) as conn:
            root = await conn.root()
            server_before = await root.call_remote("peak_rss_kib")
            start = time.perf_counter()
            received = 0
            async for chunk in await root.call_remote("stream", total):
                received += len(chunk)
            elapsed = time.perf_counter() - start
            server_after = await root.call_remote("peak_rss_kib")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"received": received, "client_before": before,
                          "client_after": after, "server_before": server_before,
                          "server_after": server_after, "seconds": elapsed}))

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
""")


async def test_a_100_mib_stream_keeps_memory_bounded_on_both_sides():
    total = 100 * 1024 * 1024
    server = subprocess.Popen([sys.executable, "-c", STREAM_SERVER], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 20))
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", STREAM_CLIENT, str(port), str(total)],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["received"] == total
        mib = 1024  # ru_maxrss is in KiB on Linux
        # Growth is a few chunks in flight, not the 100 MiB transferred.
        assert report["client_after"] - report["client_before"] < 40 * mib, report
        assert report["server_after"] - report["server_before"] < 40 * mib, report
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
