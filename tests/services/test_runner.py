"""The runner in-process: start, banner, pidfile, stop request, failures."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import subprocess
import sys

import pytest

from services import (
    Application,
    ConfigError,
    PidfileError,
    RunConfig,
    ServiceSpec,
    build_application,
    options_from_table,
    run_application,
)
from services._runner import check_pidfile
from tests.services import fixture_plugins


def spec(plugin, name=None, **options) -> ServiceSpec:
    namespace = options_from_table(plugin, options, file="test", where="service")
    return ServiceSpec(plugin, namespace, name)


async def test_the_runner_starts_prints_banners_once_and_stops_on_request(tmp_path, caplog):
    config = RunConfig(name="app", data_dir=tmp_path / "data", services=[
        spec(fixture_plugins.line_echo, "a"),
        spec(fixture_plugins.ticker, "clock", interval=0.01),
    ])
    application = await build_application(config)
    stdout = io.StringIO()
    pidfile = tmp_path / "app.pid"
    running = asyncio.ensure_future(run_application(
        application, grace=1, pidfile=pidfile, stdout=stdout, handle_signals=False,
    ))
    with caplog.at_level(logging.INFO):
        while not pidfile.exists():
            await asyncio.sleep(0.01)
        assert pidfile.read_text() == f"{os.getpid()}\n"
        port = application.get("a").port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        application.request_stop("test over")
        assert await running == 0
    assert await reader.readline() == b"bye\n"
    assert await reader.readline() == b""
    writer.close()
    await writer.wait_closed()
    assert not pidfile.exists()
    assert stdout.getvalue().splitlines() == [
        f"line-echo a listening on 127.0.0.1:{port}",
        f"ticker clock writing {tmp_path / 'data' / 'clock.ticks'}",
    ]
    started = [r for r in caplog.records if r.msg == "started"]
    assert started[0].fields == {"services": "a,clock"}
    assert application.portal.realms == ["ticks"]
    assert int((tmp_path / "data" / "clock.ticks").read_text()) >= 1


async def test_a_start_failure_is_logged_and_returns_1(tmp_path, caplog):
    config = RunConfig(data_dir=tmp_path, services=[
        spec(fixture_plugins.line_echo, "good"),
        spec(fixture_plugins.line_echo, "bad", fail_start=True),
    ])
    application = await build_application(config)
    stdout = io.StringIO()
    with caplog.at_level(logging.INFO):
        code = await run_application(application, stdout=stdout, handle_signals=False)
    assert code == 1
    assert "service 'bad' failed to start: RuntimeError: asked to fail" in caplog.text
    assert stdout.getvalue() == ""
    assert not application.get("good").running


async def test_two_services_may_not_share_a_name(tmp_path):
    config = RunConfig(data_dir=tmp_path, services=[
        spec(fixture_plugins.line_echo), spec(fixture_plugins.line_echo),
    ])
    with pytest.raises(ConfigError, match="'line-echo' is already defined"):
        await build_application(config)


def test_a_pidfile_naming_a_live_process_is_refused_and_a_stale_one_replaced(tmp_path):
    pidfile = tmp_path / "pb.pid"
    pidfile.write_text(f"{os.getppid()}\n")
    with pytest.raises(PidfileError, match="names a running process"):
        check_pidfile(pidfile)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    check_pidfile(pidfile)  # stale: no error


@pytest.mark.parametrize("content", [
    b"", b"\n", b"\xff\xfe\x00 garbage", b"-5\n", b"0\n", b"12 34\n", b"99999999999999999999999\n",
    b"1" * 100_000,
])
def test_a_pidfile_holding_no_usable_process_id_is_replaced_with_a_warning(tmp_path, caplog,
                                                                           content):
    pidfile = tmp_path / "pb.pid"
    pidfile.write_bytes(content)
    with caplog.at_level(logging.INFO):
        check_pidfile(pidfile)
    assert "pidfile" in caplog.text


def test_a_pidfile_that_cannot_be_read_or_written_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "file").write_text("x")
    for path, problem in [
        (tmp_path, "(?i)is a directory"),
        (tmp_path / "missing" / "pb.pid", "does not exist"),
        (tmp_path / "file" / "pb.pid", "is not a directory"),
    ]:
        with pytest.raises(PidfileError, match=problem) as raised:
            check_pidfile(path)
        assert str(path) in str(raised.value)


async def test_a_pidfile_that_cannot_be_written_after_all_stops_the_services(tmp_path, caplog):
    application = Application("app", data_dir=tmp_path / "data")
    application.add(fixture_plugins.LineEchoService("a"))
    pidfile = tmp_path / "vanished" / "pb.pid"  # passed the check, then the directory went
    with caplog.at_level(logging.INFO):
        code = await run_application(application, pidfile=pidfile, stdout=io.StringIO(),
                                     handle_signals=False)
    assert code == 1
    assert not application.running
    assert f"cannot write the pidfile {str(pidfile)!r}" in caplog.text


async def test_application_stop_request_before_start_finishes_stops_cleanly(tmp_path):
    application = Application("app", data_dir=tmp_path)
    application.add(fixture_plugins.LineEchoService("a"))
    application.request_stop("early")
    code = await run_application(application, stdout=io.StringIO(), handle_signals=False)
    assert code == 0
    assert not application.running


async def test_freeze_gc_moves_what_lives_at_start_out_of_the_collectors_sight(tmp_path):
    # pb run passes freeze_gc=True: a full collection then no longer walks
    # the started server's modules and objects.
    config = RunConfig(name="app", data_dir=tmp_path / "data",
                       services=[spec(fixture_plugins.line_echo, "a")])
    application = await build_application(config)
    pidfile = tmp_path / "app.pid"
    running = asyncio.ensure_future(run_application(
        application, grace=1, pidfile=pidfile, stdout=io.StringIO(), handle_signals=False,
        freeze_gc=True))
    try:
        while not pidfile.exists():
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 0
        application.request_stop("test over")
        assert await running == 0
    finally:
        gc.unfreeze()  # this test process lives on
