"""``pb call`` as a real subprocess against a real server subprocess.

The server script publishes an echo root on one port and a portal (alice,
password "wonderland", service "pbecho") on another, prints both ports as
JSON and serves until its standard input closes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEAKS = ("ResourceWarning", "Task was destroyed", "never awaited", "never retrieved",
         "Traceback", "Exception ignored", "unclosed")

SERVER = textwrap.dedent("""
    import asyncio, datetime, decimal, json, sys
    import broker, cred

    class Thing(broker.Referenceable):
        def remote_name(self):
            return "thing"

    class Echo(broker.Root):
        def remote_echo(self, *args, **kwargs):
            return [list(args), kwargs] if kwargs or len(args) != 1 else args[0]
        def remote_types(self):
            return {"tuple": (1, 2), "set": {3}, "bytes": b"\\x00\\xff", "none": None,
                    "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
                    "price": decimal.Decimal("1.50"), 7: "int key", (1, 2): "tuple key"}
        def remote_thing(self):
            return Thing()
        def remote_fail(self, text):
            raise ValueError(text)
        async def remote_slow(self, seconds):
            await asyncio.sleep(seconds)
        def remote_count(self, n):
            async def numbers():
                for i in range(n):
                    yield i
            return numbers()

    class EchoPerspective(broker.Perspective):
        def __init__(self, name):
            self.name = name
        def perspective_echo(self, text):
            return text
        def perspective_whoami(self):
            return self.name

    class EchoService(cred.Service):
        def create_perspective(self, name):
            return EchoPerspective(name)

    async def main():
        checker = cred.InMemoryChecker({"alice": "wonderland"},
                                       keyring={"alice": [("pbecho", None)]})
        portal = cred.Portal(cred.ServiceRealm(EchoService("pbecho", allow_anonymous=True)),
                             [checker, cred.AllowAnonymous()],
                             throttle=cred.Throttle(base_delay=0))
        socket_path = sys.argv[1]
        async with await broker.serve(Echo(), "127.0.0.1", 0) as root_server, \\
                await broker.serve(portal, "127.0.0.1", 0) as portal_server, \\
                await broker.serve(Echo(), path=socket_path):
            print(json.dumps({"port": root_server.port, "portal_port": portal_server.port,
                              "socket": socket_path}), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)   # until stdin closes

    asyncio.run(main())
