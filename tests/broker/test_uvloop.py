import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import uvloop
    import broker

    class Echo(broker.Root):
        def remote_echo(self, value):
            return value

        async def remote_later(self, value):
            await asyncio.sleep(0.01)
            return value

    async def main(path):
        async with await broker.serve(Echo(), "127.0.0.1", 0) as server:
            async with await broker.connect("127.0.0.1", server.port) as conn:
                root = await conn.root()
                assert await root.call_remote("echo", b"x" * 1_000_000) == b"x" * 1_000_000
                results = await asyncio.gather(*[root.call_remote("later", i) for i in range(100)])
                assert results == list(range(100))
        async with await broker.serve(Echo(), path=path) as server:
            async with await broker.connect(path=path) as conn:
                root = await conn.root()
                assert await root.call_remote("echo", "unix") == "unix"
        print("uvloop ok", type(asyncio.get_running_loop()).__module__)

    uvloop.run(main(sys.argv[1]))
""")


def test_the_broker_runs_on_uvloop(tmp_path):
    pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    out = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT,
                          str(tmp_path / "u.sock")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "uvloop ok uvloop" in out.stdout
    assert out.stderr == ""
