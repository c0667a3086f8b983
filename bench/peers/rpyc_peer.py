"""RPyC with a plain ``rpyc.Service``, default protocol config.

Server: ``rpyc.utils.server.ThreadedServer`` on 127.0.0.1 with a service
exposing ``exposed_echo``.  Client: the normal blocking ``rpyc.connect``;
the bound method ``conn.root.echo`` is fetched once and reused (fetching it
per call would add a round trip).

* Burst: ``rpyc.async_(echo)`` called 100 times (all requests written
  before any answer is read), then every ``AsyncResult.value`` awaited.
* By value: RPyC sends ``str``/``bytes``/numbers/tuples by value but lists
  and dicts *by reference* (netrefs), so echoing the 1,000-dict list as is
  would bounce a reference back to the client and move no data.  The fair
  by-value form that works with the default config (no pickling) is brine:
  the client sends a tuple of item-tuples, the server rebuilds the dicts,
  echoes them as item-tuples again, and the client rebuilds the dicts.
  All of that conversion is counted.

    python -m peers.rpyc_peer serve
"""

from __future__ import annotations

import argparse
import threading
import time

from _harness import SyncDriver, announce, exit_with_parent
from peers.common import BURST, DICTS, HALF, HELLO, HOST, MIB, bytes_units, verify, verify_len

NOTES = {
    "burst": "rpyc.async_ ×100, then .value each",
    "dicts": "by value as brine tuples, dicts rebuilt both ends",
}


def unavailable() -> str | None:
    try:
        import rpyc  # noqa: F401
    except Exception:
        return "rpyc not installed (pip install -e '.[bench]')"
    return None


def to_brine(records: list[dict]) -> tuple:
    return tuple(tuple(d.items()) for d in records)


def from_brine(rows: tuple) -> list[dict]:
    return [dict(row) for row in rows]


# --------------------------------------------------------------------------
# server process


def _serve() -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class EchoService(rpyc.Service):
        def exposed_echo(self, x):
            return x

        def exposed_echo_records(self, rows):
            return to_brine(from_brine(rows))

    server = ThreadedServer(EchoService, hostname=HOST, port=0)
    # ThreadedServer binds in __init__ but listens only in start(): announce
    # the port once it accepts connections
    threading.Thread(target=server.start, name="rpyc-server", daemon=True).start()
    while not server.active:
        time.sleep(0.005)
    announce(server.port)
    threading.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.rpyc_peer")
    p.add_argument("mode", choices=["serve"])
    args = p.parse_args(argv)
    del args
    exit_with_parent()
    _serve()


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, runners, loop: str = "asyncio") -> SyncDriver:
    import rpyc

    child = children.start("peers.rpyc_peer", "serve")
    conn = rpyc.connect(HOST, child.port)
    echo = conn.root.echo
    echo_records = conn.root.echo_records
    aecho = rpyc.async_(echo)

    def records(value):
        return from_brine(echo_records(to_brine(value)))

    def run_burst():
        pending = [aecho(HELLO) for _ in range(BURST)]
        return [r.value for r in pending]

    def connect_once():
        c = rpyc.connect(HOST, child.port)
        try:
            c.root.echo(HELLO)
        finally:
            c.close()

    def check():
        verify("hello", echo(HELLO), HELLO)
        verify("the 1,000-dict list", records(DICTS), DICTS)
        verify("512 KiB", echo(HALF), HALF)
        verify("a burst", run_burst(), [HELLO] * BURST)
        connect_once()
        return 1

    def seq():
        echo(HELLO)
        return 1

    def burst():
        run_burst()
        return BURST

    def dicts():
        records(DICTS)
        return 1

    def mib():
        verify_len("1 MiB", echo(MIB), MIB)
        return bytes_units(MIB)

    def half():
        echo(HALF)
        return bytes_units(HALF)

    def connect():
        connect_once()
        return 1

    drv = SyncDriver(name, {"check": check, "seq": seq, "burst": burst, "dicts": dicts,
                            "mib": mib, "half": half, "connect": connect})
    drv.close = conn.close  # type: ignore[attr-defined]
    drv.notes = dict(NOTES)  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
