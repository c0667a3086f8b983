"""The manhole: the evaluator core in memory, then the service over PB."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import broker
import cred
from services import Application, plugin_parser
from services.manhole import Evaluator, ManholeService, check_bind_options, default_namespace
from services.manhole import plugin as manhole_plugin
from services.manhole._capture import OutputBuffer
from tests._tls import write_tls_files

from .test_echo import assert_no_leaks, pb, wait_until

# -- the evaluator ------------------------------------------------------------------


@pytest.fixture
def evaluator():
    ev = Evaluator(default_namespace(answer=42))
    yield ev
    ev.close()


async def test_an_expression_reports_its_repr_and_sets_underscore(evaluator):
    assert await evaluator.run("answer + 1") == {
        "output": "", "value": "43", "error": None, "more": False}
    assert (await evaluator.run("'x' * 3"))["value"] == "'xxx'"
    assert (await evaluator.run("_"))["value"] == "'xxx'"


async def test_statements_have_no_value_and_the_namespace_persists(evaluator):
    assert await evaluator.run("x = 6 * 7") == {
        "output": "", "value": None, "error": None, "more": False}
    assert (await evaluator.run("x"))["value"] == "42"
    assert (await evaluator.run("None"))["value"] is None


async def test_a_block_of_statements_reports_the_last_expression(evaluator):
    result = await evaluator.run("a = 1\nb = 2\nprint('sum')\na + b\n")
    assert result == {"output": "sum\n", "value": "3", "error": None, "more": False}


async def test_a_multi_line_definition_then_a_call(evaluator):
    assert (await evaluator.run("def double(n):"))["more"] is True
    assert (await evaluator.run("def double(n):\n    m = n * 2"))["more"] is True
    done = await evaluator.run("def double(n):\n    m = n * 2\n    return m\n")
    assert done == {"output": "", "value": None, "error": None, "more": False}
    assert (await evaluator.run("double(21)"))["value"] == "42"


@pytest.mark.parametrize("source", [
    "def f():",
    "for i in range(3):\n    print(i)",  # a block ends with an empty line
    "if x:\n    pass\nelse:",
    "x = (1,\n",
    "'''text",
    "@decorator",
    "value = 1 + \\",
    "class A:\n    pass",
    "async def f():\n    await g()",
    "if True: print(1)",
])
async def test_incomplete_input_asks_for_more_and_runs_nothing(evaluator, source):
    result = await evaluator.run(source)
    assert result == {"output": "", "value": None, "error": None, "more": True}


async def test_a_block_runs_once_the_empty_line_comes(evaluator):
    result = await evaluator.run("for i in range(3):\n    print(i)\n")
    assert result["output"] == "0\n1\n2\n" and not result["more"]


async def test_empty_input_does_nothing(evaluator):
    for source in ("", "   ", "# a comment", "\n\n"):
        assert await evaluator.run(source) == {
            "output": "", "value": None, "error": None, "more": False}


async def test_an_exception_is_a_traceback_of_the_typed_lines(evaluator):
    await evaluator.run("def fail():\n    raise ValueError('no good')\n")
    result = await evaluator.run("print('before')\nfail()")
    assert result["output"] == "before\n"
    assert result["value"] is None and not result["more"]
    error = result["error"]
    assert error.startswith("Traceback (most recent call last):\n")
    assert "    fail()\n" in error and "    raise ValueError('no good')\n" in error
    assert error.endswith("ValueError: no good\n")
    assert "_evaluator.py" not in error  # our own frames are not shown


async def test_a_syntax_error_is_reported_not_raised(evaluator):
    result = await evaluator.run("1 +* 2")
    assert result["value"] is None and not result["more"]
    assert "SyntaxError" in result["error"] and "Traceback" not in result["error"]


async def test_stdout_and_stderr_are_captured_in_the_order_written(evaluator):
    source = ("import sys\n"
              "print('one')\n"
              "print('two', file=sys.stderr)\n"
              "sys.stdout.write('three\\n')\n"
              "sys.stderr.write('four\\n')\n"
              "print('five')\n")
    result = await evaluator.run(source)
    assert result["output"] == "one\ntwo\nthree\nfour\nfive\n"
    assert result["error"] is None


async def test_the_real_streams_are_back_after_an_evaluation(evaluator, capsys):
    before = sys.stdout, sys.stderr
    await evaluator.run("print('captured')")
    assert (sys.stdout, sys.stderr) == before
    print("not captured")
    assert capsys.readouterr().out == "not captured\n"


async def test_top_level_await(evaluator):
    result = await evaluator.run("await asyncio.sleep(0.01)\nawait asyncio.sleep(0, 'slept')")
    assert result == {"output": "", "value": "'slept'", "error": None, "more": False}
    result = await evaluator.run(
        "async def twice(n):\n    await asyncio.sleep(0)\n    return 2 * n\n")
    assert result["error"] is None
    assert (await evaluator.run("[await twice(n) for n in range(3)]"))["value"] == "[0, 2, 4]"


async def test_code_runs_on_the_server_loop(evaluator):
    loop = asyncio.get_running_loop()
    evaluator.namespace["loop"] = loop
    assert (await evaluator.run("asyncio.get_running_loop() is loop"))["value"] == "True"


async def test_interrupt_cancels_a_sleeping_evaluation(evaluator):
    running = asyncio.ensure_future(evaluator.run(
        "print('started')\ntry:\n    await asyncio.sleep(100)\n"
        "finally:\n    print('cleaned up')\n"))
    await wait_until(lambda: evaluator.running)
    assert evaluator.interrupt() is True
    result = await asyncio.wait_for(running, 5)
    assert result["output"] == "started\ncleaned up\n"
    assert result["error"].endswith("KeyboardInterrupt\n")
    assert "await asyncio.sleep(100)" in result["error"]
    assert evaluator.interrupt() is False  # nothing runs now
    assert (await evaluator.run("1"))["value"] == "1"  # the session goes on


async def test_cancelling_the_run_cancels_the_evaluation(evaluator):
    evaluator.namespace["events"] = events = []
    running = asyncio.ensure_future(evaluator.run(
        "try:\n    await asyncio.sleep(100)\nfinally:\n    events.append('cancelled')\n"))
    await wait_until(lambda: evaluator.running)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert events == ["cancelled"]
    assert not evaluator.running


async def test_output_is_bounded_and_says_it_was_truncated():
    evaluator = Evaluator(output_limit=1000)
    result = await evaluator.run("for i in range(10000):\n    print('x' * 10)\n")
    output = result["output"]
    assert output.endswith("[output truncated: more than 1000 bytes]\n")
    assert len(output.encode()) < 1100
    assert result["error"] is None
    evaluator.close()


async def test_the_default_output_bound_is_one_mib(evaluator):
    result = await evaluator.run("print('y' * (3 * 1024 * 1024))")
    assert result["output"].endswith("[output truncated: more than 1 MiB]\n")
    assert len(result["output"]) < 1024 * 1024 + 100


async def test_a_huge_repr_is_clipped():
    evaluator = Evaluator(text_limit=100)
    result = await evaluator.run("'z' * 1000")
    assert len(result["value"]) < 200 and "truncated" in result["value"]
    evaluator.close()


def test_the_output_buffer_cuts_on_a_character_boundary():
    buffer = OutputBuffer(limit=5)
    buffer.write("ab")
    buffer.write("éééé")  # 2 bytes each: only one fits
    assert buffer.getvalue().startswith("abé\n[output truncated")
    buffer.close()
    assert buffer.write("late") is False


async def test_system_exit_and_exit_do_not_stop_the_server(evaluator):
    result = await evaluator.run("raise SystemExit(3)")
    assert result["error"].endswith("SystemExit: 3\n")
    result = await evaluator.run("exit()")
    assert "Ctrl-D" in result["error"]
    assert "Ctrl-D" in (await evaluator.run("quit"))["value"]
    assert "not available" in (await evaluator.run("input()"))["error"]


async def test_completion_of_names_and_attributes(evaluator):
    await evaluator.run("import collections\nclass Thing:\n    colour = 'red'\n"
                        "    def shine(self): pass\n")
    await evaluator.run("thing = Thing()")
    assert evaluator.complete("ans") == ["answer"]
    assert "thing" in evaluator.complete("thi")
    assert set(evaluator.complete("thing.")) >= {"thing.colour", "thing.shine()"}
    assert evaluator.complete("collections.Ordered") == ["collections.OrderedDict("]
    assert evaluator.complete("nothing_like_this") == []
    assert evaluator.complete("") == []


async def test_completion_through_subscripts_and_never_through_calls(evaluator):
    await evaluator.run("class Svc:\n    ready = True\n    def get(self, key): pass\n"
                        "    def gear(self): pass\n"
                        "services = {'demo': Svc()}\ncalls = []\n"
                        "def spy():\n    calls.append(1)\n    return services\n")
    assert evaluator.complete("services['demo'].ge") == ["services['demo'].gear()",
                                                          "services['demo'].get("]
    assert evaluator.complete('services["demo"].re') == ['services["demo"].ready']
    assert evaluator.complete("services['nope'].ge") == []
    assert evaluator.complete("spy()['demo'].ge") == []  # a call is never made
    assert evaluator.complete("services[spy()].ge") == []
    assert (await evaluator.run("calls"))["value"] == "[]"


async def test_concurrent_sessions_do_not_mix_output():
    first, second = Evaluator(), Evaluator()
    source = ("for i in range(5):\n"
              "    print(NAME, i)\n"
              "    await asyncio.sleep(0.001)\n")
    first.namespace["NAME"], second.namespace["NAME"] = "first", "second"
    one, two = await asyncio.gather(first.run(source), second.run(source))
    assert one["output"] == "".join(f"first {i}\n" for i in range(5))
    assert two["output"] == "".join(f"second {i}\n" for i in range(5))
    first.close()
    second.close()


async def test_one_session_runs_its_evaluations_one_at_a_time(evaluator):
    evaluator.namespace["order"] = order = []
    slow = asyncio.ensure_future(
        evaluator.run("await asyncio.sleep(0.05)\norder.append('slow')\n"))
    await asyncio.sleep(0)
    fast = asyncio.ensure_future(evaluator.run("order.append('fast')"))
    await asyncio.gather(slow, fast)
    assert order == ["slow", "fast"]


async def test_future_imports_persist(evaluator):
    await evaluator.run("from __future__ import annotations")
    await evaluator.run("def f(x: Undefined) -> None: pass\n")
    assert (await evaluator.run("f.__annotations__['x']"))["value"] == "'Undefined'"


async def test_code_does_not_inherit_our_future_imports(evaluator):
    await evaluator.run("def f(x: int) -> None: pass\n")
    assert (await evaluator.run("f.__annotations__['x']"))["value"] == "<class 'int'>"


# -- the service over PB ------------------------------------------------------------


def make_store(data: Path, **accounts: list[tuple[str, str | None]]) -> None:
    """Accounts named after the keyword, password 'pw', with these grants."""
    data.mkdir(mode=0o700, exist_ok=True)
    with cred.AccountStore(data / "accounts.sqlite3", create=True) as store:
        for service in ("manhole", "pbecho"):
            if service not in store.services():
                store.add_service(service)
        for name, grants in accounts.items():
            store.add_user(name, "pw", keyring=grants)


@contextlib.asynccontextmanager
async def running_manhole(data: Path, *argv: str) -> AsyncIterator[ManholeService]:
    options = plugin_parser(manhole_plugin).parse_args(list(argv))
    application = Application("test", data_dir=data)
    service = manhole_plugin.build(options, application)
    application.add(service)
    await application.start()
    try:
        yield service
    finally:
        await application.stop(grace=5)


@contextlib.asynccontextmanager
async def admin_session(service: ManholeService, user: str = "root",
                        **kw) -> AsyncIterator[broker.RemoteReference]:
    perspective = await broker.login("127.0.0.1", service.port, user, "pw",
                                     service="manhole", **kw)
    try:
        yield perspective
    finally:
        await perspective.connection.close()


async def test_an_admin_evaluates_code_and_sees_the_application(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        assert service.banner().startswith(f"manhole: pb://127.0.0.1:{service.port}")
        async with admin_session(service) as manhole:
            run = await manhole.call_remote("run", "print('hi')\nlen(application.services)")
            assert run == {"output": "hi\n", "value": "1", "error": None, "more": False}
            run = await manhole.call_remote("run", "services['manhole'] is application.get('manhole')")
            assert run["value"] == "True"
            run = await manhole.call_remote("run", "portal is application.portal")
            assert run["value"] == "True"
            assert (await manhole.call_remote("run", "def f():"))["more"] is True
            assert "application" in await manhole.call_remote("complete", "appl")
            assert await manhole.call_remote("interrupt") is False


async def test_each_login_has_its_own_namespace_for_as_long_as_it_lasts(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        async with admin_session(service) as first, admin_session(service) as second:
            await first.call_remote("run", "mine = 'first'")
            assert (await first.call_remote("run", "mine"))["value"] == "'first'"
            missing = await second.call_remote("run", "mine")
            # From Python 3.12 the message may end with a suggestion drawn
            # from the namespace ("Did you mean: 'min'?"); never 'mine'.
            last_line = missing["error"].splitlines()[-1]
            assert re.fullmatch(r"NameError: name 'mine' is not defined"
                                r"(\. Did you mean: '(?!mine')\w+'\?)?", last_line), last_line
            assert len(service.sessions) == 2
        await wait_until(lambda: not service.sessions)


async def test_an_account_without_manhole_on_its_keyring_is_unauthorized(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)], alice=[("pbecho", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", service.port, "alice", "pw", service="manhole")
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", service.port, "root", "wrong", service="manhole")
        assert not service.sessions


async def test_every_evaluation_is_logged_with_the_admin_and_the_source(tmp_path, caplog):
    make_store(tmp_path / "data", root=[("manhole", None)])
    caplog.set_level(logging.INFO, logger="pb.manhole")
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        async with admin_session(service) as manhole:
            await manhole.call_remote("run", "x = 1")
            await manhole.call_remote("run", "y = '" + "a" * 500 + "'")
            await manhole.call_remote("run", "def g():")  # incomplete: not run, not logged
    records = [r for r in caplog.records if r.name == "pb.manhole" and r.msg == "evaluating"]
    assert [r.fields["admin"] for r in records] == ["root", "root"]
    assert records[0].fields["source"] == "x = 1"
    assert records[1].fields["source"] == "y = '" + "a" * 195 + "..."


async def test_interrupt_over_pb_stops_a_long_evaluation(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        async with admin_session(service) as manhole:
            running = asyncio.ensure_future(
                manhole.call_remote("run", "print('waiting')\nawait asyncio.sleep(100)"))
            (session,) = service.sessions
            await wait_until(lambda: session.evaluator.running)
            assert await manhole.call_remote("interrupt") is True
            result = await asyncio.wait_for(running, 5)
            assert result["output"] == "waiting\n"
            assert result["error"].endswith("KeyboardInterrupt\n")


async def test_cancelling_the_remote_call_cancels_the_evaluation(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        application = service.application
        async with admin_session(service) as manhole:
            call = asyncio.ensure_future(manhole.call_remote(
                "run",
                "try:\n    await asyncio.sleep(100)\n"
                "finally:\n    application.cancelled_from_afar = True\n"))
            (session,) = service.sessions
            await wait_until(lambda: session.evaluator.running)
            call.cancel()
            await wait_until(lambda: getattr(application, "cancelled_from_afar", False))
            assert (await manhole.call_remote("run", "'still here'"))["value"] == "'still here'"


async def test_a_timeout_on_the_call_cancels_the_evaluation(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        async with admin_session(service) as manhole:
            with pytest.raises(broker.CallTimeout):
                await manhole.call_remote("run", "await asyncio.sleep(100)", timeout=0.2)
            (session,) = service.sessions
            await wait_until(lambda: not session.evaluator.running)


async def test_a_megabyte_of_output_crosses_the_wire(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        async with admin_session(service) as manhole:
            result = await manhole.call_remote("run", "print('é' * (2 * 1024 * 1024))")
            assert result["output"].endswith("[output truncated: more than 1 MiB]\n")


async def test_logging_out_cancels_the_session_evaluation(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0") as service:
        application = service.application
        perspective = await broker.login("127.0.0.1", service.port, "root", "pw",
                                         service="manhole")
        asyncio.ensure_future(perspective.call_remote(
            "run", "try:\n    await asyncio.sleep(100)\n"
                   "finally:\n    application.gone = True\n")).add_done_callback(
            lambda f: f.cancelled() or f.exception())
        (session,) = service.sessions
        await wait_until(lambda: session.evaluator.running)
        await perspective.connection.close()
        await wait_until(lambda: getattr(application, "gone", False))
        await wait_until(lambda: not service.sessions)


async def test_stopping_the_service_interrupts_evaluations_at_once(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    options = plugin_parser(manhole_plugin).parse_args(["--port", "0"])
    application = Application("test", data_dir=tmp_path / "data")
    service = manhole_plugin.build(options, application)
    application.add(service)
    await application.start()
    perspective = await broker.login("127.0.0.1", service.port, "root", "pw", service="manhole")
    call = asyncio.ensure_future(perspective.call_remote("run", "await asyncio.sleep(100)"))
    (session,) = service.sessions
    await wait_until(lambda: session.evaluator.running)
    started = asyncio.get_running_loop().time()
    await application.stop(grace=10)
    assert asyncio.get_running_loop().time() - started < 3
    with contextlib.suppress(broker.PBError):
        result = await call
        assert result["error"].endswith("KeyboardInterrupt\n")
    await perspective.connection.wait_closed()
    assert "manhole" not in application.portal.realm.services


async def test_a_unix_socket_is_created_mode_0600(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    path = tmp_path / "manhole.sock"
    async with running_manhole(tmp_path / "data", "--socket", str(path)) as service:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"--socket {path}" in service.banner()
        perspective = await broker.login(path=str(path), username="root", password="pw",
                                         service="manhole")
        assert (await perspective.call_remote("run", "2 ** 10"))["value"] == "1024"
        await perspective.connection.close()
    assert not path.exists()


def bind(*argv: str):
    return plugin_parser(manhole_plugin).parse_args(list(argv))


@pytest.mark.parametrize("argv", [
    ("--host", "0.0.0.0"),
    ("--host", "192.0.2.1", "--allow-remote"),
    ("--host", "example.com", "--tls-cert", "c.pem", "--tls-key", "k.pem"),
    ("--host", "::"),
])
def test_a_non_loopback_address_is_refused_without_allow_remote_and_tls(argv):
    with pytest.raises(ValueError) as refused:
        check_bind_options(bind(*argv))
    message = str(refused.value)
    assert "refusing to open the manhole" in message
    assert "--allow-remote" in message and "--tls-cert FILE --tls-key FILE" in message


@pytest.mark.parametrize("argv", [(), ("--host", "127.0.0.1"), ("--host", "::1"),
                                  ("--host", "localhost"), ("--host", "127.0.0.2"),
                                  ("--socket", "m.sock")])
def test_loopback_addresses_and_unix_sockets_are_accepted(argv):
    check_bind_options(bind(*argv))


@pytest.mark.parametrize(("argv", "message"), [
    (("--socket", "m.sock", "--port", "1"), "--socket PATH or --host/--port"),
    (("--tls-cert", "c.pem"), "go together"),
    (("--socket", "m.sock", "--allow-remote"), "UNIX socket is local"),
])
def test_inconsistent_bind_options_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        check_bind_options(bind(*argv))


def test_pb_run_manhole_on_a_public_address_fails_naming_the_fix(tmp_path):
    result = pb("run", "--data-dir", str(tmp_path / "data"), "manhole", "--host", "0.0.0.0",
                "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "refusing to open the manhole on 0.0.0.0" in result.stderr
    assert "--allow-remote together with --tls-cert FILE --tls-key FILE" in result.stderr
    assert result.stdout == ""
    assert_no_leaks(result.stderr)


async def test_a_remote_manhole_with_allow_remote_serves_tls(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    cert, key, ca = write_tls_files(tmp_path)
    async with running_manhole(tmp_path / "data", "--host", "0.0.0.0", "--port", "0",
                               "--allow-remote", "--tls-cert", str(cert),
                               "--tls-key", str(key)) as service:
        assert service.banner().startswith(f"manhole: pbs://0.0.0.0:{service.port}")
        client = ssl.create_default_context(cafile=str(ca))
        async with admin_session(service, ssl=client) as manhole:
            assert (await manhole.call_remote("run", "6 * 7"))["value"] == "42"
        with pytest.raises((broker.PBError, OSError)):  # no TLS: no session
            await broker.login("127.0.0.1", service.port, "root", "pw", service="manhole",
                               timeout=2)


def test_bad_tls_files_fail_the_build_clearly(tmp_path):
    options = bind("--tls-cert", str(tmp_path / "missing.pem"),
                   "--tls-key", str(tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="cannot load --tls-cert"):
        manhole_plugin.build(options, Application("t", data_dir=tmp_path))


# -- the watchdog: code that blocks the loop ----------------------------------------


@pytest.fixture
def guarded_evaluator():
    from services.manhole._watchdog import Watchdog
    watchdog = Watchdog(0.3)
    watchdog.start()
    ev = Evaluator(default_namespace(), watchdog=watchdog)
    yield ev
    ev.close()
    watchdog.stop()


async def test_a_busy_loop_is_interrupted_past_the_block_limit(guarded_evaluator):
    result = await asyncio.wait_for(guarded_evaluator.run(
        "print('spinning')\nn = 0\nwhile True:\n    n += 1\n"), 10)
    assert result["output"] == "spinning\n"
    assert "EvaluationBlocked" in result["error"]
    assert "block_limit" in result["error"]
    assert "while True" in result["error"] or "n += 1" in result["error"]
    # The session and the loop go on, and the interruption does not linger.
    assert (await guarded_evaluator.run("n > 0"))["value"] == "True"
    await asyncio.sleep(0.5)
    assert (await guarded_evaluator.run("sum(range(10))"))["value"] == "45"


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGRTMIN"), reason="needs real-time signals")
async def test_a_sleep_in_c_is_interrupted_too(guarded_evaluator):
    import threading
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the wake signal needs the loop in the main thread")
    result = await asyncio.wait_for(guarded_evaluator.run("import time\ntime.sleep(60)"), 10)
    assert "EvaluationBlocked" in result["error"]
    assert "time.sleep(60)" in result["error"]


async def test_each_stretch_between_awaits_has_its_own_limit(guarded_evaluator):
    # 6 stretches of 0.1 s: more than the limit in all, never in one go.
    source = ("import time\nfor i in range(6):\n    time.sleep(0.1)\n"
              "    await asyncio.sleep(0)\n'done'")
    result = await asyncio.wait_for(guarded_evaluator.run(source + "\n"), 10)
    assert result["error"] is None
    assert result["value"] == "'done'"
    # ...but one stretch that blocks after an await is still interrupted.
    result = await asyncio.wait_for(guarded_evaluator.run(
        "await asyncio.sleep(0)\nwhile True:\n    pass\n"), 10)
    assert "EvaluationBlocked" in result["error"]


async def test_other_connections_are_served_again_after_a_blocking_evaluation(tmp_path):
    make_store(tmp_path / "data", root=[("manhole", None)])
    async with running_manhole(tmp_path / "data", "--port", "0", "--block-limit", "0.5") as service:
        async with admin_session(service) as manhole:
            result = await asyncio.wait_for(
                manhole.call_remote("run", "while True:\n    pass\n"), 20)
            assert "EvaluationBlocked" in result["error"]
            assert (await manhole.call_remote("run", "6 * 7"))["value"] == "42"


def test_the_block_limit_option_is_checked():
    parser = plugin_parser(manhole_plugin)
    assert parser.parse_args([]).block_limit == 5.0
    assert parser.parse_args(["--block-limit", "0"]).block_limit == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--block-limit", "-1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--block-limit", "soon"])


def test_the_block_limit_can_be_set_in_a_config_file(tmp_path):
    from services import load_config
    path = tmp_path / "app.toml"
    path.write_text('[[service]]\nplugin = "manhole"\nblock_limit = 0.5\n')
    (service,) = load_config(path).services
    assert service.options.block_limit == 0.5
    path.write_text('[[service]]\nplugin = "manhole"\nblock_limit = "soon"\n')
    with pytest.raises(Exception, match="block_limit"):
        load_config(path)
