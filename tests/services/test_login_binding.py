"""Logins are bound to the listener they arrive on (security issue 13.1).

The demo's echo and manhole share one portal; before the fix, logging in
to the ``manhole`` service through the echo port opened an admin console.
Every combination of port, service and login form is tried over real
sockets, in process and with ``pb run -c app.toml`` binding echo to all
addresses.
"""

from __future__ import annotations

import logging
import re
import socket
import sys

import pytest

import broker
import cred
from services import Application

from tests._child import OutputChild

from .test_demo import build_demo
from .test_echo import pb, pb_env

LOGIN_FORMS = ("two-trip", "one-trip", "anonymous")


async def _login(form: str, port: int, password: str, service: str):
    if form == "anonymous":
        return await broker.login_anonymous("127.0.0.1", port, service=service)
    if form == "two-trip":
        cred.scram.clear_client_key_cache()
    return await broker.login("127.0.0.1", port, "admin", password, service=service)


@pytest.fixture
async def demo(tmp_path):
    application = Application("pb", data_dir=tmp_path / "data")
    service = build_demo(application, "--port", "0", "--manhole-port", "0")
    await application.start()
    try:
        yield service
    finally:
        await application.stop(grace=5)


async def test_each_port_reaches_only_its_own_service_in_every_login_form(demo, caplog):
    caplog.set_level(logging.INFO, logger="cred.portal")
    ports = {"pbecho": demo.echo.port, "manhole": demo.manhole.port}
    for own, port in ports.items():
        # A good login first, so that the client holds a ticket for this
        # port and the one-trip form is really one trip.
        mine = await broker.login("127.0.0.1", port, "admin", demo.password, service=own)
        await mine.connection.close()
        for other in ports:
            if other == own:
                continue
            for form in LOGIN_FORMS:
                caplog.clear()
                with pytest.raises(broker.Unauthorized) as refused:
                    await _login(form, port, demo.password, other)
                # The same words as a wrong password: nothing tells the
                # client that the service exists elsewhere.
                assert str(refused.value) == cred.LOGIN_FAILED, (own, other, form)
                assert f'reason="service not offered on this listener" service={other}' in caplog.text, \
                    (own, other, form)
        # And the listener still lets its own service in, both ways.
        for form in ("two-trip", "one-trip"):
            mine = await _login(form, port, demo.password, own)
            await mine.connection.close()


async def test_a_login_that_names_no_service_gets_only_its_listeners_service(demo):
    # admin may use both services; each port offers one, so a login that
    # names none can only mean that one (issue 16: no hidden default).
    for own, port in (("pbecho", demo.echo.port), ("manhole", demo.manhole.port)):
        me = await broker.login("127.0.0.1", port, "admin", demo.password, service=None,
                                cache=cred.ClientCache())
        try:
            sessions = demo.echo.sessions if own == "pbecho" else demo.manhole.sessions
            assert sessions
        finally:
            await me.connection.close()


async def test_an_anonymous_login_that_names_no_service_is_refused_on_a_bound_listener(demo):
    for port in (demo.echo.port, demo.manhole.port):
        with pytest.raises(broker.Unauthorized):
            await broker.login_anonymous("127.0.0.1", port, service=None)


async def test_the_manhole_over_the_echo_port_gets_no_console(demo):
    # What the attack did: the manhole's own perspective method through echo.
    cred.scram.clear_client_key_cache()
    with pytest.raises(broker.Unauthorized):
        await broker.login("127.0.0.1", demo.echo.port, "admin", demo.password,
                           service="manhole")
    assert not demo.manhole.sessions


