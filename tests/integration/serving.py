"""A test server: one Dispatcher served over UDP and TCP on one ephemeral port number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from floatlock.net.portpair import listen_pair
from floatlock.rpc.dispatch import Dispatcher


@asynccontextmanager
async def serving(dispatcher: Dispatcher, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve ``dispatcher`` over UDP and TCP on one ephemeral port number; yield it."""
    udp, tcp = await listen_pair(dispatcher, host, 0)
    try:
        yield udp.port
    finally:
        await tcp.close()
        udp.close()
