"""SIGTERM to a running `pb run` lets a PB call in progress finish."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap

import broker

PLUGIN = textwrap.dedent('''
    import asyncio
    import broker
    import services


    class Slow(broker.Root):
        async def remote_slow(self, seconds, value):
            await asyncio.sleep(seconds)
            return value


    class SlowService(services.Service):
        def __init__(self, name):
            super().__init__(name)
            self.server = None

        async def on_start(self):
            self.server = await broker.serve(Slow(), "127.0.0.1", 0)

        async def on_stop(self):
            await self.server.shutdown(grace=self.grace_remaining() or 10)

        def banner(self):
            return f"slow: 127.0.0.1:{self.server.port}"


    class SlowPlugin(services.ServicePlugin):
        name = "slow"
        description = "a PB root with a slow method (tests)"

        def add_arguments(self, parser):
            pass

        def build(self, options, application):
            return SlowService("slow")


    plugin = SlowPlugin()
''')


async def test_sigterm_with_a_call_in_flight_lets_it_finish_and_exits_0(tmp_path):
    (tmp_path / "slowplugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PYTHONWARNINGS="error::ResourceWarning")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients._cli", "run", "--plugin-module", "slowplugin:plugin",
         "--data-dir", str(tmp_path / "data"), "slow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        match = re.match(r"slow: 127\.0\.0\.1:(\d+)", line)
        assert match, line
        conn = await broker.connect("127.0.0.1", int(match[1]))
        root = await conn.root()
        call = root.call_remote("slow", 0.5, "finished")
        await asyncio.sleep(0.15)  # the call is running on the server
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(call, 10) == "finished"
        reason = await asyncio.wait_for(conn.wait_closed(), 10)
        assert "shutting down" in reason
        code = await asyncio.to_thread(proc.wait, 15)
        stderr = proc.stderr.read()
        assert code == 0, stderr
        for bad in ("Task was destroyed", "ResourceWarning", "unclosed", "Traceback"):
            assert bad not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
