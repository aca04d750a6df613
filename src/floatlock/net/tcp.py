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
import struct
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from floatlock.address import ServerAddress, canonical_ip, server_address
from floatlock.net.gather import write_gathered
from floatlock.net.receiver import RecordReceiver
from floatlock.net.recordmark import (
    LAST_FRAGMENT,
    MAX_FRAGMENT,
    RecordError,
    RecordTooLarge,
    frame,
    frame_parts,
)
from floatlock.rpc.dispatch import Buffer, Dispatcher, Reply

__all__ = ["TcpServer", "TcpStats"]

log = logging.getLogger("floatlock.net.tcp")

_pack_mark = struct.Struct(">I").pack
#: Buffers (mark and body, or mark and pieces) written together at most: bounds one
#: writev's iovec count (IOV_MAX is 1024) and the copy when they must be buffered.
_MAX_BATCH = 2 * 64


@dataclass(slots=True)
class TcpStats:
    connections: int = 0  # accepted (not refused) since start
    active: int = 0
    records: int = 0  # complete records received
    replies: int = 0
    oversize: int = 0  # connections closed for a record over max_record
    bad_framing: int = 0  # connections closed for other record-marking abuse
    idle_closed: int = 0
    refused: int = 0  # connections over max_connections
    write_pauses: int = 0  # a peer did not read its replies fast enough
    dispatch_errors: int = 0  # the dispatcher raised (it should not)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


def _peer(addr: Any) -> Any:
    """The peer's address tuple, IPv4-mapped IPv6 folded so one client has one identity."""
    if isinstance(addr, tuple) and len(addr) == 4 and str(addr[0]).startswith("::ffff:"):
        try:
            return (canonical_ip(addr[0]), addr[1])
        except ValueError:
            return addr
    return addr


