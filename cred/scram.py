"""SCRAM-SHA-256 (RFC 5802 with the RFC 7677 hash), sans-IO.

The messages are the RFC's, byte for byte, so any conforming implementation
can check them (the RFC 7677 test vector is in the tests)::

    client-first   n,,n=<saslname>,r=<client nonce>
    server-first   r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final   c=biws,r=<nonce>,p=<base64 ClientProof>
    server-final   v=<base64 ServerSignature>

Key schedule (``H`` = SHA-256, ``HMAC`` = HMAC-SHA-256)::

    SaltedPassword  = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, i)
    ClientKey       = HMAC(SaltedPassword, "Client Key")
    StoredKey       = H(ClientKey)
    ServerKey       = HMAC(SaltedPassword, "Server Key")
    AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
    ClientSignature = HMAC(StoredKey, AuthMessage)
    ClientProof     = ClientKey XOR ClientSignature
    ServerSignature = HMAC(ServerKey, AuthMessage)

This module holds the RFC's primitives and the server side
(:class:`ScramServer`); the client and what it remembers between logins
(:class:`~cred.scram_client.ScramClient`,
:class:`~cred.scram_client.ClientCache`) live in :mod:`cred.scram_client`
and can still be imported from here.

A client that logged in before may send client-first and client-final in
one message: the server's answer carries a single-use ticket, which the next
login uses as the server nonce, with the salt and iteration count the client
remembers (:meth:`ScramClient.one_trip`; the server side is
``cred.Portal.scram_one_trip``).

The server keeps only a :class:`ScramVerifier` (salt, iterations, StoredKey,
ServerKey).  At login it recovers ``ClientKey = ClientProof XOR
ClientSignature`` and checks ``H(ClientKey) == StoredKey``: two HMACs and a
hash, never the key derivation.  The client pays the iterations.

What is deliberately not supported: channel binding (the GS2 header must be
``n,,``, so ``c=biws``), an authorization identity, and extensions (``m=`` or
any attribute beyond the RFC's).  Every message is limited to
:data:`MAX_MESSAGE_LENGTH` bytes of UTF-8.  Anything malformed raises
:class:`~cred.errors.ScramError` and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass, field

from .errors import ScramError

__all__ = [
    "clear_client_key_cache",
    "ClientCache",
    "default_client_cache",
    "MECHANISM",
    "MIN_ITERATIONS",
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "SALT_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "saslprep",
    "escape_saslname",
    "unescape_saslname",
    "salted_password",
    "salted_password_async",
    "client_key",
    "server_key",
    "stored_key",
    "client_signature",
    "client_proof",
    "server_signature",
    "ScramVerifier",
    "fake_verifier",
    "ScramClient",
    "ScramServer",
]

MECHANISM = "SCRAM-SHA-256"
#: RFC 7677 asks for at least 4096; the client refuses fewer.
MIN_ITERATIONS = 4096
DEFAULT_ITERATIONS = 4096
#: A client refuses a server asking for more than this (a cheap DoS otherwise).
MAX_ITERATIONS = 1_000_000
SALT_LENGTH = 16
#: Upper bound, in bytes of UTF-8, of every SCRAM message either side accepts.
MAX_MESSAGE_LENGTH = 1024

_HASH = "sha256"
_KEY_LENGTH = 32
_GS2_HEADER = "n,,"
_CHANNEL_BINDING = base64.b64encode(_GS2_HEADER.encode()).decode()  # "biws"
_NONCE_BYTES = 18  # 24 base64 characters


# --- strings -----------------------------------------------------------------

def saslprep(text: str) -> str:
    """Prepare a user name or password as RFC 4013 (SASLprep) says.

    Non-ASCII spaces become spaces, "mapped to nothing" characters vanish,
    the result is NFKC-normalised (Unicode 3.2) and checked for prohibited
    and badly mixed bidirectional characters.  Unassigned code points are
    allowed (the "query" profile).  Raises :class:`ScramError` on a
    prohibited character.
    """
    if not isinstance(text, str):
        raise ScramError(f"expected text, got {type(text).__name__}")
    if text.isascii() and text.isprintable():
        return text  # the common case, which SASLprep leaves unchanged
    mapped = []
    for ch in text:
        if stringprep.in_table_b1(ch):
            continue
        if stringprep.in_table_c12(ch):
            ch = " "
        mapped.append(ch)
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", "".join(mapped))
    for ch in prepared:
        if (
            stringprep.in_table_c12(ch)
            or stringprep.in_table_c21_c22(ch)
            or stringprep.in_table_c3(ch)
            or stringprep.in_table_c4(ch)
            or stringprep.in_table_c5(ch)
            or stringprep.in_table_c6(ch)
            or stringprep.in_table_c7(ch)
            or stringprep.in_table_c8(ch)
            or stringprep.in_table_c9(ch)
        ):
            raise ScramError(f"prohibited character U+{ord(ch):04X} (SASLprep)")
    rtl = [stringprep.in_table_d1(ch) for ch in prepared]
    if any(rtl):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ScramError("mixed left-to-right and right-to-left text (SASLprep)")
        if not (rtl[0] and rtl[-1]):
            raise ScramError("right-to-left text must start and end with an RTL character (SASLprep)")
    return prepared


def escape_saslname(name: str) -> str:
    """``=`` becomes ``=3D`` and ``,`` becomes ``=2C`` (RFC 5802 §5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(text: str) -> str:
    """Undo :func:`escape_saslname`; any other ``=`` sequence is an error."""
    if "=" not in text:
        return text  # nothing escaped: the common case
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "=":
            code = text[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ScramError("malformed saslname: '=' must be followed by 2C or 3D")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# --- the key schedule ----------------------------------------------------------

def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(Normalize(password), salt, i)``: the expensive step (blocking).

    Every key derivation in ``cred`` goes through this function.  In async
    code call :func:`salted_password_async` instead.
    """
    return hashlib.pbkdf2_hmac(_HASH, saslprep(password).encode("utf-8"), salt, iterations)


async def salted_password_async(password: str, salt: bytes, iterations: int) -> bytes:
    """:func:`salted_password` in a worker thread, off the event loop."""
    return await asyncio.to_thread(salted_password, password, salt, iterations)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, _HASH)


try:  # OpenSSL's HMAC object itself: copy, update and digest without hmac.HMAC's Python layer
    from _hashlib import hmac_new as _keyed_hmac
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    def _keyed_hmac(key: bytes, *, digestmod: str) -> object:
        return hmac.new(key, digestmod=digestmod)


class _Mac:
    """HMAC-SHA-256 under one key that signs many messages: the key is
    processed once and each message starts from a copy of that state, which
    costs about half of a one-shot ``hmac.digest`` (that re-keys, and looks
    the digest up again, on every call)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = _keyed_hmac(key, digestmod=_HASH)

    def __call__(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.digest()


def client_key(salted: bytes) -> bytes:
    return _hmac(salted, b"Client Key")


def server_key(salted: bytes) -> bytes:
    return _hmac(salted, b"Server Key")


def stored_key(client_key: bytes) -> bytes:
    return hashlib.sha256(client_key).digest()


def client_signature(stored_key: bytes, auth_message: bytes) -> bytes:
    return _hmac(stored_key, auth_message)


def client_proof(client_key: bytes, client_signature: bytes) -> bytes:
    if len(client_key) != len(client_signature):
        raise ValueError("ClientKey and ClientSignature differ in length")
    return (int.from_bytes(client_key, "big") ^ int.from_bytes(client_signature, "big")).to_bytes(
        len(client_key), "big")


def server_signature(server_key: bytes, auth_message: bytes) -> bytes:
    return _hmac(server_key, auth_message)


# --- the verifier ----------------------------------------------------------------

@dataclass(frozen=True)
class ScramVerifier:
    """What the server stores for an account: enough to check a proof and to
    prove itself, not enough to log in (nor to recover the password short of
    a dictionary attack costing ``iterations`` per guess)."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or not self.salt:
            raise ValueError("ScramVerifier.salt must be non-empty bytes")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError("ScramVerifier.iterations must be a positive int")
        for name in ("stored_key", "server_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != _KEY_LENGTH:
                raise ValueError(f"ScramVerifier.{name} must be {_KEY_LENGTH} bytes")

    @functools.cached_property
    def _client_signer(self) -> _Mac:
        return _Mac(self.stored_key)

    @functools.cached_property
    def _server_signer(self) -> _Mac:
        return _Mac(self.server_key)

    @classmethod
    def from_salted_password(cls, salted: bytes, salt: bytes, iterations: int) -> ScramVerifier:
        return cls(salt, iterations, stored_key(client_key(salted)), server_key(salted))

    @classmethod
    def from_password(
        cls,
        password: str,
        *,
        salt: bytes | None = None,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> ScramVerifier:
        """Derive a verifier (blocking: runs the KDF).

        ``salt`` defaults to :data:`SALT_LENGTH` random bytes; ``iterations``
        must be at least :data:`MIN_ITERATIONS`.
        """
        if not isinstance(iterations, int) or iterations < MIN_ITERATIONS:
            raise ValueError(f"iterations must be an int >= {MIN_ITERATIONS}, got {iterations!r}")
        if iterations > MAX_ITERATIONS:
            raise ValueError(
                f"iterations must be <= {MAX_ITERATIONS} (clients refuse more), got {iterations}"
            )
        if salt is None:
            salt = secrets.token_bytes(SALT_LENGTH)
        return cls.from_salted_password(salted_password(password, salt, iterations), salt, iterations)

    def check_password(self, password: str) -> bool:
        """True if ``password`` derives this verifier (blocking: runs the KDF).

        Used for plain username/password logins; SCRAM logins never need it.
        """
        try:
            salted = salted_password(password, self.salt, self.iterations)
        except ScramError:
            return False
        return hmac.compare_digest(stored_key(client_key(salted)), self.stored_key)


def fake_verifier(
    secret: bytes,
    username: str,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    salt_length: int = SALT_LENGTH,
) -> ScramVerifier:
    """A stable, plausible verifier for a user who does not exist.

    Derived from a server secret so the same unknown name always gets the
    same salt (as a real account would), and nobody without the secret can
    tell it from a real one.  Its keys match no password anyone knows.
    """
    return _FakeVerifiers(secret)(username, iterations=iterations, salt_length=salt_length)


class _FakeVerifiers:
    """:func:`fake_verifier` under one secret, for a source that makes one
    per login: the secret is keyed into HMAC once, not three times a call
    (same bytes out).  A portal looks a fake up for known names too, so
    that both cost the same; this is what keeps that cheap."""

    __slots__ = ("_mac",)

    def __init__(self, secret: bytes) -> None:
        self._mac = _Mac(secret)

    def __call__(self, username: str, *, iterations: int = DEFAULT_ITERATIONS,
                 salt_length: int = SALT_LENGTH) -> ScramVerifier:
        name = username.encode("utf-8", "surrogatepass")
        mac = self._mac
        return ScramVerifier(
            mac(b"cred fake salt\0" + name)[:salt_length],
            iterations,
            mac(b"cred fake stored key\0" + name),
            mac(b"cred fake server key\0" + name),
        )


# --- message parsing ---------------------------------------------------------------

def _check_message(message: object, what: str) -> str:
    if not isinstance(message, str):
        raise ScramError(f"{what} must be text, got {type(message).__name__}")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeError:
        raise ScramError(f"{what} is not valid UTF-8 text") from None
    if size > MAX_MESSAGE_LENGTH:
        raise ScramError(f"{what} is {size} bytes, over the {MAX_MESSAGE_LENGTH}-byte limit")
    return message


def _attributes(text: str, names: str, what: str) -> list[str]:
    """Split ``a=..,b=..`` into values, requiring exactly the attributes in
    ``names`` in that order."""
    parts = text.split(",")
    if len(parts) != len(names):
        raise ScramError(f"malformed {what}: expected attributes {','.join(names)}")
    values = []
    for part, name in zip(parts, names):
        if len(part) < 2 or part[0] != name or part[1] != "=":
            raise ScramError(f"malformed {what}: expected '{name}=' attribute")
        values.append(part[2:])
    return values


def _is_nonce(text: str) -> bool:
    # printable ASCII except ',' (RFC 5802 "printable")
    return bool(text) and text.isascii() and text.isprintable() and " " not in text and "," not in text


def _check_nonce(nonce: str, what: str) -> str:
    if not _is_nonce(nonce):
        raise ScramError(f"malformed {what}: nonce must be printable ASCII without ','")
    return nonce


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = text.encode("ascii")
        # strict_mode: only the alphabet, padding only at the end (what
        # b64decode(validate=True) checks, without its regular expression)
        data = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise ScramError(f"malformed {what}: not base64") from None
    if binascii.b2a_base64(data, newline=False) != raw:  # one spelling per value
        raise ScramError(f"malformed {what}: non-canonical base64")
    return data


def _new_nonce() -> str:
    return _b64(secrets.token_bytes(_NONCE_BYTES))


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _valid_ticket(value: object) -> bool:
    """A ticket (a server's single-use nonce for one-trip logins) is a nonce
    of 16 to 64 characters."""
    return type(value) is str and 16 <= len(value) <= 64 and _is_nonce(value)  # type: ignore[arg-type]



# --- server ------------------------------------------------------------------------

class ScramServer:
    """The server side, one exchange per object::

        server = ScramServer(client_first)      # parses; .username
        verifier = lookup(server.username)      # or a fake one
        send(server.start(verifier))            # server-first
        send(server.finish(receive()))          # server-final; ScramError if the proof is wrong

    No key derivation happens here: only HMACs over the stored keys.
    """

    def __init__(self, client_first: str, *, nonce: str | None = None) -> None:
        message = _check_message(client_first, "client-first message")
        header, sep, bare = message.partition(",")
        authzid, sep2, bare = bare.partition(",")
        if not sep or not sep2:
            raise ScramError("malformed client-first message: missing GS2 header")
        if header in ("y",) or header.startswith("p="):
            raise ScramError("channel binding is not supported: the GS2 header must be 'n,,'")
        if header != "n":
            raise ScramError("malformed client-first message: GS2 header must be 'n,,'")
        if authzid:
            raise ScramError("an authorization identity is not supported: the GS2 header must be 'n,,'")
        saslname, client_nonce = _attributes(bare, "nr", "client-first message")
        username = unescape_saslname(saslname)
        if not username:
            raise ScramError("malformed client-first message: empty user name")
        self.username: str = username
        self._client_nonce = _check_nonce(client_nonce, "client-first message")
        suffix = _check_nonce(nonce, "server nonce") if nonce is not None else _new_nonce()
        self._nonce = self._client_nonce + suffix
        self._bare = bare
        self._server_first: str | None = None
        self._verifier: ScramVerifier | None = None
        self._state = "started"

    def start(self, verifier: ScramVerifier) -> str:
        """The server-first message for this account's verifier."""
        if self._state != "started":
            raise ScramError(f"ScramServer.start() called out of order (state {self._state})")
        self._state = "first-sent"
        self._verifier = verifier
        self._server_first = f"r={self._nonce},s={_b64(verifier.salt)},i={verifier.iterations}"
        return self._server_first

    def finish(self, client_final: str) -> str:
        """Check the client's proof; return the server-final message.

        Raises :class:`ScramError` for a malformed message or a wrong proof.
        One shot: a second call fails.
        """
        if self._state != "first-sent":
            raise ScramError(f"ScramServer.finish() called out of order (state {self._state})")
        self._state = "failed"
        message = _check_message(client_final, "client-final message")
        binding, nonce, proof_b64 = _attributes(message, "crp", "client-final message")
        if binding != _CHANNEL_BINDING:
            raise ScramError("channel binding data must be 'biws' (no channel binding)")
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("utf-8")):
            raise ScramError("client-final nonce does not match")
        proof = _b64decode(proof_b64, "client proof")
        if len(proof) != _KEY_LENGTH:
            raise ScramError("malformed client proof: wrong length")
        assert self._verifier is not None and self._server_first is not None
        without_proof = message[: -len(proof_b64) - 3]  # strip ",p=<proof>"
        auth_message = f"{self._bare},{self._server_first},{without_proof}".encode("utf-8")
        signature = self._verifier._client_signer(auth_message)
        recovered = client_proof(proof, signature)  # XOR back to ClientKey
        if not hmac.compare_digest(stored_key(recovered), self._verifier.stored_key):
            raise ScramError("client proof is wrong")
        self._state = "done"
        return f"v={_b64(self._verifier._server_signer(auth_message))}"


_CLIENT_NAMES = frozenset({"ScramClient", "ClientCache", "default_client_cache",
                           "clear_client_key_cache"})


def __getattr__(name: str) -> object:
    # The client lives in cred.scram_client, which imports this module's
    # primitives; resolving these names lazily keeps ``cred.scram.ScramClient``
    # working without an import cycle.
    if name in _CLIENT_NAMES:
        from . import scram_client

        return getattr(scram_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
