"""A real Twisted PB server, run as a subprocess for our client.

Usage: python server.py [UNIX_PATH].  Prints one JSON line with its
ports ({"root": port, "portal": port}, plus "unix" and "unix_portal" paths
when given one: the same root and portal on UNIX sockets) and serves until
killed.  The portal has users alice / "secret" and bob / "builder"; its
avatars record attached/detached calls, readable through ``events``, and
hand out one shared Viewable that answers with its caller's name.
"""

import gc
import json
import sys
import weakref

from twisted.cred import checkers, portal
from twisted.internet import defer, reactor
from twisted.spread import pb
from zope.interface import implementer


class Point(pb.Copyable, pb.RemoteCopy):
    def getTypeToCopy(self):
        return b"tests.Point"


pb.setUnjellyableForClass("tests.Point", Point)


class Board(pb.Cacheable):
    def __init__(self):
        self.items = []
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"items": list(self.items)}

    def getTypeToCopyFor(self, perspective):
        return b"tests.Board"

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)

    def add(self, item):
        self.items.append(item)
        for observer in self.observers:
            observer.callRemote("add", item)


class Counter(pb.Referenceable):
    def __init__(self):
        self.n = 0

    def remote_increment(self):
        self.n += 1
        return self.n


class Temp(pb.Referenceable):
    def remote_ping(self):
        return "pong"


class Service(pb.Root):
    def __init__(self):
        self.counter = Counter()
        self.board = Board()
        self.temp = None

    def remote_echo(self, value):
        return value

    def remote_kwargs(self, one, two=None):
        return [one, two]

    def remote_make_counter(self):
        return self.counter

    def remote_is_counter(self, obj):
        return obj is self.counter

    def remote_call_back(self, callback, value):
        return callback.callRemote("double", value)

    def remote_move(self, point):
        p = Point()
        p.x, p.y = point.x + 1, point.y + 1
        return p

    def remote_board(self):
        return self.board

    def remote_add(self, item):
        self.board.add(item)

    def remote_observers(self):
        return len(self.board.observers)

    def remote_fail(self, message):
        raise ValueError(message)

    def remote_make_temp(self):
        temp = Temp()
        self.temp = weakref.ref(temp)
        return temp

    def remote_temp_gone(self):
        gc.collect()
        return self.temp is not None and self.temp() is None


EVENTS = []


class Noticeboard(pb.Viewable):
    """One object for every avatar; Twisted tells each call who makes it."""

    def view_whoami(self, perspective):
        return perspective.name

    def view_same_avatar(self, perspective, avatar):
        # The avatar went out wrapped in pb.AsReferenceable (a pb.Avatar is
        # not Referenceable) and comes home as that wrapper.
        return avatar.remoteMessageReceived.__self__ is perspective


NOTICEBOARD = Noticeboard()


class Avatar(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def attached(self, mind):
        EVENTS.append("attached")
        self.mind = mind

    def detached(self, mind):
        EVENTS.append("detached")

    def perspective_whoami(self):
        return self.name

    def perspective_call_mind(self, value):
        return self.mind.callRemote("double", value)

    def perspective_events(self):
        return list(EVENTS)

    def perspective_noticeboard(self):
        return NOTICEBOARD


@implementer(portal.IRealm)
class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        avatar = Avatar(avatar_id.decode() if isinstance(avatar_id, bytes) else str(avatar_id))
        avatar.attached(mind)
        return pb.IPerspective, avatar, lambda: avatar.detached(mind)


def main():
    service = Service()
    root_port = reactor.listenTCP(0, pb.PBServerFactory(service), interface="127.0.0.1")
    db = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"builder")
    the_portal = portal.Portal(Realm(), [db, checkers.AllowAnonymousAccess()])
    portal_port = reactor.listenTCP(0, pb.PBServerFactory(the_portal), interface="127.0.0.1")
    ports = {"root": root_port.getHost().port, "portal": portal_port.getHost().port}
    if len(sys.argv) > 1:
        ports["unix"] = sys.argv[1]
        ports["unix_portal"] = sys.argv[1] + ".portal"
        reactor.listenUNIX(ports["unix"], pb.PBServerFactory(service))
        reactor.listenUNIX(ports["unix_portal"], pb.PBServerFactory(the_portal))
    print(json.dumps(ports), flush=True)
    reactor.run()


main()