class _Connection(asyncio.BufferedProtocol):
    """One client connection; see the module docstring for the rules it follows."""

    __slots__ = (
        "_backlog",
        "_closed",
        "_eof",
        "_fd",
        "_idle_handle",
        "_last_activity",
        "_loop",
        "_pending",
        "_read_paused",
        "_reader",
        "_server",
        "_tasks",
        "_transport",
        "_write_paused",
        "client",
        "server_addr",
    )

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._reader = RecordReceiver(server.max_record)
        self._transport: asyncio.Transport | None = None
        self._backlog: deque[bytes] = deque()
        self._tasks: set[asyncio.Future[Reply | None]] = set()
        self._pending = 0
        self._read_paused = False
        self._write_paused = False
        self._closed = False
        self._eof = False
        self._idle_handle: asyncio.TimerHandle | None = None
        self._fd = -1  # the socket's descriptor, for writev while asyncio buffers nothing
        self._last_activity = 0.0
        self.client: Any = None
        self.server_addr = ServerAddress("")

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        srv = self._server
        if len(srv._conns) >= srv.max_connections:
            srv.stats.refused += 1
            self._closed = True
            log.info(
                "refusing connection from %s: %d connections open",
                transport.get_extra_info("peername"),
                len(srv._conns),
            )
            transport.abort()
            return
        try:
            sockname = transport.get_extra_info("sockname")
            self.server_addr = server_address(sockname[0])
            self.client = _peer(transport.get_extra_info("peername"))
        except (TypeError, ValueError, IndexError) as e:
            log.warning("dropping connection with unusable addresses: %s", e)
            self._closed = True
            transport.abort()
            return
        # (asyncio already sets TCP_NODELAY on TCP transports: replies go out at once.)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        srv._conns.add(self)
        srv.stats.connections += 1
        srv.stats.active += 1
        self._last_activity = self._loop.time()
        if srv.idle_timeout > 0:
            self._idle_handle = self._loop.call_later(srv.idle_timeout, self._idle_check)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self._last_activity = self._loop.time()
        try:
            records = self._reader.buffer_updated(nbytes)
        except RecordError as e:
            stats = self._server.stats
            if isinstance(e, RecordTooLarge):
                stats.oversize += 1
            else:
                stats.bad_framing += 1
            log.warning(
                "closing TCP connection from %s to %s: %s", self.client, self.server_addr, e
            )
            self._abort()
            return
        if records:
            self._server.stats.records += len(records)
            self._backlog.extend(records)
            self._drain()

    def eof_received(self) -> bool | None:
        # A half-close: the client will send no more calls.  Returning True keeps our side
        # open until the replies still being computed have been written.
        if self._pending or self._backlog:
            self._eof = True
            return True
        return None

    def pause_writing(self) -> None:
        self._server.stats.write_pauses += 1
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        srv = self._server
        if self in srv._conns:
            srv._conns.discard(self)
            srv.stats.active -= 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._backlog.clear()
        # Running handlers are left to finish: cancelling a lock operation half-way would be
        # worse than computing a reply nobody reads (the DRC keeps it for a retransmission).

    # -- dispatching ---------------------------------------------------------------------

    def _drain(self) -> None:
        """Dispatch queued records while the limits allow; pause or resume reading."""
        backlog = self._backlog
        srv = self._server
        dispatch = srv.dispatcher.dispatch
        # Synchronous replies to the records of one read leave in one write (one writev(2) for
        # a pipelined burst instead of one send per call).
        out: list[Buffer] = []
        count = 0
        client = self.client
        server_addr = self.server_addr
        max_pending = srv.max_pending
        popleft = backlog.popleft
        append = out.append
        try:
            while backlog and not self._closed:
                if self._write_paused or self._pending >= max_pending:
                    self._pause_reading()
                    return
                record = popleft()
                result: Reply | Awaitable[Reply | None] | None
                try:
                    result = dispatch(record, client, server_addr, "tcp")
                except Exception:
                    # The dispatcher answers every error itself; this is a bug, not bad input.
                    srv.stats.dispatch_errors += 1
                    log.exception("dispatcher failed on a call from %s", self.client)
                    continue
                if result is None:
                    continue
                if type(result) is bytes and len(result) <= MAX_FRAGMENT:
                    append(_pack_mark(LAST_FRAGMENT | len(result)))
                    append(result)
                elif isinstance(result, tuple):
                    # Written at once, with the replies batched before it: the caller's
                    # buffers are sent or copied before the next call can change them.
                    out.extend(frame_parts(result))
                    self._write_framed(out, count + 1)
                    out, count = [], 0
                    append = out.append
                    continue
                elif isinstance(result, bytes):
                    if out:  # replies leave in order
                        self._write_framed(out, count)
                        out, count = [], 0
                        append = out.append
                    self._write(result)  # several fragments
                    continue
                else:
                    self._start(result)
                    continue
                count += 1
                if len(out) >= _MAX_BATCH:
                    self._write_framed(out, count)
                    out, count = [], 0
                    append = out.append
        finally:
            if out and not self._closed:
                self._write_framed(out, count)
        if self._closed:
            return
        assert self._transport is not None
        if self._eof:
            if not self._pending:
                self._transport.close()  # half-closed by the peer and every call answered
        elif self._read_paused and not self._write_paused:
            self._read_paused = False
            self._transport.resume_reading()

    def _start(self, aw: Awaitable[Reply | None]) -> None:
        fut = asyncio.ensure_future(aw)
        self._pending += 1
        self._tasks.add(fut)
        fut.add_done_callback(self._finished)

    def _finished(self, fut: asyncio.Future[Reply | None]) -> None:
        self._tasks.discard(fut)
        self._pending -= 1
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._server.stats.dispatch_errors += 1
            log.error("async call from %s failed", self.client, exc_info=exc)
            reply = None
        else:
            reply = fut.result()
        if self._closed:
            return
        if reply is not None:
            self._write(reply)
        if self._backlog or self._read_paused or self._eof:
            self._drain()

    def _write(self, reply: Reply) -> None:
        if isinstance(reply, tuple):
            self._write_framed(frame_parts(reply), 1)
            return
        assert self._transport is not None
        self._transport.write(frame(reply))
        self._server.stats.replies += 1
        self._last_activity = self._loop.time()

    def _write_framed(self, bufs: list[Buffer], count: int) -> None:
        """Write ``count`` replies already framed: [mark, reply, mark, head, data, ...].

        With asyncio's buffer empty, one writev straight to the socket; what it did not take
        (all of it if the buffer holds data) goes to ``transport.write`` in order, each
        partly-sent buffer as a memoryview of its unsent tail."""
        assert self._transport is not None
        self._server.stats.replies += count
        self._last_activity = self._loop.time()
        write_gathered(self._transport, self._fd, bufs)

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    # -- closing -------------------------------------------------------------------------

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._closed:
            return
        timeout = self._server.idle_timeout
        now = self._loop.time()
        due = self._last_activity + timeout
        if self._pending == 0 and now >= due:
            self._server.stats.idle_closed += 1
            log.debug("closing idle TCP connection from %s", self.client)
            self._abort()
            return
        # Busy or recently active: look again when it could next be idle.
        self._idle_handle = self._loop.call_later(max(due - now, timeout / 10), self._idle_check)

    def _abort(self) -> None:
        self._backlog.clear()
        if self._transport is not None:
            # abort(), not close(): close() would wait for a write buffer a misbehaving peer
            # may never drain.
            self._transport.abort()


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
        self._conns: set[_Connection] = set()
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
        return len(self._conns)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = await _listen_socket(loop, self.host, self._requested_port, self.backlog)
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=self.backlog
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
        for conn in list(self._conns):
            conn._abort()
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
