"""Application: the data directory, the shared portal, stop requests."""

from __future__ import annotations

import stat

import pytest

from services import Application, Service, ServiceStartError


async def test_the_data_directory_is_created_with_mode_0700_on_start(tmp_path):
    data_dir = tmp_path / "deep" / "pb-data"
    application = Application("app", data_dir=data_dir)
    assert not data_dir.exists()
    await application.start()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    await application.stop()


async def test_the_data_directory_exists_before_the_services_start(tmp_path):
    seen: list[bool] = []

    class Probe(Service):
        async def on_start(self) -> None:
            seen.append(application.data_dir.is_dir())

    application = Application("app", data_dir=tmp_path / "data")
    application.add(Probe("probe"))
    await application.start()
    await application.stop()
    assert seen == [True]


async def test_a_data_directory_that_is_a_file_fails_the_start(tmp_path):
    (tmp_path / "data").write_text("")
    application = Application("app", data_dir=tmp_path / "data")
    with pytest.raises(ServiceStartError, match="not a directory"):
        await application.start()


def test_services_maps_the_top_level_services_by_name():
    application = Application("app")
    one, two = Service("one"), Service("two")
    application.add(one)
    application.add(two)
    assert dict(application.services) == {"one": one, "two": two}
    with pytest.raises(TypeError):
        application.services["three"] = Service("three")  # type: ignore[index]


def test_the_portal_is_none_until_a_plugin_sets_one_and_is_then_shared():
    application = Application("app")
    assert application.portal is None
    created: list[object] = []

    def factory() -> object:
        created.append(object())
        return created[-1]

    first = application.use_portal(factory)
    second = application.use_portal(factory)
    assert first is second is application.portal
    assert len(created) == 1


async def test_request_stop_wakes_the_runner_with_the_first_reason():
    application = Application("app")
    application.request_stop("admin asked")
    application.request_stop("later")
    assert await application.wait_for_stop_request() == "admin asked"
