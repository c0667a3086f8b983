"""The client's cache of derived keys (RFC 5802 section 5.1)."""

import asyncio
import threading

from cred import scram


def exchange(client, verifier):
    server = scram.ScramServer(client.first())
    server_first = server.start(verifier)
    return server, server_first


def test_a_second_login_reuses_the_derived_key(monkeypatch):
    scram.clear_client_key_cache()
    verifier = scram.ScramVerifier.from_password("pencil")
    calls = []
    real = scram.salted_password
    monkeypatch.setattr(scram, "salted_password", lambda *a: calls.append(a) or real(*a))
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
    scram.clear_client_key_cache()
    for i in range(100):
        scram._CLIENT_KEYS.remember(f"secret{i}", b"salt" * 4, 4096, b"x" * 32)
    entries = scram._CLIENT_KEYS._entries
    assert len(entries) == 64
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
