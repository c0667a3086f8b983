"""Identities and login, independent of any transport.

``cred`` turns credentials into avatars: a :class:`Portal` picks a checker
for the credentials, checks the identity's keyring when a service is asked
for, throttles failures, and asks a realm for the avatar of a
:class:`PerspectiveKey`.  Over a network the proof is SCRAM-SHA-256
(:mod:`cred.scram`): :meth:`Portal.begin_scram` then
:meth:`ScramChallenge.finish`.  Accounts live in an :class:`AccountStore`
(SQLite) or an :class:`InMemoryChecker`.  See ``docs/cred.md``.

This package imports neither ``broker`` nor ``services`` nor ``clients``.
"""

from .checkers import AllowAnonymous, InMemoryChecker, StoreChecker
from .credentials import Anonymous, UsernamePassword
from .errors import (
    LOGIN_FAILED,
    CredError,
    DuplicateService,
    DuplicateUser,
    InvalidName,
    MissingDatabase,
    NotGranted,
    SchemaVersionError,
    ScramError,
    ServiceRequired,
    StoreError,
    Unauthorized,
    UnknownService,
    UnknownUser,
)
from .interfaces import (
    IAnonymous,
    ICredentials,
    ICredentialsChecker,
    IKeyring,
    IRealm,
    IScramVerifierSource,
    IService,
    IUsernamePassword,
)
from .perspective import ANONYMOUS, PerspectiveKey
from .portal import ChallengeHost, LoginResult, Portal, ScramChallenge, ScramLoginResult
from .realm import Service, ServiceRealm
from .scram import ScramServer, ScramVerifier
from .scram_client import ClientCache, ScramClient, default_client_cache
from .store import AccountStore
from .throttle import Throttle
from .tickets import TicketStore

__all__ = [
    # credentials
    "UsernamePassword",
    "Anonymous",
    # interfaces
    "ICredentials",
    "IUsernamePassword",
    "IAnonymous",
    "ICredentialsChecker",
    "IScramVerifierSource",
    "IKeyring",
    "IRealm",
    "IService",
    # checkers
    "InMemoryChecker",
    "StoreChecker",
    "AllowAnonymous",
    # portal and realm
    "Portal",
    "ScramChallenge",
    "ChallengeHost",
    "LoginResult",
    "ScramLoginResult",
    "PerspectiveKey",
    "ANONYMOUS",
    "Service",
    "ServiceRealm",
    # SCRAM
    "ScramClient",
    "ClientCache",
    "default_client_cache",
    "ScramServer",
    "ScramVerifier",
    # store and throttle
    "AccountStore",
    "Throttle",
    "TicketStore",
    # errors
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
