"""The async RPC client over UDP and TCP, against real loopback servers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from floatlock.address import server_address
from floatlock.net.client import (
    RpcClient,
    RpcConnectionError,
    RpcTimeout,
    Transport,
    rpc_call,
)
from floatlock.net.tcp import TcpServer
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.message import AcceptStat, RpcError, encode_call, success_header
from floatlock.xdr import Decoder, Encoder

PROG, VERS = 0x20000F11, 1
ECHO, SLEEP, WHO = 1, 2, 3

pytestmark = pytest.mark.timeout(60)


def u32(v: int) -> bytes:
    e = Encoder()
    e.u32(v)
    return e.getvalue()


def opaque(v: bytes) -> bytes:
    e = Encoder()
    e.opaque(v)
    return e.getvalue()


def make_dispatcher() -> Dispatcher:
    """ECHO (sync), SLEEP n ms then return n (async: replies come out of order), WHO."""

    async def sleep(ms: int, _call: Call) -> int:
        await asyncio.sleep(ms / 1000)
        return ms

    def who(_args: None, call: Call) -> bytes:
        e = Encoder()
        e.string(call.client_ip)
        e.u32(int(call.client[1]))
        e.string(call.server)
        return e.getvalue()

    d = Dispatcher()
    d.register(
        PROG,
        VERS,
        {
            ECHO: Procedure("ECHO", lambda a, _c: a, lambda dec: dec.opaque(), opaque),
            SLEEP: Procedure("SLEEP", sleep, lambda dec: dec.u32(), u32),
            WHO: Procedure("WHO", who, None, lambda b: b),
        },
    )
    return d


class _UdpServe(asyncio.DatagramProtocol):
    """A minimal UDP front for a Dispatcher (the real UdpServer is tested elsewhere)."""

    def __init__(self, dispatcher: Dispatcher, server: str, drop_first: bool) -> None:
        self.dispatcher = dispatcher
        self.server = server
        self.drop_first = drop_first
        self.seen: dict[bytes, int] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Future[Any]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector datagram transport is not an asyncio.DatagramTransport instance.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen[data] = self.seen.get(data, 0) + 1
        if self.drop_first and self.seen[data] == 1:
            return  # lose the first copy of every call
        res = self.dispatcher.dispatch(data, addr, server_address(self.server), "udp")
        if res is None:
            return
        if isinstance(res, bytes):
            assert self.transport is not None
            self.transport.sendto(res, addr)
            return
        fut = asyncio.ensure_future(res)
        self.tasks.add(fut)
        fut.add_done_callback(lambda f: self._done(f, addr))

    def _done(self, fut: asyncio.Future[bytes | None], addr: Any) -> None:
        self.tasks.discard(fut)
        reply = fut.result()
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def udp_server(host: str = "127.0.0.1", drop_first: bool = False) -> tuple[Any, _UdpServe]:
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(
        lambda: _UdpServe(make_dispatcher(), host, drop_first), local_addr=(host, 0)
    )
    return tr, proto


Body = Callable[[str, int], Awaitable[None]]


def with_server(
    transport: str, fn: Body, host: str = "127.0.0.1", drop_first: bool = False
) -> None:
    """Run ``fn(host, port)`` against a fresh server of the given transport."""

    async def main() -> None:
        if transport == "udp":
            tr, _ = await udp_server(host, drop_first)
            try:
                await fn(host, tr.get_extra_info("sockname")[1])
            finally:
                tr.close()
        else:
            srv = TcpServer(make_dispatcher(), host, 0)
            await srv.start()
            try:
                await fn(host, srv.port)
            finally:
                await srv.close()

    asyncio.run(main())


both = pytest.mark.parametrize("transport", ["udp", "tcp"])


@both
def test_echo(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        async with await RpcClient.connect(host, port, transport) as c:
            body = await c.call(PROG, VERS, ECHO, opaque(b"hello"))
            assert Decoder(body).opaque() == b"hello"
            assert await c.call(PROG, VERS, 0) == b""

    with_server(transport, t)


@both
def test_concurrent_calls_matched_by_xid(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, transport)
        # Longer sleeps first: the replies come back in roughly the reverse order.
        sleeps = [c.call(PROG, VERS, SLEEP, u32(ms)) for ms in range(60, 0, -3)]
        echoes = [c.call(PROG, VERS, ECHO, opaque(b"%d" % i)) for i in range(100)]
        results = await asyncio.gather(*sleeps, *echoes)
        assert [Decoder(r).u32() for r in results[:20]] == list(range(60, 0, -3))
        assert [Decoder(r).opaque() for r in results[20:]] == [b"%d" % i for i in range(100)]
        await c.close()

    with_server(transport, t)


@both
def test_rpc_errors(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, transport)
        with pytest.raises(RpcError) as ei:
            await c.call(PROG, VERS, 42)
        assert ei.value.accept_stat == AcceptStat.PROC_UNAVAIL
        with pytest.raises(RpcError) as ei:
            await c.call(PROG + 1, VERS, 0)
        assert ei.value.accept_stat == AcceptStat.PROG_UNAVAIL
        with pytest.raises(RpcError) as ei:
            await c.call(PROG, VERS + 1, 0)
        assert ei.value.accept_stat == AcceptStat.PROG_MISMATCH
        with pytest.raises(RpcError) as ei:
            await c.call(PROG, VERS, ECHO, b"\0\0\0\x09")  # opaque claims 9 bytes, has none
        assert ei.value.accept_stat == AcceptStat.GARBAGE_ARGS
        # The client is still usable after errors.
        assert Decoder(await c.call(PROG, VERS, SLEEP, u32(1))).u32() == 1
        await c.close()

    with_server(transport, t)


@both
def test_source_address_binding(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, transport, source="127.0.0.2")
        d = Decoder(await c.call(PROG, VERS, WHO))
        ip, cport, server = d.string(), d.u32(), d.string()
        assert ip == "127.0.0.2"
        assert server == "127.0.0.1"
        assert c.local_address is not None and c.local_address[:2] == ("127.0.0.2", cport)
        await c.close()
        # A fixed source port too.
        c = await RpcClient.connect(
            host,
            port,
            transport,
            source="127.0.0.4",
            source_port=cport,
        )
        d = Decoder(await c.call(PROG, VERS, WHO))
        assert (d.string(), d.u32()) == ("127.0.0.4", cport)
        await c.close()

    with_server(transport, t)


@pytest.mark.root
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
@both
def test_privileged_source_port(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(
            host,
            port,
            transport,
            source="127.0.0.2",
            privileged=True,
        )
        d = Decoder(await c.call(PROG, VERS, WHO))
        ip, cport = d.string(), d.u32()
        assert ip == "127.0.0.2" and 600 <= cport < 1024
        # A second privileged client skips the port in use.
        c2 = await RpcClient.connect(
            host,
            port,
            transport,
            source="127.0.0.2",
            privileged=True,
        )
        d = Decoder(await c2.call(PROG, VERS, WHO))
        assert d.string() == "127.0.0.2" and 600 <= d.u32() < cport
        await c.close()
        await c2.close()

    with_server(transport, t)


def test_udp_retransmits_until_answered() -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, "udp", rto=0.05, timeout=20)
        results = await asyncio.gather(
            *(c.call(PROG, VERS, ECHO, opaque(b"r%d" % i)) for i in range(10))
        )
        assert [Decoder(r).opaque() for r in results] == [b"r%d" % i for i in range(10)]
        assert c.retransmits >= 10
        await c.close()

    with_server("udp", t, drop_first=True)


def test_udp_timeout_and_backoff() -> None:
    async def main() -> None:
        # A server that reads calls and never answers.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        try:
            c = await RpcClient.connect(
                "127.0.0.1", silent.getsockname()[1], "udp", rto=0.01, max_rto=0.02, retries=3
            )
            with pytest.raises(RpcTimeout):
                await c.call(PROG, VERS, 0, timeout=1.5)
            with pytest.raises(TimeoutError):  # RpcTimeout is a TimeoutError
                await c.call(PROG, VERS, 0, timeout=0.05)
            await c.close()
            copies: list[bytes] = []
            while True:
                try:
                    copies.append(silent.recv(1000))
                except BlockingIOError:
                    break
            # The first call went out once and was retransmitted `retries` times, identically.
            first = [m for m in copies if m == copies[0]]
            assert len(first) == 4
            assert len(set(copies)) == 2
        finally:
            silent.close()

    asyncio.run(main())


def test_udp_ignores_garbage_and_unknown_xids() -> None:
    async def main() -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("127.0.0.1", 0))
        srv.setblocking(False)
        loop = asyncio.get_running_loop()

        async def answer() -> None:
            data, addr = await loop.sock_recvfrom(srv, 2000)
            xid = int.from_bytes(data[:4], "big")
            await loop.sock_sendto(srv, b"\x01\x02garbage", addr)
            await loop.sock_sendto(srv, success_header(xid ^ 1) + u32(1), addr)  # wrong xid
            await loop.sock_sendto(srv, encode_call(xid, 1, 1, 1), addr)  # a call, not a reply
            await loop.sock_sendto(srv, success_header(xid)[:10], addr)  # truncated
            await loop.sock_sendto(srv, success_header(xid) + u32(99), addr)

        try:
            c = await RpcClient.connect("127.0.0.1", srv.getsockname()[1], "udp", timeout=20)
            task = asyncio.ensure_future(answer())
            assert await c.call(PROG, VERS, 0) == u32(99)
            await task
            assert c.dropped_replies == 4
            await c.close()
        finally:
            srv.close()

    asyncio.run(main())


def test_tcp_connection_loss_fails_pending_calls_then_reconnects() -> None:
    async def main() -> None:
        srv = TcpServer(make_dispatcher(), "127.0.0.1", 0)
        await srv.start()
        port = srv.port
        c = await RpcClient.connect("127.0.0.1", port, "tcp")
        pending = asyncio.ensure_future(c.call(PROG, VERS, SLEEP, u32(5000)))
        await c.call(PROG, VERS, 0)  # the SLEEP call has been sent and is running
        await srv.close()
        with pytest.raises(RpcConnectionError):
            await pending
        # Nothing listening: a clear connection error, not a hang.
        with pytest.raises(RpcConnectionError):
            await c.call(PROG, VERS, 0)
        srv = TcpServer(make_dispatcher(), "127.0.0.1", port)
        await srv.start()
        try:
            body = await c.call(PROG, VERS, ECHO, opaque(b"back"))
            assert Decoder(body).opaque() == b"back"
        finally:
            await c.close()
            await srv.close()
        with pytest.raises(RpcConnectionError):
            await c.call(PROG, VERS, 0)

    asyncio.run(main())


def test_tcp_connect_refused() -> None:
    async def main() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with pytest.raises(RpcConnectionError):
            await RpcClient.connect("127.0.0.1", port, "tcp", timeout=5)

    asyncio.run(main())


def test_tcp_timeout() -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, "tcp")
        with pytest.raises(RpcTimeout):
            await c.call(PROG, VERS, SLEEP, u32(2000), timeout=0.1)
        # The late reply is ignored; the connection stays usable.
        assert Decoder(await c.call(PROG, VERS, SLEEP, u32(1))).u32() == 1
        await c.close()

    with_server("tcp", t)


@both
def test_one_shot_rpc_call(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        body = await rpc_call(host, port, transport, PROG, VERS, WHO, source="127.0.0.5")
        assert Decoder(body).string() == "127.0.0.5"

    with_server(transport, t)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@both
def test_ipv6(transport: Transport) -> None:
    async def t(host: str, port: int) -> None:
        c = await RpcClient.connect(host, port, transport, source="::1")
        d = Decoder(await c.call(PROG, VERS, WHO))
        assert d.string() == "::1"
        await c.close()

    with_server(transport, t, host="::1")


def test_bad_arguments() -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await RpcClient.connect("127.0.0.1", 1, "sctp")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await RpcClient.connect("127.0.0.1", 1, "udp", source="::1")

    asyncio.run(main())


def test_shared_fixed_udp_port_for_parallel_peers() -> None:
    """``share_port``: clients to different peers hold one fixed UDP source port at once and
    each gets its own replies (statd -o); without it a second bind of the port fails."""

    async def main() -> None:
        servers = [await udp_server(h) for h in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                fixed = s.getsockname()[1]
            clients = [
                await RpcClient.connect(
                    tr.get_extra_info("sockname")[0],
                    tr.get_extra_info("sockname")[1],
                    "udp",
                    source_port=fixed,
                    share_port=True,
                )
                for tr, _ in servers
            ]
            try:
                calls = [
                    c.call(PROG, VERS, ECHO, opaque(b"peer%d" % i))
                    for i, c in enumerate(clients)
                    for _ in range(5)
                ]
                got = [Decoder(r).opaque() for r in await asyncio.gather(*calls)]
                assert got == [b"peer%d" % i for i in range(3) for _ in range(5)]
                for c in clients:
                    who = Decoder(await c.call(PROG, VERS, WHO))
                    who.string()
                    assert who.u32() == fixed  # the server saw our fixed port
                    assert c.local_address is not None and c.local_address[1] == fixed
                    assert c.retransmits == 0
                with pytest.raises(OSError):
                    await RpcClient.connect("127.0.0.1", 9, "udp", source_port=fixed)
                # One-shot calls take the same options.
                tr0 = servers[0][0].get_extra_info("sockname")
                body = await rpc_call(
                    tr0[0], tr0[1], "udp", PROG, VERS, WHO, source_port=fixed, share_port=True
                )
                d = Decoder(body)
                assert (d.string(), d.u32()) == ("127.0.0.1", fixed)
            finally:
                for c in clients:
                    await c.close()
        finally:
            for tr, _ in servers:
                tr.close()

    asyncio.run(main())
