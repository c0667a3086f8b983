"""The seams of ``cred``: the zope.interface interfaces that back ends plug
into.  Everything else in the package is plain classes.

A login meets each seam once::

    credentials ──▶ ICredentialsChecker ──▶ identity
                    (IScramVerifierSource for SCRAM, IKeyring for services)
    PerspectiveKey(identity, service, perspective) ──▶ IRealm ──▶ avatar
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "ICredentials",
    "IUsernamePassword",
    "IAnonymous",
    "ICredentialsChecker",
    "IScramVerifierSource",
    "IKeyring",
    "IRealm",
    "IService",
]


class ICredentials(Interface):
    """Something offered as proof of identity.  Marker interface: a checker
    says which kinds it understands."""


class IUsernamePassword(ICredentials):
    """A user name and a cleartext password (in-process logins and tests;
    over the network use SCRAM, which never sends the password)."""

    username = Attribute("The user name (str).")
    password = Attribute("The password (str).")


class IAnonymous(ICredentials):
    """No identity at all.  Accepted only where a checker for it is
    registered and the realm (the service) allows anonymous access."""


class ICredentialsChecker(Interface):
    """Turns credentials into an identity (an avatar id)."""

    credential_interfaces = Attribute(
        "A sequence of the ICredentials sub-interfaces this checker understands."
    )

    async def request_avatar_id(credentials):
        """Return the identity the credentials prove (a ``str``, or
        ``cred.ANONYMOUS``), or raise ``cred.Unauthorized``."""


class IScramVerifierSource(Interface):
    """Where the portal finds SCRAM verifiers."""

    async def get_scram_verifier(username):
        """Return the account's ``ScramVerifier``, or ``None`` if there is no
        such account."""

    async def fake_scram_verifier(username):
        """Return a verifier to answer with for a name that has no account:
        stable per name, shaped like a real one (salt length, iteration
        count), matching no password.  See ``cred.scram.fake_verifier``."""


class IKeyring(Interface):
    """Which (service, perspective) pairs an identity may take."""

    async def get_keyring(username):
        """Return a set of ``(service, perspective)`` pairs, or ``None`` if
        there is no such account."""


class IRealm(Interface):
    """Turns an identity into an avatar (a perspective)."""

    def request_avatar(avatar_id, mind, *interfaces):
        """Return ``(interface, avatar, logout)`` or an awaitable of it.

        ``avatar_id`` is a ``cred.PerspectiveKey``; ``mind`` is whatever the
        client passed to call back (a remote reference over PB, or None);
        ``interfaces`` are the interfaces the caller can use, most wanted
        first; ``interface`` is the one ``avatar`` provides (None if none were
        asked for).  ``logout()`` is called once when the session ends.
        Raise ``KeyError`` or ``cred.Unauthorized`` to refuse.
        """


class IService(Interface):
    """A named collection of perspectives that identities log in to (a PB
    service in the classic sense, not an application-framework service)."""

    name = Attribute("The service's name (str), as found on keyrings.")
    allow_anonymous = Attribute("True if anonymous logins may enter (bool).")

    def get_perspective(name):
        """Return the perspective called ``name`` (or an awaitable of it);
        raise ``KeyError`` if there is none."""

    def get_anonymous_perspective(name):
        """Return the perspective an anonymous login gets (or an awaitable of
        it); ``name`` is what the client asked for, possibly None.  Raise
        ``KeyError`` to refuse."""

    def logout(perspective_name, avatar, mind):
        """Called once when a session on ``avatar`` ends."""
