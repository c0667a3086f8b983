"""The ``registry`` plug-in: find objects by name, PB's answer to a name server.

Servers register a name with the address where their object is published
(``pb://host:port`` or ``pb+unix:///path``, plus the cred service to log in
to, if any) for a lease; clients look the name up and connect there.  Like
every service here it is reached through a login (the cred service
``registry``, an account with ``registry:NAME`` on its keyring), on its own
port (127.0.0.1:8789 by default)::

    reg = await broker.login("127.0.0.1", 8789, "svc", pw, service="registry")
    await reg.call_remote("register", "billing", "pb://10.0.0.5:9000", lease=60)
    ...
    await reg.call_remote("lookup", "billing")
    # {"name": "billing", "address": "pb://10.0.0.5:9000", "service": None,
    #  "owner": "svc", "expires_in": 59.8}

A name belongs to the account that registered it until its lease runs out
(``renew`` extends it, ``unregister`` ends it); another account registering
the same live name is refused.  Leases are capped at ``--max-lease``.
Registrations are kept in memory: a restarted registry is empty until the
servers renew (they should renew well within their lease anyway).
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import broker
import cred
from services import (
    add_listen_arguments,
    Application,
    PortalService,
    ServicePlugin,
    account_portal,
    get_logger,
    non_negative_seconds,
)

__all__ = ["DEFAULT_PORT", "SERVICE_NAME", "Registry", "RegistryService", "plugin"]

SERVICE_NAME = "registry"
DEFAULT_PORT = 8789
#: Longest name, and what a name may be made of.
MAX_NAME = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*\Z")
_ADDRESS = re.compile(r"(pb|pbs)://[^\s/]+:\d{1,5}\Z|pb\+unix:///\S+\Z")
#: Most names one registry holds.
MAX_ENTRIES = 100_000

_log = get_logger("pb.registry")


class RegistryError(Exception):
    """A registration refused; its text says why."""


class Registry:
    """The names and their leases (pure state: no PB, no I/O)."""

    def __init__(self, *, max_lease: float = 3600.0, max_entries: int = MAX_ENTRIES,
                 clock: Any = time.monotonic) -> None:
        self.max_lease = max_lease
        self.max_entries = max_entries
        self._clock = clock
        #: name -> (address, service, owner, expiry)
        self._entries: dict[str, tuple[str, str | None, str, float]] = {}
        self._next_sweep = 0.0

    def register(self, owner: str, name: Any, address: Any, service: Any = None,
                 lease: Any = 60.0) -> float:
        """Register (or re-register) ``name``; the lease granted, in seconds."""
        _check_name(name)
        if not isinstance(address, str) or not _ADDRESS.match(address) or len(address) > 1000:
            raise RegistryError(
                f"address must be pb://HOST:PORT, pbs://HOST:PORT or pb+unix:///PATH, "
                f"not {str(address)[:100]!r}")
        if service is not None and (not isinstance(service, str) or not service
                                    or len(service) > MAX_NAME):
            raise RegistryError("service must be a cred service name or None")
        if (isinstance(lease, bool) or not isinstance(lease, (int, float))
                or not 0 < lease < float("inf")):
            raise RegistryError(f"lease must be a positive number of seconds, not {lease!r}")
        self.expire()
        current = self._live(name)
        if current is not None and current[2] != owner:
            raise RegistryError(f"{name!r} is registered by another account until its "
                                f"lease runs out")
        if current is None and len(self._entries) >= self.max_entries:
            raise RegistryError(f"the registry is full ({self.max_entries} names)")
        granted = min(float(lease), self.max_lease)
        self._entries[name] = (address, service, owner, self._clock() + granted)
        return granted

    def renew(self, owner: str, name: Any, lease: Any = 60.0) -> float:
        entry = self._owned(owner, name)
        return self.register(owner, name, entry[0], entry[1], lease)

    def unregister(self, owner: str, name: Any) -> None:
        self._owned(owner, name)
        del self._entries[name]

    def lookup(self, name: Any) -> dict[str, Any] | None:
        _check_name(name)
        entry = self._live(name)
        if entry is None:
            return None
        address, service, owner, expiry = entry
        return {"name": name, "address": address, "service": service, "owner": owner,
                "expires_in": round(max(expiry - self._clock(), 0.0), 3)}

    def names(self, prefix: Any = "") -> list[str]:
        if not isinstance(prefix, str) or len(prefix) > MAX_NAME:
            raise RegistryError("prefix must be a string")
        now = self._clock()
        return sorted(name for name, entry in self._entries.items()
                      if name.startswith(prefix) and entry[3] > now)

    def drop_owner(self, owner: str) -> int:
        """Remove every name ``owner`` registered (its session ended)."""
        gone = [name for name, entry in self._entries.items() if entry[2] == owner]
        for name in gone:
            del self._entries[name]
        return len(gone)

    def expire(self) -> None:
        """Drop the names whose lease ran out: a full sweep at most once a
        second (each name is also checked whenever it is used)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for name in [n for n, entry in self._entries.items() if entry[3] <= now]:
            del self._entries[name]

    def _live(self, name: str) -> tuple[str, str | None, str, float] | None:
        entry = self._entries.get(name)
        if entry is not None and entry[3] <= self._clock():
            del self._entries[name]
            return None
        return entry

    def _owned(self, owner: str, name: Any) -> tuple[str, str | None, str, float]:
        _check_name(name)
        entry = self._live(name)
        if entry is None:
            raise RegistryError(f"{name!r} is not registered")
        if entry[2] != owner:
            raise RegistryError(f"{name!r} is registered by another account")
        return entry

    def __len__(self) -> int:
        return len(self._entries)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not _NAME.match(name):
        raise RegistryError(
            f"a name is 1..{MAX_NAME} letters, digits and . _ : / - (starting with a letter "
            f"or digit), not {str(name)[:100]!r}")


