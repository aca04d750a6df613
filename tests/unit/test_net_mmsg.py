"""Batched UDP I/O (recvmmsg/sendmmsg) on real loopback sockets."""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Awaitable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from floatlock.address import ServerAddress, server_address
from floatlock.net import mmsg, msghdr
from floatlock.net.mmsg import MmsgEndpoint

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg unavailable")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
Cmsgs = list[tuple[int, int, bytes]]


@dataclass
class Stats:
    datagrams: int = 0
    replies: int = 0
    truncated: int = 0
    recv_errors: int = 0
    send_errors: int = 0
    handler_errors: int = 0


@dataclass
class Harness:
    """A server socket, its endpoint and a record of what the dispatcher saw."""

    sock: socket.socket
    v6: bool
    stats: Stats = field(default_factory=Stats)
    seen: list[tuple[bytes, Any, ServerAddress]] = field(default_factory=list)
    spawned: list[tuple[Any, Cmsgs, Any]] = field(default_factory=list)
    ep: MmsgEndpoint | None = None

    def dispatch(
        self, data: bytes, client: Hashable, server: ServerAddress, transport: str
    ) -> bytes | Awaitable[bytes | None] | None:
        assert transport == "udp"
        self.seen.append((data, client, server))
        if data.startswith(b"none"):
            return None
        if data.startswith(b"big"):
            return b"B" * 3000
        if data.startswith(b"async"):
            return _Pending()  # type: ignore[return-value]
        if data.startswith(b"boom"):
            raise RuntimeError("handler bug")
        return b"re:" + data

    def learn(self, cdata: bytes) -> tuple[ServerAddress, Cmsgs]:
        # The same decoding UdpServer._learn does.
        if self.v6:
            addr6, ifindex = struct.unpack_from("=16sI", cdata)
            text = socket.inet_ntop(socket.AF_INET6, addr6)
            cm = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, struct.pack("=16sI", addr6, ifindex))]
        else:
            _ifi, spec_dst, addr4 = struct.unpack_from("=I4s4s", cdata)
            text = socket.inet_ntop(socket.AF_INET, addr4)
            cm = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, spec_dst, bytes(4)))]
        return server_address(text), cm

    def spawn(self, result: Awaitable[bytes | None], cmsgs: Cmsgs, addr: Any) -> None:
        self.spawned.append((result, cmsgs, addr))


class _Pending:
    """Stands for a coroutine result (anything but bytes/None)."""


def make(host: str, slot_size: int = mmsg.DEFAULT_SLOT_SIZE) -> Iterator[Harness]:
    v6 = ":" in host
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind((host, 0))
    sock.setblocking(False)
    h = Harness(sock, v6)
    h.ep = MmsgEndpoint(
        sock,
        h.dispatch,
        h.learn,
        h.spawn,
        h.stats,
        ServerAddress(host),
        slots=8,
        slot_size=slot_size,
    )
    try:
        yield h
    finally:
        h.ep.close()
        sock.close()


@pytest.fixture
def v4() -> Iterator[Harness]:
    yield from make("0.0.0.0")


@pytest.fixture
def v4_small() -> Iterator[Harness]:
    yield from make("0.0.0.0", slot_size=2048)


@pytest.fixture
def v6() -> Iterator[Harness]:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        yield from make("::")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")


def client(host: str, bind: str | None = None) -> socket.socket:
    c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    c.bind((bind or host, 0))
    c.settimeout(2.0)
    return c


def drain(h: Harness, budget: int = 128) -> int:
    assert h.ep is not None
    # Datagrams on loopback are queued synchronously by sendto; drain at once.
    return h.ep.drain(budget)


def port(h: Harness) -> int:
    p: int = h.sock.getsockname()[1]
    return p


def test_layout_offsets_from_ctypes() -> None:
    assert msghdr.RESULT.size == msghdr.MMSG_SIZE == ctypes.sizeof(msghdr.MMsgHdr)
    assert msghdr.SEND_HDR.size == msghdr.MMSG_SIZE
    assert msghdr.NAME_STRIDE >= 28


def test_batch_v4_two_destinations(v4: Harness) -> None:
    """Calls to 127.0.0.1 and 127.0.0.2 on one wildcard socket: data, source, destination."""
    c1, c2 = client("127.0.0.1"), client("127.0.0.2")
    try:
        for i in range(5):
            c1.sendto(b"a%d" % i, ("127.0.0.1", port(v4)))
            c2.sendto(b"b%d" % i, ("127.0.0.2", port(v4)))
        assert drain(v4) == 10
        assert v4.stats.datagrams == 10 and v4.stats.replies == 10
        got = {d: (cl, srv) for d, cl, srv in v4.seen}
        assert got[b"a3"] == (c1.getsockname(), "127.0.0.1")
        assert got[b"b4"] == (c2.getsockname(), "127.0.0.2")
        # Replies leave from the address each client talked to.
        for c, want, prefix in ((c1, "127.0.0.1", b"re:a"), (c2, "127.0.0.2", b"re:b")):
            replies = sorted(c.recvfrom(100) for _ in range(5))
            assert [r[0] for r in replies] == [prefix + b"%d" % i for i in range(5)]
            assert all(r[1] == (want, port(v4)) for r in replies)
    finally:
        c1.close()
        c2.close()


