"""The TCP server transport on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from floatlock.net.recordmark import RecordReader, frame
from floatlock.net.tcp import TcpServer
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.message import AcceptStat, RpcError, encode_call, parse_reply
from floatlock.xdr import Decoder, Encoder

PROG, VERS = 0x20000F10, 1
ECHO, WAIT, OPEN_GATE, WHO = 1, 2, 3, 4

pytestmark = pytest.mark.timeout(60)


def _opaque(d: Decoder) -> bytes:
    return d.opaque()


def _enc_opaque(v: bytes) -> bytes:
    e = Encoder()
    e.opaque(v)
    return e.getvalue()


def _enc_u32(v: int) -> bytes:
    e = Encoder()
    e.u32(v)
    return e.getvalue()


def _enc_strings(v: tuple[str, str]) -> bytes:
    e = Encoder()
    e.string(v[0])
    e.string(v[1])
    return e.getvalue()


class App:
    """A dispatcher with an echo, a call that waits for a gate, and a who-am-I."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self.dispatcher = Dispatcher()

        async def wait(n: int, _call: Call) -> int:
            self.started += 1
            await self.gate.wait()
            return n

        def open_gate(_args: None, _call: Call) -> None:
            self.gate.set()

        def who(_args: None, call: Call) -> tuple[str, str]:
            return (call.client_ip, call.server)

        self.dispatcher.register(
            PROG,
            VERS,
            {
                ECHO: Procedure("ECHO", lambda a, _c: a, _opaque, _enc_opaque),
                WAIT: Procedure("WAIT", wait, lambda d: d.u32(), _enc_u32),
                OPEN_GATE: Procedure("OPEN_GATE", open_gate),
                WHO: Procedure("WHO", who, None, _enc_strings),
            },
        )


def echo_call(xid: int, payload: bytes) -> bytes:
    return encode_call(xid, PROG, VERS, ECHO, _enc_opaque(payload))


def echo_result(body: bytes) -> bytes:
    return Decoder(body).opaque()


