import asyncio
import gc
import subprocess
import sys
import textwrap

import pytest

import broker
import cred
from broker import Perspective, Referenceable, Viewable


class EchoPerspective(Perspective):
    def __init__(self, name):
        self.name = name
        self.attached_minds = []
        self.detached_minds = []

    def perspective_echo(self, text):
        return text

    def perspective_whoami(self):
        return self.name

    def perspective_board(self):
        return BOARD

    def remote_hidden(self):
        return "must not be reachable"

    def attached(self, mind):
        self.attached_minds.append(mind)

    def detached(self, mind):
        self.detached_minds.append(mind)


class Board(Viewable):
    def view_who(self, perspective):
        return perspective.name


BOARD = Board()


class EchoService(cred.Service):
    def create_perspective(self, name):
        return EchoPerspective(name)


def make_portal(users=None, iterations=4096, **kw):
    users = users or {"alice": "wonderland", "bob": "builder"}
    keyring = {name: [("pbecho", name)] for name in users}
    checker = cred.InMemoryChecker(users, keyring=keyring, iterations=iterations)
    service = EchoService("pbecho", allow_anonymous=True)
    portal = cred.Portal(cred.ServiceRealm(service, EchoService("other")),
                         [checker, cred.AllowAnonymous()],
                         throttle=kw.pop("throttle", cred.Throttle(base_delay=0)))
    return portal, service


async def test_login_and_perspective_call_over_a_real_socket():
    portal, service = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        avatar = await broker.login("127.0.0.1", server.port, "alice", "wonderland",
                                    service="pbecho")
        assert await avatar.call_remote("echo", "hi") == "hi"
        assert await avatar.call_remote("whoami") == "alice"
        with pytest.raises(broker.NoSuchMethod):
            await avatar.call_remote("hidden")
        await avatar.connection.close()


@pytest.mark.parametrize("username,password,service,perspective", [
    ("alice", "wrong", "pbecho", None),          # wrong password
    ("nobody", "wonderland", "pbecho", None),     # unknown user
    ("alice", "wonderland", "nosuch", None),      # unknown service
    ("alice", "wonderland", "pbecho", "bob"),     # perspective not on the keyring
    ("alice", "wonderland", "other", None),       # service not on the keyring
])
async def test_every_login_failure_is_unauthorized_with_the_same_message(
        username, password, service, perspective):
    portal, _ = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized) as info:
            await broker.login("127.0.0.1", server.port, username, password,
                               service=service, perspective=perspective)
        assert str(info.value) == cred.LOGIN_FAILED


async def test_a_replayed_client_proof_fails():
    portal, _ = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    client = cred.ScramClient("alice", "wonderland")
    root = await conn.root()
    challenger, server_first = await root.call_remote("login", client.first())
    final = client.final(server_first)
    server_final, avatar, ticket = await challenger.call_remote("respond", final, "pbecho")
    client.verify(server_final)
    with pytest.raises(broker.RemoteError, match="Unauthorized"):
        await challenger.call_remote("respond", final, "pbecho")
    await conn.close()


