"""The application's account store and the login portal over it.

The services of one application that log accounts in share one portal
(:meth:`Application.use_portal`), and so one account store: the SQLite
database ``<data_dir>/accounts.sqlite3`` that ``pb user`` manages.  The
portal has a ``cred.ServiceRealm``, to which each service adds its cred
service at start, and a ``cred.StoreChecker`` over that store.

:func:`account_portal` makes that portal on first use (or checks the one
another plug-in made), :func:`account_store` finds the store behind it, and
:func:`ensure_service_name` and :func:`ensure_account` prepare the store
when a service starts, in a worker thread (SQLite and the KDF block).

``cred`` is imported when first needed, so that importing the framework
imports neither it nor the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._application import Application

if TYPE_CHECKING:
    import cred

__all__ = ["account_portal", "account_store", "ensure_account", "ensure_service_name",
           "stop_serving"]

#: The account store's file name in the application's data directory.
ACCOUNTS_FILE = "accounts.sqlite3"


def account_portal(application: Application) -> Any:
    """The application's portal, created on first use over the account store
    ``<data_dir>/accounts.sqlite3`` (a ``cred.ServiceRealm`` and a
    ``cred.StoreChecker``); TypeError if another plug-in set a portal of
    another shape (see :func:`account_store`)."""
    import cred

    def make() -> cred.Portal:
        store = cred.AccountStore(Path(application.data_dir) / ACCOUNTS_FILE, create=True)
        return cred.Portal(cred.ServiceRealm(), [cred.StoreChecker(store)])

    portal = application.use_portal(make)
    account_store(portal)  # fail at build time if someone else's portal is odd
    return portal


def account_store(portal: Any) -> cred.AccountStore:
    """The account store behind *portal*'s ``StoreChecker``; TypeError if
    the portal was not made for services that add themselves to a
    ``ServiceRealm`` over an account store."""
    import cred

    if not isinstance(getattr(portal, "realm", None), cred.ServiceRealm):
        raise TypeError(
            f"the application's portal ({portal!r}) has no cred.ServiceRealm; the services "
            f"that share it must agree on one (see services.account_portal)"
        )
    for checker in getattr(portal, "checkers", ()):
        if isinstance(checker, cred.StoreChecker):
            return checker.store
    raise TypeError(
        f"the application's portal ({portal!r}) has no cred.StoreChecker; the services "
        f"that share it must agree on one (see services.account_portal)"
    )


def _ensure_service_name(store: cred.AccountStore, name: str) -> None:
    import cred

    if name not in store.services():
        try:
            store.add_service(name)
        except cred.DuplicateService:
            pass  # registered meanwhile (another process, another service)


async def ensure_service_name(store: cred.AccountStore, name: str) -> None:
    """Register the cred service *name* in *store* unless it is there."""
    await asyncio.to_thread(_ensure_service_name, store, name)


def _ensure_account(
    store: cred.AccountStore, name: str, password: str, grants: list[tuple[str, str | None]]
) -> bool:
    import cred

    try:
        store.set_password(name, password)
        created = False
    except cred.UnknownUser:
        try:
            store.add_user(name, password)
            created = True
        except cred.DuplicateUser:  # added meanwhile
            store.set_password(name, password)
            created = False
    for service, perspective in grants:
        _ensure_service_name(store, service)
        store.grant(name, service, perspective)
    return created


async def ensure_account(
    store: cred.AccountStore,
    name: str,
    password: str,
    grants: Iterable[tuple[str, str | None]] = (),
) -> bool:
    """Create the account *name* or reset its password, then grant it each
    ``(service, perspective)`` (registering the service if needed).
    True if the account was created.  Runs in a worker thread (the KDF)."""
    return await asyncio.to_thread(_ensure_account, store, name, password, list(grants))


async def stop_serving(service: Any, server: Any) -> None:
    """The shared end of a service that serves the application's portal.

    Let calls in progress on ``server`` (a ``broker.Server`` or None) finish
    within the service's grace period, make sure it is closed even if that
    wait is cut off, take the service's cred service out of the shared realm
    (if it is still the one registered there) and close the account store
    (it reopens on next use).  ``service`` has ``grace``, ``portal``,
    ``service_name``, ``realm_service`` and ``store``.
    """
    try:
        if server is not None:
            remaining = service.grace_remaining()
            grace = service.grace if remaining is None else min(service.grace, remaining)
            await server.shutdown(grace=grace)
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
        services = service.portal.realm.services
        if services.get(service.service_name) is service.realm_service:
            del services[service.service_name]
        await asyncio.to_thread(service.store.close)