def test_pb_manhole_through_a_public_echo_port_is_refused(tmp_path):
    """A TOML application with echo on all addresses (what a server reachable
    from other machines is configured with) and the manhole on loopback:
    ``pb manhole`` through the echo port gets the one refusal, through the
    manhole's own port it gets a console."""
    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    echo_port, manhole_port = free_port(), free_port()
    env = pb_env(PB_DATA_DIR=str(tmp_path / "data"))
    for service in ("pbecho", "manhole"):
        registered = pb("user", "add-service", service, cwd=tmp_path, env=env)
        assert registered.returncode == 0, registered.stderr
    added = pb("user", "add", "admin", "--service", "pbecho:admin", "--service", "manhole:admin",
               cwd=tmp_path, input="s3cret-pw\n", env=env)
    assert added.returncode == 0, added.stderr
    config = tmp_path / "app.toml"
    config.write_text(f"""
[application]
data_dir = "{tmp_path / 'data'}"

[[service]]
plugin = "echo"
host = "0.0.0.0"
port = {echo_port}

[[service]]
plugin = "manhole"
port = {manhole_port}
""")
    child = OutputChild([sys.executable, "-W", "error::ResourceWarning", "-m", "clients._cli",
                         "run", "-c", str(config)], cwd=tmp_path, env=env)
    try:
        child.wait_for("stderr", r"pb.run: started services=")
        through_echo = pb("manhole", f"127.0.0.1:{echo_port}", "--user", "admin",
                          "--password-stdin", "-c", "1 + 1", cwd=tmp_path,
                          input="s3cret-pw\n", env=env)
        assert through_echo.returncode != 0
        assert "2" not in through_echo.stdout
        assert cred.LOGIN_FAILED in through_echo.stderr
        through_manhole = pb("manhole", f"127.0.0.1:{manhole_port}", "--user", "admin",
                             "--password-stdin", "-c", "1 + 1", cwd=tmp_path,
                             input="s3cret-pw\n", env=env)
        assert through_manhole.returncode == 0, through_manhole.stderr
        assert through_manhole.stdout.strip() == "2"
        echo_call = pb("call", f"127.0.0.1:{echo_port}", "--user", "admin", "--service",
                       "pbecho", "--password-stdin", "echo", '"hi"', cwd=tmp_path,
                       input="s3cret-pw\n", env=env)
        assert echo_call.returncode == 0, echo_call.stderr
        assert echo_call.stdout.strip() == '"hi"'
        manhole_via_call = pb("call", f"127.0.0.1:{echo_port}", "--user", "admin", "--service",
                              "manhole", "--password-stdin", "run", '"1+1"', cwd=tmp_path,
                              input="s3cret-pw\n", env=env)
        assert manhole_via_call.returncode != 0
        code, _, stderr = child.stop()
    finally:
        child.close()
    assert code == 0, stderr
    assert re.search(r'reason="service not offered on this listener" service=manhole', stderr), stderr


async def test_serve_checks_its_services_argument():
    portal = cred.Portal(cred.ServiceRealm(), [])
    with pytest.raises(TypeError, match="services={'pbecho'}"):
        await broker.serve(portal, "127.0.0.1", 0, services="pbecho")
    with pytest.raises(TypeError, match="non-empty strings"):
        await broker.serve(portal, "127.0.0.1", 0, services=["pbecho", ""])
    with pytest.raises(TypeError, match="needs a cred.Portal"):
        await broker.serve(broker.Root(), "127.0.0.1", 0, services={"pbecho"})


async def test_a_portal_login_in_process_honours_offered():
    checker = cred.InMemoryChecker({"alice": "pw"},
                                   keyring={"alice": [("a", None), ("b", None)]})

    class Svc(cred.Service):
        def create_perspective(self, name):
            return broker.Perspective()

    portal = cred.Portal(cred.ServiceRealm(Svc("a"), Svc("b")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    ok = await portal.login(cred.UsernamePassword("alice", "pw"), None, service="a",
                            offered={"a"})
    ok.logout()
    with pytest.raises(cred.Unauthorized):
        await portal.login(cred.UsernamePassword("alice", "pw"), None, service="b",
                           offered={"a"})
