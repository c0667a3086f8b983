"""A refused login tells the operator why, and the client nothing (issue 16):
an unknown account, a wrong password and a missing keyring entry each get
their own log message; the client sees the one identical refusal."""

from __future__ import annotations

import logging

import pytest

import broker
import cred


class Svc(cred.Service):
    def create_perspective(self, name):
        return broker.Perspective()


@pytest.mark.parametrize("user, password, service, reason", [
    ("nobody", "pw", "a", "no such account"),
    ("alice", "wrong", "a", "wrong password"),
    ("alice", "pw", "b", "not on the keyring"),
])
async def test_each_refusal_is_logged_with_its_reason(caplog, user, password, service, reason):
    caplog.set_level(logging.INFO, logger="cred.portal")
    checker = cred.InMemoryChecker({"alice": "pw"}, keyring={"alice": [("a", None)]})
    portal = cred.Portal(cred.ServiceRealm(Svc("a"), Svc("b")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    cred.scram.clear_client_key_cache()
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized) as over_pb:
            await broker.login("127.0.0.1", server.port, user, password, service=service)
    with pytest.raises(cred.Unauthorized) as in_process:
        await portal.login(cred.UsernamePassword(user, password), None, service=service)
    assert str(over_pb.value) == str(in_process.value) == cred.LOGIN_FAILED
    failures = [r for r in caplog.records if r.msg == "login refused"]
    assert len(failures) == 2, [r.getMessage() for r in caplog.records]
    for record in failures:
        assert record.fields["reason"] == reason and record.fields["account"] == user
    assert failures[0].fields["source"] == "127.0.0.1"
    if reason == "not on the keyring":
        assert all(record.fields["key"] == "b:alice" for record in failures)


async def test_the_refusal_line_is_the_one_docs_running_md_shows(caplog):
    # docs/running.md, "Logging": login refused account=bob source=127.0.0.1 reason="wrong password"
    caplog.set_level(logging.INFO, logger="cred.portal")
    checker = cred.InMemoryChecker({"bob": "pw"}, keyring={"bob": [("a", None)]})
    portal = cred.Portal(cred.ServiceRealm(Svc("a")), [checker],
                         throttle=cred.Throttle(base_delay=0))
    async with await broker.serve(portal, "127.0.0.1", 0) as server:
        with pytest.raises(broker.Unauthorized):
            await broker.login("127.0.0.1", server.port, "bob", "nope", service="a",
                               cache=cred.ClientCache())
    (line,) = [r.getMessage() for r in caplog.records if r.msg == "login refused"]
    assert line.startswith('login refused account=bob source=127.0.0.1 reason="wrong password"'), line
