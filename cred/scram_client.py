"""The client side of SCRAM-SHA-256, and what clients remember between logins.

:class:`ScramClient` runs one exchange (see :mod:`cred.scram` for the
messages and the key schedule).  A :class:`ClientCache` holds what makes the
next login cheaper: the keys derived from a password, so the KDF runs once
per account, and per server the salt and single-use tickets of one-trip
logins.  Clients use :data:`default_client_cache` unless given their own.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import threading
from collections.abc import Hashable
from typing import Any

from .errors import ScramError
from .scram import (
    _CHANNEL_BINDING,
    _GS2_HEADER,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    _attributes,
    _b64,
    _b64decode,
    _check_message,
    _check_nonce,
    _Mac,
    _new_nonce,
    _valid_ticket,
    client_key,
    client_proof,
    escape_saslname,
    salted_password,
    salted_password_async,
    saslprep,
    server_key,
    stored_key,
)

__all__ = ["ClientCache", "ScramClient", "clear_client_key_cache", "default_client_cache"]


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

    def __len__(self) -> int:
        return len(self._entries)


class _ClientKeyCache(_Lru):
    """Keys derived before, so that logging in again to the same account
    does not repeat the KDF.  RFC 5802 (section 5.1) lets clients cache
    SaltedPassword; we keep what is derived from it.  In memory only,
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


class ClientCache:
    """What SCRAM clients remember between logins, so the next one is cheaper.

    * **keys**: the keys derived from a password, salt and iteration count
      (at most ``max_keys``), so a second login to the same account skips
      the KDF;
    * **logins**: per ``(server, user name)`` (at most ``max_logins``), the
      salt and iteration count of the last verified login and the unused
      single-use tickets the server issued, so the next login takes one
      message each way (:meth:`ScramClient.one_trip`).

    Every :class:`ScramClient` uses one: the one passed as ``cache=``, or
    :data:`default_client_cache`, the process-wide one.  Tests and programs
    that want logins independent of each other pass their own.  Thread-safe:
    clients may log in from several threads.  In memory only.
    """

    def __init__(self, *, max_keys: int = 64, max_logins: int = 256) -> None:
        for name, value in (("max_keys", max_keys), ("max_logins", max_logins)):
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an int >= 0, not {value!r}")
        self._keys = _ClientKeyCache(max_keys)
        self._logins = _Lru(max_logins)

    def clear(self) -> None:
        """Forget every derived key, and the salts and tickets kept."""
        self._keys.clear()
        self._logins.clear()

    @property
    def key_count(self) -> int:
        """How many derived keys are kept."""
        return len(self._keys)

    def tickets(self, server: Hashable, username: str) -> tuple[str, ...]:
        """The unused tickets kept for one account on one server, oldest first."""
        remembered = self._logins.get((server, username))
        return tuple(remembered.tickets) if remembered is not None else ()

    def add_ticket(self, server: Hashable, username: str, ticket: str, *,
                   first: bool = False) -> bool:
        """Keep ``ticket`` for ``(server, username)``; only where a verified
        login left a salt to use it with (False otherwise).  ``first``
        puts it in front of the queue, to be used next."""
        remembered = self._logins.get((server, username))
        if remembered is None:
            return False
        if first:
            remembered.tickets.appendleft(ticket)
        else:
            remembered.tickets.append(ticket)
        return True

    # -- used by ScramClient --

    def _remembered(self, server: Hashable, username: str) -> _Remembered | None:
        return self._logins.get((server, username))

    def _remember_login(self, server: Hashable, username: str, salt: bytes,
                        iterations: int) -> None:
        remembered = self._logins.get((server, username))
        if remembered is None or (remembered.salt, remembered.iterations) != (salt, iterations):
            self._logins.put((server, username), _Remembered(salt, iterations))

    def __repr__(self) -> str:
        return f"<cred.ClientCache keys={len(self._keys)} logins={len(self._logins)}>"


#: The cache every :class:`ScramClient` uses unless given ``cache=``.
default_client_cache = ClientCache()


def clear_client_key_cache() -> None:
    """Forget what :data:`default_client_cache` holds: every key derived,
    and the salts and tickets kept for one-trip logins."""
    default_client_cache.clear()


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

    What it remembers between logins (derived keys, and for one-trip logins
    salts and tickets) goes to ``cache``, :data:`default_client_cache`
    unless given.

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
        cache: ClientCache | None = None,
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
        self._cache = cache if cache is not None else default_client_cache
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
        remembered = self._cache._remembered(self._server, self.username) if self._server is not None else None
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
            keys = self._cache._keys.keys(self._password, salt, iterations)
            if keys is None:
                salted = salted_password(self._password, salt, iterations)
                keys = self._cache._keys.remember(self._password, salt, iterations, salted)
        except BaseException:
            self._state = "failed"
            raise
        return keys

    async def _keys_async(self, salt: bytes, iterations: int) -> _ClientKeys:
        try:
            keys = self._cache._keys.keys(self._password, salt, iterations)
            if keys is None:
                salted = await salted_password_async(self._password, salt, iterations)
                keys = self._cache._keys.remember(self._password, salt, iterations, salted)
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
        if not self._cache.add_ticket(self._server, self.username, ticket):  # type: ignore[arg-type]
            return False
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
            self._cache._remember_login(self._server, self.username, *self._salt_used)

    def _advance(self, expected: str, new: str, call: str) -> None:
        if self._state != expected:
            raise ScramError(f"ScramClient.{call} called out of order (state {self._state})")
        self._state = new
