import base64
import functools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cred import scram
from cred.errors import ScramError
from cred.scram import ScramClient, ScramServer, ScramVerifier

# RFC 7677, section 3
RFC_USER = "user"
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@functools.cache
def rfc_verifier():
    return ScramVerifier.from_password(RFC_PASSWORD, salt=RFC_SALT, iterations=4096)


def exchange(username="alice", password="secret", verifier_password=None, **client_kwargs):
    """A complete exchange in memory; returns (client, server, messages)."""
    verifier = ScramVerifier.from_password(verifier_password or password)
    client = ScramClient(username, password, **client_kwargs)
    server = ScramServer(client.first())
    server_first = server.start(verifier)
    client_final = client.final(server_first)
    return client, server, server_first, client_final


def test_rfc7677_test_vector_end_to_end():
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    assert client.first() == RFC_CLIENT_FIRST
    server = ScramServer(RFC_CLIENT_FIRST, nonce=RFC_SERVER_NONCE)
    assert server.username == "user"
    assert server.start(rfc_verifier()) == RFC_SERVER_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert server.finish(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    client.verify(RFC_SERVER_FINAL)
    assert client.done


def test_key_schedule_functions_compose_to_the_rfc_vector():
    salted = scram.salted_password(RFC_PASSWORD, RFC_SALT, 4096)
    ckey = scram.client_key(salted)
    auth = (RFC_CLIENT_FIRST[3:] + "," + RFC_SERVER_FIRST + "," + RFC_CLIENT_FINAL.rsplit(",p=", 1)[0]).encode()
    proof = scram.client_proof(ckey, scram.client_signature(scram.stored_key(ckey), auth))
    assert "p=" + base64.b64encode(proof).decode() == RFC_CLIENT_FINAL.rsplit(",", 1)[1]
    signature = scram.server_signature(scram.server_key(salted), auth)
    assert "v=" + base64.b64encode(signature).decode() == RFC_SERVER_FINAL


async def test_async_final_runs_the_key_derivation_in_a_worker_thread(monkeypatch):
    scram.clear_client_key_cache()  # an earlier test may have derived this key
    threads = []
    real = scram.salted_password

    def spy(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(scram, "salted_password", spy)
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    client.first()
    assert await client.final_async(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_server_finish_runs_no_key_derivation(monkeypatch):
    verifier = rfc_verifier()
    client = ScramClient(RFC_USER, RFC_PASSWORD)
    server = ScramServer(client.first())
    client_final = client.final(server.start(verifier))

    def forbidden(*args):
        raise AssertionError("the server ran the KDF")

    monkeypatch.setattr(scram, "salted_password", forbidden)
    client.verify(server.finish(client_final))


def test_wrong_password_is_refused_by_the_server():
    _, server, _, client_final = exchange(password="wrong", verifier_password="right")
    with pytest.raises(ScramError, match="proof is wrong"):
        server.finish(client_final)


def test_server_finish_is_one_shot():
    _, server, _, client_final = exchange()
    server.finish(client_final)
    with pytest.raises(ScramError):
        server.finish(client_final)


def test_client_refuses_a_wrong_server_signature():
    client, server, _, client_final = exchange()
    good = server.finish(client_final)
    forged = "v=" + base64.b64encode(bytes(32)).decode()
    assert forged != good
    with pytest.raises(ScramError, match="server signature is wrong"):
        client.verify(forged)
    assert not client.done


def test_client_refuses_a_server_final_replayed_from_another_exchange():
    _, server, _, client_final = exchange()
    old_server_final = server.finish(client_final)
    client, _, _, _ = exchange()  # same account, fresh nonces
    with pytest.raises(ScramError, match="server signature is wrong"):
        client.verify(old_server_final)


def test_client_reports_a_server_error_message():
    client, _, _, _ = exchange()
    with pytest.raises(ScramError, match="server refused the login: other-error"):
        client.verify("e=other-error")


@pytest.mark.parametrize("iterations", [0, 1, 4095, 1_000_001, 99999999999])
def test_client_refuses_absurd_iteration_counts(iterations):
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    client.first()
    server_first = RFC_SERVER_FIRST.replace("i=4096", f"i={iterations}")
    with pytest.raises(ScramError):
        client.final(server_first)


def test_client_iteration_bounds_are_configurable():
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, max_iterations=4000, min_iterations=1)
    client.first()
    with pytest.raises(ScramError, match="more than the maximum 4000"):
        client.final(RFC_SERVER_FIRST)


@pytest.mark.parametrize(
    "nonce",
    [
        "someoneelse%hvYDpWUa2RaTCAfuxFIlj",  # does not start with ours
        RFC_CLIENT_NONCE,  # adds nothing of the server's
        RFC_CLIENT_NONCE[:-1] + "x" + "suffix",
    ],
)
def test_client_refuses_a_server_nonce_that_does_not_extend_its_own(nonce):
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    client.first()
    with pytest.raises(ScramError):
        client.final(f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_client_methods_out_of_order_raise_scram_error():
    client = ScramClient("alice", "secret")
    with pytest.raises(ScramError):
        client.final(RFC_SERVER_FIRST)
    with pytest.raises(ScramError):
        client.verify(RFC_SERVER_FINAL)
    client = ScramClient("alice", "secret")
    client.first()
    with pytest.raises(ScramError):
        client.first()


def test_saslnames_with_comma_and_equals_are_escaped_and_round_trip():
    client = ScramClient("a,b=c", "secret")
    first = client.first()
    assert first.startswith("n,,n=a=2Cb=3Dc,r=")
    server = ScramServer(first)
    assert server.username == "a,b=c"
    client_final = client.final(server.start(ScramVerifier.from_password("secret")))
    client.verify(server.finish(client_final))


@pytest.mark.parametrize("name", ["a=2", "a=", "a=41", "=2c"])
def test_bad_saslname_escapes_are_refused(name):
    with pytest.raises(ScramError, match="saslname"):
        ScramServer(f"n,,n={name},r=abcdef")


def test_saslprep_maps_spaces_and_normalises_and_refuses_controls():
    assert scram.saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing
    assert scram.saslprep("user") == "user"
    assert scram.saslprep("\u00aa") == "a"  # NFKC
    assert scram.saslprep("a\u00a0b") == "a b"  # non-ASCII space
    for bad in ["\x07", "a\tb", "\u0627\u0031"]:  # control, control, bad bidi
        with pytest.raises(ScramError):
            scram.saslprep(bad)


def test_unicode_passwords_are_normalised_on_both_sides():
    verifier = ScramVerifier.from_password("\u2168")  # ROMAN NUMERAL NINE
    assert verifier.check_password("IX")


@pytest.mark.parametrize(
    "message",
    [
        "",
        "n,,",
        "n,",
        "n",
        "y,,n=user,r=abc",
        "p=tls-unique,,n=user,r=abc",
        "n,a=admin,n=user,r=abc",
        "n,,m=ext,n=user,r=abc",
        "n,,n=user",
        "n,,n=,r=abc",
        "n,,n=user,r=",
        "n,,n=user,r=ab,c",
        "n,,n=user,r=abc,x=extension",
        "n,,r=abc,n=user",
        "n,,n=user,r=ab\x00c",
        "n,,n=user,r=abcé",
        "n,,n=user,r=" + "a" * 2000,
        "n,,n=\udcff,r=abc",
        None,
        b"n,,n=user,r=abc",
        42,
        ["n,,n=user,r=abc"],
    ],
)
def test_garbage_client_first_messages_raise_only_scram_error(message):
    with pytest.raises(ScramError):
        ScramServer(message)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "c=biws",
        "c=biws,r=x",
        "c=biws,r=NONCE,p=",
        "c=biws,r=NONCE,p=!!!!",
        "c=biws,r=NONCE,p=AAAA",
        "c=eSws,r=NONCE,p=" + "A" * 43 + "=",
        "c=biws,r=other,p=" + "A" * 43 + "=",
        "r=NONCE,c=biws,p=" + "A" * 43 + "=",
        "c=biws,r=NONCE,x=1,p=" + "A" * 43 + "=",
        "c=biws,r=NONCE,p=" + "A" * 2000,
        None,
        b"c=biws",
    ],
)
def test_garbage_client_final_messages_raise_only_scram_error(message):
    client = ScramClient("alice", "secret")
    server = ScramServer(client.first())
    server_first = server.start(ScramVerifier.from_password("secret"))
    nonce = server_first.split(",")[0][2:]
    if isinstance(message, str):
        message = message.replace("NONCE", nonce)
    with pytest.raises(ScramError):
        server.finish(message)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        "r=" + RFC_CLIENT_NONCE + "x,s=,i=4096",
        "r=" + RFC_CLIENT_NONCE + "x,s=!!,i=4096",
        "r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096",
        "r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096.0",
        "r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=٤٠٩٦",
        "r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,e=1",
        "m=1,r=" + RFC_CLIENT_NONCE + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "e=unknown-user",
        "r=" + RFC_CLIENT_NONCE + "x" * 2000 + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        None,
    ],
)
def test_garbage_server_first_messages_raise_only_scram_error(message):
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    client.first()
    with pytest.raises(ScramError):
        client.final(message)


