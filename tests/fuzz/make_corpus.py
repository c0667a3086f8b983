"""Rebuild the seed corpus from real traffic: ``python -m tests.fuzz.make_corpus``.

wire/jelly: the frames two brokers send each other in an in-memory session
(HELLO, CALL, ANSWER, ERROR, DECREF, PING/PONG, copies, references, GOODBYE).
config: the TOML examples of docs/running.md.  scram: the messages of a real
exchange.  store-row: rows of a real account database.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re
import sqlite3
import tempfile
from pathlib import Path

import msgpack

import broker
import jelly
from broker import Referenceable, Root
from broker._framing import FrameReader
from broker.testing import MemoryTransport, connected_pair
from cred import scram
from cred.store import AccountStore

from .harnesses import _Note, _Point

CORPUS = Path(__file__).resolve().parent / "corpus"
DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


def _save(name: str, data: bytes) -> None:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


class _Child(Referenceable):
    def remote_name(self):
        return "child"


class _SeedRoot(Root):
    def remote_echo(self, value=None, *more, **kw):
        return value

    def remote_child(self):
        return _Child()

    def remote_fail(self):
        raise ValueError("failed on purpose")


async def _session() -> list[bytes]:
    written: list[bytes] = []
    original = MemoryTransport.write

    def record(self, data):
        written.append(bytes(data))
        original(self, data)

    MemoryTransport.write = record
    # connected_pair decodes with the default registry: register there for the session.
    jelly.register_copy(_Point)
    jelly.register_copy(_Note)
    try:
        server, client = await connected_pair(_SeedRoot())
        root = await client.root()
        for value in [None, 1, -2**63, 2**70, 1.5, "text", b"\x00bin", [1, [2, [3]]],
                      {"a": {"b": [1, 2]}}, (1, 2), {1, 2}, frozenset({"x"}), _Point(1, 2), _Note()]:
            await root.call_remote("echo", value, key=value)
        child = await root.call_remote("child")
        await child.call_remote("name")
        try:
            await root.call_remote("fail")
        except broker.RemoteError:
            pass
        try:
            await root.call_remote("nope")
        except broker.RemoteError:
            pass
        root.call_remote_only("echo", 1)
        del child
        gc.collect()
        await asyncio.sleep(0.01)
        await client.close()
        await asyncio.sleep(0.01)
        await server.close()
    finally:
        MemoryTransport.write = original
        jelly.unregister_copy(_Point.copy_tag)
        jelly.unregister_copy(_Note.copy_tag)
    return written


def wire_and_jelly() -> None:
    written = asyncio.run(_session())
    reader = FrameReader(1 << 24)
    for chunk in written:
        reader.feed(chunk)
        while (frame := reader.next_frame()) is not None:
            body = bytes(frame)
            _save("jelly", body)
            # The wire harness's first byte: odd = HELLO first (see harnesses).
            header = len(body).to_bytes(4, "big")
            _save("wire", b"\x01" + header + body)
    _save("wire", b"\x00" + b"".join(written[:1]))  # a raw HELLO as the first thing


def config() -> None:
    text = (DOCS / "running.md").read_text()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        _save("config", block.encode())
    _save("config", b'[[service]]\nplugin = "line-echo"\nport = 0\n')
    _save("config", b'[application]\nname = "x"\n[[service]]\nplugin = "ticker"\ninterval = 0.5\n')


def scram_messages() -> None:
    verifier = scram.ScramVerifier.from_password("pencil", iterations=scram.MIN_ITERATIONS)
    client = scram.ScramClient("user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    first = client.first()
    server = scram.ScramServer(first)
    server_first = server.start(verifier)
    final = client.final(server_first)
    server_final = server.finish(final)
    client.verify(server_final)
    _save("scram", b"\x00" + first.encode() + b"\n" + final.encode())
    _save("scram", b"\x01" + server_first.encode() + b"\n" + server_final.encode())
    _save("scram", b"\x00n,,n=us=2Cer,r=abc\nc=biws,r=abc,p=AAAA")
    _save("scram", b"\x01r=fyko+d2lbbFgONRv9qkxdawLxyz,s=QSXCR+Q6sek8bf92,i=1\nv=AAAA")


def store_rows() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accounts.sqlite"
        with AccountStore(path, create=True, iterations=scram.MIN_ITERATIONS) as store:
            store.add_user("alice", "pencil")
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT salt, iterations, stored_key, server_key FROM accounts").fetchall()
        conn.close()
    for row in rows:
        _save("store-row", msgpack.packb(list(row), use_bin_type=True))
        _save("store-row", msgpack.packb([row[0].hex(), row[1], row[2], row[3]], use_bin_type=True))
        _save("store-row", msgpack.packb([row[0], float(row[1]), row[2], None], use_bin_type=True))


if __name__ == "__main__":
    wire_and_jelly()
    config()
    scram_messages()
    store_rows()
    for folder in sorted(CORPUS.iterdir()):
        print(folder.name, len(list(folder.iterdir())))
