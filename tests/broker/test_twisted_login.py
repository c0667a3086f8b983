"""Twisted PB's login against our portal, with real Twisted clients in subprocesses."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest

import broker
import cred
from cred.twisted_secret import TwistedSecretChecker, set_twisted_secret

pytest.importorskip("twisted.spread.pb", reason="Twisted is not installed (the test extra "
                    "pulls it in): the Twisted-dialect interop tests need a real Twisted peer")

from tests._child import OutputChild  # noqa: E402
from tests.services.test_echo import pb, pb_env  # noqa: E402

from .test_twisted_dialect import run_peer  # noqa: E402

PEERS = Path(__file__).parent / "twisted_peers"


class Avatar(broker.Perspective):
    def __init__(self, name, events):
        self.name = name
        self.events = events

    def attached(self, mind):
        self.mind = mind
        self.events.append(("attached", self.name))

    def detached(self, mind):
        self.events.append(("detached", self.name))

    def perspective_whoami(self):
        return self.name

    async def perspective_call_mind(self, value):
        return await self.mind.call_remote("double", value)


class EchoRealm(cred.Service):
    def __init__(self, events):
        super().__init__("pbecho", allow_anonymous=True)
        self.events = events

    def create_perspective(self, name):
        return Avatar(name, self.events)

    def get_anonymous_perspective(self, name):
        return Avatar("anonymous", self.events)


async def wait_for(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_twisted_client_logs_in_with_a_mind_and_attached_detached_run_once(tmp_path):
    events = []
    store = cred.AccountStore(tmp_path / "accounts.sqlite3", create=True)
    store.add_service("pbecho")
    store.add_user("alice", "wonderland", keyring=[("pbecho", None)], iterations=4096)
    set_twisted_secret(store, "alice", "wonderland")
    store.add_user("bob", "builder", keyring=[("pbecho", None)], iterations=4096)  # SCRAM only
    portal = cred.Portal(cred.ServiceRealm(EchoRealm(events)),
                         [cred.StoreChecker(store), TwistedSecretChecker(store),
                          cred.AllowAnonymous()],
                         throttle=cred.Throttle(base_delay=0))
    server = await broker.serve(portal, "127.0.0.1", 0, services={"pbecho"}, dialect="twisted")
    async with server:
        port = str(server.port)
        assert json.loads(await run_peer(PEERS / "login_client.py", port, "alice",
                                         "wonderland")) == ["ok", "alice", 42]
        await wait_for(lambda: ("detached", "alice") in events)
        assert events == [("attached", "alice"), ("detached", "alice")]

        wrong = json.loads(await run_peer(PEERS / "login_client.py", port, "alice", "nope"))
        assert wrong[0] == "refused"
        scram_only = json.loads(await run_peer(PEERS / "login_client.py", port, "bob", "builder"))
        assert scram_only[0] == "refused"

        anonymous = json.loads(await run_peer(PEERS / "login_client.py", port, "-", "-"))
        assert anonymous == ["ok", "anonymous", 42]
        await wait_for(lambda: ("detached", "anonymous") in events)
    assert events.count(("attached", "alice")) == events.count(("detached", "alice")) == 1
    assert ("attached", "bob") not in events
    store.close()


async def test_our_client_logs_in_to_our_twisted_dialect_portal(tmp_path):
    events = []
    portal = cred.Portal(cred.ServiceRealm(EchoRealm(events)),
                         [TwistedSecretChecker({"carol": "pw"}), cred.InMemoryChecker(
                             {"carol": "pw"}, keyring={"carol": [("pbecho", None)]})],
                         throttle=cred.Throttle(base_delay=0))
    server = await broker.serve(portal, "127.0.0.1", 0, services={"pbecho"}, dialect="twisted")
    async with server:
        class Mind(broker.Referenceable):
            def remote_double(self, x):
                return x * 2

        me = await broker.login("127.0.0.1", server.port, "carol", "pw", mind=Mind(),
                                dialect="twisted")
        async with me:
            assert await me.call_remote("whoami") == "carol"
            assert await me.call_remote("call_mind", 4) == 8
        with pytest.raises(broker.RemoteError):
            await broker.login("127.0.0.1", server.port, "carol", "bad", dialect="twisted")
        await wait_for(lambda: ("detached", "carol") in events)
    assert events == [("attached", "carol"), ("detached", "carol")]


PBECHO_CLIENT = '''
from twisted.spread import pb
from twisted.internet import reactor
from twisted.cred.credentials import UsernamePassword


class DefinedError(pb.Error):
    pass


def success(message):
    print("Message received:", message, flush=True)


def failure(error):
    t = error.trap(DefinedError)
    print("error received:", t, flush=True)
    reactor.stop()


def connected(perspective):
    perspective.callRemote("echo", "hello world").addCallbacks(success, failure)
    print("connected.", flush=True)


factory = pb.PBClientFactory()
reactor.connectTCP("localhost", PORT, factory)
factory.login(UsernamePassword(b"guest", b"guest")).addCallbacks(connected, failure)
reactor.run()
'''


def test_the_pbecho_example_client_talks_to_pb_run_echo_dialect_twisted(tmp_path):
    """Twisted's pbechoclient.py (its login with bytes credentials, as
    Python 3 Twisted needs, and our port instead of pb.portno) against
    ``pb run echo --dialect twisted``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = pb_env(PB_DATA_DIR=str(tmp_path / "data"))
    assert pb("user", "add-service", "pbecho", cwd=tmp_path, env=env).returncode == 0
    added = pb("user", "add", "guest", "--service", "pbecho", "--twisted-secret",
               cwd=tmp_path, input="guest\n", env=env)
    assert added.returncode == 0, added.stderr
    assert "weaker" in added.stdout
    child = OutputChild([sys.executable, "-m", "clients._cli", "run", "echo", "--port", str(port),
                         "--dialect", "twisted"], cwd=tmp_path, env=env)
    client = None
    try:
        child.wait_for("stderr", r"pb.run: started services=")
        script = tmp_path / "pbechoclient.py"
        script.write_text(PBECHO_CLIENT.replace("PORT", str(port)))
        client = OutputChild([sys.executable, str(script)], cwd=tmp_path, env=env)
        client.wait_for("stdout", r"Message received: hello world")
    finally:
        if client is not None:
            client.stop()
            client.close()
        child.stop()
        child.close()


def test_a_config_file_listener_takes_dialect_twisted(tmp_path):
    from services import load_config

    path = tmp_path / "app.toml"
    path.write_text('[[service]]\nplugin = "echo"\nport = 8787\ndialect = "twisted"\n')
    (spec,) = load_config(path).services
    assert spec.options.dialect == "twisted"
    path.write_text('[[service]]\nplugin = "echo"\ndialect = "foolscap"\n')
    with pytest.raises(Exception, match="dialect"):
        load_config(path)
