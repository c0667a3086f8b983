"""docs/protocol-vectors/vectors.json against the encoder and the decoder:
each vector's bytes decode to its stated value, and the value encodes back
to the same bytes; the SCRAM exchange is recomputed with cred.

Regenerate the hex (after a deliberate change to the encoding, reviewed by
hand against docs/protocol.md and docs/jelly.md)::

    python -m tests.broker.test_protocol_vectors --write
"""

from __future__ import annotations

import base64
import json
import pathlib
import struct
import sys

import pytest

import broker
import cred
import jelly
from broker._messages import Op
from cred import scram

from .wirevalues import dumps, frame, from_json, loads, to_json

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors" / "vectors.json"


def _load() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


DATA = _load() if VECTORS.exists() else {"frames": [], "values": [], "scram": {}}


@pytest.mark.parametrize("vector", DATA["frames"], ids=lambda v: v["name"])
def test_each_frame_decodes_to_its_value_and_encodes_back_to_its_bytes(vector):
    raw = bytes.fromhex(vector["hex"])
    (size,) = struct.unpack(">I", raw[:4])
    assert size == len(raw) - 4
    assert to_json(loads(raw[4:])) == vector["value"]
    assert frame(dumps(from_json(vector["value"]))) == raw


@pytest.mark.parametrize("vector", DATA["values"], ids=lambda v: v["name"])
def test_each_value_decodes_and_encodes_back_to_its_bytes(vector):
    raw = bytes.fromhex(vector["hex"])
    assert to_json(loads(raw)) == vector["value"]
    assert dumps(from_json(vector["value"])) == raw


def test_the_vectors_cover_every_opcode_and_every_ext_type():
    opcodes = {v["value"][0] for v in DATA["frames"]}
    assert opcodes == {value for name, value in vars(Op).items() if name.isupper()}
    ext_codes = set()
    for v in DATA["values"] + DATA["frames"]:
        ext_codes |= _ext_codes(bytes.fromhex(v["hex"])[0 if v in DATA["values"] else 4:])
    kinds = {code - 0x20 for code in ext_codes if code >= 0x20}
    assert ext_codes >= {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x10, 0x11}
    assert kinds == {0, 1, 2, 3, 4, 5}  # REMOTE LOCAL CACHE CACHED LCACHE STREAM


def _ext_codes(body: bytes) -> set[int]:
    import msgpack

    found: set[int] = set()

    def hook(code, data):
        found.add(code)
        if code in (0x01, 0x02, 0x03) or code >= 0x20:
            msgpack.unpackb(data, ext_hook=hook, strict_map_key=False)
        elif code == 0x10:
            unpacker = msgpack.Unpacker(ext_hook=hook, strict_map_key=False)
            unpacker.feed(data)
            list(unpacker)
        return None

    msgpack.unpackb(body, ext_hook=hook, strict_map_key=False)
    return found


def test_the_scram_exchange_is_what_cred_computes_with_those_nonces():
    s = DATA["scram"]
    salt = bytes.fromhex(s["salt"])
    verifier = cred.ScramVerifier.from_password(s["password"], salt=salt,
                                                iterations=s["iterations"])
    salted = scram.salted_password(s["password"], salt, s["iterations"])
    assert salted.hex() == s["salted_password"]
    assert scram.client_key(salted).hex() == s["client_key"]
    assert verifier.stored_key.hex() == s["stored_key"]
    assert verifier.server_key.hex() == s["server_key"]

    client = cred.ScramClient(s["username"], s["password"], nonce=s["client_nonce"])
    server = cred.ScramServer(client.first(), nonce=s["server_nonce"])
    assert s["client_first"] == f"n,,n={s['username']},r={s['client_nonce']}"
    assert server.start(verifier) == s["server_first"]
    client = cred.ScramClient(s["username"], s["password"], nonce=s["client_nonce"])
    assert client.first() == s["client_first"]
    assert client.final(s["server_first"]) == s["client_final"]
    assert server.finish(s["client_final"]) == s["server_final"]
    client.verify(s["server_final"])
    # RFC 7677 section 3, computed independently of this code base.
    assert s["client_final"] == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                 "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert s["server_final"] == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

    auth = s["auth_message"].encode()
    assert auth == (f"n={s['username']},r={s['client_nonce']},{s['server_first']},"
                    f"c=biws,r={s['client_nonce']}{s['server_nonce']}").encode()
    proof = scram.client_proof(scram.client_key(salted),
                               scram.client_signature(verifier.stored_key, auth))
    assert proof.hex() == s["client_proof"]
    assert s["client_final"].endswith(",p=" + base64.b64encode(proof).decode())
    signature = scram.server_signature(verifier.server_key, auth)
    assert signature.hex() == s["server_signature"]
    assert s["server_final"] == "v=" + base64.b64encode(signature).decode()

    # The one-trip login: the ticket is the server nonce.
    one = s["one_trip"]
    server = cred.ScramServer(one["client_first"], nonce=one["ticket"])
    assert server.start(verifier) == one["server_first"]
    assert server.finish(one["client_final"]) == one["server_final"]


