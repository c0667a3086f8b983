"""A user program of the public API, checked with mypy --strict."""
import asyncio

import broker
import clients
import cred
import jelly


class Echoer(broker.Root):
    def remote_echo(self, text: str) -> str:
        return text


async def main() -> None:
    server = await broker.serve(Echoer(), "127.0.0.1", 0)
    async with broker.connect("127.0.0.1", server.port) as conn:
        root = await conn.root()
        value = await root.call_remote("echo", "hi")
        print(value)
    opened: broker.Connection = await broker.connect("127.0.0.1", server.port)
    twice: broker.RemoteReference = await (await opened.root()).call_remote("echo", "x")
    print(twice, opened.is_open, opened.calls_in_progress)
    await opened.close()
    try:
        me: broker.RemoteReference = await broker.login("127.0.0.1", server.port, "a", "b",
                                                        service="pbecho")
        await me.connection.close()
    except (broker.Unauthorized, broker.RemoteProtocolError, broker.LocalProtocolError):
        pass
    server.close()
    await server.wait_closed()
    limits: broker.Limits = broker.DEFAULT_LIMITS
    print(limits.max_frame, jelly.dumps([1]), cred.LOGIN_FAILED, clients.connect)


asyncio.run(main())
