"""One port number for a service's UDP and TCP servers.

An ONC RPC service is registered (rpcbind, ``rpcinfo -p``) and reached by clients on one port
number for both transports, as rpc.statd, lockd and nfsd have.  :func:`listen_pair` binds the UDP
server first, then the TCP server on the number UDP got.  With port 0 the kernel picks the UDP
port, and that number may already be held *for TCP* by another process or connection (the two
namespaces are separate): then another ephemeral port is tried, a bounded number of times.  Seen
as ``EADDRINUSE`` at start-up before this was shared by the daemon, standalone statd and the
tests.
"""

from __future__ import annotations

import errno
import logging

from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.rpc.dispatch import Dispatcher

__all__ = ["EPHEMERAL_TRIES", "listen_pair"]

log = logging.getLogger("floatlock.net")

#: Ephemeral ports tried when the number UDP got is held for TCP.
EPHEMERAL_TRIES = 16


async def listen_pair(
    dispatcher: Dispatcher, host: str, port: int, *, max_record: int | None = None
) -> tuple[UdpServer, TcpServer]:
    """Started UDP and TCP servers of ``dispatcher`` on ``host``, both on ``port`` (0: one
    ephemeral number for both, see the module docstring).  Raises OSError; nothing is left
    listening then.  ``max_record``: the TCP server's record limit (its default if None)."""
    tries = EPHEMERAL_TRIES if port == 0 else 1
    for attempt in range(tries):
        udp = UdpServer(dispatcher, host, port)
        try:
            await udp.start()
            if max_record is None:
                tcp = TcpServer(dispatcher, host, udp.port)
            else:
                tcp = TcpServer(dispatcher, host, udp.port, max_record=max_record)
            await tcp.start()
        except BaseException as e:
            udp.close()
            if isinstance(e, OSError) and e.errno == errno.EADDRINUSE and attempt + 1 < tries:
                log.debug("%s port %d: held for TCP already, another port", host, udp.port)
                continue
            raise
        return udp, tcp
    raise AssertionError("unreachable")  # (the last attempt returns or raises)
