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

The login is SCRAM-SHA-256.  The first one to an account takes two calls,
with PBKDF2 (4096 iterations, the default) in a worker thread between them;
its answer carries a single-use ticket, and every later login is one call
(the proof made at once from the key cache and the ticket; each answer
brings the next ticket).  ``cold_key=True`` empties the key cache, and with
it the tickets, before every login, so each one is a first login: two
calls and the PBKDF2.

    python -m peers.login_pb serve [--loop asyncio|uvloop]
"""

from __future__ import annotations

from typing import Any, Callable

from _harness import announce, serve_main
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
    serve_main("peers.login_pb", _serve, argv, watch_parent=serve_usage_requests)


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

    The same steps as ``broker.login`` + echo + close once the client holds
    a ticket, spelled out with the documented pieces
    (``cred.ScramClient(..., server=...)``, ``one_trip_async()``,
    ``root.call_remote("login_one_trip", ...)``): connect (TCP), the
    client's proof (keys from the key cache), the login call (with the
    HELLO; server: ticket, proof check, realm, attach, next ticket), the
    client's check of the server's proof, the echo, the close.  One
    untimed two-call login first gets the first ticket.
    """
    import time

    import broker
    import cred

    clock = time.perf_counter
    name = ("bench", HOST, port)
    steps = ("connect", "proof", "login call", "verify", "echo", "close")
    totals = dict.fromkeys(steps, 0.0)

    async def one(timed: bool) -> None:
        marks = [clock()]
        conn = await broker.connect(HOST, port)
        marks.append(clock())
        client = cred.ScramClient(USER, PASSWORD, server=name)
        root = await conn.root()
        trip = await client.one_trip_async()
        marks.append(clock())
        if trip is None:  # no ticket yet: the two-call login
            challenger, server_first = await root.call_remote("login", client.first())
            client_final = await client.final_async(server_first)
            answer = await challenger.call_remote("respond", client_final, SERVICE, None, None)
            await challenger.release()
        else:
            answer = await root.call_remote("login_one_trip", *trip, SERVICE, None, None)
        marks.append(clock())
        server_final, avatar, ticket = answer
        client.verify(server_final)
        client.keep_ticket(ticket)
        marks.append(clock())
        if await avatar.call_remote("echo", HI) != HI:
            raise AssertionError("wrong echo")
        marks.append(clock())
        del root, avatar
        await conn.close()
        marks.append(clock())
        if timed:
            if trip is None:
                raise AssertionError("the server issued no ticket: no one-trip login to time")
            for step, t0, t1 in zip(steps, marks, marks[1:]):
                totals[step] += t1 - t0

    await one(False)
    for _ in range(logins):
        await one(True)
    return {step: 1e3 * t / logins for step, t in totals.items()}


if __name__ == "__main__":
    main()
