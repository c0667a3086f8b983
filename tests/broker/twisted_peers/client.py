"""A real Twisted PB client, run as a subprocess against our server.

Usage: python client.py PORT, or python client.py UNIX_PATH (through
``reactor.connectUNIX``).  Prints one JSON object: check name -> result.
"""

import gc
import json
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import pb

results = {}


class Point(pb.Copyable, pb.RemoteCopy):
    def getTypeToCopy(self):
        return b"tests.Point"


pb.setUnjellyableForClass("tests.Point", Point)


class Board(pb.RemoteCache):
    def setCopyableState(self, state):
        self.items = list(state["items"])

    def observe_add(self, item):
        self.items.append(item)


pb.setUnjellyableForClass("tests.Board", Board)


class Evil(pb.Copyable):
    def getTypeToCopy(self):
        return b"evilmodule.Thing"


class Callback(pb.Referenceable):
    def remote_double(self, x):
        return x * 2


VALUES = [None, True, False, 0, 1, -1, 2**31, -(2**31) - 5, 2**100, -(2**90), 1.5, -0.25,
          b"bytes", b"None", "text \u00fc", "", [], [1, [2, [3]]], (1, 2, "t"), (),
          {"a": 1, "b": [True]}, {(1, 2): "tuple key"}, {1, 2, 3}, frozenset({"x"})]


@defer.inlineCallbacks
def main(reactor, where):
    factory = pb.PBClientFactory()
    if where.isdigit():
        reactor.connectTCP("127.0.0.1", int(where), factory)
    else:
        reactor.connectUNIX(where, factory)
    root = yield factory.getRootObject()

    mismatches = []
    for value in VALUES:
        got = yield root.callRemote("echo", value)
        if got != value or type(got) is not type(value):
            mismatches.append(repr((value, got)))
    results["echo"] = mismatches
    kw = yield root.callRemote("kwargs", 1, two="2")
    results["kwargs"] = kw == [1, "2"]

    shared = [1]
    got = yield root.callRemote("echo", [shared, shared])
    results["shared"] = got[0] is got[1] and got == [[1], [1]]
    cyclic = [1]
    cyclic.append(cyclic)
    got = yield root.callRemote("echo", cyclic)
    results["cyclic"] = got[1] is got

    counter = yield root.callRemote("make_counter")
    yield counter.callRemote("increment")
    n = yield counter.callRemote("increment")
    results["reference"] = n == 2
    results["back_home"] = yield root.callRemote("is_counter", counter)
    again = yield root.callRemote("make_counter")  # the same object, sent again
    results["same_object"] = (yield again.callRemote("increment")) == 3

    results["callback"] = yield root.callRemote("call_back", Callback(), 21)

    p = Point()
    p.x, p.y = 1, 2
    moved = yield root.callRemote("move", p)
    results["copy"] = isinstance(moved, Point) and (moved.x, moved.y) == (2, 3)

    board = yield root.callRemote("board")
    yield root.callRemote("add", "first")
    yield root.callRemote("add", "second")
    results["cache"] = board.items

    try:
        yield root.callRemote("fail", "boom")
        results["error"] = "no error"
    except Exception as exc:
        results["error"] = [type(exc).__name__, str(exc)]
    d = root.callRemote("fail", "boom")
    (failure,) = yield d.addErrback(lambda f: [f])
    results["failure_check"] = bool(failure.check(ValueError))
    results["failure_value"] = failure.value

    try:
        yield root.callRemote("nothing")
        results["no_such_method"] = "no error"
    except Exception as exc:
        results["no_such_method"] = str(exc)

    temp = yield root.callRemote("make_temp")
    yield temp.callRemote("ping")
    del temp
    gc.collect()
    results["decref"] = yield root.callRemote("temp_gone")

    (failure,) = yield root.callRemote("echo", Evil()).addCallbacks(
        lambda _: ["accepted"], lambda f: [f])
    results["insecure"] = [failure.type.decode(), failure.value]

    print(json.dumps(results), flush=True)
    factory.disconnect()


task.react(main, [sys.argv[1]])
