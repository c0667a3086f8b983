"""A real Twisted PB client that logs in and calls a Viewable of ours.

Usage: python view_client.py PORT_OR_UNIX_PATH USER PASSWORD.  Prints a JSON
list: what ``whoami`` on the avatar's noticeboard answered, whether the
server saw this avatar as the caller, and the answer through a second
reference to the same noticeboard, and whether both name one object id.
"""

import json
import sys

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, task
from twisted.spread import pb


@defer.inlineCallbacks
def main(reactor, where, user, password):
    factory = pb.PBClientFactory()
    if where.isdigit():
        reactor.connectTCP("127.0.0.1", int(where), factory)
    else:
        reactor.connectUNIX(where, factory)
    perspective = yield factory.login(UsernamePassword(user.encode(), password.encode()))
    board = yield perspective.callRemote("noticeboard")
    name = yield board.callRemote("whoami")
    same = yield board.callRemote("same_avatar", perspective)
    again = yield perspective.callRemote("noticeboard")
    name_again = yield again.callRemote("whoami")
    # Twisted makes a new RemoteReference per arrival; the id is what repeats.
    print(json.dumps([name, same, name_again, board.luid == again.luid]), flush=True)
    factory.disconnect()


task.react(main, sys.argv[1:4])
