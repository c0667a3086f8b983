"""The avatar id the portal hands to realms.

An *identity* is an account (a user name) or :data:`ANONYMOUS`.  A
*service* is a named collection of *perspectives*; an identity's *keyring*
lists the (service, perspective) pairs it may take.  After the portal has
checked the credentials (and, for a service login, the keyring) it asks the
realm for the avatar of a :class:`PerspectiveKey`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["PerspectiveKey", "ANONYMOUS", "Anonymity"]


class Anonymity(enum.Enum):
    """The type of :data:`ANONYMOUS` (a one-member enum: a singleton that no
    user name can collide with, and that compares and pickles sanely)."""

    ANONYMOUS = "anonymous"

    def __repr__(self) -> str:
        return "ANONYMOUS"


#: The identity of an anonymous login (what ``AllowAnonymous`` returns).
ANONYMOUS = Anonymity.ANONYMOUS


@dataclass(frozen=True)
class PerspectiveKey:
    """Who logged in and what they asked to be.

    ``identity``
        The account name the credentials proved, or :data:`ANONYMOUS`.
    ``service``
        The service asked for, or None for a login that named none (the
        realm then decides what, if anything, such a login gets; no keyring
        check was made).
    ``perspective``
        The perspective within ``service``.  For an account it has been
        checked against the keyring and defaults to the account name; for an
        anonymous login it is what the client asked for, possibly None.
    """

    identity: str | Anonymity
    service: str | None = None
    perspective: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.identity is ANONYMOUS