""")


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONASYNCIODEBUG="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONWARNINGS", None)
    env.pop("PB_PASSWORD", None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    socket_path = tmp_path_factory.mktemp("call") / "pb.sock"
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(socket_path)], cwd=REPO,
                            env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
        # The only tracebacks are the failed calls the tests made on purpose,
        # which the server logs (broker.calls).
        chunks = stderr.split("Traceback (most recent call last):")
        for before in chunks[:-1]:
            assert "remote method raised" in before.rstrip().splitlines()[-1], stderr


def pb_call(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "clients._cli",
         "call", *args],
        input=stdin if stdin is not None else "", capture_output=True, text=True,
        timeout=timeout, cwd=REPO, env=env or child_env())
    for marker in LEAKS:
        assert marker not in result.stderr, result.stderr
    return result


def address(server, key: str = "port") -> str:
    return f"127.0.0.1:{server[key]}"


def test_a_plain_call_prints_the_result_as_json(server):
    result = pb_call(address(server), "echo", '"hi"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"hi"\n'
    assert result.stderr == ""


def test_arguments_and_keyword_arguments_are_json(server):
    result = pb_call(address(server), "echo", "1", '[2, {"x": null}]', "--kw", "flag=true",
                     "--kw", 'data={"$bytes": "AP8="}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[1, [2, {"x": None}]],
                                         {"flag": True, "data": {"$bytes": "AP8="}}]


def test_options_may_come_before_or_after_the_method(server):
    result = pb_call("--timeout", "5", address(server), "echo", "--timeout", "10", "-3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-3\n"


def test_values_json_cannot_carry_are_mapped(server):
    result = pb_call(address(server), "types")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "tuple": [1, 2], "set": [3], "bytes": {"$bytes": "AP8="}, "none": None,
        "when": "2024-01-02T03:04:05", "price": "1.50", "7": "int key",
        "[1, 2]": "tuple key"}


def test_references_print_as_ref_objects_and_streams_as_lists(server):
    ref = pb_call(address(server), "thing")
    assert ref.returncode == 0, ref.stderr
    assert json.loads(ref.stdout)["$ref"].startswith("<RemoteReference id=")
    stream = pb_call(address(server), "count", "5")
    assert stream.returncode == 0, stream.stderr
    assert json.loads(stream.stdout) == [0, 1, 2, 3, 4]


def test_a_unix_socket_replaces_host_and_port(server):
    result = pb_call("--socket", server["socket"], "echo", '"unix"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"unix"\n'


def test_login_then_a_perspective_call(server):
    result = pb_call(address(server, "portal_port"), "--user", "alice", "--service", "pbecho",
                     "--password-stdin", "whoami", stdin="wonderland\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"alice"\n'
    env = dict(child_env(), PB_PASSWORD="wonderland")
    result = pb_call(address(server, "portal_port"), "-u", "alice", "echo", '"via env"', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"via env"\n'
    result = pb_call(address(server, "portal_port"), "--anonymous", "-s", "pbecho", "whoami")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"anonymous"\n'


def test_a_call_to_a_login_server_without_user_says_to_log_in(server):
    result = pb_call(address(server, "portal_port"), "echo", '"hi"')
    assert result.returncode == 1
    assert "this server wants a login first" in result.stderr
    assert "pb call --user NAME --service SERVICE" in result.stderr


def test_a_refused_login_exits_1_with_the_unauthorized_text(server):
    result = pb_call(address(server, "portal_port"), "--user", "alice", "--password-stdin",
                     "whoami", stdin="wrong\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "login failed: unknown user, wrong password" in result.stderr


def test_bad_json_exits_2_naming_the_argument(server):
    result = pb_call(address(server), "echo", "1", "{bad")
    assert result.returncode == 2
    assert "argument 2" in result.stderr and "{bad" in result.stderr
    result = pb_call(address(server), "echo", "--kw", "name=[1")
    assert result.returncode == 2
    assert "--kw name" in result.stderr
    result = pb_call(address(server), "echo", "--kw", "no-equals")
    assert result.returncode == 2


def test_usage_errors_exit_2(server):
    assert pb_call().returncode == 2
    assert pb_call(address(server)).returncode == 2               # no METHOD
    assert pb_call("nocolon", "echo").returncode == 2
    assert pb_call("127.0.0.1:99999", "echo").returncode == 2
    assert pb_call(address(server), "--no-such-option", "echo").returncode == 2
    assert pb_call(address(server), "--user", "alice", "echo", "1",
                   "--password-stdin", stdin="").returncode == 2   # no password line


def test_without_a_terminal_there_is_no_prompt(server):
    result = subprocess.run(
        [sys.executable, "-m", "clients._cli", "call", address(server, "portal_port"),
         "--user", "alice", "whoami"],
        input="wonderland\n", capture_output=True, text=True, timeout=30, cwd=REPO,
        env=child_env(), start_new_session=True)      # no controlling terminal
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr and "PB_PASSWORD" in result.stderr


def test_an_unreachable_server_exits_1_naming_host_and_port():
    result = pb_call("127.0.0.1:1", "echo", '"hi"')
    assert result.returncode == 1
    assert "cannot connect to 127.0.0.1:1" in result.stderr
    assert "refused" in result.stderr.lower()


def test_a_remote_error_exits_1_with_the_message(server):
    result = pb_call(address(server), "fail", '"boom"')
    assert result.returncode == 1
    assert result.stdout == ""
    assert "fail failed" in result.stderr and "ValueError: boom" in result.stderr
    result = pb_call(address(server), "no_such_method")
    assert result.returncode == 1
    assert "NoSuchMethod" in result.stderr


def test_a_call_past_the_timeout_exits_1(server):
    result = pb_call(address(server), "--timeout", "0.3", "slow", "30")
    assert result.returncode == 1
    assert "within 0.3 s" in result.stderr


def test_help_mentions_exit_codes_and_the_password_rules():
    result = pb_call("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "PB_PASSWORD" in result.stdout
    after = pb_call("127.0.0.1:1", "--help")
    assert after.returncode == 0 and after.stdout == result.stdout


def test_a_password_on_the_command_line_is_refused_not_taken_for_password_stdin():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "clients._cli", "call", "127.0.0.1:1",
                          "--user", "alice", "--password", "secret", "echo"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "passwords are not taken from the command line" in out.stderr


# -- garbage, oversize and truncated input ------------------------------------------------


@pytest.mark.parametrize("text", [
    "x" * 300 + ":8789",          # a DNS label longer than 63 characters
    "a..b:8789",                  # an empty label
    "h\udcffst:8789",             # a non-UTF-8 byte from the command line
    "host:\u0668\u0660",          # Arabic-Indic digits are not a port
    "host:+80", "host: 80", "host:0x50", "host:", ":8789", "host:0", "host:65536",
    "[::1:8789", "::1:8789", "[]:8789", "",
])
def test_bad_addresses_are_usage_errors(text):
    from clients._cli._common import UsageError
    from clients._cli.call import parse_address

    with pytest.raises(UsageError):
        parse_address(text)


@pytest.mark.parametrize("text", [
    "[" * 100_000, "[" * 900 + "]" * 900, '{"a":' * 5000 + "1" + "}" * 5000,
    '"\udcff"',                   # a lone surrogate: a non-UTF-8 command-line byte
    "9" * 5000,                   # past Python's digit limit
    "[1, 2", '"unterminated', "", "\x00",
])
def test_json_arguments_that_cannot_be_sent_are_usage_errors(text):
    from clients._cli._common import UsageError
    from clients._cli.call import from_json

    with pytest.raises(UsageError, match="argument 1"):
        from_json(text, "argument 1")


def test_json_arguments_nest_up_to_a_fixed_depth_on_every_python():
    # The limit is MAX_JSON_DEPTH, not wherever the interpreter runs out of
    # recursion (that was about 500 levels on 3.11 and 1000 on 3.12).
    from clients._cli._common import UsageError
    from clients._cli.call import MAX_JSON_DEPTH, from_json

    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    value = from_json(deepest, "argument 1")
    for _ in range(MAX_JSON_DEPTH - 1):
        [value] = value
    assert value == []
    with pytest.raises(UsageError, match=rf"nested too deeply \({MAX_JSON_DEPTH + 1} levels"):
        from_json("[" + deepest + "]", "argument 1")
    with pytest.raises(UsageError, match="nested too deeply"):  # the text's nesting counts
        from_json('{"a": ' * MAX_JSON_DEPTH + '{"$bytes": "AP8="}' + "}" * MAX_JSON_DEPTH, "--kw a")
    # Brackets inside strings are text, however many there are.
    brackets = json.dumps("[{" * 1000 + '\\"]' * 10)
    assert from_json(f"[{brackets}, {{\"k\": {brackets}}}]", "argument 1") == [
        json.loads(brackets), {"k": json.loads(brackets)}]


def pb_call_raw(*args: bytes | str, stdin: bytes = b"", env: dict[str, str] | None = None):
    result = subprocess.run(
        [sys.executable, "-m", "clients._cli", "call", *args], input=stdin,
        capture_output=True, timeout=30, cwd=REPO, env={**child_env(), **(env or {})})
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


def test_garbage_on_a_real_command_line_and_standard_input(server):
    long_label = pb_call_raw("x" * 300 + ":8789", "echo")
    assert long_label.returncode == 2 and b"not a valid host name" in long_label.stderr
    not_utf8 = pb_call_raw(address(server), "echo", b'"\xff"')
    assert not_utf8.returncode == 2 and b"argument 1" in not_utf8.stderr
    deep = pb_call_raw(address(server), "echo", "[" * 1000 + "]" * 1000)
    assert deep.returncode == 2 and b"nested too deeply" in deep.stderr
    password = pb_call_raw(address(server, "portal_port"), "--user", "alice", "--password-stdin",
                           "whoami", stdin=b"\xff\xfe\n", env={"PYTHONIOENCODING": "utf-8"})
    assert password.returncode == 2 and b"not UTF-8" in password.stderr


def test_a_large_argument_goes_through(server):
    text = "x" * 120_000  # near the kernel's limit for one argument
    result = pb_call(address(server), "echo", json.dumps(text))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == text
