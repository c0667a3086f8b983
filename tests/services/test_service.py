"""Service and MultiService: lifecycle, order, failures, owned tasks."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from services import MultiService, Service, ServiceStartError, ServiceStopError
from tests.services.fixture_plugins import LineEchoService


class Recorder(Service):
    """Appends ``start:NAME`` / ``stop:NAME`` to a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail: BaseException | None = None):
        super().__init__(name)
        self.journal = journal
        self.fail = fail

    async def on_start(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.journal.append(f"start:{self.name}")

    async def on_stop(self) -> None:
        self.journal.append(f"stop:{self.name}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_children_start_in_order_and_stop_in_reverse():
    journal: list[str] = []
    root = MultiService("root")
    for name in ("a", "b", "c"):
        root.add(Recorder(name, journal))
    await root.start()
    assert root.running and all(child.running for child in root)
    await root.stop()
    assert journal == ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
    assert not root.running and not any(child.running for child in root)


async def test_start_and_stop_are_idempotent():
    journal: list[str] = []
    service = Recorder("a", journal)
    await service.stop()
    await service.start()
    await service.start()
    await service.stop()
    await service.stop()
    assert journal == ["start:a", "stop:a"]


async def test_concurrent_stops_run_on_stop_once():
    journal: list[str] = []
    service = Recorder("a", journal)
    await service.start()
    await asyncio.gather(service.stop(), service.stop())
    assert journal == ["start:a", "stop:a"]


async def test_a_failing_start_stops_the_started_ones_in_reverse_and_names_the_failed_service():
    journal: list[str] = []
    root = MultiService("root")
    cause = OSError(98, "address already in use")
    for service in (Recorder("a", journal), Recorder("b", journal),
                    Recorder("c", journal, fail=cause), Recorder("d", journal)):
        root.add(service)
    with pytest.raises(ServiceStartError) as raised:
        await root.start()
    assert journal == ["start:a", "start:b", "stop:b", "stop:a"]
    assert raised.value.service_name == "c"
    assert raised.value.service is root.get("c")
    assert raised.value.__cause__ is cause
    assert "'c' failed to start" in str(raised.value)
    assert "address already in use" in str(raised.value)
    assert not root.running and not any(child.running for child in root)


async def test_a_nested_failure_is_named_by_its_path_and_not_wrapped_twice():
    journal: list[str] = []
    root = MultiService("root")
    web = MultiService("web")
    web.set_parent(root)
    Recorder("http", journal, fail=ValueError("bad")).set_parent(web)
    with pytest.raises(ServiceStartError) as raised:
        await root.start()
    assert raised.value.service_name == "web/http"
    assert isinstance(raised.value.__cause__, ValueError)


async def test_a_failed_start_leaves_no_port_listening():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    first_port = free_port()
    root = MultiService("root")
    root.add(LineEchoService("first", port=first_port))
    root.add(LineEchoService("second", port=busy.getsockname()[1]))
    try:
        with pytest.raises(ServiceStartError) as raised:
            await root.start()
    finally:
        busy.close()
    assert raised.value.service_name == "second"
    assert isinstance(raised.value.__cause__, OSError)
    assert port_is_free(first_port)


async def test_cancelling_a_start_stops_the_services_already_started():
    journal: list[str] = []
    gate = asyncio.Event()

    class Hanging(Service):
        async def on_start(self) -> None:
            gate.set()
            await asyncio.Event().wait()

    root = MultiService("root")
    root.add(Recorder("a", journal))
    root.add(Hanging("hang"))
    starting = asyncio.ensure_future(root.start())
    await gate.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert journal == ["start:a", "stop:a"]
    assert not root.running


async def test_owned_tasks_are_cancelled_and_awaited_on_stop():
    cleaned: list[str] = []

    class Looping(Service):
        async def on_start(self) -> None:
            self.create_task(self.loop("one"))
            self.create_task(self.loop("two"))

        async def loop(self, label: str) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)  # cleanup that itself awaits
                cleaned.append(label)

    service = Looping("looping")
    await service.start()
    await asyncio.sleep(0)
    tasks = service.tasks
    assert len(tasks) == 2
    await service.stop()
    assert sorted(cleaned) == ["one", "two"]
    assert all(task.cancelled() for task in tasks)
    assert service.tasks == frozenset()


@pytest.mark.timeout(10)
async def test_stop_returns_when_an_owned_task_finished_just_before_it():
    # The task and on_stop() wait for the same future, the task first: when
    # it is set, the task finishes and on_stop() returns in one loop step,
    # so stop() reaches its owned tasks before the finished task's done
    # callback has run.  From Python 3.12 gather() of tasks that are all
    # done returns without yielding to the loop, and stop() used to wait
    # for that callback in a loop that never let it run (a 100% CPU hang).
    class Finishing(Service):
        async def on_start(self) -> None:
            self.release = asyncio.get_running_loop().create_future()
            self.stopping = asyncio.Event()
            self.task = self.create_task(self.work())

        async def work(self) -> str:
            await self.release
            return "done"

        async def on_stop(self) -> None:
            self.stopping.set()
            await self.release

    service = Finishing("finishing")
    await service.start()
    await asyncio.sleep(0)  # the task is waiting for the future
    stopping = asyncio.ensure_future(service.stop())
    await service.stopping.wait()  # on_stop() is waiting for it too
    service.release.set_result(None)
    await stopping
    assert service.task.result() == "done"
    assert service.tasks == frozenset()
    assert not service.running


async def test_owned_tasks_are_cancelled_when_start_fails():
    class Failing(Service):
        async def on_start(self) -> None:
            self.task = self.create_task(asyncio.Event().wait())
            await asyncio.sleep(0)
            raise RuntimeError("no")

    service = Failing("failing")
    with pytest.raises(ServiceStartError):
        await service.start()
    assert service.task.cancelled()


async def test_a_failing_owned_task_is_logged(caplog):
    class Crashing(Service):
        async def on_start(self) -> None:
            self.create_task(self.crash(), name="crasher")

        async def crash(self) -> None:
            raise KeyError("boom")

    service = Crashing("crashing")
    with caplog.at_level(logging.ERROR, logger="pb.service"):
        await service.start()
        await asyncio.sleep(0.01)
        await service.stop()
    [record] = [r for r in caplog.records if r.name == "pb.service"]
    assert record.fields == {"service": "crashing", "task": "crasher"}
    assert record.exc_info[0] is KeyError


async def test_tasks_cannot_be_created_while_stopped():
    service = Service("idle")

    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="not running"):
        service.create_task(nothing())


