"""RPC over UDP: a socket drained in a loop, that knows and answers from each call's destination.

Theory of operation
-------------------
*Destination address.*  A node serves several virtual addresses at once, and one wildcard
socket receives the calls for all of them.  The seed's design keys lockd's hosts, grace and
statd's ``my_name`` by the local address the client talked to, so every datagram is received
with ``recvmsg`` and its IP_PKTINFO (IPv4) or IPV6_PKTINFO (IPv6) control message, which carries
the destination address of the IP header.  The reply is sent with the same control message so
it leaves *from* that address: a client that sent to 198.18.0.10 must see the answer come from
198.18.0.10, or it drops it (and after a failover the old node's address would leak out).
Parsing the control message costs one dict lookup: each distinct control message seen is
decoded once and cached with the :data:`ServerAddress` and the reply's control message.
A socket bound to one address does not ask for them (it receives for that address only and
its replies leave from it): its datagrams carry no control message and map to that address.

*Speed.*  asyncio's ``DatagramProtocol`` costs a loop callback, a protocol call and an address
tuple per datagram and tops out near 23k calls/s here.  Instead the socket is registered with
``loop.add_reader`` and the callback drains it: ``recvmsg`` until EAGAIN, dispatching each
call synchronously and sending its reply at once, up to a budget per wake-up so that other
sockets and timers are not starved (the reader is level-triggered: what is left wakes us again).
Under light load (a drain found one datagram) the next wake-ups read one datagram each and
skip the recvmsg that would only fail with EAGAIN; every 16th drains again to notice load.
Only handlers that are coroutines leave this path; their replies go out when they finish.
On Linux the drain uses recvmmsg/sendmmsg instead (:mod:`floatlock.net.mmsg`): one receive and
one send call per batch of up to 64 datagrams, same dispatch and pktinfo handling, ~25% less
CPU per call; ``batch=False`` or a platform without them keeps the recvmsg loop above.

*Robustness.*  A datagram larger than the receive buffer (MSG_TRUNC), a send that fails
(EAGAIN when the socket buffer is full, EMSGSIZE) or a dispatcher bug is counted and logged at
debug level; the loop goes on.  UDP clients retransmit, and the duplicate request cache in the
dispatcher keeps a retransmitted non-idempotent call from running twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from floatlock.address import ServerAddress, server_address
from floatlock.net import mmsg
from floatlock.rpc.dispatch import Dispatcher

log = logging.getLogger("floatlock.net.udp")

# Linux values; Python 3.11's socket module lacks IP_PKTINFO.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

_IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex

_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: the enum's & costs a Python call
#: Light-load wake-ups between two draining ones.
_PROBE = 16

# Over UDP one datagram carries one whole RPC message (record marking is for stream transports
# only, RFC 5531 section 11), so READ/WRITE sizes over UDP are bounded by this.
MAX_DATAGRAM = 65535


@dataclass(slots=True)
class UdpStats:
    datagrams: int = 0
    replies: int = 0
    truncated: int = 0
    recv_errors: int = 0
    send_errors: int = 0
    handler_errors: int = 0


class UdpServer:
    """Serve a :class:`Dispatcher` on one UDP socket (``host`` may be a wildcard)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        *,
        budget: int = 128,
        rcvbuf: int = 4 << 20,
        sndbuf: int = 4 << 20,
        batch: bool = True,
    ) -> None:
        self._dispatcher = dispatcher
        self.host = host
        self.port = port
        self._budget = budget
        self._rcvbuf = rcvbuf
        self._sndbuf = sndbuf
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._v6 = ":" in host
        #: Only a wildcard socket needs each datagram's destination (IP_PKTINFO): one bound
        #: to a single address receives for that address only and replies from it.
        self._wildcard = host in ("0.0.0.0", "::")
        # control message data -> (server address, control messages for the reply)
        self._local: dict[bytes, tuple[ServerAddress, list[tuple[int, int, bytes]]]] = {}
        self._default_server = ServerAddress(host)
        self._tasks: set[asyncio.Task[None]] = set()
        self._light = 0  # wake-ups left that read one datagram only (see _readable)
        self._batch = batch and mmsg.available()
        self._mmsg: mmsg.MmsgEndpoint | None = None
        self.stats = UdpStats()

    @property
    def sockname(self) -> tuple[Any, ...]:
        assert self._sock is not None
        return tuple(self._sock.getsockname())

    async def start(self) -> None:
        family = socket.AF_INET6 if self._v6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._v6:
                # One socket per family: "::" must not also take IPv4 (mapped addresses would
                # give a virtual server two names).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self._wildcard:
                if self._v6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            for opt, size in ((socket.SO_RCVBUF, self._rcvbuf), (socket.SO_SNDBUF, self._sndbuf)):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        if self.host not in ("0.0.0.0", "::"):
            self._default_server = server_address(self.host)
        self._loop = asyncio.get_running_loop()
        reader = self._readable
        if self._batch:
            try:
                self._mmsg = mmsg.MmsgEndpoint(
                    sock,
                    self._dispatcher.dispatch,
                    self._learn,
                    self._spawn,
                    self.stats,
                    self._default_server,
                )
                reader = self._readable_batch
            except OSError as e:  # ENOSYS, or the mmap failed: keep the recvmsg loop
                log.info("UDP: recvmmsg unavailable (%s); using recvmsg", e)
        self._loop.add_reader(sock.fileno(), reader)
        log.debug("serving UDP on %s port %d", self.host, self.port)

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._mmsg is not None:
            self._mmsg.close()
            self._mmsg = None
        for task in self._tasks:
            task.cancel()

    # -- the hot path ---------------------------------------------------------------------

    def _readable_batch(self) -> None:
        if self._sock is not None and self._mmsg is not None:
            self._mmsg.drain(self._budget)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recvmsg = sock.recvmsg
        sendmsg = sock.sendmsg
        dispatch = self._dispatcher.dispatch
        local = self._local
        stats = self.stats
        cmsg_space = 64
        # Light load: one datagram per wake-up, without the recvmsg that would only say EAGAIN
        # (the level-triggered reader wakes us again if more is queued).  Every _PROBE-th
        # wake-up drains, and a drain that finds more than one datagram goes back to draining.
        budget = self._budget
        if self._light:
            self._light -= 1
            budget = 1
        got = 0
        for _ in range(budget):
            try:
                data, anc, flags, addr = recvmsg(MAX_DATAGRAM, cmsg_space)
            except (BlockingIOError, InterruptedError):
                if got == 1:
                    self._light = _PROBE
                return
            except OSError as e:
                # ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                stats.recv_errors += 1
                log.debug("UDP recvmsg: %s", e)
                continue
            got += 1
            stats.datagrams += 1
            if flags & _MSG_TRUNC:
                stats.truncated += 1
                log.debug("dropped truncated datagram from %s", addr)
                continue
            if anc:
                entry = local.get(anc[0][2])
                if entry is None:
                    entry = self._learn(anc[0][2])
                server, cmsg = entry
            else:
                server, cmsg = self._default_server, []
            try:
                result = dispatch(data, addr, server, "udp")
            except Exception:
                stats.handler_errors += 1
                log.exception("dispatcher failed on a datagram from %s", addr)
                continue
            if result is None:
                continue
            if type(result) is bytes:
                try:
                    sendmsg((result,), cmsg, 0, addr)
                    stats.replies += 1
                except OSError as e:
                    self._send_failed(e, addr)
            else:
                self._spawn(result, cmsg, addr)  # type: ignore[arg-type]

    def _learn(self, cdata: bytes) -> tuple[ServerAddress, list[tuple[int, int, bytes]]]:
        """Decode a control message not seen before and cache what replies need."""
        if self._v6:
            addr6, ifindex = _IN6_PKTINFO.unpack_from(cdata)
            text = socket.inet_ntop(socket.AF_INET6, addr6)
            # Reply from the same address, on the same interface for link-local ones.
            cmsg = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(addr6, ifindex))]
        else:
            _ifindex, spec_dst, addr4 = _IN_PKTINFO.unpack_from(cdata)
            text = socket.inet_ntop(socket.AF_INET, addr4)
            # ipi_spec_dst is the header destination for unicast and the interface's address
            # for a broadcast: the right source for a reply either way.
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, spec_dst, bytes(4)))]
        entry = (server_address(text), cmsg)
        if len(self._local) < 4096:  # bounded: one entry per local address in practice
            self._local[bytes(cdata)] = entry
        return entry

    def _send_failed(self, e: OSError, addr: Any) -> None:
        self.stats.send_errors += 1
        if e.errno in (errno.EAGAIN, errno.ENOBUFS):
            log.debug("UDP reply to %s dropped: socket buffer full", addr)
        else:
            log.info("UDP reply to %s failed: %s", addr, e)

    def _spawn(
        self, result: Awaitable[bytes | None], cmsg: list[tuple[int, int, bytes]], addr: Any
    ) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._finish(result, cmsg, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, result: Awaitable[bytes | None], cmsg: list[tuple[int, int, bytes]], addr: Any
    ) -> None:
        try:
            reply = await result
        except Exception:
            self.stats.handler_errors += 1
            log.exception("async handler failed for a datagram from %s", addr)
            return
        if reply is None or self._sock is None:
            return
        try:
            self._sock.sendmsg((reply,), cmsg, 0, addr)
            self.stats.replies += 1
        except OSError as e:
            self._send_failed(e, addr)
