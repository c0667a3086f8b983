"""Streams: a remote method returns an async iterator, the caller iterates.

The producer side wraps the iterator in a :class:`StreamSource` (a
Referenceable sent as a ``STREAM`` reference).  The consumer's
:class:`RemoteStream` pulls one item per ``pull`` call and keeps at most
``window`` pulls in flight, so a slow consumer makes the producer wait and
memory on both sides stays bounded by the window.  ``aclose()`` on the
consumer, or dropping it, closes the producer's iterator.

Items travel one per frame, so each item must fit in ``max_frame``; the bytes
helpers cut data into chunks of ``DEFAULT_CHUNK`` (256 KiB) for that reason.
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any, AsyncIterator, BinaryIO

from ._errors import DeadReference
from ._flavors import Referenceable

__all__ = ["StreamSource", "RemoteStream", "stream_bytes", "stream_file", "collect",
           "DEFAULT_WINDOW", "DEFAULT_CHUNK"]

DEFAULT_WINDOW = 8
DEFAULT_CHUNK = 256 * 1024


def is_async_iterator(value: Any) -> bool:
    return hasattr(type(value), "__anext__") and not isinstance(value, Referenceable)


class StreamSource(Referenceable):
    """The producer's end of a stream (internal: made by the broker)."""

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator.__aiter__() if hasattr(iterator, "__aiter__") else iterator
        self._lock = asyncio.Lock()
        self._closed = False
        self._released = False
        self._pulling: asyncio.Task | None = None  # the pull waiting for the iterator

    async def remote_pull(self) -> list:
        """``[True, item]``, or ``[False, None]`` once the iterator is exhausted."""
        async with self._lock:
            if self._closed or self._released:
                return [False, None]
            self._pulling = asyncio.current_task()
            try:
                item = await self._iterator.__anext__()
            except StopAsyncIteration:
                await self._close()
                return [False, None]
            finally:
                self._pulling = None
            return [True, item]

    async def remote_close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        if not self._closed:
            self._closed = True
            aclose = getattr(self._iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def _pb_on_release(self) -> Any:
        """The consumer is gone: close the iterator (returns a coroutine).

        A pull waiting for the iterator's next item is cancelled (nobody
        will take that item, and it may never come: a live feed), and pulls
        queued behind it end at once."""
        if self._closed:
            return None
        self._released = True
        if self._pulling is not None:
            self._pulling.cancel()
        return self._close_unlocked()

    async def _close_unlocked(self) -> None:
        if self._lock.locked():
            # A pull is running; closing under it would raise "already running".
            # Cancel-free approach: close once the pull finishes.
            async with self._lock:
                await self._close()
        else:
            await self._close()


class RemoteStream:
    """An async iterator over a remote producer's items.

    ``async for item in stream`` pulls items with up to ``window`` requests in
    flight.  ``await stream.aclose()`` stops the producer.
    """

    def __init__(self, reference: Any, window: int = DEFAULT_WINDOW) -> None:
        self._ref = reference
        self.window = window
        self._pending: collections.deque[asyncio.Future] = collections.deque()
        self._done = False

    def __aiter__(self) -> RemoteStream:
        return self

    def _fill(self) -> None:
        while not self._done and len(self._pending) < self.window:
            fut = self._ref.call_remote("pull")
            # Pulls past an error or a lost connection are never awaited;
            # reading their outcome keeps asyncio from reporting them.
            fut.add_done_callback(_retrieve)
            self._pending.append(fut)

    async def __anext__(self) -> Any:
        if self._done and not self._pending:
            raise StopAsyncIteration
        self._fill()
        fut = self._pending.popleft()
        try:
            more, item = await fut
        except BaseException:
            await self._abandon()
            raise
        if not more:
            self._done = True
            for other in self._pending:
                other.cancel()
            self._pending.clear()
            raise StopAsyncIteration
        return item

    async def _abandon(self) -> None:
        self._done = True
        for other in self._pending:
            other.cancel()
        self._pending.clear()

    async def aclose(self) -> None:
        """Stop the producer and release it."""
        if self._ref is None:
            return
        was_done = self._done
        await self._abandon()
        ref, self._ref = self._ref, None
        if not was_done and ref.is_alive:
            try:
                ref.call_remote_only("close")
            except DeadReference:
                pass  # the connection is closing (GOODBYE sent): the producer closes with it
        if ref.is_alive:
            await ref.release()

    async def __aenter__(self) -> RemoteStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


async def stream_bytes(data: bytes | bytearray | memoryview,
                       chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[bytes]:
    """Yield ``data`` in chunks (return this from a remote method to stream it).

    Chunks are memoryview slices (no copies); they arrive as ``bytes``.
    ``data`` must not change while the stream runs.
    """
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield view[start:start + chunk_size]


async def stream_file(file: str | os.PathLike[str] | BinaryIO,
                      chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[bytes]:
    """Yield a file's contents in chunks, reading off the event loop."""
    own = isinstance(file, (str, os.PathLike))
    handle: BinaryIO = open(file, "rb") if own else file  # type: ignore[arg-type]
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        if own:
            handle.close()


async def collect(stream: AsyncIterator[Any], *, max_bytes: int | None = None) -> bytes:
    """Join a stream of bytes chunks into one bytes object.

    ``max_bytes`` bounds what is accepted (``LimitExceeded`` past it).
    """
    from ._errors import LimitExceeded

    out = bytearray()
    try:
        async for chunk in stream:
            out += chunk
            if max_bytes is not None and len(out) > max_bytes:
                raise LimitExceeded(f"stream exceeded max_bytes={max_bytes}")
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return bytes(out)
