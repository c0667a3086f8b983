"""Credentials: what a client offers to prove who it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import implementer

from .interfaces import IAnonymous, IUsernamePassword

__all__ = ["UsernamePassword", "Anonymous"]


@implementer(IUsernamePassword)
@dataclass(frozen=True)
class UsernamePassword:
    """A user name and cleartext password.  The password never appears in
    the repr."""

    username: str
    password: str = field(repr=False)


@implementer(IAnonymous)
@dataclass(frozen=True)
class Anonymous:
    """No credentials: asks for anonymous access."""
