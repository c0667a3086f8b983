"""Ours, logging in: a ``cred.Portal`` served by ``broker.serve``.

Server::

    service = EchoService("pbecho")     # cred.Service; create_perspective -> EchoPerspective
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("pbecho", "alice")]})
    portal = cred.Portal(cred.ServiceRealm(service), [checker],
                         throttle=cred.Throttle(base_delay=0))
    await broker.serve(portal, "127.0.0.1", 0)

Client (in the benchmark process), one login::

    p = await broker.login("127.0.0.1", port, "alice", "pw", service="pbecho")
    await p.call_remote("echo", "hi")
    await p.connection.close()

The login is SCRAM-SHA-256: two calls.  Between them the client needs
SaltedPassword: PBKDF2 (4096 iterations, the default) in a worker thread on
its first login to an account, then from its in-memory key cache (RFC 5802
section 5.1).  ``cold_key=True`` empties that cache before every login, so
each one pays the PBKDF2.

    python -m peers.login_pb serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from _harness import announce, run_loop
from peers.login_common import (HI, HOST, PASSWORD, SERVICE, USER, async_driver, async_login_ops,
                                 serve_usage_requests)


def unavailable() -> str | None:
    try:
        import broker
        import cred
    except Exception as exc:  # pragma: no cover - depends on the tree
        return f"broker/cred not importable ({type(exc).__name__}: {exc})"
    missing = [n for n in ("serve", "login", "Perspective") if not hasattr(broker, n)]
    missing += [n for n in ("Portal", "ServiceRealm", "Service", "InMemoryChecker", "Throttle")
                if not hasattr(cred, n)]
    return f"no {', '.join(missing)} yet" if missing else None


# --------------------------------------------------------------------------
# server process


async def _serve() -> None:
    import broker
    import cred

    class EchoPerspective(broker.Perspective):
        def perspective_echo(self, x):
            return x

    class EchoService(cred.Service):
        def create_perspective(self, name):
            return EchoPerspective()

    checker = cred.InMemoryChecker({USER: PASSWORD}, keyring={USER: [(SERVICE, USER)]})
    portal = cred.Portal(cred.ServiceRealm(EchoService(SERVICE)), [checker],
                         throttle=cred.Throttle(base_delay=0))
    server = await broker.serve(portal, HOST, 0)
    announce(server.port)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peers.login_pb")
    p.add_argument("mode", choices=["serve"])
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = p.parse_args(argv)
    serve_usage_requests()
    run_loop(_serve, args.loop)


# --------------------------------------------------------------------------
# benchmark side


def login_ops(port: int, cold_key: bool = False) -> dict[str, Callable[[], Any]]:
    import broker
    import cred

    async def login_once(password: str = PASSWORD) -> Any:
        if cold_key:
            cred.scram.clear_client_key_cache()
        p = await broker.login(HOST, port, USER, password, service=SERVICE)
        try:
            return await p.call_remote("echo", HI)
        finally:
            await p.connection.close()

    async def check_more() -> None:
        got = await login_once()
        if got != HI:
            raise AssertionError(f"wrong echo after login: {got!r}")
        try:
            await login_once("not the password")
        except broker.Unauthorized:
            pass
        else:
            raise AssertionError("a wrong password was accepted")

    return async_login_ops(login_once, check_more)


def driver(name: str, children, runners, loop: str = "asyncio", cold_key: bool = False):
    return async_driver("peers.login_pb", name, children, runners, loop,
                        lambda port: login_ops(port, cold_key))


async def phases(port: int, logins: int) -> dict[str, float]:
    """Where a sequential login's wall time goes, step by step (mean ms).

    The same steps as ``broker.login`` + echo + close, spelled out with the
    documented pieces (``cred.ScramClient``; ``root.call_remote("login",
    client_first)``; ``challenger.call_remote("respond", ...)``): connect
    (TCP), root, the login call (with the HELLO; server: ``begin_scram``),
    the client's proof (SaltedPassword from the key cache after the first
    login), the respond call (server: proof check, realm, attach), the echo,
    the close.
    """
    import time

    import broker
    import cred

    clock = time.perf_counter
    steps = ("connect", "root()", "login call", "proof", "respond call", "verify+release", "echo", "close")
    totals = dict.fromkeys(steps, 0.0)
    for _ in range(logins):
        marks = [clock()]
        conn = await broker.connect(HOST, port)
        marks.append(clock())
        client = cred.ScramClient(USER, PASSWORD)
        root = await conn.root()
        marks.append(clock())
        challenger, server_first = await root.call_remote("login", client.first())
        marks.append(clock())
        client_final = await client.final_async(server_first)
        marks.append(clock())
        server_final, avatar = await challenger.call_remote("respond", client_final, SERVICE, None, None)
        marks.append(clock())
        client.verify(server_final)
        await challenger.release()
        marks.append(clock())
        if await avatar.call_remote("echo", HI) != HI:
            raise AssertionError("wrong echo")
        marks.append(clock())
        del root, challenger, avatar
        await conn.close()
        marks.append(clock())
        for step, t0, t1 in zip(steps, marks, marks[1:]):
            totals[step] += t1 - t0
    return {step: 1e3 * t / logins for step, t in totals.items()}


if __name__ == "__main__":
    main()
