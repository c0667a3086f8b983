"""The errors raised by ``cred``.

::

    CredError
    ├── Unauthorized          every login failure, one fixed message
    ├── ServiceRequired       a proven account named no service, and has not exactly one
    ├── ScramError            a malformed or failed SCRAM message (or misuse)
    └── StoreError            the account database
        ├── MissingDatabase
        ├── SchemaVersionError
        ├── DuplicateUser
        ├── UnknownUser
        ├── DuplicateService
        ├── UnknownService
        ├── NotGranted
        └── InvalidName       (also a ValueError)

There is no "throttled" error: throttling delays the answer to a login, it
never changes it, so a throttled caller learns nothing it would not learn by
waiting.
"""

from __future__ import annotations

__all__ = [
    "CredError",
    "Unauthorized",
    "LOGIN_FAILED",
    "ServiceRequired",
    "ScramError",
    "StoreError",
    "MissingDatabase",
    "SchemaVersionError",
    "DuplicateUser",
    "UnknownUser",
    "DuplicateService",
    "UnknownService",
    "NotGranted",
    "InvalidName",
]

#: The one text every failed login carries, whatever the cause.
LOGIN_FAILED = (
    "login failed: unknown user, wrong password, or no access to that "
    "service/perspective"
)


class CredError(Exception):
    """Base class of every error raised by ``cred``."""


class ServiceRequired(CredError):
    """A login named no service, and the portal could not pick one.

    Raised only after the credentials were proven (a stranger gets
    :class:`Unauthorized` as always): ``services`` are the services this
    account may log in to here, sorted, possibly none.
    """

    def __init__(self, services: list[str] | tuple[str, ...] = ()) -> None:
        self.services = tuple(services)
        if self.services:
            text = (f"no service named; this account may log in to "
                    f"{', '.join(self.services)}: pass service=NAME")
        else:
            text = "no service named, and this account may log in to no service here"
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.services,))


class Unauthorized(CredError):
    """A login failed.

    The message is always :data:`LOGIN_FAILED`, whether the user is unknown,
    the password wrong, the proof replayed or the service/perspective not on
    the identity's keyring: a peer must not be able to tell these apart.  The
    reason is logged on the server (logger ``cred.portal``).
    """

    def __init__(self) -> None:
        super().__init__(LOGIN_FAILED)

    def __reduce__(self):  # pickles without the (fixed) argument
        return (type(self), ())


class ScramError(CredError):
    """A SCRAM message was malformed, a proof did not verify, or a SCRAM
    object was used out of order."""


class StoreError(CredError):
    """The account database refused an operation; the message says why and
    what to do."""


class MissingDatabase(StoreError):
    """The account database file does not exist (and creating it was not
    asked for)."""


class SchemaVersionError(StoreError):
    """The account database was written by a newer (or unknown) version."""


class DuplicateUser(StoreError):
    """An account with that name already exists."""


class UnknownUser(StoreError):
    """No account has that name."""


class DuplicateService(StoreError):
    """A service with that name is already registered."""


class UnknownService(StoreError):
    """No service with that name is registered."""


class NotGranted(StoreError):
    """The (service, perspective) pair is not on the account's keyring."""


class InvalidName(StoreError, ValueError):
    """A user, service or perspective name is not acceptable; the message
    says which rule it breaks."""