async def test_the_client_refuses_a_server_that_cannot_prove_the_verifier():
    class Impostor(broker.Root):
        """Knows nothing about alice but plays along."""

        def remote_login(self, client_first):
            nonce = client_first.split("r=")[1]
            return Fake(), f"r={nonce}server,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096"

    class Fake(Referenceable):
        def remote_respond(self, client_final, service, perspective, mind):
            return "v=" + "A" * 43 + "=", Referenceable()

    async with await broker.serve(Impostor(), "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized, match="impostor"):
            await broker.login("127.0.0.1", server.port, "alice", "wonderland")


async def test_the_client_refuses_absurd_iteration_counts():
    class Greedy(broker.Root):
        def remote_login(self, client_first):
            nonce = client_first.split("r=")[1]
            return Referenceable(), f"r={nonce}x,s=c2FsdA==,i=2000000000"

    async with await broker.serve(Greedy(), "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized, match="challenge was refused"):
            await broker.login("127.0.0.1", server.port, "alice", "wonderland")


async def test_anonymous_login_where_the_service_allows_it():
    portal, _ = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        avatar = await broker.login_anonymous("127.0.0.1", server.port, service="pbecho")
        assert await avatar.call_remote("whoami") == "anonymous"
        await avatar.connection.close()
        with pytest.raises(broker.Unauthorized):
            await broker.login_anonymous("127.0.0.1", server.port, service="other")


async def test_mind_is_attached_and_detached_exactly_once_on_release():
    portal, service = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    mind = Referenceable()
    avatar = await conn.login("alice", "wonderland", mind=mind)
    server_avatar = service.perspectives["alice"]
    assert len(server_avatar.attached_minds) == 1
    assert isinstance(server_avatar.attached_minds[0], broker.RemoteReference)
    await avatar.release()
    for _ in range(100):
        if server_avatar.detached_minds:
            break
        await asyncio.sleep(0.01)
    await conn.close()
    await asyncio.sleep(0.05)
    assert len(server_avatar.detached_minds) == 1


async def test_detached_runs_once_on_connection_loss():
    portal, service = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    avatar = await conn.login("bob", "builder")
    await conn.close()
    await server_conn.wait_closed()
    assert len(service.perspectives["bob"].detached_minds) == 1


async def test_one_connection_may_log_in_twice():
    portal, _ = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    a = await conn.login("alice", "wonderland")
    b = await conn.login("bob", "builder")
    assert await a.call_remote("whoami") == "alice"
    assert await b.call_remote("whoami") == "bob"
    await conn.close()


async def test_a_viewable_sees_the_calling_perspective_for_two_concurrent_users():
    portal, _ = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        alice, bob = await asyncio.gather(
            broker.login("127.0.0.1", server.port, "alice", "wonderland"),
            broker.login("127.0.0.1", server.port, "bob", "builder"))
        board_a = await alice.call_remote("board")
        board_b = await bob.call_remote("board")
        results = await asyncio.gather(*(
            [board_a.call_remote("who") for _ in range(5)] +
            [board_b.call_remote("who") for _ in range(5)]))
        assert results == ["alice"] * 5 + ["bob"] * 5
        await alice.connection.close()
        await bob.connection.close()


async def test_fifty_concurrent_logins_succeed():
    users = {f"user{i}": f"pw{i}" for i in range(50)}
    portal, _ = make_portal(users)
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        avatars = await asyncio.gather(*(
            broker.login("127.0.0.1", server.port, name, pw) for name, pw in users.items()))
        names = await asyncio.gather(*(a.call_remote("whoami") for a in avatars))
        assert sorted(names) == sorted(users)
        for a in avatars:
            await a.connection.close()


async def test_throttling_slows_an_attacked_account_but_not_another():
    portal, _ = make_portal(throttle=cred.Throttle(base_delay=0.2, factor=2, max_delay=1))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        for _ in range(3):
            with pytest.raises(broker.Unauthorized):
                await broker.login("127.0.0.1", server.port, "alice", "bad")
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", server.port, "alice", "bad")
        slowed = loop.time() - start
        start = loop.time()
        # another account, from another source address: not slowed
        avatar = await broker.login("127.0.0.1", server.port, "bob", "builder",
                                    local_addr=("127.0.0.2", 0))
        prompt = loop.time() - start
        await avatar.connection.close()
        assert slowed >= 0.2
        assert prompt < slowed


CLIENT_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import broker

    async def main():
        avatar = await broker.login("127.0.0.1", int(sys.argv[1]), "alice", "wonderland",
                                    mind=broker.Referenceable())
        print("logged in", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_detached_exactly_once_when_the_client_process_is_killed():
    portal, service = make_portal()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(server.port)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "logged in"
            perspective = service.perspectives["alice"]
            assert len(perspective.attached_minds) == 1
            proc.kill()
            for _ in range(200):
                if perspective.detached_minds:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert len(perspective.detached_minds) == 1
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()


async def test_an_error_in_attached_fails_the_login_and_logs_out():
    class Fussy(Perspective):
        def attached(self, mind):
            raise AttributeError("no mind for this")

    logouts = []

    class FussyService(cred.Service):
        def create_perspective(self, name):
            return Fussy()

        def logout(self, perspective_name, avatar, mind):
            logouts.append(perspective_name)

    checker = cred.InMemoryChecker({"carol": "pw"}, keyring={"carol": [("fussy", "carol")]})
    portal = cred.Portal(cred.ServiceRealm(FussyService("fussy")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    server_conn, conn = await broker.testing.connected_pair(portal)
    with pytest.raises(broker.RemoteError, match="no mind for this"):
        await conn.login("carol", "pw", service="fussy")
    assert logouts == ["carol"]
    await conn.close()


async def test_a_login_whose_perspective_cannot_be_sent_is_detached_when_the_connection_closes():
    portal, service = make_portal()
    # The challenger takes the one reference allowed: the perspective cannot follow.
    limits = broker.Limits(max_local_references=1)
    async with await broker.serve(portal, "127.0.0.1", 0, limits=limits) as server:
        conn = await broker.connect("127.0.0.1", server.port)
        with pytest.raises(broker.LimitExceeded, match="max_local_references"):
            await conn.login("alice", "wonderland")
        perspective = service.perspectives["alice"]
        assert len(perspective.attached_minds) == 1
        gc.collect()  # the client drops the challenger: the server holds nothing of it
        (server_conn,) = server.connections
        for _ in range(500):
            if server_conn.local_object_count == 0:
                break
            await asyncio.sleep(0.01)
        assert server_conn.local_object_count == 0
        await conn.close()
        for _ in range(500):
            if perspective.detached_minds:
                break
            await asyncio.sleep(0.01)
        assert len(perspective.detached_minds) == 1


def _raise_cancelled():
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    future.result()  # CancelledError: a BaseException, not an Exception


@pytest.mark.parametrize("hook", ["attached", "detached"])
async def test_a_cancelled_error_in_attached_or_detached_still_logs_out(hook):
    class Touchy(Perspective):
        def attached(self, mind):
            if hook == "attached":
                _raise_cancelled()

        def detached(self, mind):
            _raise_cancelled()

    logouts = []

    class TouchyService(cred.Service):
        def create_perspective(self, name):
            return Touchy()

        def logout(self, perspective_name, avatar, mind):
            logouts.append(perspective_name)

    checker = cred.InMemoryChecker({"carol": "pw"}, keyring={"carol": [("touchy", "carol")]})
    portal = cred.Portal(cred.ServiceRealm(TouchyService("touchy")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    server_conn, conn = await broker.testing.connected_pair(portal)
    if hook == "attached":
        with pytest.raises(broker.CallTimeout):  # the call was cancelled, as it were
            await conn.login("carol", "pw", service="touchy")
    else:
        await conn.login("carol", "pw", service="touchy")
    await conn.close()
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    assert logouts == ["carol"]


async def test_a_malformed_proof_uses_the_challenge_up():
    portal, _ = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    client = cred.ScramClient("alice", "wonderland")
    root = await conn.root()
    challenger, server_first = await root.call_remote("login", client.first())
    with pytest.raises(broker.RemoteError, match="Unauthorized"):
        await challenger.call_remote("respond", 12345, "pbecho")
    final = client.final(server_first)   # a good proof after the garbage: too late
    with pytest.raises(broker.RemoteError, match="Unauthorized"):
        await challenger.call_remote("respond", final, "pbecho")
    await conn.close()


async def test_a_call_after_close_says_the_connection_closed():
    portal, _ = make_portal()
    server_conn, conn = await broker.testing.connected_pair(portal)
    root = await conn.root()
    await conn.close("finished for today")
    with pytest.raises(broker.DeadReference, match="finished for today"):
        await root.call_remote("login", "x")
