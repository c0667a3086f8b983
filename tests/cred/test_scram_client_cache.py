"""The client's cache of derived keys (RFC 5802 section 5.1)."""

import asyncio
import threading

from cred import scram, scram_client


def exchange(client, verifier):
    server = scram.ScramServer(client.first())
    server_first = server.start(verifier)
    return server, server_first


def count_derivations(monkeypatch):
    """The client's key derivations from now on (its module runs them; the
    server never does), with the default cache emptied."""
    scram.clear_client_key_cache()
    calls = []
    real = scram.salted_password
    monkeypatch.setattr(scram_client, "salted_password", lambda *a: calls.append(a) or real(*a))
    return calls


def test_a_second_login_reuses_the_derived_key(monkeypatch):
    verifier = scram.ScramVerifier.from_password("pencil")
    calls = count_derivations(monkeypatch)
    for _ in range(3):
        client = scram.ScramClient("user", "pencil")
        server, server_first = exchange(client, verifier)
        client.verify(server.finish(client.final(server_first)))
    assert len(calls) == 1


def test_a_different_password_or_salt_is_not_served_from_the_cache():
    scram.clear_client_key_cache()
    verifier = scram.ScramVerifier.from_password("pencil")
    client = scram.ScramClient("user", "pencil")
    server, first = exchange(client, verifier)
    client.verify(server.finish(client.final(first)))
    wrong = scram.ScramClient("user", "crayon")
    server, first = exchange(wrong, verifier)
    try:
        server.finish(wrong.final(first))
    except scram.ScramError:
        pass
    else:
        raise AssertionError("a wrong password passed")
    other = scram.ScramVerifier.from_password("pencil")  # new salt
    client = scram.ScramClient("user", "pencil")
    server, first = exchange(client, other)
    client.verify(server.finish(client.final(first)))


def test_the_cache_holds_no_plaintext_and_is_bounded():
    cache = scram.ClientCache()
    for i in range(100):
        cache._keys.remember(f"secret{i}", b"salt" * 4, 4096, b"x" * 32)
    entries = cache._keys._entries
    assert cache.key_count == len(entries) == 64
    assert not any(b"secret" in key for key in entries)


def test_a_cached_async_final_does_not_need_a_thread():
    scram.clear_client_key_cache()
    verifier = scram.ScramVerifier.from_password("pencil")

    async def login():
        client = scram.ScramClient("user", "pencil")
        server, first = exchange(client, verifier)
        final = await client.final_async(first)
        client.verify(server.finish(final))

    asyncio.run(login())
    threads_before = threading.active_count()
    seen = []
    real = asyncio.to_thread

    async def spy(*a, **k):
        seen.append(a)
        return await real(*a, **k)

    asyncio.to_thread = spy
    try:
        asyncio.run(login())
    finally:
        asyncio.to_thread = real
    assert seen == []
    assert threading.active_count() <= threads_before + 1


def test_a_client_with_its_own_cache_leaves_the_default_alone(monkeypatch):
    verifier = scram.ScramVerifier.from_password("pencil")
    calls = count_derivations(monkeypatch)
    mine = scram.ClientCache()
    for cache in (mine, mine, None, scram.ClientCache()):
        client = scram.ScramClient("user", "pencil", cache=cache)
        server, server_first = exchange(client, verifier)
        client.verify(server.finish(client.final(server_first)))
    # one derivation per cache: mine (reused), the default, the last fresh one
    assert len(calls) == 3
    assert mine.key_count == 1 and scram.default_client_cache.key_count == 1
    mine.clear()
    assert mine.key_count == 0 and scram.default_client_cache.key_count == 1


def test_the_default_cache_is_visible_and_cleared_by_the_helper():
    import cred

    assert cred.default_client_cache is scram.default_client_cache
    assert isinstance(cred.default_client_cache, cred.ClientCache)
    cred.default_client_cache._keys.remember("pw", b"salt" * 4, 4096, b"x" * 32)
    scram.clear_client_key_cache()
    assert cred.default_client_cache.key_count == 0
