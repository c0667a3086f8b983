"""The complete example in docs/plugins.md works as written."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from pathlib import Path

from services import Application, PluginRegistry, plugin_parser

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def load_example() -> types.ModuleType:
    text = GUIDE.read_text()
    source = re.search(r"```python\n(\"\"\"shout:.*?)```", text, re.S)[1]
    module = types.ModuleType("shout_guide_example")
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
