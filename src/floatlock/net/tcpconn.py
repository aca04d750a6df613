"""One client connection of the RPC-over-TCP server (:mod:`floatlock.net.tcp`).

The rules it follows (who was asked, pipelining, bounded work, replies in pieces, write
back-pressure, limits, the idle timeout) are :mod:`floatlock.net.tcp`'s theory of operation;
this module is the per-connection state machine they describe, apart from the listener that
accepts connections and counts them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from floatlock.rpc.parts import Part, Reply

if TYPE_CHECKING:
    from floatlock.net.tcp import TcpServer

__all__ = ["TcpConnection", "TcpStats"]

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


class TcpConnection(asyncio.BufferedProtocol):
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
        if len(srv.conns) >= srv.max_connections:
            srv.stats.refused += 1
            self._closed = True
            log.info(
                "refusing connection from %s: %d connections open",
                transport.get_extra_info("peername"),
                len(srv.conns),
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
        srv.conns.add(self)
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
            self.abort()
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
        if self in srv.conns:
            srv.conns.discard(self)
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
        out: list[Part] = []
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
                    self._write_framed(out, count + 1, pieces=True)
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
            self._write_framed(frame_parts(reply), 1, pieces=True)
            return
        assert self._transport is not None
        self._transport.write(frame(reply))
        self._server.stats.replies += 1
        self._last_activity = self._loop.time()

    def _write_framed(self, bufs: list[Part], count: int, pieces: bool = False) -> None:
        """Write ``count`` replies already framed: [mark, reply, mark, head, data, ...].

        With asyncio's buffer empty, one writev straight to the socket; what it did not take
        (all of it if the buffer holds data) goes to ``transport.write`` in order, each
        partly-sent buffer as a memoryview of its unsent tail."""
        assert self._transport is not None
        self._server.stats.replies += count
        self._last_activity = self._loop.time()
        if not write_gathered(self._transport, self._fd, bufs, pieces):
            self.abort()  # a reply's mapped data was truncated away: the client resends

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
            self.abort()
            return
        # Busy or recently active: look again when it could next be idle.
        self._idle_handle = self._loop.call_later(max(due - now, timeout / 10), self._idle_check)

    def abort(self) -> None:
        self._closed = True  # nothing more is dispatched or written (connection_lost follows)
        self._backlog.clear()
        if self._transport is not None:
            # abort(), not close(): close() would wait for a write buffer a misbehaving peer
            # may never drain.
            self._transport.abort()
