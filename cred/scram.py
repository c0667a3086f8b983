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
import collections
import functools
import hashlib
import hmac
import secrets
import stringprep
import threading
import unicodedata
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from .errors import ScramError

__all__ = [
    "clear_client_key_cache",
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


class _Mac:
    """HMAC-SHA-256 under one key that signs many messages: the key is
    processed once and each message starts from a copy of that state, which
    costs about half of a one-shot ``hmac.digest`` (that re-keys, and looks
    the digest up again, on every call)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=_HASH)

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
    name = username.encode("utf-8", "surrogatepass")
    salt = _hmac(secret, b"cred fake salt\0" + name)[:salt_length]
    return ScramVerifier(
        salt,
        iterations,
        _hmac(secret, b"cred fake stored key\0" + name),
        _hmac(secret, b"cred fake server key\0" + name),
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
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise ScramError(f"malformed {what}: not base64") from None
    if base64.b64encode(data).decode("ascii") != text:  # one spelling per value
        raise ScramError(f"malformed {what}: non-canonical base64")
    return data


def _new_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- client ------------------------------------------------------------------------

class _ClientKeys:
    """What a client needs per login from one SaltedPassword: ClientKey, and
    StoredKey and ServerKey ready to sign."""

    __slots__ = ("client_key", "client_signer", "server_signer")

    def __init__(self, salted: bytes) -> None:
        self.client_key = client_key(salted)
        self.client_signer = _Mac(stored_key(self.client_key))
        self.server_signer = _Mac(server_key(salted))


class _Lru:
    """A small bounded map, least recently used out first; thread-safe, as
    clients may log in from several threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> Any:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class _ClientKeyCache(_Lru):
    """The keys this process derived, so that logging in again to the same
    account does not repeat the KDF.  RFC 5802 (section 5.1) lets clients
    cache SaltedPassword; we keep what is derived from it.  In memory only,
    bounded, keyed by a SHA-256 of the salt, iteration count and password
    (no plaintext kept; whoever can read the cache can read the keys, so a
    slower hash would protect nothing)."""

    @staticmethod
    def key_for(password: str, salt: bytes, iterations: int) -> bytes:
        return hashlib.sha256(b"".join((
            iterations.to_bytes(4, "big"), len(salt).to_bytes(4, "big"), salt,
            password.encode("utf-8", "surrogatepass")))).digest()

    def keys(self, password: str, salt: bytes, iterations: int) -> _ClientKeys | None:
        return self.get(self.key_for(password, salt, iterations))

    def remember(self, password: str, salt: bytes, iterations: int, salted: bytes) -> _ClientKeys:
        return self.put(self.key_for(password, salt, iterations), _ClientKeys(salted))


_CLIENT_KEYS = _ClientKeyCache(64)

#: Tickets a client keeps per server and account: enough for as many
#: logins at once as a pool or a burst usually makes.
_MAX_TICKETS_KEPT = 16


class _Remembered:
    """What a client keeps from its last verified login to one account on
    one server: the salt and iteration count, and the unused single-use
    tickets the server issued for one-trip logins."""

    __slots__ = ("salt", "iterations", "tickets")

    def __init__(self, salt: bytes, iterations: int) -> None:
        self.salt = salt
        self.iterations = iterations
        self.tickets: collections.deque[str] = collections.deque(maxlen=_MAX_TICKETS_KEPT)


#: (server, user name) -> _Remembered
_LOGINS = _Lru(256)


def clear_client_key_cache() -> None:
    """Forget every key this process's SCRAM clients derived, and the salts
    and tickets they kept for one-trip logins."""
    _CLIENT_KEYS.clear()
    _LOGINS.clear()


def _valid_ticket(value: object) -> bool:
    """A ticket (a server's single-use nonce for one-trip logins) is a nonce
    of 16 to 64 characters."""
    return type(value) is str and 16 <= len(value) <= 64 and _is_nonce(value)  # type: ignore[arg-type]


class ScramClient:
    """The client side, one exchange per object::

        client = ScramClient("alice", "secret")
        send(client.first())
        send(await client.final_async(receive()))   # or client.final(...)
        client.verify(receive())                    # mutual proof

    ``final`` refuses a server nonce that does not extend ours, an iteration
    count outside ``[min_iterations, max_iterations]``, and anything
    malformed; ``verify`` raises unless the server proved it knows our
    verifier.

    One trip: given ``server`` (any hashable name for the server, such as
    its address), a verified exchange remembers the account's salt and
    iteration count, and :meth:`keep_ticket` keeps the single-use ticket the
    server issued with its answer.  The next login to that server then
    needs one message each way: :meth:`one_trip` takes a ticket and builds
    the first and final messages at once::

        client = ScramClient("alice", "secret", server=address)
        trip = await client.one_trip_async()      # None: no ticket kept
        if trip is not None:
            client_first, ticket, server_first, client_final = trip
            # send all four; the server answers server-final (then verify)
            # or, if it would not have sent that server-first message (the
            # ticket was spent or expired, the salt changed), a new
            # server-first: go on with client.final_async(...)
        ...
        client.verify(server_final)
        client.keep_ticket(ticket_from_the_answer)
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        nonce: str | None = None,
        min_iterations: int = MIN_ITERATIONS,
        max_iterations: int = MAX_ITERATIONS,
        server: Hashable | None = None,
    ) -> None:
        if not isinstance(username, str) or not username:
            raise ScramError("user name must be non-empty text")
        if not isinstance(password, str):
            raise ScramError("password must be text")
        self.username = username
        self._password = password
        self._nonce = _check_nonce(nonce, "client nonce") if nonce is not None else _new_nonce()
        self._min_iterations = min_iterations
        self._max_iterations = max_iterations
        self._server = server
        self._state = "initial"
        self._bare = f"n={escape_saslname(saslprep(username))},r={self._nonce}"
        self._pending: tuple[str, str, bytes, int] | None = None
        self._server_signature: bytes | None = None
        self._salt_used: tuple[bytes, int] | None = None
        self._one_trip = False
        self._ticket_kept = False

    @property
    def done(self) -> bool:
        """True once :meth:`verify` accepted the server's proof."""
        return self._state == "done"

    def first(self) -> str:
        self._advance("initial", "first-sent", "first()")
        return _GS2_HEADER + self._bare

    def _parse_server_first(self, server_first: object) -> tuple[bytes, int]:
        if self._one_trip and self._state == "final-sent":
            # The server did not take the one-trip proof: it sent a challenge.
            self._one_trip = False
            self._state = "first-sent"
        self._advance("first-sent", "deriving", "final()")
        try:
            message = _check_message(server_first, "server-first message")
            nonce, salt_b64, iterations_text = _attributes(message, "rsi", "server-first message")
            _check_nonce(nonce, "server-first message")
            if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
                raise ScramError("server nonce does not extend the client nonce")
            salt = _b64decode(salt_b64, "server-first salt")
            if not salt:
                raise ScramError("malformed server-first message: empty salt")
            if not (iterations_text.isascii() and iterations_text.isdigit()) or len(iterations_text) > 10:
                raise ScramError("malformed server-first message: iteration count")
            iterations = int(iterations_text)
            if iterations < self._min_iterations:
                raise ScramError(
                    f"server asks for {iterations} iterations, fewer than the minimum {self._min_iterations}"
                )
            if iterations > self._max_iterations:
                raise ScramError(
                    f"server asks for {iterations} iterations, more than the maximum {self._max_iterations}"
                )
        except ScramError:
            self._state = "failed"
            raise
        self._pending = (message, nonce, salt, iterations)
        return salt, iterations

    def _start_one_trip(self) -> tuple[str, str, bytes, int] | None:
        if self._state != "initial":
            raise ScramError(f"ScramClient.one_trip() called out of order (state {self._state})")
        remembered = _LOGINS.get((self._server, self.username)) if self._server is not None else None
        if remembered is None:
            return None
        try:
            ticket = remembered.tickets.popleft()  # single use, whatever comes of it
        except IndexError:
            return None
        self._state = "deriving"
        salt, iterations = remembered.salt, remembered.iterations
        nonce = self._nonce + ticket
        server_first = f"r={nonce},s={_b64(salt)},i={iterations}"
        self._pending = (server_first, nonce, salt, iterations)
        self._one_trip = True
        return ticket, server_first, salt, iterations

    def _keys(self, salt: bytes, iterations: int) -> _ClientKeys:
        try:
            keys = _CLIENT_KEYS.keys(self._password, salt, iterations)
            if keys is None:
                salted = salted_password(self._password, salt, iterations)
                keys = _CLIENT_KEYS.remember(self._password, salt, iterations, salted)
        except BaseException:
            self._state = "failed"
            raise
        return keys

    async def _keys_async(self, salt: bytes, iterations: int) -> _ClientKeys:
        try:
            keys = _CLIENT_KEYS.keys(self._password, salt, iterations)
            if keys is None:
                salted = await salted_password_async(self._password, salt, iterations)
                keys = _CLIENT_KEYS.remember(self._password, salt, iterations, salted)
        except BaseException:
            self._state = "failed"
            raise
        return keys

    def _complete(self, keys: _ClientKeys) -> str:
        assert self._pending is not None
        server_first, nonce, salt, iterations = self._pending
        self._pending = None
        without_proof = f"c={_CHANNEL_BINDING},r={nonce}"
        auth_message = f"{self._bare},{server_first},{without_proof}".encode("utf-8")
        proof = client_proof(keys.client_key, keys.client_signer(auth_message))
        self._server_signature = keys.server_signer(auth_message)
        self._salt_used = (salt, iterations)
        self._state = "final-sent"
        return f"{without_proof},p={_b64(proof)}"

    def final(self, server_first: str) -> str:
        """Answer the server-first message (blocking: runs the KDF, unless
        this process derived the same key before)."""
        return self._complete(self._keys(*self._parse_server_first(server_first)))

    async def final_async(self, server_first: str) -> str:
        """:meth:`final` with the KDF in a worker thread (no thread when the
        key is already cached)."""
        return self._complete(await self._keys_async(*self._parse_server_first(server_first)))

    def one_trip(self) -> tuple[str, str, str, str] | None:
        """``(client_first, ticket, server_first, client_final)`` from a
        ticket kept for this server and account (None if there is none):
        ``server_first`` is the message the server would send with the
        ticket as its nonce and the remembered salt and iteration count,
        ``client_final`` carries the proof for it.  The ticket is used up.
        Blocking if the key is not cached."""
        started = self._start_one_trip()
        if started is None:
            return None
        ticket, server_first, salt, iterations = started
        return _GS2_HEADER + self._bare, ticket, server_first, self._complete(self._keys(salt, iterations))

    async def one_trip_async(self) -> tuple[str, str, str, str] | None:
        """:meth:`one_trip` with any KDF in a worker thread."""
        started = self._start_one_trip()
        if started is None:
            return None
        ticket, server_first, salt, iterations = started
        keys = await self._keys_async(salt, iterations)
        return _GS2_HEADER + self._bare, ticket, server_first, self._complete(keys)

    def keep_ticket(self, ticket: object) -> bool:
        """Keep the ticket the server issued with its server-final message,
        for a later one-trip login.  Only after :meth:`verify` succeeded (an
        impostor cannot plant tickets) and with a ``server``; a malformed
        ticket, or None (the server issues none), is not kept.  Returns
        whether it was kept."""
        if (self._state != "done" or self._server is None or self._ticket_kept
                or not _valid_ticket(ticket)):
            return False
        remembered = _LOGINS.get((self._server, self.username))
        if remembered is None:
            return False
        remembered.tickets.append(ticket)  # type: ignore[arg-type]
        self._ticket_kept = True  # one per login: a second copy would only fail later
        return True

    def verify(self, server_final: str) -> None:
        """Check the server's signature; raises :class:`ScramError` if wrong."""
        self._advance("final-sent", "failed", "verify()")
        message = _check_message(server_final, "server-final message")
        if message.startswith("e="):
            raise ScramError(f"server refused the login: {message[2:]}")
        (signature_b64,) = _attributes(message, "v", "server-final message")
        signature = _b64decode(signature_b64, "server signature")
        assert self._server_signature is not None
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("server signature is wrong: the server does not know this account's verifier")
        self._state = "done"
        if self._server is not None and self._salt_used is not None:
            key = (self._server, self.username)
            remembered = _LOGINS.get(key)
            if remembered is None or (remembered.salt, remembered.iterations) != self._salt_used:
                _LOGINS.put(key, _Remembered(*self._salt_used))

    def _advance(self, expected: str, new: str, call: str) -> None:
        if self._state != expected:
            raise ScramError(f"ScramClient.{call} called out of order (state {self._state})")
        self._state = new


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
