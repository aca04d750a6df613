"""An asyncio ONC RPC client over UDP or TCP, bound to a chosen source address.

Theory of operation
-------------------
floatlock calls out as well as answering: NLM GRANTED callbacks and ``*_RES`` messages to
clients, SM_NOTIFY to peers' statd, rpcbind registration.  A virtual server must be seen
calling *from its own address* (a client's statd and lockd match the caller by address), so
every client socket can be bound to a ``source`` address, and to a reserved port
(``privileged``) for peers that insist on one (RFC 1057-era convention; needs root), or to a
fixed port (``source_port``, shared between parallel one-peer clients with ``share_port``).
Binding is :func:`floatlock.net.bind.bind_source`, re-exported here.

* **Calls.**  Each call gets the next xid (random start, then +1, mod 2**32: RFC 5531 section
  9 only asks that xids differ between outstanding calls) and a future in the pending table.
  A reply is matched by xid; anything else (unknown xid, not a reply, undecodable) is counted
  and dropped (:mod:`floatlock.net.replies`).  Many calls may be outstanding on one client.
* **UDP** is at-least-once: the call is retransmitted, same xid and bytes, after ``rto``
  seconds, doubling up to ``max_rto``, at most ``retries`` times, until the overall timeout
  (the server's duplicate request cache makes the repeats harmless).  The socket is
  *connected*, so the kernel drops datagrams from any other peer.
* **TCP** frames calls with record marking (:mod:`floatlock.net.recordmark`) and never
  retransmits (RFC 5531 section 11 transports are reliable).  When the connection closes,
  every pending call fails with :class:`RpcConnectionError`; the next call reconnects.
* Errors: :class:`RpcTimeout` (a :class:`TimeoutError`) when no reply came in time;
  :class:`~floatlock.rpc.message.RpcError` for a reply that was denied or not accepted with
  SUCCESS (its ``accept_stat`` tells PROG_UNAVAIL, PROC_UNAVAIL, ...) or malformed.
  ``RpcTimeout`` and ``RpcConnectionError`` live with the reply matching
  (:mod:`floatlock.net.replies`) and are re-exported here.

Retransmission timers are plain loop callbacks, not tasks: a call costs one future and one
timer handle.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any, Literal

from floatlock.net.bind import bind_source, peer_address
from floatlock.net.recordmark import frame
from floatlock.net.replies import (
    PendingCall,
    ReplySink,
    RpcConnectionError,
    RpcTimeout,
    TcpReplyProtocol,
    UdpReplyProtocol,
)
from floatlock.rpc.message import AuthSys, encode_call

__all__ = [
    "RpcClient",
    "RpcConnectionError",
    "RpcTimeout",
    "bind_source",
    "rpc_call",
]

Transport = Literal["udp", "tcp"]


class RpcClient:
    """Calls to one RPC server over one socket; create with :meth:`connect`."""

    def __init__(
        self,
        addr: tuple[Any, ...],
        family: socket.AddressFamily,
        transport: Transport,
        *,
        source: str | None,
        source_port: int,
        privileged: bool,
        share_port: bool = False,
        timeout: float,
        retries: int,
        rto: float,
        max_rto: float,
        max_record: int,
    ) -> None:
        self.addr = addr
        self.family = family
        self.transport: Transport = transport
        self.source = source
        self.source_port = source_port
        self.privileged = privileged
        self.share_port = share_port
        self.timeout = timeout
        self.retries = retries
        self.rto = rto
        self.max_rto = max_rto
        self.max_record = max_record
        self._loop = asyncio.get_running_loop()
        self._sink = ReplySink()
        self._xid = random.getrandbits(32)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: TcpReplyProtocol | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self.retransmits = 0

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        transport: Transport = "udp",
        *,
        source: str | None = None,
        source_port: int = 0,
        privileged: bool = False,
        share_port: bool = False,
        timeout: float = 10.0,
        retries: int = 8,
        rto: float = 0.5,
        max_rto: float = 4.0,
        max_record: int = 2 << 20,
    ) -> RpcClient:
        """Open a client socket to ``host``:``port``.

        Args:
            transport: "udp" or "tcp".
            source: local address to send from (a virtual server's address), None: any.
            source_port: local port, 0: any (or a reserved one with ``privileged``).
            privileged: bind a reserved port (600-1023); needs root.
            share_port: UDP with a fixed ``source_port``: let other clients (each connected
                to a different peer) hold the same port at once (SO_REUSEADDR).
            timeout: default overall timeout of a call, seconds (also bounds connecting).
            retries: UDP retransmissions at most; the timeout still ends the call.
            rto: first UDP retransmission interval, doubled each time up to ``max_rto``.
            max_record: largest TCP reply record accepted.
        """
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unknown transport {transport!r}")
        loop = asyncio.get_running_loop()
        family, addr = await peer_address(loop, host, port, transport, source)
        client = cls(
            addr,
            family,
            transport,
            source=source,
            source_port=source_port,
            privileged=privileged,
            share_port=share_port,
            timeout=timeout,
            retries=retries,
            rto=rto,
            max_rto=max_rto,
            max_record=max_record,
        )
        try:
            if transport == "udp":
                await client._open_udp()
            else:
                await client._open_tcp(timeout)
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def local_address(self) -> tuple[Any, ...] | None:
        """The bound (address, port) of the current socket, None when not connected."""
        tr: asyncio.BaseTransport | None = self._udp
        if tr is None and self._tcp is not None:
            tr = self._tcp.transport
        if tr is None:
            return None
        name = tr.get_extra_info("sockname")
        return tuple(name) if name is not None else None

    @property
    def dropped_replies(self) -> int:
        """Replies ignored: unknown xid, late, not a reply, or malformed (UDP)."""
        return self._sink.dropped

    async def _open_udp(self) -> None:
        sock = bind_source(
            self.family, socket.SOCK_DGRAM, self.source, self.source_port, self.privileged,
            shared=self.share_port,
        )  # fmt: skip
        try:
            sock.connect(self.addr)
            tr, _ = await self._loop.create_datagram_endpoint(
                lambda: UdpReplyProtocol(self._sink), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._udp = tr

    async def _open_tcp(self, timeout: float) -> None:
        sock = bind_source(
            self.family, socket.SOCK_STREAM, self.source, self.source_port, self.privileged
        )
        try:
            async with asyncio.timeout(timeout):
                await self._loop.sock_connect(sock, self.addr)
                _, proto = await self._loop.create_connection(
                    lambda: TcpReplyProtocol(self._sink, self.max_record), sock=sock
                )
        except TimeoutError:
            sock.close()
            raise RpcTimeout(
                f"connecting to {self.addr[0]} port {self.addr[1]} timed out"
            ) from None
        except OSError as e:
            sock.close()
            raise RpcConnectionError(
                f"cannot connect to {self.addr[0]} port {self.addr[1]}: {e}"
            ) from e
        except BaseException:
            sock.close()
            raise
        self._tcp = proto

    def _next_xid(self) -> int:
        xid = self._xid = (self._xid + 1) & 0xFFFFFFFF
        # Never reuse the xid of a call still outstanding (after 2**32 calls, in theory).
        while xid in self._sink.pending:
            xid = self._xid = (xid + 1) & 0xFFFFFFFF
        return xid

    async def call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: bytes = b"",
        *,
        cred: AuthSys | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Call ``prog``/``vers``/``proc`` with XDR-encoded ``args``; return the result bytes.

        Raises :class:`RpcTimeout`, :class:`RpcConnectionError` (TCP) or
        :class:`~floatlock.rpc.message.RpcError`.
        """
        if self._closed:
            raise RpcConnectionError("client is closed")
        if self.transport == "tcp" and (self._tcp is None or self._tcp.closed):
            async with self._connect_lock:
                if self._tcp is None or self._tcp.closed:
                    await self._open_tcp(self.timeout if timeout is None else timeout)
        loop = self._loop
        limit = self.timeout if timeout is None else timeout
        xid = self._next_xid()
        msg = encode_call(xid, prog, vers, proc, args, cred)
        fut: asyncio.Future[bytes] = loop.create_future()
        p = PendingCall(fut, msg, loop.time() + limit, self.rto)
        pending = self._sink.pending
        pending[xid] = p
        try:
            if self._udp is not None:
                self._udp_send(p)
            else:
                tcp = self._tcp
                assert tcp is not None and tcp.transport is not None
                tcp.transport.write(frame(msg))
                p.timer = loop.call_at(p.deadline, self._expire, p)
            return await fut
        finally:
            del pending[xid]
            if p.timer is not None:
                p.timer.cancel()

    def _udp_send(self, p: PendingCall) -> None:
        """Send (or resend) a UDP call and arm the next retransmission or the deadline."""
        p.timer = None
        if p.fut.done():
            return
        now = self._loop.time()
        if now >= p.deadline:
            self._expire(p)
            return
        assert self._udp is not None
        if p.sends:
            self.retransmits += 1
        self._udp.sendto(p.msg)
        p.sends += 1
        if p.sends > self.retries:
            p.timer = self._loop.call_at(p.deadline, self._expire, p)
        else:
            p.timer = self._loop.call_at(min(now + p.rto, p.deadline), self._udp_send, p)
            p.rto = min(p.rto * 2, self.max_rto)

    def _expire(self, p: PendingCall) -> None:
        p.timer = None
        if not p.fut.done():
            p.fut.set_exception(RpcTimeout(f"no reply from {self.addr[0]} port {self.addr[1]}"))

    async def close(self) -> None:
        """Close the socket; calls still pending fail with :class:`RpcConnectionError`."""
        self._closed = True
        self._sink.fail_all(RpcConnectionError("client closed"))
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None and self._tcp.transport is not None:
            self._tcp.transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def rpc_call(
    host: str,
    port: int,
    transport: Transport,
    prog: int,
    vers: int,
    proc: int,
    args: bytes = b"",
    *,
    source: str | None = None,
    cred: AuthSys | None = None,
    timeout: float = 10.0,
    privileged: bool = False,
    source_port: int = 0,
    share_port: bool = False,
) -> bytes:
    """One call on a fresh client that is closed afterwards (SM_NOTIFY, rpcbind queries).

    ``source_port``/``share_port`` as for :meth:`RpcClient.connect` (``statd -o``).
    """
    client = await RpcClient.connect(
        host, port, transport, source=source, source_port=source_port, share_port=share_port,
        timeout=timeout, privileged=privileged,
    )  # fmt: skip
    try:
        return await client.call(prog, vers, proc, args, cred=cred)
    finally:
        await client.close()
