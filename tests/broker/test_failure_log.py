"""A remote method that raises is logged on the server (issue 16), with its
traceback, the method, the object and the peer; expected errors are not,
and one connection cannot flood the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

import broker
import jelly
from broker import _failures


@jelly.register_copy("tests.broker.failure_log.OutOfStock")
class OutOfStock(jelly.Copyable, jelly.RemoteCopy, Exception):
    copy_tag = "tests.broker.failure_log.OutOfStock"


class Shop(broker.Root):
    def remote_crash(self, n):
        return {}["missing"] if n else 1

    async def remote_crash_later(self):
        await asyncio.sleep(0)
        raise RuntimeError("the database went away")

    def remote_one_way(self):
        raise ValueError("nobody waits for this one")

    def remote_out_of_stock(self):
        raise OutOfStock("no more apples")

    @broker.expected_errors(KeyError, ValueError)
    def remote_price(self, item):
        raise KeyError(item)

    async def remote_slow(self):
        await asyncio.sleep(10)


def crashes(caplog):
    return [r for r in caplog.records if r.name == "broker.calls"]


@pytest.fixture
async def shop(caplog):
    caplog.set_level(logging.ERROR, logger="broker.calls")
    async with await broker.serve(Shop(), "127.0.0.1", 0) as server:
        async with await broker.connect("127.0.0.1", server.port) as conn:
            yield await conn.root()


async def test_a_method_that_raises_is_logged_with_its_traceback_and_the_caller(shop, caplog):
    with pytest.raises(broker.RemoteError) as raised:
        await shop.call_remote("crash", 1)
    assert raised.value.remote_traceback is None  # it stays on the server...
    (record,) = crashes(caplog)  # ...which logs it
    assert record.msg == "remote method raised"
    assert record.fields["method"] == "Shop.remote_crash"
    assert (record.fields["error"], record.fields["message"]) == ("KeyError", "'missing'")
    assert "127.0.0.1" in record.fields["peer"]
    # Fields print in the one format every layer uses, whatever the formatter.
    assert record.getMessage().startswith(
        "remote method raised method=Shop.remote_crash error=KeyError message='missing' peer=")
    assert record.exc_info and record.exc_info[0] is KeyError
    assert "remote_crash" in caplog.text and 'return {}["missing"]' in caplog.text


async def test_async_and_one_way_failures_are_logged_too(shop, caplog):
    with pytest.raises(broker.RemoteError, match="database went away"):
        await shop.call_remote("crash_later")
    shop.call_remote_only("one_way")
    assert await shop.call_remote("crash", 0) == 1  # after the one-way call
    fields = [r.fields for r in crashes(caplog)]
    assert len(fields) == 2, fields
    assert (fields[0]["method"], fields[0]["error"]) == ("Shop.remote_crash_later", "RuntimeError")
    assert (fields[1]["method"], fields[1]["error"]) == ("Shop.remote_one_way", "ValueError")


async def test_expected_errors_are_not_logged_as_crashes(shop, caplog):
    with pytest.raises(OutOfStock):
        await shop.call_remote("out_of_stock")
    with pytest.raises(broker.RemoteError, match="apple"):
        await shop.call_remote("price", "apple")
    with pytest.raises(broker.NoSuchMethod):
        await shop.call_remote("no_such_thing")
    with pytest.raises(broker.CallTimeout):
        await shop.call_remote("slow", timeout=0.05)  # cancelled remotely
    await asyncio.sleep(0.1)
    assert crashes(caplog) == []


async def test_one_connection_cannot_flood_the_log(shop, caplog, monkeypatch):
    for _ in range(100):
        with pytest.raises(broker.RemoteError):
            await shop.call_remote("crash", 1)
    assert len(crashes(caplog)) == _failures.BURST
    monkeypatch.setattr(_failures, "REFILL", 0.01)
    await asyncio.sleep(0.05)
    with pytest.raises(broker.RemoteError):
        await shop.call_remote("crash", 1)
    last = crashes(caplog)[-1]
    assert last.fields["unlogged"] == 100 - _failures.BURST
    assert f"unlogged={100 - _failures.BURST}" in last.getMessage()


def test_expected_errors_takes_exception_classes():
    with pytest.raises(TypeError, match="exception classes"):
        broker.expected_errors("KeyError")