def test_the_scram_frames_carry_the_exchange():
    s = DATA["scram"]
    values = [to_json(loads(bytes.fromhex(v["hex"])[4:])) for v in s["frames"]]
    assert values[0] == [Op.CALL, 1, 0, "login", [s["client_first"]], {"$map": []}, True]
    assert values[1][:2] == [Op.ANSWER, 1]
    assert values[1][2]["$tuple"][1] == s["server_first"]
    assert values[2][3:5] == ["respond", [s["client_final"], "pbecho", None, None]]
    assert values[3][2]["$tuple"][0] == s["server_final"]


# -- the generator ----------------------------------------------------------------

def _frames() -> list[tuple[str, str, object]]:
    ref = lambda kind, *args: {"$ref": [kind, list(args)]}  # noqa: E731
    empty = {"$map": []}
    return [
        ("hello", "HELLO: name pb, version 1, features cancel and ping, max_frame 4 MiB, "
                  "max_calls 1024", [0, "pb", 1, ["cancel", "ping"], 4194304, 1024]),
        ("hello-minimal", "HELLO without the optional max_calls, max_frame at its minimum 1024",
         [0, "pb", 1, [], 1024]),
        ("call", "CALL req 1 on the root (0): echo('hello network'), answer wanted",
         [1, 1, 0, "echo", ["hello network"], empty, True]),
        ("call-kwargs-one-way", "CALL req 2 on object 7: notify('x', loud=True), one-way",
         [1, 2, 7, "notify", ["x"], {"$map": [["loud", True]]}, False]),
        ("call-passing-local", "CALL req 3 on the root: keep(<the receiver's object 4 coming "
                               "home>)", [1, 3, 0, "keep", [ref(1, 4)], empty, True]),
        ("answer", "ANSWER req 1: 'hello network'", [2, 1, "hello network"]),
        ("answer-remote", "ANSWER req 3: a new reference to the sender's object 1 (REMOTE)",
         [2, 3, ref(0, 1)]),
        ("answer-stream-item", "ANSWER to a stream pull: [true, b'chunk'] (a plain array)",
         [2, 4, [True, {"$bin": b"chunk".hex()}]]),
        ("answer-stream-end", "ANSWER to a stream pull after the end (or after close): "
                              "[false, nil]", [2, 5, [False, None]]),
        ("error-remote", "ERROR req 1: the method raised ZeroDivisionError",
         [3, 1, "remote-error", "ZeroDivisionError", "division by zero", None, None]),
        ("error-no-such-method", "ERROR req 2: no such method",
         [3, 2, "no-such-method", "broker.NoSuchMethod", "Echoer has no remote method 'nope'",
          None, None]),
        ("error-copy", "ERROR req 3 whose exception travels as a copy: copy is the jelly "
                       "encoding of the exception, nested as bin",
         [3, 3, "remote-error", "vectors.Point", "(1, 2)", None,
          {"$bin": dumps(_point(1, 2)).hex()}]),
        ("error-cancelled", "ERROR req 5: cancelled (the answer to CANCEL 5)",
         [3, 5, "cancelled", "asyncio.exceptions.CancelledError", "", None, None]),
        ("decref", "DECREF object 1, 2 receipts", [4, 1, 2]),
        ("cache-call", "CACHE_CALL on cache 1: observe_set('k', 1)",
         [5, 1, "set", ["k", 1], empty]),
        ("decache", "DECACHE cache 1, 2 receipts", [6, 1, 2]),
        ("uncache", "UNCACHE cache 1", [7, 1]),
        ("cancel", "CANCEL req 5", [8, 5]),
        ("ping", "PING with token 1", [9, 1]),
        ("pong", "PONG echoing token 1", [10, 1]),
        ("goodbye", "GOODBYE normal", [11, "normal", "bye"]),
        ("goodbye-protocol-error", "GOODBYE protocol-error with its reason",
         [11, "protocol-error", "malformed CALL"]),
    ]


