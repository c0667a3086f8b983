"""The complete example in docs/plugins.md works as written."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from pathlib import Path

from services import Application, PluginRegistry, plugin_parser

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def load_example(name: str = "shout") -> types.ModuleType:
    text = GUIDE.read_text()
    source = re.search(rf"```python\n(\"\"\"{name}:.*?)```", text, re.S)[1]
    module = types.ModuleType(f"{name}_guide_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, str(GUIDE), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


async def test_the_guide_example_serves_says_goodbye_and_stops(tmp_path):
    example = load_example()
    registry = PluginRegistry(lambda: [])
    plugin = registry.register(example.plugin)
    options = plugin_parser(plugin).parse_args(["--port", "0"])
    application = Application("guide", data_dir=tmp_path)
    application.add(plugin.build(options, application))
    await application.start()
    service = application.get("shout")
    assert service.banner() == f"shout listening on 127.0.0.1:{service.port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"hello\n")
    assert await reader.readline() == b"HELLO\n"
    await application.stop(grace=2)
    assert await reader.readline() == b"GOODBYE\n"
    assert await reader.readline() == b""
    writer.close()
    await writer.wait_closed()


async def test_the_pb_example_serves_its_own_service_to_store_accounts(tmp_path):
    import broker
    import cred
    from services import account_portal, ensure_account

    example = load_example("counter")
    registry = PluginRegistry(lambda: [])
    plugin = registry.register(example.plugin)
    application = Application("guide", data_dir=tmp_path)
    application.add(plugin.build(plugin_parser(plugin).parse_args(["--port", "0"]),
                                 application))
    service = application.get("counter")
    await application.start()
    try:
        await ensure_account(service.store, "alice", "pw", [("counter", None)])
        assert service.banner() == f"counter: pb://127.0.0.1:{service.port}"
        async with broker.login("127.0.0.1", service.port, "alice", "pw",
                                service="counter") as me:
            assert await me.call_remote("add", 5) == 5
            assert await me.call_remote("add") == 6
        # Bound to its own service: another of the portal's is refused here.
        class Other(cred.Service):
            def create_perspective(self, name):
                return broker.Perspective()

        portal = account_portal(application)
        portal.realm.add_service(Other("other"))
        await ensure_account(service.store, "bob", "pw", [("other", None)])
        fine = await portal.login(cred.UsernamePassword("bob", "pw"), None, service="other")
        fine.logout()  # bob may use "other"; just not through the counter's port
        try:
            await broker.login("127.0.0.1", service.port, "bob", "pw", service="other")
        except broker.Unauthorized:
            pass
        else:
            raise AssertionError("a login to another service got through the counter's port")
    finally:
        await application.stop(grace=2)
    assert "counter" not in account_portal(application).realm.services


def test_a_portal_service_without_what_stop_serving_needs_fails_when_built(tmp_path):
    import pytest

    import cred
    from services import PortalService, account_portal

    application = Application("guide", data_dir=tmp_path)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'realm_service'"):
        PortalService("x", portal=account_portal(application))
    with pytest.raises(TypeError, match="realm_service must be a cred.Service with a name"):
        PortalService("x", portal=account_portal(application), realm_service=object())
    bare = cred.Portal(cred.ServiceRealm(), [])
    with pytest.raises(TypeError, match="no cred.StoreChecker"):
        PortalService("x", portal=bare, realm_service=cred.Service("x"))
