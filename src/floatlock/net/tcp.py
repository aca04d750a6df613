"""The RPC-over-TCP server transport: record marking, pipelining, caps and an idle timeout.

Theory of operation
-------------------
A thin asyncio adapter: framing lives in :mod:`floatlock.net.receiver` and
:mod:`floatlock.net.recordmark`, RPC logic in
:class:`floatlock.rpc.dispatch.Dispatcher`.  It uses :class:`asyncio.BufferedProtocol`
callbacks rather than streams: no task per connection, no extra copies.

* **Receiving in place.**  asyncio receives with ``recv_into`` into the buffer the
  connection's :class:`~floatlock.net.receiver.RecordReceiver` offers (``get_buffer``):
  a reusable scratch buffer that small pipelined calls are cut out of, or, once a fragment
  header announces more than 64 KiB (a 1 MiB NFS WRITE), a ``bytes`` object of that
  fragment's size that the rest of it lands in.  That object is the record handed to the
  dispatcher: nothing joined, nothing copied (:mod:`floatlock.net.receiver`).

* **Who was asked.**  The server address handed to the dispatcher is the connection's *local*
  address (``getsockname``), IPv4-mapped IPv6 folded to IPv4: on a node holding several
  virtual addresses, that is the virtual server the client talked to (the seed's key).  It is
  computed once per connection.
* **Pipelining.**  Every record is dispatched as soon as it is complete.  Synchronous handlers
  answer at once; an async handler's reply is written when it finishes, so replies can leave
  out of order (clients match them by xid, RFC 5531 section 9).
* **Bounded work per connection.**  At most ``max_pending`` async calls run per connection.
  Records beyond that wait in a small queue and the transport stops reading
  (``pause_reading``) until calls finish, so a client cannot make us buffer or run unbounded
  work; TCP flow control pushes back on it.  The queue holds at most what one read delivered.
* **Replies in pieces.**  A reply may be a tuple of buffers (a 1 MiB NFS READ: its head, then
  the buffer the data was read into).  When asyncio's write buffer is empty, the replies of a
  batch go straight to the socket with one ``writev`` of mark, head and data, nothing joined;
  only what the socket did not take is handed to ``transport.write`` (which copies it into its
  buffer), as memoryview slices, so nothing already sent is copied.  A reply in pieces is
  written before the next call is dispatched, so its buffers may be reused by then.  When
  the buffer holds data, everything goes through ``transport.write`` behind it: replies never
  overtake each other.
* **Write back-pressure.**  When the transport's write buffer passes its high-water mark
  asyncio calls ``pause_writing``: we stop dispatching and reading until ``resume_writing``.
  A client that pipelines calls but never reads replies stalls itself, not the server.
* **Limits.**  A record larger than ``max_record``, or broken framing, closes the connection
  (counted, logged).  Over ``max_connections`` a new connection is aborted at once (counted).
  A connection with no traffic in either direction and no call in progress for
  ``idle_timeout`` seconds is closed.  The idle check is one timer per connection that is
  re-armed lazily, not on every byte.

Listening on ``"::"`` sets IPV6_V6ONLY so a separate ``"0.0.0.0"`` server can share the port;
SO_REUSEADDR lets a restarted daemon bind while old connections sit in TIME_WAIT.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

from floatlock.net.tcpconn import TcpConnection, TcpStats
from floatlock.rpc.dispatch import Dispatcher

__all__ = ["TcpConnection", "TcpServer", "TcpStats"]

log = logging.getLogger("floatlock.net.tcp")


class TcpServer:
    """Serve a :class:`Dispatcher` over TCP on one address; see the module docstring.

    Args:
        dispatcher: answers each call record.
        host: an IP address to listen on ("0.0.0.0", "::", a virtual address) or a name.
        port: the port, 0 for any (then read :attr:`port` after :meth:`start`).
        max_record: the largest call record accepted.  NFS WRITE with a 1 MiB payload needs
            a little more than 1 MiB; pass e.g. ``(1 << 20) + 4096`` when serving NFS.
        idle_timeout: seconds without traffic after which a connection is closed (0: never).
        max_connections: connections beyond this are closed as soon as they are accepted.
        max_pending: async calls in progress per connection before reading stops.
        backlog: the listen(2) backlog.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        *,
        max_record: int = 1 << 20,
        idle_timeout: float = 300.0,
        max_connections: int = 1024,
        max_pending: int = 128,
        backlog: int = 128,
    ) -> None:
        self.dispatcher = dispatcher
        self.host = host
        self._requested_port = port
        self.max_record = max_record
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.backlog = backlog
        self.stats = TcpStats()
        self.conns: set[TcpConnection] = set()  # open connections (each adds and removes itself)
        self._server: asyncio.Server | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._sock is None:
            return self._requested_port
        return int(self._sock.getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self.conns)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = await _listen_socket(loop, self.host, self._requested_port, self.backlog)
        try:
            self._server = await loop.create_server(
                lambda: TcpConnection(self), sock=sock, backlog=self.backlog
            )
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        log.info("serving RPC over TCP on %s port %d", self.host, self.port)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.conns):
            conn.abort()
        if server is not None:
            await server.wait_closed()
        # Let the aborted transports deliver connection_lost before we return.
        await asyncio.sleep(0)


async def _listen_socket(
    loop: asyncio.AbstractEventLoop, host: str, port: int, backlog: int
) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        addr: tuple[Any, ...] = (host, port)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}") from None
        family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" must not also claim IPv4: a separate 0.0.0.0 server owns that.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