def _point(x, y):
    from .wirevalues import Point

    return Point(x, y)


def _values() -> list[tuple[str, str, object]]:
    point = {"$copy": ["vectors.Point", {"$map": [["x", 1], ["y", 2]]}], "$id": 0}
    return [
        ("nil", "nil", None),
        ("true", "true", True),
        ("int-negative", "-1 (negative fixint)", -1),
        ("int-uint64", "2**64 - 1 (uint 64)", 2 ** 64 - 1),
        ("float", "1.5 (always float 64)", {"$float": 1.5}),
        ("str", "'é' (UTF-8)", "é"),
        ("bin", "bytes 00 ff", {"$bin": "00ff"}),
        ("map-int-keys", "{1: 'a', (1, 2): 'b'}: keys need not be strings",
         {"$map": [[1, "a"], [{"$tuple": [1, 2]}, "b"]]}),
        ("tuple", "TUPLE (1, 'a')", {"$tuple": [1, "a"]}),
        ("set", "SET {1, 2, 3}", {"$set": [1, 2, 3]}),
        ("frozenset", "FROZENSET frozenset()", {"$frozenset": []}),
        ("bigint", "BIGINT 2**64", {"$bigint": str(2 ** 64)}),
        ("bigint-negative", "BIGINT -2**63 - 1", {"$bigint": str(-2 ** 63 - 1)}),
        ("complex", "COMPLEX 1+2j", {"$complex": [1.0, 2.0]}),
        ("decimal", "DECIMAL -1.50", {"$decimal": "-1.50"}),
        ("datetime-naive", "DATETIME 2024-05-06 07:08:09.000010, naive",
         {"$datetime": [2024, 5, 6, 7, 8, 9, 10], "fold": 0, "tz": None}),
        ("datetime-utc", "DATETIME 2024-05-06 00:00 UTC",
         {"$datetime": [2024, 5, 6, 0, 0, 0, 0], "fold": 0, "tz": "utc"}),
        ("datetime-offset", "DATETIME with a fixed offset of -5 h named EST",
         {"$datetime": [2024, 5, 6, 0, 0, 0, 0], "fold": 0,
          "tz": {"offset_us": -5 * 3600 * 10 ** 6, "name": "EST"}}),
        ("datetime-offset-unnamed", "DATETIME with a fixed offset of +2 h, default name",
         {"$datetime": [2024, 5, 6, 0, 0, 0, 0], "fold": 0, "tz": {"offset_us": 7200 * 10 ** 6}}),
        ("datetime-zone", "DATETIME in the IANA zone Europe/Paris, fold 1",
         {"$datetime": [2024, 10, 27, 2, 30, 0, 0], "fold": 1, "tz": {"zone": "Europe/Paris"}}),
        ("date", "DATE 2024-05-06", {"$date": [2024, 5, 6]}),
        ("time", "TIME 12:34:56.000789, naive",
         {"$time": [12, 34, 56, 789], "fold": 0, "tz": None}),
        ("time-utc", "TIME 12:00 UTC", {"$time": [12, 0, 0, 0], "fold": 0, "tz": "utc"}),
        ("timedelta", "TIMEDELTA -1 day, 3600 s, 5 us", {"$timedelta": [-1, 3600, 5]}),
        ("copy", "COPY of a registered vectors.Point(x=1, y=2)", point),
        ("copy-backref", "[p, p]: a COPY, then a BACKREF to copy 0", [point, {"$same": 0}]),
        ("ref-remote", "REFERENCE kind 0, REMOTE: the sender's object 1",
         {"$ref": [0, [1]]}),
        ("ref-local", "REFERENCE kind 1, LOCAL: the receiver's object 4 coming home",
         {"$ref": [1, [4]]}),
        ("ref-cache", "REFERENCE kind 2, CACHE: cache 1, tag 'vectors.Counter', state {'n': 0}",
         {"$ref": [2, [1, "vectors.Counter", {"$map": [["n", 0]]}]]}),
        ("ref-cached", "REFERENCE kind 3, CACHED: cache 1 again", {"$ref": [3, [1]]}),
        ("ref-lcache", "REFERENCE kind 4, LCACHE: the receiver's cache 1 coming home",
         {"$ref": [4, [1]]}),
        ("ref-stream", "REFERENCE kind 5, STREAM: the sender's stream source, object 2",
         {"$ref": [5, [2]]}),
    ]


