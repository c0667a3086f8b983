"""Single-use tickets for one-trip SCRAM logins, on the server side.

After a SCRAM login succeeds the portal issues the account a ticket: a
random string the client sends back, as the server's nonce, in its next
login, which then takes one message each way
(:meth:`cred.Portal.scram_one_trip`).  A :class:`TicketStore` issues them
and takes them back; the portal owns one (its own unless given one), and
nothing else in the process shares it.
"""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Callable

__all__ = ["TicketStore"]


class TicketStore:
    """Issued tickets, each good once, for ``lifetime`` seconds, and only for
    the account it was issued to.

    At most ``max_tickets`` are kept; past that the oldest go first (their
    clients log in the two-trip way).  ``max_tickets=0`` issues none, which
    turns one-trip logins off.  ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(self, *, max_tickets: int = 10_000, lifetime: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if type(max_tickets) is not int or max_tickets < 0:
            raise ValueError(f"max_tickets must be an int >= 0, not {max_tickets!r}")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not lifetime > 0:
            raise ValueError(f"ticket lifetime must be a positive number of seconds, not {lifetime!r}")
        self.max_tickets = max_tickets
        self.lifetime = lifetime
        self._clock = clock
        #: ticket -> (user name, expiry on the clock); oldest first
        self._tickets: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        """Tickets kept (some may have expired and not been collected yet)."""
        return len(self._tickets)

    def issue(self, username: str) -> str | None:
        """A new ticket for ``username``; None if this store issues none."""
        if self.max_tickets <= 0:
            return None
        ticket = secrets.token_urlsafe(18)  # 24 characters: a SCRAM nonce part
        tickets = self._tickets
        tickets[ticket] = (username, self._clock() + self.lifetime)
        while len(tickets) > self.max_tickets:
            tickets.popitem(last=False)
        return ticket

    def redeem(self, ticket: str, username: str) -> bool:
        """Use ``ticket`` up for ``username``: True if it was live and issued
        to that account.  Another account's ticket is left alone (it is not
        this caller's to spend); an expired one is forgotten."""
        tickets = self._tickets
        entry = tickets.get(ticket)
        if entry is None or entry[0] != username:
            return False
        del tickets[ticket]
        return entry[1] > self._clock()

    def clear(self) -> None:
        """Forget every ticket (their clients fall back to two trips)."""
        self._tickets.clear()