async def test_stop_cancels_on_stop_when_the_grace_period_runs_out(caplog):
    forced: list[bool] = []

    class Slow(Service):
        async def on_stop(self) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                forced.append(True)
                raise

    service = Slow("slow")
    await service.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="pb.service"):
        await service.stop(grace=0.1)
    assert loop.time() - began < 2
    assert forced == [True]
    assert not service.running
    assert "did not stop within the grace period" in caplog.text


async def test_on_stop_can_ask_how_much_of_the_grace_period_is_left():
    seen: list[float | None] = []

    class Polite(Service):
        async def on_stop(self) -> None:
            seen.append(self.grace_remaining())

    service = Polite("polite")
    assert service.grace_remaining() is None
    await service.start()
    await service.stop(grace=5)
    await service.start()
    await service.stop()
    assert 4 < seen[0] <= 5 and seen[1] is None
    assert service.grace_remaining() is None


async def test_the_grace_period_is_shared_by_all_children():
    class Slow(Service):
        async def on_stop(self) -> None:
            await asyncio.sleep(30)

    root = MultiService("root")
    for name in "abc":
        root.add(Slow(name))
    await root.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await root.stop(grace=0.2)
    assert loop.time() - began < 2
    assert not any(child.running for child in root)


async def test_a_child_that_fails_to_stop_does_not_keep_the_others_running():
    journal: list[str] = []

    class Broken(Service):
        async def on_stop(self) -> None:
            raise RuntimeError("stuck")

    root = MultiService("root")
    root.add(Recorder("a", journal))
    root.add(Broken("broken"))
    root.add(Recorder("c", journal))
    await root.start()
    with pytest.raises(ServiceStopError) as raised:
        await root.stop()
    assert journal == ["start:a", "start:c", "stop:c", "stop:a"]
    assert [name for name, _ in raised.value.failures] == ["broken"]
    assert not root.running


async def test_children_are_named_uniquely_and_found_by_name():
    root = MultiService("root")
    a = Service("a")
    a.set_parent(root)
    assert root.get("a") is a and "a" in root and a in root and len(root) == 1
    with pytest.raises(ValueError, match="already"):
        root.add(Service("a"))
    with pytest.raises(ValueError, match="needs a name"):
        root.add(Service())
    with pytest.raises(KeyError, match="children: a"):
        root.get("b")
    with pytest.raises(RuntimeError, match="disown"):
        a.name = "renamed"
    a.disown()
    assert a.parent is None and "a" not in root
    a.name = "renamed"


async def test_a_running_child_must_be_stopped_before_it_is_removed():
    root = MultiService("root")
    child = Service("child")
    root.add(child)
    await root.start()
    with pytest.raises(RuntimeError, match="stop it"):
        child.disown()
    await child.stop()
    child.disown()
    await root.stop()


async def test_walk_visits_the_tree_depth_first_in_start_order():
    root = MultiService("root")
    web = MultiService("web")
    root.add(Service("first"))
    root.add(web)
    web.add(Service("http"))
    root.add(Service("last"))
    assert [s.path for s in root.walk()] == ["root", "first", "web", "web/http", "last"]
