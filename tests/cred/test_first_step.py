"""The first SCRAM step does the same work for a user who exists and one who
does not (issue 13.5).  Compared by the code path taken, not by the clock:
every Python function and C function called from ``cred`` during
``begin_scram`` is recorded, in order, and the two recordings must match."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
from pathlib import Path

import pytest

import cred
from cred import scram
from cred import AccountStore, InMemoryChecker, Portal, ScramClient, ServiceRealm, StoreChecker, Throttle

CRED = str(Path(cred.__file__).parent)


def _where(code) -> bool:
    return code.co_filename.startswith(CRED)


class CallRecorder:
    """sys.setprofile: the calls made by, and into, ``cred``'s code."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, frame, event, arg) -> None:
        if event == "call" and _where(frame.f_code):
            self.calls.append(("py", frame.f_code.co_qualname))
        elif event == "c_call" and _where(frame.f_code):
            self.calls.append(("c", getattr(arg, "__qualname__", repr(arg))))


async def _inline(func, /, *args, **kwargs):
    """asyncio.to_thread, run on this thread so the profiler sees it."""
    return func(*args, **kwargs)


async def record_first_step(portal: Portal, name: str, source: str) -> list[tuple[str, str]]:
    recorder = CallRecorder()
    client_first = ScramClient(name, "whatever", nonce="fixednonce").first()
    sys.setprofile(recorder)
    try:
        challenge = await portal.begin_scram(client_first, source=source)
    finally:
        sys.setprofile(None)
    challenge.abandon()
    return recorder.calls


@pytest.mark.parametrize("kind", ["in memory", "account store"])
async def test_the_first_step_takes_the_same_path_for_a_known_and_an_unknown_user(
        tmp_path, monkeypatch, kind):
    monkeypatch.setattr(asyncio, "to_thread", _inline)
    if kind == "in memory":
        checker = InMemoryChecker({"alice": "wonderland"})
    else:
        store = AccountStore(tmp_path / "accounts.sqlite3", create=True)
        store.add_user("alice", "wonderland")
        checker = StoreChecker(store)
    paths = {}
    for name in ("alice", "mabel"):  # same length: the parser loops per character
        # a portal each, warmed up the same way, so no cache or table differs
        portal = Portal(ServiceRealm(), [checker], throttle=Throttle(base_delay=0))
        await record_first_step(portal, "warm-up", "10.0.0.9")
        paths[name] = await record_first_step(portal, name, "10.0.0.1")
    if kind != "in memory":
        store.close()
    assert ("py", "ScramServer.start") in paths["alice"]
    assert paths["alice"] == paths["mabel"]


async def test_the_first_step_costs_the_same_hashing_for_a_known_and_an_unknown_user(
        tmp_path, monkeypatch):
    counts: dict[str, int] = {}

    def counting(name, real):
        def count(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return real(*args, **kwargs)
        return count

    store = AccountStore(tmp_path / "accounts.sqlite3", create=True)
    store.add_user("alice", "wonderland")
    portal = Portal(ServiceRealm(), [StoreChecker(store)], throttle=Throttle(base_delay=0))
    (await portal.begin_scram(ScramClient("warm-up", "x").first())).abandon()
    monkeypatch.setattr(hmac, "digest", counting("hmac.digest", hmac.digest))
    monkeypatch.setattr(hmac, "new", counting("hmac.new", hmac.new))
    # HMACs under a key processed once (the fake verifiers' secret)
    monkeypatch.setattr(scram._Mac, "__call__", counting("keyed mac", scram._Mac.__call__))
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting("pbkdf2", hashlib.pbkdf2_hmac))
    seen = {}
    for name in ("alice", "mabel"):  # same length: the parser loops per character
        counts.clear()
        (await portal.begin_scram(ScramClient(name, "x").first(), source="10.0.0.1")).abandon()
        seen[name] = dict(counts)
    store.close()
    assert seen["alice"] == seen["mabel"]
    hmacs = seen["alice"].get("hmac.digest", 0) + seen["alice"].get("keyed mac", 0)
    assert hmacs >= 3  # the fake verifier, for both
    assert "pbkdf2" not in seen["alice"]  # and never a key derivation
