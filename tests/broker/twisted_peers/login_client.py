"""A real Twisted PB client that logs in to our portal with a mind.

Usage: python login_client.py PORT USER PASSWORD  (USER "-" for anonymous).
Prints a JSON list: the perspective's answers, or the failure.
"""

import json
import sys

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import defer, task
from twisted.spread import pb


class Mind(pb.Referenceable):
    def remote_double(self, x):
        return x * 2


@defer.inlineCallbacks
def main(reactor, port, user, password):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    if user == "-":
        credentials = Anonymous()
    else:
        credentials = UsernamePassword(user.encode(), password.encode())
    try:
        perspective = yield factory.login(credentials, client=Mind())
    except Exception as exc:
        print(json.dumps(["refused", type(exc).__name__, str(exc)]), flush=True)
        factory.disconnect()
        return
    whoami = yield perspective.callRemote("whoami")
    doubled = yield perspective.callRemote("call_mind", 21)
    print(json.dumps(["ok", whoami, doubled]), flush=True)
    factory.disconnect()


task.react(main, [int(sys.argv[1]), sys.argv[2], sys.argv[3]])
