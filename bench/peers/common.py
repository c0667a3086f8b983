"""Payloads and op names of the call benchmark, shared by every peer.

Ops (each returns how many units it did):

``check``    one echo of each payload but 1 MiB, verified (raises on a wrong
             answer); ``mib`` checks the length of every answer instead, so
             that a system refusing 1 MiB fails only that workload
``seq``      one echo("hello")                         -> 1 call
``burst``    100 echo("hello") in flight, all awaited  -> 100 calls
``dicts``    echo of the 1,000-dict list, by value     -> 1 call
``mib``      echo of 1 MiB of bytes                    -> 2 MiB (payload each way)
``half``     echo of 512 KiB of bytes                  -> 1 MiB (payload each way)
``connect``  new connection, first echo, close         -> 1 connect
"""

from __future__ import annotations

HOST = "127.0.0.1"
HELLO = "hello"
BURST = 100
DICTS = [{"id": i, "name": f"user{i}", "score": i * 1.5} for i in range(1000)]
MIB = bytes(range(256)) * 4096           # 1 MiB, not all zeros
HALF = MIB[: 512 * 1024]                 # 512 KiB

OPS = ("check", "seq", "burst", "dicts", "mib", "half", "connect")


def bytes_units(payload: bytes) -> int:
    """Payload bytes counted once in each direction."""
    return 2 * len(payload)


def verify_len(what: str, got: object, expected: bytes) -> None:
    if not isinstance(got, (bytes, bytearray)) or len(got) != len(expected):
        raise AssertionError(f"wrong echo of {what}: got {type(got).__name__}")


def verify(what: str, got: object, expected: object) -> None:
    if got != expected:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise AssertionError(f"wrong echo of {what}: got {type(got).__name__} {shown}")


def async_ops(call, connect_once):
    """Ops for an asyncio client: ``call(value)`` returns an awaitable of the
    echoed value; ``connect_once()`` is a coroutine doing connect, one echo,
    close.  The burst is ``asyncio.gather`` over 100 calls."""
    import asyncio

    async def check() -> int:
        verify("hello", await call(HELLO), HELLO)
        verify("the 1,000-dict list", await call(DICTS), DICTS)
        verify("512 KiB", await call(HALF), HALF)
        verify("a burst", await asyncio.gather(*[call(HELLO) for _ in range(BURST)]), [HELLO] * BURST)
        await connect_once()
        return 1

    async def seq() -> int:
        await call(HELLO)
        return 1

    async def burst() -> int:
        await asyncio.gather(*[call(HELLO) for _ in range(BURST)])
        return BURST

    async def dicts() -> int:
        await call(DICTS)
        return 1

    async def mib() -> int:
        verify_len("1 MiB", await call(MIB), MIB)
        return bytes_units(MIB)

    async def half() -> int:
        await call(HALF)
        return bytes_units(HALF)

    async def connect() -> int:
        await connect_once()
        return 1

    return {"check": check, "seq": seq, "burst": burst, "dicts": dicts, "mib": mib, "half": half, "connect": connect}
