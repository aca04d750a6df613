"""A test server: one Dispatcher served over UDP and TCP on one ephemeral port number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.rpc.dispatch import Dispatcher


@asynccontextmanager
async def serving(dispatcher: Dispatcher, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve ``dispatcher`` over UDP and TCP on one ephemeral port number; yield it."""
    for _ in range(20):
        udp = UdpServer(dispatcher, host, 0)
        await udp.start()
        tcp = TcpServer(dispatcher, host, udp.port)
        try:
            await tcp.start()
        except OSError:  # the port is free for UDP but taken for TCP: try another
            udp.close()
            continue
        try:
            yield udp.port
        finally:
            await tcp.close()
            udp.close()
        return
    raise RuntimeError("no port free for both UDP and TCP")