@pytest.mark.parametrize("message", ["", "v=", "v=!!", "v=AAAA", "x=abc", "v=abc,x=1", None, "v=" + "A" * 2000])
def test_garbage_server_final_messages_raise_only_scram_error(message):
    client, _, _, _ = exchange()
    with pytest.raises(ScramError):
        client.verify(message)


def test_truncated_versions_of_every_rfc_message_raise_only_scram_error():
    for cut in range(len(RFC_CLIENT_FIRST)):
        try:
            ScramServer(RFC_CLIENT_FIRST[:cut])
        except ScramError:
            pass
    for cut in range(len(RFC_CLIENT_FINAL)):
        server = ScramServer(RFC_CLIENT_FIRST, nonce=RFC_SERVER_NONCE)
        server.start(rfc_verifier())
        with pytest.raises(ScramError):
            server.finish(RFC_CLIENT_FINAL[:cut])
    for cut in range(len(RFC_SERVER_FIRST)):
        client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, max_iterations=4096)
        client.first()
        try:
            client.final(RFC_SERVER_FIRST[:cut])
        except ScramError:
            pass


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.text(
    alphabet="nr=,cbiwsp0123456789+/aAzZ", max_size=80
)


def _mutated(message):
    """Near-valid messages: a few characters of ``message`` deleted,
    inserted or replaced."""

    def apply(edits):
        text = message
        for position, kind, ch in edits:
            position = min(position, len(text))
            if kind == "delete":
                text = text[:position] + text[position + 1:]
            elif kind == "insert":
                text = text[:position] + ch + text[position:]
            else:
                text = text[:position] + ch + text[position + 1:]
        return text

    edit = st.tuples(
        st.integers(0, len(message)),
        st.sampled_from(["delete", "insert", "replace"]),
        st.sampled_from(",=n r c p v s i 2C 3D".split(" ")) | st.characters(codec="utf-8"),
    )
    return st.lists(edit, min_size=1, max_size=4).map(apply).filter(lambda text: text != message)


