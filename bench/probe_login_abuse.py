"""Two login attacks from issue 13.5, against a server in a child process.

    .venv/bin/python bench/probe_login_abuse.py guess [--connections 4] [--concurrent 1000] [--seconds 20]
    .venv/bin/python bench/probe_login_abuse.py flood [--connections 30] [--challenges 10000]
                                                      [--challenge-timeout 5]
    .venv/bin/python bench/probe_login_abuse.py first-step

``guess``: each of ``--connections`` connections keeps ``--concurrent`` SCRAM
logins as alice in flight, each answering its challenge at once with a wrong
proof (no key derivation: the proof is random bytes), and starting again when
it is answered.  Prints the proofs the server checked per second, from one
source address, over ``--seconds``.  The server's portal has the default
``Throttle()`` and default limits, as ``pb run`` has.

``--per-connection N`` sets the server portal's
``max_challenges_per_connection`` (to see the throttle alone hold, raise it
above ``--concurrent``).

``flood``: each connection sends ``--challenges`` ``login`` calls and never
answers one.  Prints the server's RSS (from /proc) before, when every call
was answered (a challenge or a refusal), and after the challenge timeout
(plus one second).

``first-step``: the time of the first SCRAM step (``Portal.begin_scram``)
for a known and an unknown user over an account store, 2 x 3,000 samples,
interleaved, medians (for the record: the test compares the work done, not
the time).

Not a benchmark: a reproducible probe whose figures are quoted in the notes
on issue 13.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- the server (child process) ------------------------------------------------

async def _serve(challenge_timeout: float, per_connection: int | None) -> None:
    import broker
    import cred

    checker = cred.InMemoryChecker({"alice": "correct horse battery staple"},
                                   keyring={"alice": [("pbecho", None)]})
    caps = {} if per_connection is None else {"max_challenges_per_connection": per_connection}
    portal = cred.Portal(cred.ServiceRealm(cred.Service("pbecho")), [checker],
                         challenge_timeout=challenge_timeout, **caps)
    server = await broker.serve(portal, "127.0.0.1", 0)
    print(server.port, flush=True)
    async with server:
        await server.serve_forever()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _start_server(challenge_timeout: float, per_connection: int | None) -> tuple[subprocess.Popen, int]:
    extra = [] if per_connection is None else ["--per-connection", str(per_connection)]
    child = subprocess.Popen(
        [sys.executable, __file__, "serve", "--challenge-timeout", str(challenge_timeout), *extra],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    port = int(child.stdout.readline())
    return child, port


def _wrong_final(server_first: str) -> str:
    nonce = server_first.split(",")[0][2:]
    return f"c=biws,r={nonce},p={base64.b64encode(secrets.token_bytes(32)).decode()}"


# --- guess ----------------------------------------------------------------------

async def _guess(port: int, connections: int, concurrent: int, seconds: float) -> None:
    import broker
    import cred

    checked = refused_at_once = 0
    stop = time.monotonic() + seconds

    async def attacker(root) -> None:
        nonlocal checked, refused_at_once
        while time.monotonic() < stop:
            first = cred.ScramClient("alice", "guess").first()
            try:
                challenger, server_first = await root.call_remote("login", first)
            except broker.RemoteError:
                refused_at_once += 1  # no proof was checked
                await asyncio.sleep(0.01)
                continue
            try:
                await challenger.call_remote("respond", _wrong_final(server_first), "pbecho", None, None)
            except broker.RemoteError:
                if time.monotonic() < stop:
                    checked += 1
            finally:
                del challenger

    conns = [await broker.connect("127.0.0.1", port, timeout=None) for _ in range(connections)]
    try:
        roots = [await c.root() for c in conns]
        start = time.monotonic()
        tasks = [asyncio.create_task(attacker(root)) for root in roots for _ in range(concurrent)]
        await asyncio.wait(tasks, timeout=seconds)
        elapsed = time.monotonic() - start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for c in conns:
            await c.close()
    print(f"{connections} connections x {concurrent} concurrent wrong proofs, one source, "
          f"{elapsed:.1f} s: {checked} proofs checked = {checked / elapsed:.2f} guesses/s "
          f"({refused_at_once} logins refused before any proof)")


# --- flood ----------------------------------------------------------------------

async def _flood(pid: int, port: int, connections: int, challenges: int, timeout: float) -> None:
    import broker
    import cred

    before = _rss_mib(pid)
    conns = [await broker.connect("127.0.0.1", port, timeout=None) for _ in range(connections)]
    kept = []
    answered = refused = 0

    async def one(root, slots: asyncio.Semaphore) -> None:
        nonlocal answered, refused
        try:
            kept.append(await root.call_remote("login", cred.ScramClient("mallory", "x").first()))
            answered += 1
        except broker.RemoteError:
            refused += 1
        finally:
            slots.release()

    async def send_all(root) -> None:
        slots = asyncio.Semaphore(1000)  # the client's own cap on calls in flight is 1024
        for _ in range(challenges):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(root, slots)))

    tasks: list[asyncio.Task] = []
    try:
        roots = [await c.root() for c in conns]
        await asyncio.gather(*[send_all(root) for root in roots])
        # Wait until the answers stop coming (logins the throttle holds back
        # may stay unanswered for a long time: that is the point).
        last = -1
        while answered + refused != last:
            last = answered + refused
            await asyncio.sleep(1.0)
        peak = _rss_mib(pid)
        issued, pending = answered, len(tasks) - answered - refused
        await asyncio.sleep(timeout + 1)
        after = _rss_mib(pid)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            await c.close()
    print(f"{connections} connections x {challenges} login calls, challenges never answered: "
          f"{issued} challenges issued, {refused} logins refused, {pending} held back by the "
          f"throttle; server RSS {before:.0f} MiB before, {peak:.0f} MiB when the answers "
          f"stopped (+{peak - before:.0f}), {after:.0f} MiB {timeout + 1:.0f} s later, after "
          f"the challenge timeout (+{after - before:.0f})")


# --- first step ------------------------------------------------------------------

async def _first_step(samples: int) -> None:
    import statistics
    import tempfile

    import cred

    with tempfile.TemporaryDirectory() as tmp:
        store = cred.AccountStore(Path(tmp) / "accounts.sqlite3", create=True)
        store.add_user("alice", "correct horse battery staple")
        portal = cred.Portal(cred.ServiceRealm(), [cred.StoreChecker(store)],
                             throttle=cred.Throttle(base_delay=0))
        times: dict[str, list[float]] = {"alice": [], "nobody": []}
        for i in range(2 * samples):
            name = "alice" if i % 2 == 0 else "nobody"  # interleaved: same drift for both
            first = cred.ScramClient(name, "x").first()
            start = time.perf_counter()
            challenge = await portal.begin_scram(first, source=f"10.0.{i % 250}.{i // 250 % 250}")
            times[name].append(time.perf_counter() - start)
            abandon = getattr(challenge, "abandon", None)
            if abandon is not None:
                abandon()
        store.close()
    known, unknown = (statistics.median(times[n]) * 1e6 for n in ("alice", "nobody"))
    print(f"first SCRAM step, {samples} samples each, median: known user {known:.1f} µs, "
          f"unknown user {unknown:.1f} µs, difference {unknown - known:+.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["guess", "flood", "first-step", "serve"])
    parser.add_argument("--connections", type=int)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--challenges", type=int, default=10_000)
    parser.add_argument("--challenge-timeout", type=float, default=60.0)
    parser.add_argument("--per-connection", type=int, default=None,
                        help="the server's max_challenges_per_connection (default: the portal's)")
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(_serve(args.challenge_timeout, args.per_connection))
        return
    if args.mode == "first-step":
        asyncio.run(_first_step(3000))
        return
    timeout = args.challenge_timeout if args.mode == "flood" and "--challenge-timeout" in sys.argv else (
        5.0 if args.mode == "flood" else 60.0)
    child, port = _start_server(timeout, args.per_connection)
    try:
        if args.mode == "guess":
            asyncio.run(_guess(port, args.connections or 4, args.concurrent, args.seconds))
        else:
            asyncio.run(_flood(child.pid, port, args.connections or 30, args.challenges, timeout))
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()