# -- the PB face -------------------------------------------------------------------


class RegistryPerspective(broker.Perspective):
    """What an account logged in to ``registry`` holds."""

    def __init__(self, account: str, owner: RegistryService) -> None:
        self.account = account
        self.owner = owner
        self.sessions = 0

    @broker.expected_errors(RegistryError)
    def perspective_register(self, name: str, address: str, service: str | None = None,
                             lease: float = 60.0) -> float:
        """Register ``name`` at ``address`` for ``lease`` seconds (capped);
        the lease granted."""
        granted = self.owner.registry.register(self.account, name, address, service, lease)
        _log.info("registered", name=name, address=address, owner=self.account, lease=granted)
        return granted

    @broker.expected_errors(RegistryError)
    def perspective_renew(self, name: str, lease: float = 60.0) -> float:
        return self.owner.registry.renew(self.account, name, lease)

    @broker.expected_errors(RegistryError)
    def perspective_unregister(self, name: str) -> None:
        self.owner.registry.unregister(self.account, name)

    @broker.expected_errors(RegistryError)
    def perspective_lookup(self, name: str) -> dict[str, Any] | None:
        """Where ``name`` is, or None."""
        return self.owner.registry.lookup(name)

    @broker.expected_errors(RegistryError)
    def perspective_list(self, prefix: str = "") -> list[str]:
        return self.owner.registry.names(prefix)

    def attached(self, mind: Any) -> None:
        self.sessions += 1

    def detached(self, mind: Any) -> None:
        self.sessions -= 1
        if self.sessions == 0 and self.owner.drop_on_logout:
            dropped = self.owner.registry.drop_owner(self.account)
            if dropped:
                _log.info("logged out: names dropped", owner=self.account, names=dropped)


class _Realm(cred.Service):
    def __init__(self, owner: RegistryService) -> None:
        super().__init__(SERVICE_NAME)
        self.owner = owner

    def create_perspective(self, name: str) -> RegistryPerspective:
        perspectives = self.owner.perspectives
        if name not in perspectives:
            perspectives[name] = RegistryPerspective(name, self.owner)
        return perspectives[name]


class RegistryService(PortalService):
    """The registry on its own listener, offering the ``registry`` service."""

    def __init__(self, name: str | None = "registry", *, portal: Any,
                 host: str = "127.0.0.1", port: int = DEFAULT_PORT, path: str | None = None,
                 max_lease: float = 3600.0, drop_on_logout: bool = True,
                 users: list[tuple[str, str]] | None = None, grace: float = 5.0) -> None:
        self.perspectives: dict[str, RegistryPerspective] = {}
        super().__init__(name, portal=portal, realm_service=_Realm(self), host=host, port=port,
                         path=path, users=users or (), grace=grace)
        self.registry = Registry(max_lease=max_lease)
        self.drop_on_logout = drop_on_logout

    async def on_start(self) -> None:
        await super().on_start()
        _log.info("listening", address=self.address, service=self.service_name)

    def banner(self) -> str | None:
        return f"registry: {self.address}" if self.show_banner else None


class RegistryPlugin(ServicePlugin):
    name = "registry"
    description = "find objects by name: servers register addresses with a lease, clients look them up"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from services.echo import _user_password

        add_listen_arguments(parser, DEFAULT_PORT)
        parser.add_argument("--max-lease", type=non_negative_seconds, default=3600.0,
                            metavar="SECONDS", help="longest lease granted (default: 3600)")
        parser.add_argument("--keep-on-logout", action="store_true",
                            help="keep an account's names until their leases run out when "
                                 "its last session ends (default: drop them)")
        parser.add_argument("--user", metavar="NAME:PASSWORD", type=_user_password,
                            action="append", default=[],
                            help="create or update this account and grant it registry:NAME "
                                 "(repeatable; for demos)")

    def build(self, options: argparse.Namespace, application: Application) -> RegistryService:
        if options.socket is not None and (options.host is not None or options.port is not None):
            raise ValueError("give either --socket PATH or --host/--port, not both")
        if options.max_lease <= 0:
            raise ValueError("--max-lease must be more than 0 seconds")
        return RegistryService(
            "registry", portal=account_portal(application), host=options.host or "127.0.0.1",
            port=DEFAULT_PORT if options.port is None else options.port, path=options.socket,
            max_lease=options.max_lease, drop_on_logout=not options.keep_on_logout,
            users=options.user)


plugin = RegistryPlugin()