def _scram() -> dict:
    username, password = "user", "pencil"
    # The user, password, nonces and salt of RFC 7677's example, so that the
    # exchange can be checked against the RFC's own figures.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    iterations = 4096
    client_nonce, server_nonce = "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    verifier = cred.ScramVerifier.from_password(password, salt=salt, iterations=iterations)
    salted = scram.salted_password(password, salt, iterations)
    client = cred.ScramClient(username, password, nonce=client_nonce)
    client_first = client.first()
    server = cred.ScramServer(client_first, nonce=server_nonce)
    server_first = server.start(verifier)
    client_final = client.final(server_first)
    server_final = server.finish(client_final)
    auth = f"{client_first[3:]},{server_first},{client_final[:client_final.index(',p=')]}"
    proof = scram.client_proof(scram.client_key(salted),
                               scram.client_signature(verifier.stored_key, auth.encode()))
    ticket = "TICKETtLvDq2Dg0cPJ6mw3AbCdEfGh"[:24]
    one_nonce = "OneTripClientNonce000000"
    one = cred.ScramClient(username, password, nonce=one_nonce)
    one_first = one.first()
    one_server_first = f"r={one_nonce}{ticket},s={base64.b64encode(salt).decode()},i={iterations}"
    one_final = one.final(one_server_first)
    one_server = cred.ScramServer(one_first, nonce=ticket)
    assert one_server.start(verifier) == one_server_first
    one_server_final = one_server.finish(one_final)
    next_ticket = "NextTicketNextTicket0000"
    ref = lambda kind, *args: {"$ref": [kind, list(args)]}  # noqa: E731
    frames = [
        ("client → server: CALL req 1, root.login(client_first)",
         [1, 1, 0, "login", [client_first], {"$map": []}, True]),
        ("server → client: ANSWER req 1, TUPLE (challenger = REMOTE object 1, server_first)",
         [2, 1, {"$tuple": [ref(0, 1), server_first]}]),
        ("client → server: CALL req 2, challenger.respond(client_final, 'pbecho', nil, nil)",
         [1, 2, 1, "respond", [client_final, "pbecho", None, None], {"$map": []}, True]),
        ("server → client: ANSWER req 2, TUPLE (server_final, perspective = REMOTE object 2, "
         "ticket)", [2, 2, {"$tuple": [server_final, ref(0, 2), ticket]}]),
        ("client → server: DECREF the challenger (object 1), 1 receipt", [4, 1, 1]),
        ("client → server (a later connection): CALL req 1, root.login_one_trip(client_first, "
         "ticket, server_first, client_final, 'pbecho', nil, nil)",
         [1, 1, 0, "login_one_trip", [one_first, ticket, one_server_first, one_final, "pbecho",
                                      None, None], {"$map": []}, True]),
        ("server → client: ANSWER req 1, TUPLE (server_final, perspective = REMOTE object 1, "
         "next ticket)", [2, 1, {"$tuple": [one_server_final, ref(0, 1), next_ticket]}]),
    ]
    return {
        "username": username, "password": password, "salt": salt.hex(),
        "salt_base64": base64.b64encode(salt).decode(), "iterations": iterations,
        "client_nonce": client_nonce, "server_nonce": server_nonce,
        "client_first": client_first, "server_first": server_first,
        "client_final": client_final, "server_final": server_final,
        "auth_message": auth,
        "salted_password": salted.hex(), "client_key": scram.client_key(salted).hex(),
        "stored_key": verifier.stored_key.hex(), "server_key": verifier.server_key.hex(),
        "client_proof": proof.hex(),
        "server_signature": scram.server_signature(verifier.server_key, auth.encode()).hex(),
        "one_trip": {"client_nonce": one_nonce, "ticket": ticket, "client_first": one_first,
                     "server_first": one_server_first, "client_final": one_final,
                     "server_final": one_server_final},
        "frames": [{"meaning": m, "value": v, "hex": frame(dumps(from_json(v))).hex()}
                   for m, v in frames],
    }


def write() -> None:
    data = {
        "format": "docs/protocol-vectors/README.md",
        "frames": [{"name": n, "meaning": m, "value": v, "hex": frame(dumps(from_json(v))).hex()}
                   for n, m, v in _frames()],
        "values": [{"name": n, "meaning": m, "value": v, "hex": dumps(from_json(v)).hex()}
                   for n, m, v in _values()],
        "scram": _scram(),
    }
    VECTORS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.exit("usage: python -m tests.broker.test_protocol_vectors --write")