@settings(max_examples=300, deadline=None)
@given(_text | _mutated(RFC_CLIENT_FIRST))
def test_fuzzed_client_first_messages_raise_only_scram_error(message):
    try:
        server = ScramServer(message)
    except ScramError:
        return
    assert server.username


@settings(max_examples=300, deadline=None)
@given(_text | _mutated(RFC_CLIENT_FINAL))
def test_fuzzed_client_final_messages_raise_only_scram_error(message):
    server = ScramServer(RFC_CLIENT_FIRST, nonce=RFC_SERVER_NONCE)
    server.start(rfc_verifier())
    with pytest.raises(ScramError):
        server.finish(message)


@settings(max_examples=300, deadline=None)
@given(_text | _mutated(RFC_SERVER_FIRST) | _mutated(RFC_SERVER_FINAL))
def test_fuzzed_server_messages_raise_only_scram_error(message):
    client = ScramClient(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, max_iterations=4096)
    client.first()
    try:
        client.final(message)
    except ScramError:
        pass
    try:
        client.verify(message)
    except ScramError:
        pass


def test_verifier_from_password_picks_a_random_salt_and_default_iterations():
    a = ScramVerifier.from_password("secret")
    b = ScramVerifier.from_password("secret")
    assert len(a.salt) >= 16 and a.salt != b.salt
    assert a.iterations == scram.DEFAULT_ITERATIONS == 4096
    assert a.stored_key != b.stored_key
    assert "stored_key" not in repr(a) and "server_key" not in repr(a)


def test_verifier_refuses_fewer_than_the_minimum_iterations():
    with pytest.raises(ValueError, match="4096"):
        ScramVerifier.from_password("secret", iterations=1000)
    assert ScramVerifier.from_password("secret", iterations=5000).iterations == 5000


def test_fake_verifiers_are_stable_per_name_and_shaped_like_real_ones():
    secret = b"s" * 32
    one = scram.fake_verifier(secret, "nobody")
    assert one == scram.fake_verifier(secret, "nobody")
    assert one.salt != scram.fake_verifier(secret, "somebody").salt
    assert one.salt != scram.fake_verifier(b"t" * 32, "nobody").salt
    real = ScramVerifier.from_password("secret")
    assert len(one.salt) == len(real.salt) and one.iterations == real.iterations


def test_fake_verifiers_keep_their_derivation():
    # A store's fakes must not change across versions: an unknown name's
    # salt that changed would tell an observer it was never an account's.
    import hashlib
    import hmac

    secret, name = b"s" * 32, "nobödy".encode()

    def mac(label: bytes) -> bytes:
        return hmac.digest(secret, label + b"\0" + name, hashlib.sha256)

    fake = scram.fake_verifier(secret, "nobödy", iterations=5000)
    assert fake == ScramVerifier(mac(b"cred fake salt")[:16], 5000, mac(b"cred fake stored key"),
                                 mac(b"cred fake server key"))
    assert scram._FakeVerifiers(secret)("nobödy", iterations=5000) == fake