def run(
    fn: Callable[[App, TcpServer], Awaitable[None]], host: str = "127.0.0.1", **kw: Any
) -> TcpServer:
    """Run ``fn`` against a fresh server on ``host``; return the server for its stats."""

    async def main() -> TcpServer:
        app = App()
        server = TcpServer(app.dispatcher, host, 0, **kw)
        await server.start()
        try:
            await fn(app, server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


class Conn:
    """A raw test client: send bytes, read whole replies."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.rm = RecordReader()
        self.records: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.w.write(data)
        await self.w.drain()

    async def reply(self) -> bytes:
        while not self.records:
            data = await asyncio.wait_for(self.r.read(65536), 20)
            if not data:
                raise ConnectionError("closed")
            self.records += self.rm.feed(data)
        return self.records.pop(0)

    async def closed_by_peer(self) -> bool:
        """True once the server closes the connection (EOF or reset)."""
        try:
            while True:
                data = await asyncio.wait_for(self.r.read(65536), 20)
                if not data:
                    return True
        except ConnectionError:
            return True

    def close(self) -> None:
        self.w.close()


async def echo_ok(host: str, port: int, payload: bytes = b"ping") -> None:
    c = await Conn.open(host, port)
    await c.send(frame(echo_call(7, payload)))
    rep = parse_reply(await c.reply())
    assert rep.xid == 7 and echo_result(rep.body) == payload
    c.close()


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.005)


# -- tests ---------------------------------------------------------------------------------


def test_echo_and_rpc_errors() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(echo_call(1, b"hello")))
        assert echo_result(parse_reply(await c.reply()).body) == b"hello"
        await c.send(frame(encode_call(2, PROG, VERS, 99)))
        with pytest.raises(RpcError) as ei:
            parse_reply(await c.reply())
        assert ei.value.accept_stat == AcceptStat.PROC_UNAVAIL
        c.close()

    srv = run(t)
    assert srv.stats.records == 2 and srv.stats.replies == 2 and srv.stats.connections == 1


def test_multi_fragment_record() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        payload = bytes(range(256)) * 40
        await c.send(frame(echo_call(5, payload), fragment_size=7))
        rep = parse_reply(await c.reply())
        assert rep.xid == 5 and echo_result(rep.body) == payload
        c.close()

    run(t)


def test_pipelined_calls_answered_out_of_order() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        calls = [encode_call(1000 + i, PROG, VERS, WAIT, _enc_u32(i)) for i in range(20)]
        calls += [echo_call(2000 + i, b"e%d" % i) for i in range(100)]
        calls.append(encode_call(3000, PROG, VERS, OPEN_GATE))
        await c.send(b"".join(frame(m) for m in calls))
        got = [parse_reply(await c.reply()) for _ in calls]
        order = [r.xid for r in got]
        # The WAIT calls were sent first but cannot finish before OPEN_GATE, which was sent
        # last: every echo and the gate's reply overtake them.
        assert order[:101] == [*range(2000, 2100), 3000]
        assert sorted(order[101:]) == list(range(1000, 1020))
        for r in got:
            if 1000 <= r.xid < 1020:
                assert Decoder(r.body).u32() == r.xid - 1000
            elif 2000 <= r.xid < 2100:
                assert echo_result(r.body) == b"e%d" % (r.xid - 2000)
        c.close()

    srv = run(t)
    assert srv.stats.records == 121


def test_outstanding_calls_are_bounded_per_connection() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(
            b"".join(frame(encode_call(i, PROG, VERS, WAIT, _enc_u32(i))) for i in range(6))
        )
        await until(lambda: srv.stats.records == 6)
        # All six arrived, but only max_pending of them were started.
        assert app.started == 2
        app.gate.set()
        xids = sorted([parse_reply(await c.reply()).xid for _ in range(6)])
        assert xids == list(range(6))
        assert app.started == 6
        # Reading resumed: the connection still works.
        await c.send(frame(echo_call(9, b"after")))
        assert echo_result(parse_reply(await c.reply()).body) == b"after"
        c.close()

    run(t, max_pending=2)


def test_write_back_pressure_from_a_peer_that_does_not_read() -> None:
    n, size = 48, 256 * 1024

    async def t(app: App, srv: TcpServer) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.connect(("127.0.0.1", srv.port))
        r, w = await asyncio.open_connection(sock=sock)
        c = Conn(r, w)
        payload = b"p" * size

        async def writer() -> None:
            for i in range(n):
                await c.send(frame(echo_call(i, payload)))

        task = asyncio.ensure_future(writer())
        # 12 MiB of replies cannot sit in socket buffers: the server must pause writing.
        await until(lambda: srv.stats.write_pauses > 0)
        got = [parse_reply(await c.reply()) for _ in range(n)]
        await task
        assert [g.xid for g in got] == list(range(n))
        assert all(echo_result(g.body) == payload for g in got)
        c.close()

    srv = run(t)
    assert srv.stats.records == n


def test_peer_sending_one_byte_at_a_time() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        data = frame(echo_call(11, b"slowly"), fragment_size=9) + frame(echo_call(12, b"again"))
        for i in range(len(data)):
            await c.send(data[i : i + 1])
            await asyncio.sleep(0)
        assert echo_result(parse_reply(await c.reply()).body) == b"slowly"
        assert echo_result(parse_reply(await c.reply()).body) == b"again"
        c.close()

    srv = run(t)
    assert srv.stats.records == 2


def test_oversize_record_closes_only_that_connection() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        other = await Conn.open("127.0.0.1", srv.port)
        bad = await Conn.open("127.0.0.1", srv.port)
        await bad.send(struct.pack(">I", 0x80000000 | 5000) + b"\0" * 100)
        assert await bad.closed_by_peer()
        # The established neighbour and new connections are still served.
        await other.send(frame(echo_call(1, b"still here")))
        assert echo_result(parse_reply(await other.reply()).body) == b"still here"
        await echo_ok("127.0.0.1", srv.port)
        other.close()

    srv = run(t, max_record=4096)
    assert srv.stats.oversize == 1


def test_record_at_the_limit_is_served() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        call = echo_call(3, b"x" * 100)
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(call))
        assert echo_result(parse_reply(await c.reply()).body) == b"x" * 100
        c.close()

    run(t, max_record=len(echo_call(3, b"x" * 100)))


def test_connection_cap() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        a = await Conn.open("127.0.0.1", srv.port)
        b = await Conn.open("127.0.0.1", srv.port)
        await until(lambda: srv.connection_count == 2)
        c = await Conn.open("127.0.0.1", srv.port)
        assert await c.closed_by_peer()
        assert srv.stats.refused == 1
        # The two admitted connections work; when one goes, a new one is admitted.
        await a.send(frame(echo_call(1, b"a")))
        assert echo_result(parse_reply(await a.reply()).body) == b"a"
        b.close()
        await until(lambda: srv.connection_count == 1)
        await echo_ok("127.0.0.1", srv.port)
        a.close()

    srv = run(t, max_connections=2)
    assert srv.stats.connections == 3


def test_idle_connection_is_closed() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(echo_call(1, b"x")))
        await c.reply()
        assert await c.closed_by_peer()
        assert srv.stats.idle_closed == 1
        await until(lambda: srv.connection_count == 0)

    srv = run(t, idle_timeout=0.2)
    assert srv.stats.active == 0


def test_busy_connection_is_not_idle() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(encode_call(1, PROG, VERS, WAIT, _enc_u32(1))))
        await until(lambda: app.started == 1)
        # A call in progress keeps the connection open through several idle periods.
        await asyncio.sleep(0.5)
        assert srv.stats.idle_closed == 0
        app.gate.set()
        assert parse_reply(await c.reply()).xid == 1
        c.close()

    run(t, idle_timeout=0.1)


def test_garbage_does_not_hurt_the_server() -> None:
    rnd = random.Random(1234)

    async def t(app: App, srv: TcpServer) -> None:
        for i in range(30):
            c = await Conn.open("127.0.0.1", srv.port)
            junk = rnd.randbytes(rnd.randrange(1, 3000))
            if i % 2:
                # Well-framed records full of junk reach the dispatcher.
                junk = frame(junk[: rnd.randrange(0, 200)]) + frame(junk)
            await c.send(junk)
            await c.send(frame(echo_call(77, b"after junk")))
            c.w.write_eof()
            # Either answered (junk was dropped) or closed; never a crash.
            try:
                while True:
                    rec = await c.reply()
                    if parse_reply(rec).xid == 77:
                        break
            except (ConnectionError, RpcError):
                pass
            c.close()
        await echo_ok("127.0.0.1", srv.port, b"alive")

    srv = run(t, max_record=4096)
    assert srv.stats.dispatch_errors == 0


def test_server_address_is_the_local_address() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.3", srv.port)
        await c.send(frame(encode_call(1, PROG, VERS, WHO)))
        d = Decoder(parse_reply(await c.reply()).body)
        assert (d.string(), d.string()) == ("127.0.0.1", "127.0.0.3")
        c.close()

    run(t, host="127.0.0.3")


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_loopback() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("::1", srv.port)
        await c.send(frame(encode_call(1, PROG, VERS, WHO)))
        d = Decoder(parse_reply(await c.reply()).body)
        assert (d.string(), d.string()) == ("::1", "::1")
        c.close()

    run(t, host="::1")


def test_half_close_still_gets_pending_replies() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(encode_call(1, PROG, VERS, WAIT, _enc_u32(5))))
        await c.send(frame(echo_call(2, b"sync")))
        c.w.write_eof()
        assert parse_reply(await c.reply()).xid == 2
        await until(lambda: app.started == 1)
        app.gate.set()
        rep = parse_reply(await c.reply())
        assert rep.xid == 1 and Decoder(rep.body).u32() == 5
        # Every call answered: the server closes its side too.
        assert await c.closed_by_peer()

    run(t)


def test_close_drops_connections() -> None:
    async def t(app: App, srv: TcpServer) -> None:
        c = await Conn.open("127.0.0.1", srv.port)
        await c.send(frame(echo_call(1, b"x")))
        await c.reply()
        await srv.close()
        assert await c.closed_by_peer()
        assert srv.connection_count == 0

    run(t)


_DUAL_STACK = """
import asyncio, socket, subprocess
from floatlock.net.tcp import TcpServer
from floatlock.rpc.dispatch import Dispatcher

async def main() -> None:
    v6 = TcpServer(Dispatcher(), "::", 0)
    await v6.start()
    v4 = TcpServer(Dispatcher(), "0.0.0.0", v6.port)
    await v4.start()
    print("ok", v6.port == v4.port)
    await v4.close()
    await v6.close()

asyncio.run(main())
"""


@pytest.mark.root
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_wildcard_v6_is_v6_only_so_v4_wildcard_coexists() -> None:
    # Wildcard listeners run in a fresh network namespace: nothing outside can reach them.
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    try:
        out = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", _DUAL_STACK],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("unshare not available")
    if out.returncode != 0 and "unshare" in out.stderr:
        pytest.skip(f"cannot create a network namespace: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "True"]
