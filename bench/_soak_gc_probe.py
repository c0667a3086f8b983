"""How long a full garbage collection holds the soak's server with many
idle connections open, with and without ``gc.freeze()`` of its start-up
heap; and how many GC-tracked objects each idle connection adds, per port.

The server is the soak's (``bench/soak.py``'s configuration, every
service), run in this process so that the collector can be timed directly;
the idle connections come from a child process on 127.0.0.2, as the soak's
abuser does, so that their client-side objects are not counted.

    python bench/_soak_gc_probe.py [--per-port 500] [--repeat 5]

Figures are CPU time (``time.process_time``) of ``gc.collect()``: the time a
full pass takes the loop, whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import soak  # noqa: E402  (the soak's configuration and its Twisted-dialect plug-in)

_CLIENT = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[2:]):
    for _ in range(int(sys.argv[1])):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
print(len(socks), flush=True)
sys.stdin.read()
"""


def _full_pass_ms(repeat: int) -> float:
    """Median CPU ms of a full collection."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        gc.collect()
        times.append((time.process_time() - start) * 1000)
    return sorted(times)[len(times) // 2]


async def _settle(seconds: float = 1.0) -> None:
    # Let the loop accept and set up every connection the client made.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.02)


async def main(per_port: int, repeat: int) -> None:
    import services
    from services._config import load_config
    from services._runner import build_application, raise_open_file_limit

    raise_open_file_limit()
    work = Path(tempfile.mkdtemp(prefix="pb-gc-probe-"))
    ports = soak._free_ports(soak.PORT_NAMES)
    soak.write_server_files(work, ports)
    os.environ["PB_PASSWORD"] = soak.PASSWORD
    services.register_plugin(soak._TwistedEchoPlugin())
    application = await build_application(load_config(work / "soak.toml"))
    await application.start()
    try:
        gc.collect()
        print(f"start-up heap: {len(gc.get_objects())} tracked objects; full pass "
              f"{_full_pass_ms(repeat):.1f} ms CPU")

        # Fewer than every per-source cap (PB and HTTP: 256), so that each
        # connection counted is one the server took in.
        few = min(per_port, 200)
        print(f"\nidle connections from 127.0.0.2, {few} per port: tracked objects each")
        for name, port in ports.items():
            gc.collect()
            before = len(gc.get_objects())
            client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(few), str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None
            opened = int(await asyncio.to_thread(client.stdout.readline))
            await _settle()
            gc.collect()
            print(f"  {name:<8} {(len(gc.get_objects()) - before) / max(opened, 1):6.1f}", flush=True)
            client.communicate("")
            await _settle(1.5)  # their teardown, before the next port's count

        # What pb run does once started: only the start-up heap is frozen,
        # the connections that come later are not.
        gc.collect()
        gc.freeze()
        client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(per_port), *map(str, ports.values())],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        opened = int(await asyncio.to_thread(client.stdout.readline))
        await _settle(2.0)
        print(f"\n{opened} idle connections open: {len(gc.get_objects())} tracked objects besides "
              f"{gc.get_freeze_count()} frozen")
        print(f"  full pass, start-up heap frozen:     {_full_pass_ms(repeat):.1f} ms CPU")
        gc.unfreeze()
        print(f"  full pass, start-up heap not frozen: {_full_pass_ms(repeat):.1f} ms CPU")
        client.communicate("")
    finally:
        await application.stop(grace=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-port", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.per_port, args.repeat))
