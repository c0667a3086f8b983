"""The runner: build an application from a :class:`RunConfig` and run it in
the foreground until a signal says stop.

The sequence, and what each failure exits with:

1. refuse a pidfile that names a live process (exit 1);
2. build every service through its plug-in (a ``build()`` failure exits 1,
   a duplicate service name is a configuration error, exit 2);
3. start the application: on :class:`ServiceStartError` the services already
   started have been stopped, the error is logged, exit 1;
4. write the pidfile, log ``started services=...``, print each service's
   banner once to stdout (so a banner means the pidfile is there);
5. wait for SIGTERM, SIGINT or :meth:`Application.request_stop`;
6. stop the application within the grace period, remove the pidfile, exit 0
   (1 if a service failed to stop).

A second SIGINT while stopping exits at once with 130.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ._application import Application
from ._config import ConfigError, RunConfig
from ._logging import get_logger
from ._plugins import build_service
from ._service import ServiceError, ServiceStartError, ServiceStopError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PidfileError",
    "build_application",
    "run",
    "run_application",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_log = get_logger("pb.run")


class PidfileError(ServiceError):
    """The pidfile names a process that is still running."""


# -- pidfile ---------------------------------------------------------------


#: Larger numbers are no process id (os.kill would overflow).
_MAX_PID = 2**31 - 1


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


def check_pidfile(path: Path) -> None:
    """Raise :class:`PidfileError` if *path* names a live process other than
    us, or if it could not be written (its directory is missing, it is a
    directory, ...): better now than after the services have started."""
    parent = path.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise PidfileError(f"cannot write the pidfile {str(path)!r}: {str(parent)!r} {problem}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PidfileError(
            f"cannot use the pidfile {str(path)!r}: {exc.strerror or exc}"
            + (" (give a file name)" if path.is_dir() else "")
        ) from None
    try:
        pid = int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        _log.warning("replacing a pidfile that holds no process id", pidfile=str(path))
        return
    if pid != os.getpid() and 0 < pid <= _MAX_PID and _process_alive(pid):
        raise PidfileError(
            f"pidfile {str(path)!r} names a running process (pid {pid}); "
            f"stop it first, or remove the file if that process is not pb"
        )
    _log.info("replacing a stale pidfile", pidfile=str(path), old_pid=pid)


def write_pidfile(path: Path) -> None:
    """Write our process id to *path* atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{os.getpid()}\n")
    temporary.replace(path)


