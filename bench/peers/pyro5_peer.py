"""Pyro5 with its default serializer (serpent) or with msgpack.

Server: a ``Pyro5.server.Daemon`` on 127.0.0.1 (default thread-pool server)
with one exposed ``Echo`` object; ``Pyro5.config.SERIALIZER`` is set to the
variant's serializer.  Client: the normal blocking ``Pyro5.client.Proxy``,
its serializer chosen per proxy (``proxy._pyroSerializer``, Pyro5's
documented per-proxy override of ``config.SERIALIZER``), everything else at
Pyro5's defaults.

* Burst: Pyro5 has no pipelining or async proxies; the idiomatic way to
  have many calls outstanding is ``BatchProxy``: 100 calls sent as one
  batch request, answered as one message.
* Bytes: msgpack carries ``bytes`` natively.  Serpent (default
  ``SERPENT_BYTES_REPR = False``) turns ``bytes`` into a base64 dict on the
  wire; both ends turn it back with ``serpent.tobytes`` (server before
  echoing, client on the answer), and that work is counted.

    python -m peers.pyro5_peer serve --serializer serpent|msgpack
"""

from __future__ import annotations

import argparse

from _harness import SyncDriver, announce, exit_with_parent
from peers.common import BURST, DICTS, HALF, HELLO, HOST, MIB, bytes_units, verify, verify_len

NOTES = {
    "burst": "BatchProxy: 100 calls in one batch request",
}


def unavailable() -> str | None:
    try:
        import Pyro5.api  # noqa: F401
        import serpent  # noqa: F401
    except Exception:
        return "pyro5 not installed (pip install -e '.[bench]')"
    return None


def _as_bytes(value):
    """Serpent delivers bytes as ``{"data": <base64>, "encoding": "base64"}``."""
    import serpent

    if isinstance(value, dict) and value.get("encoding") == "base64":
        return serpent.tobytes(value)
    return value


# --------------------------------------------------------------------------
# server process


def _serve(serializer: str) -> None:
    import Pyro5.server
    from Pyro5 import config

    config.SERIALIZER = serializer

    @Pyro5.server.expose
    class Echo:
        def echo(self, x):
            return _as_bytes(x)

    daemon = Pyro5.server.Daemon(host=HOST, port=0)
    daemon.register(Echo(), "echo")
    announce(daemon.sock.getsockname()[1])
    daemon.requestLoop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.pyro5_peer")
    p.add_argument("mode", choices=["serve"])
    p.add_argument("--serializer", default="serpent", choices=["serpent", "msgpack"])
    args = p.parse_args(argv)
    exit_with_parent()
    _serve(args.serializer)


# --------------------------------------------------------------------------
# benchmark side


def driver(name: str, children, runners, loop: str = "asyncio", serializer: str = "serpent") -> SyncDriver:
    import Pyro5.api

    child = children.start("peers.pyro5_peer", "serve", "--serializer", serializer)
    uri = f"PYRO:echo@{HOST}:{child.port}"

    def new_proxy():
        proxy = Pyro5.api.Proxy(uri)
        proxy._pyroSerializer = serializer
        return proxy

    proxy = new_proxy()
    proxy._pyroBind()
    batch = Pyro5.api.BatchProxy(proxy)

    def echo(value):
        return proxy.echo(value)

    def run_burst():
        for _ in range(BURST):
            batch.echo(HELLO)
        return list(batch())

    def connect_once():
        with new_proxy() as p:
            p.echo(HELLO)

    def check():
        verify("hello", echo(HELLO), HELLO)
        verify("the 1,000-dict list", echo(DICTS), DICTS)
        verify("512 KiB", _as_bytes(echo(HALF)), HALF)
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
        echo(DICTS)
        return 1

    def mib():
        verify_len("1 MiB", _as_bytes(echo(MIB)), MIB)
        return bytes_units(MIB)

    def half():
        _as_bytes(echo(HALF))
        return bytes_units(HALF)

    def connect():
        connect_once()
        return 1

    drv = SyncDriver(name, {"check": check, "seq": seq, "burst": burst, "dicts": dicts,
                            "mib": mib, "half": half, "connect": connect})
    drv.close = proxy._pyroRelease  # type: ignore[attr-defined]
    drv.notes = dict(NOTES)  # type: ignore[attr-defined]
    if serializer == "serpent":
        drv.notes["mib"] = drv.notes["half"] = "bytes as base64 (serpent), decoded both ends"  # type: ignore[attr-defined]
    else:
        drv.notes["mib"] = drv.notes["half"] = "bytes native in msgpack"  # type: ignore[attr-defined]
    return drv


if __name__ == "__main__":
    main()
