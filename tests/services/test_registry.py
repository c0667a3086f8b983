"""The ``registry`` plug-in (issue 16): names, leases and owners in memory;
register and look up over PB; ``pb run registry`` and ``pb call ... lookup``."""

from __future__ import annotations

import json

import pytest

import broker
from services import Application, plugin_parser
from services.registry import Registry, RegistryError
from services.registry import plugin as registry_plugin

from .test_echo import pb, pb_child, pb_env  # noqa: F401  (pb_child is a fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_leases_owners_and_expiry_in_memory():
    clock = Clock()
    registry = Registry(max_lease=100, clock=clock)
    assert registry.register("svc", "billing", "pb://10.0.0.5:9000", lease=60) == 60
    assert registry.register("svc", "mail", "pb+unix:///run/mail.sock", "mail", lease=1e6) == 100
    found = registry.lookup("billing")
    assert found == {"name": "billing", "address": "pb://10.0.0.5:9000", "service": None,
                     "owner": "svc", "expires_in": 60.0}
    with pytest.raises(RegistryError, match="registered by another account"):
        registry.register("intruder", "billing", "pb://6.6.6.6:1")
    clock.now += 59
    assert registry.renew("svc", "billing", 30) == 30
    clock.now += 29
    assert registry.lookup("billing")["expires_in"] == 1.0
    clock.now += 2
    assert registry.lookup("billing") is None  # the lease ran out
    assert registry.register("other", "billing", "pb://10.0.0.6:9000") == 60  # free again
    assert registry.names() == ["billing", "mail"] and registry.names("ma") == ["mail"]
    registry.unregister("svc", "mail")
    assert registry.drop_owner("other") == 1 and len(registry) == 0


@pytest.mark.parametrize("name, address, lease, message", [
    ("", "pb://h:1", 1, "a name is"),
    ("x" * 201, "pb://h:1", 1, "a name is"),
    ("has space", "pb://h:1", 1, "a name is"),
    ("-leading", "pb://h:1", 1, "a name is"),
    (["list"], "pb://h:1", 1, "a name is"),
    ("ok", "http://h:1", 1, "address must be"),
    ("ok", "pb://h", 1, "address must be"),
    ("ok", 5, 1, "address must be"),
    ("ok", "pb://h:1", 0, "lease must be"),
    ("ok", "pb://h:1", float("inf"), "lease must be"),
    ("ok", "pb://h:1", True, "lease must be"),
    ("ok", "pb://h:1", "60", "lease must be"),
])
def test_garbage_registrations_are_refused_with_the_reason(name, address, lease, message):
    with pytest.raises(RegistryError, match=message):
        Registry().register("svc", name, address, lease=lease)


def test_a_full_registry_says_so():
    registry = Registry(max_entries=2)
    registry.register("a", "one", "pb://h:1")
    registry.register("a", "two", "pb://h:2")
    with pytest.raises(RegistryError, match="full"):
        registry.register("a", "three", "pb://h:3")


async def test_register_and_look_up_over_pb(tmp_path):
    application = Application("test", data_dir=tmp_path)
    options = plugin_parser(registry_plugin).parse_args(
        ["--port", "0", "--user", "server:pw1", "--user", "client:pw2"])
    service = registry_plugin.build(options, application)
    application.add(service)
    await application.start()
    try:
        port = service.port
        async with broker.login("127.0.0.1", port, "server", "pw1", service="registry") as srv:
            assert await srv.call_remote("register", "billing", "pb://127.0.0.1:9000",
                                         lease=30) == 30
            async with broker.login("127.0.0.1", port, "client", "pw2",
                                    service="registry") as cli:
                found = await cli.call_remote("lookup", "billing")
                assert found["address"] == "pb://127.0.0.1:9000" and found["owner"] == "server"
                assert await cli.call_remote("lookup", "nothing") is None
                with pytest.raises(broker.RemoteError, match="registered by another account"):
                    await cli.call_remote("register", "billing", "pb://6.6.6.6:1")
                with pytest.raises(broker.RemoteError, match="a name is"):
                    await cli.call_remote("lookup", "no spaces please")
                assert await cli.call_remote("list") == ["billing"]
        # The server's session ended: its names went with it.
        async with broker.login("127.0.0.1", port, "client", "pw2", service="registry") as cli:
            assert await cli.call_remote("lookup", "billing") is None
    finally:
        await application.stop(grace=2)


def test_pb_run_registry_and_pb_call_lookup(tmp_path, pb_child):
    child = pb_child("run", "--data-dir", str(tmp_path / "data"), "registry", "--port", "0",
                     "--user", "svc:pw")
    port = int(child.wait_for("stdout", r"^registry: pb://127\.0\.0\.1:(\d+)$")[1])
    env = pb_env(PB_PASSWORD="pw")
    common = (f"127.0.0.1:{port}", "--user", "svc", "--service", "registry")
    missing = pb("call", *common, "lookup", '"billing"', cwd=tmp_path, env=env)
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout.strip() == "null"
    # Registered and looked up in one session would need two calls; the
    # registry keeps names only while their owner is logged in by default,
    # so the lookup goes through a run with --keep-on-logout below.
    code, _, err = child.stop()
    assert code == 0, err
    child = pb_child("run", "--data-dir", str(tmp_path / "data"), "registry", "--port", "0",
                     "--keep-on-logout")
    port = int(child.wait_for("stdout", r"^registry: pb://127\.0\.0\.1:(\d+)$")[1])
    common = (f"127.0.0.1:{port}", "--user", "svc", "--service", "registry")
    registered = pb("call", *common, "register", '"billing"', '"pb://127.0.0.1:9000"',
                    "--kw", "lease=60", cwd=tmp_path, env=env)
    assert registered.returncode == 0, registered.stderr
    found = pb("call", *common, "lookup", '"billing"', cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["address"] == "pb://127.0.0.1:9000"
    bad = pb("call", *common, "register", '"x y"', '"pb://h:1"', cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "a name is" in bad.stderr
    code, _, err = child.stop()
    assert code == 0, err