def remove_pidfile(path: Path) -> None:
    """Remove *path* if it still holds our process id."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except FileNotFoundError:
        pass


# -- building and running ----------------------------------------------------


async def build_application(config: RunConfig) -> Application:
    """Build the (not yet started) application that *config* describes.

    Raises :class:`~services.ServiceBuildError` when a plug-in's ``build()``
    fails and :class:`ConfigError` when two services end up with one name.
    """
    application = Application(config.name, data_dir=config.data_dir)
    for spec in config.services:
        service = await build_service(spec.plugin, spec.options, application)
        if spec.name is not None:
            service.name = spec.name
        elif not service.name:
            service.name = spec.plugin.name
        if service.name in application:
            raise ConfigError(
                spec.file, spec.where,
                f"a service named {service.name!r} is already defined; give this "
                f"one a distinct name (name = \"...\")",
            )
        application.add(service)
    return application


def _print_banners(application: Application, stdout: TextIO) -> None:
    for service in application.walk():
        try:
            text = service.banner()
        except Exception:
            _log.exception("banner() failed", service=service.path)
            continue
        if text:
            print(text.rstrip("\n"), file=stdout, flush=True)


def _flush_everything() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # pragma: no cover - best effort on the way out
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass


async def run_application(
    application: Application,
    *,
    grace: float = 10.0,
    pidfile: Path | None = None,
    stdout: TextIO | None = None,
    handle_signals: bool = True,
    exit_now: Callable[[int], None] = os._exit,
    freeze_gc: bool = False,
) -> int:
    """Start *application*, wait for a stop request, stop it; return an exit code.

    With *handle_signals*, SIGTERM and SIGINT request a graceful stop and a
    second SIGINT calls ``exit_now(130)`` (after removing the pidfile).  With
    *freeze_gc* (what ``pb run`` does), everything alive once the services
    have started is moved out of the garbage collector's sight.
    """
    stdout = stdout if stdout is not None else sys.stdout
    loop = asyncio.get_running_loop()
    wrote_pidfile = False

    def on_signal(signame: str) -> None:
        if application.stop_reason is None:
            application.request_stop(signame)
        elif signame == "SIGINT":
            _log.warning("second interrupt; exiting at once")
            if pidfile is not None and wrote_pidfile:
                remove_pidfile(pidfile)
            _flush_everything()
            exit_now(EXIT_INTERRUPTED)
        else:
            _log.info("already stopping", signal=signame)

    installed: list[int] = []
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                continue
            installed.append(signum)

    stop_requested = asyncio.ensure_future(application.wait_for_stop_request())
    starting = asyncio.ensure_future(application.start())
    try:
        names = ",".join(application.services)
        _log.info("starting", app=application.name, services=names, pid=os.getpid())
        await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Asked to stop while starting: the start is cancelled, which
            # stops the services that had started.
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            _log.info("stopped before all services started")
            return EXIT_OK
        try:
            starting.result()
        except ServiceStartError as exc:
            _log.error(str(exc), exc_info=exc if _log.isEnabledFor(logging.DEBUG) else None)
            return EXIT_FAILURE

        if pidfile is not None:
            try:
                write_pidfile(pidfile)
            except OSError as exc:
                _log.error(f"cannot write the pidfile {str(pidfile)!r}: {exc.strerror or exc}; "
                           f"stopping")
                try:
                    await application.stop(grace=grace)
                except ServiceStopError as stop_error:
                    _log.error(str(stop_error))
                return EXIT_FAILURE
            wrote_pidfile = True
        if freeze_gc:
            # The modules, classes and configuration of a started server
            # live as long as it does, yet every full collection walks
            # them again; with thousands of connections open, such a pass
            # stalled the loop for 145 ms in the soak.  Collect first, so
            # that no garbage is frozen with them.
            gc.collect()
            gc.freeze()
        _log.info("started", services=names)
        _print_banners(application, stdout)

        reason = await stop_requested
        _log.info("stopping", reason=reason, grace=f"{grace:g}s")
        try:
            await application.stop(grace=grace)
        except ServiceStopError as exc:
            _log.error(str(exc))
            return EXIT_FAILURE
        _log.info("stopped")
        return EXIT_OK
    finally:
        for task in (starting, stop_requested):
            if not task.done():
                task.cancel()
        await asyncio.gather(starting, stop_requested, return_exceptions=True)
        for signum in installed:
            loop.remove_signal_handler(signum)
        if pidfile is not None and wrote_pidfile:
            remove_pidfile(pidfile)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open descriptors to the hard one (each
    connection is a descriptor; the soft default of 1,024 is a few hundred
    idle clients).  Returns the (soft, hard) limits in force, None where
    the platform has none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard
        if hard == resource.RLIM_INFINITY:
            # Some kernels refuse "unlimited" for descriptors: ask for what
            # the kernel can give.
            try:
                wanted = int(Path("/proc/sys/fs/nr_open").read_text())
            except (OSError, ValueError):
                wanted = 1 << 20
        if wanted > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (OSError, ValueError) as exc:
                _log.warning("cannot raise the open file limit", soft=soft, hard=hard,
                             error=str(exc))
    return soft, hard


async def _main(config: RunConfig, stdout: TextIO | None) -> int:
    if config.pidfile is not None:
        check_pidfile(config.pidfile)
    limits = raise_open_file_limit()
    if limits is not None:
        soft, hard = limits
        _log.info("open file limit", soft=soft,
                  hard="unlimited" if hard < 0 or hard > 1 << 62 else hard)
    application = await build_application(config)
    return await run_application(
        application, grace=config.grace, pidfile=config.pidfile, stdout=stdout, freeze_gc=True
    )


class LoopUnavailable(ServiceError):
    """``loop = "uvloop"`` was asked for where uvloop is not installed."""


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """(name, factory) of the event loop ``choice`` asks for: ``"auto"`` is
    uvloop where it is installed (``pip install 'perspective-broker[uvloop]'``,
    the production install) and asyncio's own loop elsewhere."""
    if choice not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"unknown event loop {choice!r}: expected auto, asyncio or uvloop")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise LoopUnavailable(
                    "--loop uvloop: uvloop is not installed; "
                    "pip install 'perspective-broker[uvloop]', or use --loop asyncio") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def run(config: RunConfig, *, stdout: TextIO | None = None) -> int:
    """Run *config* in the foreground on the event loop it names; return an
    exit code.

    Logging should already be configured (:func:`~services.configure_logging`).
    Build and pidfile failures are logged and return 1; :class:`ConfigError`
    (duplicate service names) propagates for the caller to report as usage.
    """
    try:
        name, factory = loop_factory(config.loop)
        _log.info("event loop", loop=name)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_main(config, stdout))
    except ConfigError:
        raise
    except ServiceError as exc:
        _log.error(str(exc))
        return EXIT_FAILURE
