"""Two brokers joined in memory, for tests (ours and users').

``connected_pair()`` returns the server-side and client-side ``Connection``
objects, talking through an in-memory transport instead of a socket.  With
``chunk_size=1`` every byte is delivered separately, which exercises the
frame reader's handling of partial frames.

``CorePair`` joins two sans-IO cores (:class:`broker._core.Broker`) with no
event loop at all: the test moves the bytes and the clock by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._core import Broker
from ._framing import HEADER
from ._limits import DEFAULT_LIMITS, Limits
from ._connection import Connection
from ._protocol import BrokerProtocol

__all__ = ["connected_pair", "MemoryTransport", "CorePair", "CoreProxy", "split_frames"]


def split_frames(chunks: list[bytes]) -> list[bytes]:
    """The frame bodies in what a core's ``take_output()`` returned."""
    data = b"".join(chunks)
    bodies = []
    while data:
        (size,) = HEADER.unpack_from(data)
        bodies.append(data[HEADER.size:HEADER.size + size])
        data = data[HEADER.size + size:]
    return bodies


class CoreProxy:
    """What a core-only peer gets for a reference to the other side's object."""

    def __init__(self, object_id: int) -> None:
        self.object_id = object_id
        self._pb_count = 0
        self._pb_released = False


class CorePair:
    """Two sans-IO ``Broker`` cores joined in memory, with no event loop.

    ``client`` dialled ``server``; both have queued their HELLO at ``now``.
    ``deliver(sender)`` moves what ``sender`` queued into the other core and
    returns the events that produced; ``handshake()`` delivers both HELLOs.
    The clock is ``now``, moved by the test.
    """

    def __init__(self, server_root: Any = None, client_root: Any = None, *,
                 limits: Limits | None = None, now: float = 1000.0,
                 unsafe_tracebacks: bool = False) -> None:
        self.now = now
        limits = limits or DEFAULT_LIMITS
        self.server = self._core(server_root, limits, unsafe_tracebacks)
        self.client = self._core(client_root, limits, unsafe_tracebacks)
        self.server.start(now)
        self.client.start(now, server_name="memory server")

    @staticmethod
    def _core(root: Any, limits: Limits, unsafe_tracebacks: bool) -> Broker:
        from ._api import _publishable

        core = Broker(owner=object(), make_proxy=CoreProxy, limits=limits,
                      unsafe_tracebacks=unsafe_tracebacks)
        if root is not None:
            core.refs.set_root(_publishable(root))
        return core

    def peer_of(self, core: Broker) -> Broker:
        return self.client if core is self.server else self.server

    def deliver(self, sender: Broker) -> list[Any]:
        """Feed what ``sender`` queued to its peer; return the peer's events.
        A RemoteProtocolError from the peer propagates (the peer has queued
        its GOODBYE)."""
        receiver = self.peer_of(sender)
        events = []
        receiver.data_received(self.now)
        for body in split_frames(sender.take_output()):
            event = receiver.receive_frame(body)
            if event is not None:
                events.append(event)
        return events

    def handshake(self) -> None:
        self.deliver(self.client)
        self.deliver(self.server)


class MemoryTransport(asyncio.Transport):
    """Delivers writes to the peer protocol on the next loop turns."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, chunk_size: int | None) -> None:
        super().__init__()
        self._loop = loop
        self._name = name
        self._chunk = chunk_size
        self.peer: MemoryTransport | None = None
        self.protocol: BrokerProtocol | None = None
        self._closing = False
        self._lost = False
        self._paused = False
        self._held: list[bytes] = []  # deliveries waiting while reading is paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("memory", self.peer._name if self.peer else None)
        if name == "sockname":
            return ("memory", self._name)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.peer is None:
            return
        data = bytes(data)
        step = self._chunk or len(data) or 1
        for i in range(0, len(data), step):
            self._loop.call_soon(self.peer._deliver, data[i:i + step])

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(bytes(c) for c in chunks))

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._held:
            self._loop.call_soon(self._drain_held)

    def is_reading(self) -> bool:
        return not self._paused

    def _drain_held(self) -> None:
        while self._held and not self._paused and not self._lost:
            self._deliver_now(self._held.pop(0))

    def _deliver(self, data: bytes) -> None:
        if self._paused or self._held:  # behind what is held, in order
            self._held.append(data)
            return
        self._deliver_now(data)

    def _deliver_now(self, data: bytes) -> None:
        protocol = self.protocol
        if self._lost or protocol is None:
            return
        view = data
        while view:
            buf = protocol.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            del buf
            protocol.buffer_updated(n)
            view = view[n:]
            if self._lost:
                return

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._lose, None)
        if self.peer is not None and not self.peer._closing:
            self.peer._closing = True
            self._loop.call_soon(self.peer._lose, None)

    def abort(self) -> None:
        self.close()

    def _lose(self, exc: BaseException | None) -> None:
        if not self._lost:
            self._lost = True
            if self.protocol is not None:
                self.protocol.connection_lost(exc)

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def connected_pair(server_root: Any = None, client_root: Any = None, *,
                         limits: Limits | None = None, chunk_size: int | None = None,
                         unsafe_tracebacks: bool = False) -> tuple[Connection, Connection]:
    """Return ``(server_connection, client_connection)`` joined in memory."""
    loop = asyncio.get_running_loop()
    limits = limits or DEFAULT_LIMITS
    from ._api import _publishable

    server = BrokerProtocol(root=_publishable(server_root) if server_root is not None else None,
                            limits=limits, unsafe_tracebacks=unsafe_tracebacks)
    client = BrokerProtocol(root=_publishable(client_root) if client_root is not None else None,
                            limits=limits, unsafe_tracebacks=unsafe_tracebacks)
    st = MemoryTransport(loop, "server", chunk_size)
    ct = MemoryTransport(loop, "client", chunk_size)
    st.peer, ct.peer = ct, st
    st.protocol, ct.protocol = server, client
    server.connection_made(st)
    client.connection_made(ct)
    await asyncio.gather(server.wait_ready(), client.wait_ready())
    return server.connection, client.connection
