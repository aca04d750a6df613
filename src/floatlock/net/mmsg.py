"""Batched UDP I/O with recvmmsg/sendmmsg (Linux): one receive and one send call per batch.

Theory of operation
-------------------
:class:`UdpServer <floatlock.net.udp.UdpServer>` pays one ``recvmsg`` and one ``sendmsg`` per
datagram; at 100k calls/s the kernel entries alone cost ~8 us per call.  ``recvmmsg(2)``
receives up to N datagrams in one call and ``sendmmsg(2)`` sends up to N, so a wake-up that
finds 20 queued calls costs two system calls instead of 40.  :class:`MmsgEndpoint` drains a
socket this way and dispatches every call synchronously, exactly like ``UdpServer._readable``:
same dispatcher, same destination-address handling (IP_PKTINFO / IPV6_PKTINFO in, the same
control message out so that the reply leaves from the address the client used), same stats.

*Why ctypes.*  Python 3.11's socket module has neither call.  ctypes is stdlib and the two
foreign calls are made once per batch, not per datagram.  What makes or breaks this design is
the per-datagram cost in Python: a naive version that reads and writes ``mmsghdr`` fields
through ctypes attribute access spends ~2 us per datagram there and wins nothing.  So ctypes
objects are only used *at setup* to lay out the memory and compute offsets; the hot path
touches the memory only through bulk buffer operations on one :class:`mmap.mmap`:

* reset before ``recvmmsg``: ONE slice assignment of a template (the receive ``mmsghdr`` array
  as built at setup) restores every ``msg_namelen``/``msg_controllen``/``msg_flags``;
* results: ONE ``struct.iter_unpack`` over the array yields ``(namelen, controllen, flags,
  len)`` for each message;
* per datagram: three slices of the mmap (payload, source sockaddr, control message) which are
  ``bytes`` at once; the sockaddr bytes key a dict of client address tuples and the control
  bytes key a dict of (server address, reply control message) so that neither is decoded again;
* per reply: one slice assignment (payload into the datagram's own receive slot, whose call has
  been copied out already) and two ``struct.pack_into`` (the send ``mmsghdr`` and its
  ``iovec``); the reply's control message is not copied: each distinct one is stored once in a
  small buffer whose address the send header points at.

Replies longer than a slot, and replies of coroutine handlers (sent when they finish), go out
with a plain ``sendmsg``.  ``sendmmsg`` may send part of a batch: the rest is sent again from
the first unsent message; a message the kernel refuses (EAGAIN/ENOBUFS when the socket buffer
is full, EMSGSIZE, ...) is counted and dropped as ``UdpServer`` does -- UDP clients retransmit.
On EAGAIN/ENOBUFS the rest of the batch is dropped too (they would fail alike).

Memory layout (one anonymous mmap per socket; pages are only backed once touched, so the
64 KiB slots cost memory only for the bytes datagrams actually fill)::

    offset 0                      recv mmsghdr[N]   (msghdr + msg_len; sizeof(MMsgHdr) each)
    + N * sizeof(MMsgHdr)         recv iovec[N]     (iov_base -> data slot i, iov_len = slot)
    + N * sizeof(IoVec)           send mmsghdr[N]   (rewritten per reply)
    + N * sizeof(MMsgHdr)         send iovec[N]     (rewritten per reply)
    + N * sizeof(IoVec)           name slot[N]      (sockaddr_in6 size rounded up to 8)
    + N * name_stride             control slot[N]   (CONTROL_SPACE bytes each)
    rounded up to a page          data slot[N]      (slot_size bytes each)

All offsets come from the ctypes structure definitions in :mod:`floatlock.net.msghdr`
(``sizeof`` and field ``offset``), never from hard-coded numbers.  The structures follow glibc
on Linux (``size_t`` ``msg_iovlen``/``msg_controllen``/``cmsg_len``); :func:`available` is
False elsewhere and the caller keeps its ``recvmsg`` path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import socket
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final, Protocol

from floatlock.address import ServerAddress
from floatlock.net.msghdr import (
    IOV_PACK,
    IOV_SIZE,
    LIBC,
    MMSG_SIZE,
    NAME_STRIDE,
    RESULT,
    SEND_HDR,
    IoVec,
    MMsgHdr,
    SockaddrIn6,
    align,
    available,
    encode_cmsgs,
    first_cmsg_data,
    sockaddr_tuple,
)
from floatlock.rpc.dispatch import DispatchResult

__all__ = [
    "CONTROL_SPACE",
    "DEFAULT_SLOTS",
    "DEFAULT_SLOT_SIZE",
    "MmsgEndpoint",
    "available",
]

log = logging.getLogger("floatlock.net.mmsg")

DEFAULT_SLOTS: Final = 64
#: One whole UDP datagram per slot: nothing is truncated that recvmsg(65535) would not truncate.
DEFAULT_SLOT_SIZE: Final = 65536
#: Bytes of control buffer per message (the same as UdpServer's recvmsg ancillary size).
CONTROL_SPACE: Final = 64
#: Client address tuples and control messages cached by their raw bytes (then cleared).
MAX_CACHED: Final = 4096

_MSG_TRUNC: Final = int(socket.MSG_TRUNC)
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_RETRY_RECV: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


# -- the endpoint -----------------------------------------------------------------------------


class Stats(Protocol):
    """The counters MmsgEndpoint updates (UdpServer's UdpStats has them all)."""

    datagrams: int
    replies: int
    truncated: int
    recv_errors: int
    send_errors: int
    handler_errors: int


Cmsgs = list[tuple[int, int, bytes]]
Dispatch = Callable[[bytes, Hashable, ServerAddress, str], DispatchResult]
#: Decode the data of a received pktinfo control message: (server address, reply cmsgs).
Learn = Callable[[bytes], tuple[ServerAddress, Cmsgs]]
#: Run a coroutine result and send its reply later (UdpServer._spawn).
Spawn = Callable[[Awaitable[bytes | None], Cmsgs, Any], None]


class MmsgEndpoint:
    """Drain a bound non-blocking UDP socket with recvmmsg, answer with sendmmsg.

    ``learn``, ``spawn``, ``stats`` and ``default_server`` are the owning UdpServer's: the
    endpoint caches what ``learn`` returns per distinct raw control buffer, adding the reply's
    encoded control message and the address of its persistent copy.
    """

    def __init__(
        self,
        sock: socket.socket,
        dispatch: Dispatch,
        learn: Learn,
        spawn: Spawn,
        stats: Stats,
        default_server: ServerAddress,
        *,
        transport: str = "udp",
        slots: int = DEFAULT_SLOTS,
        slot_size: int = DEFAULT_SLOT_SIZE,
    ) -> None:
        if LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        if not 1 <= slots <= 1024 or slot_size < 64:
            raise ValueError("slots must be 1..1024 and slot_size >= 64")
        self._recvmmsg, self._sendmmsg = LIBC
        self._sock = sock
        self._fd = sock.fileno()
        self._dispatch = dispatch
        self._learn = learn
        self._spawn = spawn
        self.stats = stats
        self._transport = transport
        self.slots = slots
        self.slot_size = slot_size

        n = slots
        self._recv_hdr = 0
        recv_iov = self._recv_hdr + n * MMSG_SIZE
        self._send_hdr = recv_iov + n * IOV_SIZE
        send_iov = self._send_hdr + n * MMSG_SIZE
        names = send_iov + n * IOV_SIZE
        controls = names + n * NAME_STRIDE
        data = align(controls + n * CONTROL_SPACE, mmap.PAGESIZE)
        size = data + n * slot_size
        self._mm = mm = mmap.mmap(-1, size)
        self._mv = memoryview(mm)
        anchor = ctypes.c_char.from_buffer(mm)
        base = ctypes.addressof(anchor)
        self._base = base

        recv = (MMsgHdr * n).from_buffer(mm, self._recv_hdr)
        riov = (IoVec * n).from_buffer(mm, recv_iov)
        for i in range(n):
            riov[i].iov_base = base + data + i * slot_size
            riov[i].iov_len = slot_size
            h = recv[i].msg_hdr
            h.msg_name = base + names + i * NAME_STRIDE
            h.msg_namelen = ctypes.sizeof(SockaddrIn6)
            h.msg_iov = ctypes.addressof(riov[i])
            h.msg_iovlen = 1
            h.msg_control = base + controls + i * CONTROL_SPACE
            h.msg_controllen = CONTROL_SPACE
        del recv, riov, h, anchor  # release the exports: the mmap can then be closed
        self._template = bytes(mm[self._recv_hdr : recv_iov])
        self._recv_hdr_addr = base + self._recv_hdr
        # Per receive slot: (data offset, name offset, control offset, name address, data addr).
        self._slot_info = tuple(
            (
                data + i * slot_size,
                names + i * NAME_STRIDE,
                controls + i * CONTROL_SPACE,
                base + names + i * NAME_STRIDE,
                base + data + i * slot_size,
            )
            for i in range(n)
        )
        # Per send slot: (mmsghdr offset, iovec offset, iovec address).
        self._send_info = tuple(
            (
                self._send_hdr + j * MMSG_SIZE,
                send_iov + j * IOV_SIZE,
                base + send_iov + j * IOV_SIZE,
            )
            for j in range(n)
        )
        # Reply control messages, one persistent buffer each (address -> kept alive here).
        self._control_bufs: list[ctypes.Array[ctypes.c_char]] = []
        # raw received control bytes -> (server, reply cmsgs, reply control address, length)
        self._local: dict[bytes, tuple[ServerAddress, Cmsgs, int, int]] = {
            b"": (default_server, [], 0, 0)
        }
        # raw sockaddr bytes -> the client address tuple handed to the dispatcher
        self._clients: dict[bytes, tuple[Any, ...]] = {}

    def close(self) -> None:
        """Free the buffers (the socket belongs to the caller)."""
        self._mv.release()
        self._mm.close()

    def _learn_control(self, control: bytes) -> tuple[ServerAddress, Cmsgs, int, int]:
        cdata = first_cmsg_data(control)
        if cdata is None:
            return self._local[b""]
        server, cmsgs = self._learn(cdata)
        raw = encode_cmsgs(cmsgs)
        if raw:
            buf = ctypes.create_string_buffer(raw, len(raw))
            self._control_bufs.append(buf)
            entry = (server, cmsgs, ctypes.addressof(buf), len(raw))
        else:
            entry = (server, cmsgs, 0, 0)
        if len(self._local) < MAX_CACHED:
            self._local[control] = entry
        return entry

    def _client(self, name: bytes) -> tuple[Any, ...]:
        addr = sockaddr_tuple(name)
        clients = self._clients
        if len(clients) >= MAX_CACHED:
            clients.clear()
        clients[name] = addr
        return addr

    # -- the hot path -------------------------------------------------------------------------

    def drain(self, budget: int = 128) -> int:
        """Receive, dispatch and answer up to about ``budget`` datagrams; returns how many.

        Stops early when a recvmmsg returns fewer than a full batch (the queue is empty then):
        no extra call that would only fail with EAGAIN.
        """
        fd, mm, mv = self._fd, self._mm, self._mv
        recvmmsg = self._recvmmsg
        nslots, slot_size = self.slots, self.slot_size
        hdr0, hdr_addr, template = self._recv_hdr, self._recv_hdr_addr, self._template
        hdr1 = hdr0 + len(template)
        slot_info, send_info = self._slot_info, self._send_info
        local, clients = self._local, self._clients
        dispatch, transport = self._dispatch, self._transport
        iter_result = RESULT.iter_unpack
        pack_hdr = SEND_HDR.pack_into
        pack_iov = IOV_PACK.pack_into
        stats = self.stats
        total = 0
        while total < budget:
            mv[hdr0:hdr1] = template
            n = recvmmsg(fd, hdr_addr, nslots, _MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in _RETRY_RECV:
                        # ICMP errors of earlier sends surface here (ECONNREFUSED): not fatal.
                        stats.recv_errors += 1
                        log.debug("UDP recvmmsg: %s", errno.errorcode.get(err, err))
                        total += 1
                        continue
                break
            total += n
            stats.datagrams += n
            k = 0
            dests: list[Any] = []
            for (namelen, ctrllen, flags, mlen), (doff, noff, coff, naddr, daddr) in zip(
                iter_result(mv[hdr0 : hdr0 + n * MMSG_SIZE]), slot_info, strict=False
            ):
                name = mm[noff : noff + namelen]
                addr = clients.get(name)
                if addr is None:
                    addr = self._client(name)
                if flags & _MSG_TRUNC:
                    stats.truncated += 1
                    log.debug("dropped truncated datagram from %s", addr)
                    continue
                control = mm[coff : coff + ctrllen]
                entry = local.get(control)
                if entry is None:
                    entry = self._learn_control(control)
                server, cmsgs, caddr, clen = entry
                try:
                    result = dispatch(mm[doff : doff + mlen], addr, server, transport)
                except Exception:
                    stats.handler_errors += 1
                    log.exception("dispatcher failed on a datagram from %s", addr)
                    continue
                if result is None:
                    continue
                if type(result) is bytes:
                    rlen = len(result)
                    if rlen <= slot_size:
                        mv[doff : doff + rlen] = result
                        soff, ioff, iaddr = send_info[k]
                        pack_hdr(mv, soff, naddr, namelen, iaddr, 1, caddr, clen, 0, 0)
                        pack_iov(mv, ioff, daddr, rlen)
                        dests.append(addr)
                        k += 1
                    else:
                        self._sendmsg(result, cmsgs, addr)
                else:
                    self._spawn(result, cmsgs, addr)  # type: ignore[arg-type]
            if k:
                self._send_batch(k, dests)
            if n < nslots:
                break
        return total

    def _send_batch(self, k: int, dests: list[Any]) -> None:
        sendmmsg, fd, stats = self._sendmmsg, self._fd, self.stats
        addr0 = self._base + self._send_hdr
        start = 0
        while start < k:
            sent = sendmmsg(fd, addr0 + start * MMSG_SIZE, k - start, 0)
            if sent > 0:
                stats.replies += sent
                start += sent
                continue
            err = ctypes.get_errno() if sent < 0 else errno.EIO
            if err == errno.EINTR:
                continue
            if err in _FULL:
                stats.send_errors += k - start
                log.debug("UDP: %d replies dropped: socket buffer full", k - start)
                return
            stats.send_errors += 1
            log.info("UDP reply to %s failed: %s", dests[start], errno.errorcode.get(err, err))
            start += 1

    def _sendmsg(self, reply: bytes, cmsgs: Cmsgs, addr: Any) -> None:
        try:
            self._sock.sendmsg((reply,), cmsgs, 0, addr)
            self.stats.replies += 1
        except OSError as e:
            self.stats.send_errors += 1
            log.info("UDP reply to %s failed: %s", addr, e)
