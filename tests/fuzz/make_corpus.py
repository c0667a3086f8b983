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


class _Recorder:
    """A socket that keeps what a real client (http.client) sends."""

    def __init__(self) -> None:
        self.sent = bytearray()

    def sendall(self, data) -> None:
        self.sent += data


def http_requests() -> None:
    import http.client

    requests = [("GET", "/", None, {}), ("HEAD", "/index.html", None, {"Accept": "*/*"}),
                ("POST", "/form?x=1", b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}),
                ("PUT", "/up", b"x" * 100, {"Expect": "100-continue"}),
                ("OPTIONS", "*", None, {}), ("GET", "/~alice/page", None, {"Connection": "close"})]
    pipelined = b""
    for method, target, body, headers in requests:
        conn = http.client.HTTPConnection("example.org", 8080)
        conn.sock = _Recorder()
        conn.request(method, target, body=body, headers=headers)
        _save("http", b"\xff" + bytes(conn.sock.sent))
        pipelined += bytes(conn.sock.sent)
    conn = http.client.HTTPConnection("example.org")
    conn.sock = _Recorder()
    conn.request("POST", "/chunked", body=iter([b"hello ", b"world"]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    _save("http", b"\x07" + bytes(conn.sock.sent))
    _save("http", b"\x10" + pipelined)


def relay_copies() -> None:
    from services.web._relay import RelayedRequest

    request = RelayedRequest("GET", "/page?x=1", [["Host", "example.org"], ["Accept", "*/*"]],
                             ["127.0.0.1", 50000], "https", "1.1", "/~alice")
    _save("relay", b"\x01" + jelly.dumps(request))
    _save("relay", b"\x01" + jelly.dumps(RelayedRequest("POST", "/", [], None, "http", "1.0", "")))
    _save("relay", b"\x00" + jelly.dumps([200, [["Content-Type", "text/html"]], b"<p>hi</p>", None]))
    _save("relay", b"\x00" + jelly.dumps([404, [], b"", None]))


# Transcripts of what the real clients in tests/services send (irc library /
# ii, smtplib, poplib), as the bytes they put on the wire.
IRC_SESSIONS = [
    b"CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :Alice\r\nCAP END\r\n",
    b"PASS pencil\r\nNICK alice\r\nUSER alice 0 * :Alice\r\nJOIN #room\r\n"
    b"PRIVMSG #room :hello there\r\nTOPIC #room :a topic\r\nNAMES #room\r\nWHO #room\r\n"
    b"WHOIS bob\r\nMODE #room\r\nAWAY :lunch\r\nAWAY\r\nPRIVMSG bob :psst\r\n"
    b"NOTICE #room :note\r\nLIST\r\nISON bob alice\r\nUSERHOST bob\r\nPING :x\r\n"
    b"PART #room :bye\r\nQUIT :done\r\n",
    b"NICK carol\r\nUSER carol 0 * :Carol\r\nPRIVMSG NickServ :IDENTIFY pencil\r\n"
    b"JOIN #a,#b\r\nMOTD\r\n",
]

SMTP_SESSIONS = [
    b"\x00MAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    b"From: bob@example.net\r\nSubject: hi\r\n\r\nhello\r\n..dot\r\n",
    b"\x01AUTH PLAIN AGFsaWNlAHBlbmNpbA==\r\nMAIL FROM:<alice@example.org> SIZE=20\r\n"
    b"RCPT TO:<carol@elsewhere.example>\r\nRCPT TO:<ALICE@Example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n",
    b"\x01AUTH LOGIN YWxpY2U= cGVuY2ls\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nbounce\r\n",
    b"\x00MAIL FROM:<b\xc3\xb6b@example.net> SMTPUTF8\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nbare\nline\r\n",
]

POP3_SESSIONS = [
    b"\x01\x20CAPA\r\nUSER alice\r\nPASS pencil\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n"
    b"TOP 2 0\r\nDELE 1\r\nRSET\r\nDELE 2\r\nNOOP\r\nQUIT\r\n",
    b"\x01\xffAUTH PLAIN\r\nAGFsaWNlAHBlbmNpbA==\r\nLIST 1\r\nUIDL 2\r\nQUIT\r\n",
    b"\x02\x05STLS\r\nUSER alice\r\nPASS wrong\r\nQUIT\r\n",
]


# DATA texts as smtplib sends them (dots stuffed, CRLF.CRLF, then the next
# command), with a SIZE limit byte and a read-size byte in front.
SMTP_DATA_TEXTS = [
    b"\x00\xffFrom: bob@example.net\r\nSubject: hi\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
    b"\x02\x07Subject: x\r\n\r\nbare\n.\nline and \r.\n too\r\n.\r\n",
    b"\x03\x10" + b"x" * 1200 + b"\r\nrest\r\n.\r\nRSET\r\n",
    b"\x01\x00.\r\nMAIL FROM:<a@b>\r\n",
]


def line_protocols() -> None:
    for text in SMTP_DATA_TEXTS:
        _save("smtp-data", text)
    for session in IRC_SESSIONS:
        _save("irc", b"\xff" + session)
        _save("irc", b"\x03" + session)
    for session in SMTP_SESSIONS:
        _save("smtp", session)
    for session in POP3_SESSIONS:
        _save("pop3", session)
    _save("maildir", b"\x001700000000.M12P34Q1R0a1b.host,S=12,W=13\nSubject: a\n\nb\n"
                     b"\n--\n\x011700000001.M5P6Q2R0c.host,S=3:2,S\nabc"
                     b"\n--\n\x00courier.1700000002.xyz\nFrom: x\r\n\r\nbody\r\n")


if __name__ == "__main__":
    http_requests()
    relay_copies()
    line_protocols()
    wire_and_jelly()
    config()
    scram_messages()
    store_rows()
    for folder in sorted(CORPUS.iterdir()):
        print(folder.name, len(list(folder.iterdir())))