def test_batch_v6(v6: Harness) -> None:
    c = client("::1")
    try:
        for i in range(3):
            c.sendto(b"x%d" % i, ("::1", port(v6)))
        assert drain(v6) == 3
        data, cl, srv = v6.seen[0]
        assert data == b"x0" and srv == "::1"
        assert cl == c.getsockname()  # (host, port, flowinfo, scope_id), as recvmsg gives
        for i in range(3):
            reply, frm = c.recvfrom(100)
            assert reply == b"re:x%d" % i
            assert frm[:2] == ("::1", port(v6))
    finally:
        c.close()


def test_more_than_a_batch_and_partial_batches(v4: Harness) -> None:
    """20 datagrams through 8 slots: full batches, then a partial one; budget respected."""
    c = client("127.0.0.1")
    try:
        for i in range(20):
            c.sendto(b"m%02d" % i, ("127.0.0.1", port(v4)))
        assert drain(v4, budget=8) == 8  # one full batch, then the budget stops it
        assert drain(v4) == 12  # 8 + a partial 4: stops without another call
        assert [d for d, _, _ in v4.seen] == [b"m%02d" % i for i in range(20)]
        assert sorted(c.recvfrom(100)[0] for _ in range(20)) == [b"re:m%02d" % i for i in range(20)]
        assert drain(v4) == 0  # nothing queued: EAGAIN
        assert v4.stats.recv_errors == 0
    finally:
        c.close()


def test_gaps_no_reply_errors_and_async(v4: Harness) -> None:
    """None results, handler exceptions and coroutine results do not reach sendmmsg."""
    c = client("127.0.0.1")
    try:
        for msg in (b"k1", b"none", b"k2", b"boom", b"async", b"k3"):
            c.sendto(msg, ("127.0.0.1", port(v4)))
        assert drain(v4) == 6
        assert v4.stats.replies == 3 and v4.stats.handler_errors == 1
        assert sorted(c.recvfrom(100)[0] for _ in range(3)) == [b"re:k1", b"re:k2", b"re:k3"]
        (_res, cmsgs, addr), *rest = v4.spawned
        assert not rest and addr == c.getsockname()
        assert cmsgs and cmsgs[0][:2] == (socket.IPPROTO_IP, IP_PKTINFO)
    finally:
        c.close()


def test_oversize_reply_falls_back_to_sendmsg(v4_small: Harness) -> None:
    h = v4_small
    c = client("127.0.0.2")
    try:
        c.sendto(b"small", ("127.0.0.2", port(h)))
        c.sendto(b"big", ("127.0.0.2", port(h)))
        assert drain(h) == 2 and h.stats.replies == 2
        replies = [c.recvfrom(4000) for _ in range(2)]
        assert sorted(len(r[0]) for r in replies) == [len(b"re:small"), 3000]
        assert all(r[1] == ("127.0.0.2", port(h)) for r in replies)  # pktinfo on both paths
    finally:
        c.close()


def test_truncated_datagram_counted_and_dropped(v4_small: Harness) -> None:
    h = v4_small
    c = client("127.0.0.1")
    try:
        c.sendto(b"t" * 3000, ("127.0.0.1", port(h)))  # > 2048-byte slot: MSG_TRUNC
        c.sendto(b"ok", ("127.0.0.1", port(h)))
        assert drain(h) == 2
        assert h.stats.truncated == 1 and h.stats.datagrams == 2
        assert [d for d, _, _ in h.seen] == [b"ok"]
        assert c.recvfrom(100)[0] == b"re:ok"
    finally:
        c.close()


def test_send_failure_counted(v4: Harness) -> None:
    """A reply the kernel refuses (EMSGSIZE: over 65507 bytes) is counted and dropped."""
    h = v4
    h.dispatch = lambda data, client, server, transport: (  # type: ignore[method-assign]
        b"\0" * 65536 if data == b"huge" else b"re:" + data
    )
    c = client("127.0.0.1")
    try:
        for msg in (b"a", b"huge", b"b"):
            c.sendto(msg, ("127.0.0.1", port(h)))
        assert h.ep is not None
        h.ep._dispatch = h.dispatch
        assert drain(h) == 3
        assert h.stats.replies == 2 and h.stats.send_errors == 1
        assert sorted(c.recvfrom(100)[0] for _ in range(2)) == [b"re:a", b"re:b"]
    finally:
        c.close()


def test_sockaddr_tuple_matches_recvmsg() -> None:
    raw4 = struct.pack("=H", socket.AF_INET) + struct.pack(">H", 700) + bytes([10, 1, 2, 3])
    assert msghdr.sockaddr_tuple(raw4 + bytes(8)) == ("10.1.2.3", 700)
    with pytest.raises(ValueError):
        msghdr.sockaddr_tuple(struct.pack("=H", 1) + bytes(14))
