"""The reply side of the RPC client: pending calls, reply matching, and how a call fails.

:class:`ReplySink` holds the calls of one :class:`~floatlock.net.client.RpcClient` still
waiting (:class:`PendingCall`, by xid) and completes the one a reply answers; the asyncio
protocols (:class:`UdpReplyProtocol`, :class:`TcpReplyProtocol`: record marking) feed it what
the socket receives.  Separate from :mod:`floatlock.net.client`, which opens sockets, numbers
and sends calls and retransmits them: this module only receives.  :class:`RpcTimeout` and
:class:`RpcConnectionError` are the client's errors (re-exported there).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from floatlock.net.recordmark import RecordError, RecordReader
from floatlock.rpc.message import RpcError, parse_reply, reply_xid
from floatlock.xdr import XdrError

log = logging.getLogger("floatlock.net.client")  # one logger for the whole client


class RpcTimeout(TimeoutError):
    """No reply arrived within the call's timeout."""


class RpcConnectionError(ConnectionError):
    """The TCP connection closed (or could not be made) before the reply arrived."""


class PendingCall:
    """One outstanding call: its future, its bytes (UDP resends them) and its timer."""

    __slots__ = ("deadline", "fut", "msg", "rto", "sends", "timer")

    def __init__(self, fut: asyncio.Future[bytes], msg: bytes, deadline: float, rto: float):
        self.fut = fut
        self.msg = msg
        self.deadline = deadline
        self.rto = rto
        self.sends = 0
        self.timer: asyncio.TimerHandle | None = None


class ReplySink:
    """Matches reply messages to pending calls; shared by the UDP and TCP protocols."""

    __slots__ = ("dropped", "pending")

    def __init__(self) -> None:
        self.pending: dict[int, PendingCall] = {}
        self.dropped = 0

    def reply(self, data: bytes, *, strict: bool) -> None:
        """Complete the call ``data`` answers.  ``strict``: a malformed reply fails the call
        (TCP, where it will not be followed by a good one) instead of being ignored (UDP)."""
        xid = reply_xid(data)
        p = self.pending.get(xid) if xid is not None else None
        if p is None or p.fut.done():
            self.dropped += 1
            return
        try:
            body = parse_reply(data).body
        except RpcError as e:
            p.fut.set_exception(e)
        except XdrError as e:
            if strict:
                p.fut.set_exception(RpcError(f"malformed reply: {e}"))
            else:
                self.dropped += 1
        else:
            p.fut.set_result(body)

    def fail_all(self, exc: Exception) -> None:
        for p in self.pending.values():
            if not p.fut.done():
                p.fut.set_exception(exc)


class UdpReplyProtocol(asyncio.DatagramProtocol):
    __slots__ = ("sink",)

    def __init__(self, sink: ReplySink) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sink.reply(data, strict=False)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable while the server restarts): keep retransmitting,
        # the overall timeout decides.
        log.debug("UDP error: %s", exc)


class TcpReplyProtocol(asyncio.Protocol):
    __slots__ = ("closed", "reader", "sink", "transport")

    def __init__(self, sink: ReplySink, max_record: int) -> None:
        self.sink = sink
        self.reader = RecordReader(max_record)
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except RecordError as e:
            log.warning("closing RPC connection: %s", e)
            self.closed = True
            self.sink.fail_all(RpcConnectionError(f"bad reply stream: {e}"))
            assert self.transport is not None
            self.transport.abort()
            return
        for rec in records:
            self.sink.reply(rec, strict=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f": {exc}" if exc else ""
        self.sink.fail_all(RpcConnectionError(f"connection closed{why}"))
