"""Services: things with an asynchronous start and stop, arranged in a tree.

A :class:`Service` is started once and stopped once; both are idempotent and
serialised, so a second ``start()`` while running (or ``stop()`` while
stopped) does nothing.  Subclasses put their work in :meth:`Service.on_start`
and :meth:`Service.on_stop`; the public :meth:`Service.start` and
:meth:`Service.stop` wrap them with the bookkeeping:

* ``start()`` turns any failure of ``on_start()`` into a
  :class:`ServiceStartError` (chained to the original exception) and cancels
  the tasks the service had already created;
* ``stop(grace=...)`` runs ``on_stop()`` under a deadline: when the grace
  period runs out, ``on_stop()`` is cancelled — that cancellation is the
  signal to stop being polite and close everything now, so ``on_stop()``
  should close its resources in a ``finally`` — and then every task the
  service created with :meth:`Service.create_task` is cancelled and awaited.

A :class:`MultiService` holds named children, starts them in order after its
own ``on_start()`` and stops them in reverse before its own ``on_stop()``.  If
a child fails to start, the children already started are stopped (in
reverse) and the :class:`ServiceStartError` naming the failed child is
raised.

Lifecycle of one service (``running`` is true only in *running*)::

    stopped --start()--> starting --ok--> running --stop()--> stopping --> stopped
                            |
                            +--failure (tasks cancelled)--> stopped
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from zope.interface import Attribute, Interface, implementer

from ._logging import get_logger

__all__ = [
    "IService",
    "MultiService",
    "Service",
    "ServiceError",
    "ServiceStartError",
    "ServiceStopError",
]

_T = TypeVar("_T")

#: Grace given to already-started children when a sibling fails to start.
ROLLBACK_GRACE = 5.0

_log = get_logger("pb.service")


class ServiceError(Exception):
    """Base class of the errors raised by the application framework."""


class ServiceStartError(ServiceError):
    """A service failed to start.

    ``service`` is the service that failed, ``service_name`` its path below
    the root (``"web/http"``), and ``__cause__`` the original exception.
    """

    def __init__(self, service: Service, cause: BaseException) -> None:
        self.service = service
        self.service_name = service.path
        self.cause = cause
        detail = str(cause) or "(no message)"
        super().__init__(
            f"service {self.service_name!r} failed to start: "
            f"{type(cause).__name__}: {detail}"
        )


class ServiceStopError(ServiceError):
    """One or more children of a :class:`MultiService` failed to stop.

    Every child was still asked to stop; ``failures`` lists
    ``(service_name, exception)`` pairs, and ``__cause__`` is the first one.
    """

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        described = "; ".join(
            f"{name!r}: {type(exc).__name__}: {exc}" for name, exc in failures
        )
        super().__init__(f"services failed to stop: {described}")


class IService(Interface):
    """Something the application framework can start and stop."""

    name = Attribute("The service's name, unique among its siblings (str or None).")
    parent = Attribute("The MultiService holding this service, or None.")
    running = Attribute("True between a successful start() and the next stop().")

    async def start() -> None:  # type: ignore[misc]
        """Start the service; a no-op if it is already running."""

    async def stop(*, grace: float | None = None) -> None:  # type: ignore[misc]
        """Stop the service within *grace* seconds; a no-op if it is stopped."""

    def banner() -> str | None:  # type: ignore[misc]
        """Text printed once to stdout by the runner after everything started."""


@implementer(IService)
class Service:
    """A unit that starts and stops; subclass it and override the hooks.

    Override :meth:`on_start` to open listeners and start loops (with
    :meth:`create_task`), :meth:`on_stop` to stop accepting, say goodbye and
    let in-flight work finish, and :meth:`banner` to tell the person running
    the server something once everything is up.
    """

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self.parent: MultiService | None = None
        self._state = "stopped"
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_deadline: float | None = None

    # -- identity ------------------------------------------------------

    @property
    def name(self) -> str | None:
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        if self.parent is not None:
            raise RuntimeError(
                f"cannot rename service {self._name!r} while it belongs to a "
                f"MultiService; disown() it first"
            )
        self._name = value

    @property
    def path(self) -> str:
        """The service's name with its ancestors' below the root: ``web/http``."""
        names: list[str] = []
        node: Service | None = self
        while node is not None and (node.parent is not None or node is self):
            names.append(node.name or f"<unnamed {type(node).__name__}>")
            node = node.parent
        return "/".join(reversed(names))

    @property
    def running(self) -> bool:
        return self._state == "running"

    def set_parent(self, parent: MultiService) -> None:
        """Add this service to *parent* (see :meth:`MultiService.add`)."""
        parent.add(self)

    def disown(self) -> None:
        """Remove this service from its parent (see :meth:`MultiService.remove`)."""
        if self.parent is None:
            raise RuntimeError(f"service {self._name!r} has no parent")
        self.parent.remove(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {self._state}>"

    # -- hooks for subclasses -----------------------------------------

    async def on_start(self) -> None:
        """Open resources.  If this raises, clean up what it opened first."""

    async def on_stop(self) -> None:
        """Release resources.  Cancelled when the grace period runs out."""

    def banner(self) -> str | None:
        """A one-time message for stdout after start (addresses, passwords)."""
        return None

    # -- lifecycle -----------------------------------------------------

    async def start(self) -> None:
        """Start the service; idempotent.  Failures raise ServiceStartError."""
        async with self._lock:
            if self._state != "stopped":
                return
            self._state = "starting"
            try:
                await self._start_hooks()
            except BaseException as exc:
                self._state = "stopping"
                await self._cancel_tasks()
                self._state = "stopped"
                if isinstance(exc, Exception) and not isinstance(exc, ServiceStartError):
                    raise ServiceStartError(self, exc) from exc
                raise
            self._state = "running"

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop the service within *grace* seconds (None: no limit); idempotent.

        The tasks the service created are cancelled and awaited last, even if
        ``on_stop()`` failed or ran out of time.
        """
        async with self._lock:
            if self._state != "running":
                return
            self._state = "stopping"
            loop = asyncio.get_running_loop()
            deadline = None if grace is None else loop.time() + max(grace, 0.0)
            self._stop_deadline = deadline
            try:
                await self._stop_hooks(deadline)
            finally:
                await self._cancel_tasks()
                self._state = "stopped"
                self._stop_deadline = None

    def grace_remaining(self) -> float | None:
        """Seconds left before ``on_stop()`` is cancelled, while stopping.

        None when the stop has no time limit (or the service is not
        stopping).  Useful to hand the rest of the grace period to something
        that has its own, such as a server's ``shutdown(grace=...)``.
        """
        if self._state != "stopping" or self._stop_deadline is None:
            return None
        return max(self._stop_deadline - asyncio.get_running_loop().time(), 0.0)

    async def _start_hooks(self) -> None:
        await self.on_start()

    async def _stop_hooks(self, deadline: float | None) -> None:
        await self._run_on_stop(deadline)

    async def _run_on_stop(self, deadline: float | None) -> None:
        try:
            async with asyncio.timeout_at(deadline) as scope:
                await self.on_stop()
        except TimeoutError:
            if not scope.expired():
                raise
            _log.warning(
                "service did not stop within the grace period; forced",
                service=self.path,
            )

    # -- owned tasks ---------------------------------------------------

    def create_task(
        self, coro: Coroutine[Any, Any, _T], *, name: str | None = None
    ) -> asyncio.Task[_T]:
        """Run *coro* as a task owned by this service.

        The task is cancelled and awaited when the service stops (after
        ``on_stop()``).  An exception that escapes the task is logged.  Only
        allowed while the service is starting, running or stopping.
        """
        if self._state == "stopped":
            coro.close()
            raise RuntimeError(
                f"service {self._name!r} is not running; tasks can only be "
                f"created between start() and the end of stop()"
            )
        task = asyncio.get_running_loop().create_task(
            coro, name=name or f"{self.path}:{getattr(coro, '__qualname__', 'task')}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The owned tasks that have not finished yet."""
        return frozenset(self._tasks)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error(
                "task failed",
                service=self.path,
                task=task.get_name(),
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    async def _cancel_tasks(self) -> None:
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Forget them here, not only in _task_done: that callback runs on
            # a later loop iteration, and from Python 3.12 gather() of tasks
            # that are all done already returns without yielding to the loop,
            # so waiting for the callback would spin here for ever.
            self._tasks.difference_update(pending)


class MultiService(Service):
    """A service made of named child services.

    Children start in the order they were added, after this service's own
    ``on_start()``, and stop in reverse, before its own ``on_stop()``.  The
    stop grace is a deadline shared by all children.  ``on_started()`` runs
    once every child has started; if it raises, the start fails and the
    children are stopped again.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._children: dict[str, Service] = {}

    def add(self, service: Service) -> None:
        """Add a named child.  It is not started: if this service is already
        running, ``await service.start()`` yourself."""
        if service.parent is not None:
            raise RuntimeError(
                f"service {service.name!r} already belongs to {service.parent.path!r}"
            )
        if not service.name:
            raise ValueError(f"a child service needs a name: {service!r}")
        if service.name in self._children:
            raise ValueError(
                f"a service named {service.name!r} is already in {self.path!r}; "
                f"give each service a distinct name"
            )
        self._children[service.name] = service
        service.parent = self

    def remove(self, service: Service) -> None:
        """Remove a stopped child (stop it first: ``await service.stop()``)."""
        if service.name is None or self._children.get(service.name) is not service:
            raise ValueError(f"{service!r} is not a child of {self.path!r}")
        if service._state != "stopped":
            raise RuntimeError(
                f"service {service.name!r} is {service._state}; stop it before removing it"
            )
        del self._children[service.name]
        service.parent = None

    def get(self, name: str) -> Service:
        """The child called *name*; KeyError names the children there are."""
        try:
            return self._children[name]
        except KeyError:
            known = ", ".join(self._children) or "none"
            raise KeyError(f"no service named {name!r} (children: {known})") from None

    def __iter__(self) -> Iterator[Service]:
        return iter(list(self._children.values()))

    def __len__(self) -> int:
        return len(self._children)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Service):
            return item.name is not None and self._children.get(item.name) is item
        return item in self._children

    def walk(self) -> Iterator[Service]:
        """This service and all its descendants, depth first, in start order."""
        yield self
        for child in self:
            if isinstance(child, MultiService):
                yield from child.walk()
            else:
                yield child

    async def _start_hooks(self) -> None:
        await self.on_start()
        started: list[Service] = []
        try:
            for child in self:
                await child.start()
                started.append(child)
            await self.on_started()
        except BaseException:
            for child in reversed(started):
                try:
                    await child.stop(grace=ROLLBACK_GRACE)
                except Exception:
                    _log.exception("service failed to stop after a failed start",
                                   service=child.path)
            try:
                await self._run_on_stop(None)
            except Exception:
                _log.exception("service failed to stop after a failed start",
                               service=self.path)
            raise

    async def on_started(self) -> None:
        """Runs after every child has started (hook; does nothing here)."""

    async def _stop_hooks(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        failures: list[tuple[str, BaseException]] = []
        for child in reversed(list(self)):
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                await child.stop(grace=remaining)
            except Exception as exc:
                _log.error("service failed to stop", service=child.path,
                           exc_info=(type(exc), exc, exc.__traceback__))
                failures.append((child.path, exc))
        try:
            await self._run_on_stop(deadline)
        except Exception as exc:
            failures.append((self.path, exc))
        if failures:
            raise ServiceStopError(failures) from failures[0][1]
