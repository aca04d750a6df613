"""Replies in pieces (``EncodedParts``) over the TCP transport: written with writev, the unsent
rest buffered in order, nothing of the caller's buffer referenced after the write."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from floatlock.net.recordmark import RecordReader, frame
from floatlock.net.tcp import TcpServer
from floatlock.nfs.filemap import FileWindow
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.message import encode_call, parse_reply
from floatlock.rpc.parts import EncodedParts
from floatlock.xdr import Decoder, Encoder

PROG, VERS = 0x20000F11, 1
ECHO, BIG, SCRIBBLE = 1, 2, 3
BIG_SIZE = 3 * (1 << 20) + 3  # far over any loopback socket buffer, and needs XDR padding

pytestmark = pytest.mark.timeout(60)


def _pattern(seed: int) -> bytearray:
    return bytearray((i * 7 + seed) & 0xFF for i in range(256)) * (BIG_SIZE // 256 + 1)


class App:
    """ECHO (a joined reply), BIG (a reply in pieces, its data a view of ``self.data``), and
    SCRIBBLE, which overwrites ``self.data`` in place: a reply still referring to it would
    change under the client's eyes."""

    def __init__(self) -> None:
        self.data = _pattern(1)
        self.dispatcher = Dispatcher()

        def big(_args: None, _call: Call) -> EncodedParts:
            e = Encoder()
            e.u32(BIG_SIZE)
            view = memoryview(self.data)[:BIG_SIZE]
            return EncodedParts((e.getvalue(), view, b"\0" * (-BIG_SIZE & 3)))

        def scribble(_args: None, _call: Call) -> None:
            self.data[:] = b"X" * len(self.data)

        def enc(v: bytes) -> bytes:
            e = Encoder()
            e.opaque(v)
            return e.getvalue()

        self.dispatcher.register(
            PROG,
            VERS,
            {
                ECHO: Procedure("ECHO", lambda a, _c: a, lambda d: d.opaque(), enc),
                BIG: Procedure("BIG", big),
                SCRIBBLE: Procedure("SCRIBBLE", scribble),
            },
        )


def _call(xid: int, proc: int, payload: bytes | None = None) -> bytes:
    args = b""
    if payload is not None:
        e = Encoder()
        e.opaque(payload)
        args = e.getvalue()
    return frame(encode_call(xid, PROG, VERS, proc, args))


def _run(fn: Any) -> TcpServer:
    async def main() -> TcpServer:
        app = App()
        server = TcpServer(app.dispatcher, "127.0.0.1", 0)
        await server.start()
        try:
            await fn(app, server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


async def _small_window(port: int) -> socket.socket:
    """A client connection with a 16 KiB receive buffer: a 3 MiB reply cannot all leave in
    one writev, so the server must hand the rest to asyncio."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _replies(sock: socket.socket, n: int, *, slow: bool) -> list[bytes]:
    """Read ``n`` records; ``slow``: in small reads with pauses, so the server's writev
    finds the socket full and the rest of a reply must wait in asyncio's buffer."""
    loop = asyncio.get_running_loop()
    rm = RecordReader(max_record=8 << 20)
    out: list[bytes] = []
    while len(out) < n:
        data = await asyncio.wait_for(loop.sock_recv(sock, 16384 if slow else 1 << 20), 20)
        if not data:
            raise ConnectionError("closed")
        out += rm.feed(data)
        if slow:
            await asyncio.sleep(0.0005)
    return out


def _check_big(body: bytes, want: bytes) -> None:
    dec = Decoder(body)
    assert dec.u32() == BIG_SIZE
    assert body[4 : 4 + BIG_SIZE] == want
    assert body[4 + BIG_SIZE :] == b"\0" * (-BIG_SIZE & 3)


@pytest.mark.parametrize("slow", [False, True])
def test_pieces_arrive_whole_and_in_order_between_pipelined_calls(slow: bool) -> None:
    async def t(app: App, srv: TcpServer) -> None:
        want = bytes(app.data[:BIG_SIZE])
        loop = asyncio.get_running_loop()
        sock = await _small_window(srv.port)
        calls = [
            _call(1, ECHO, b"a"),
            _call(2, BIG),
            _call(3, ECHO, b"b"),
            _call(4, BIG),
            _call(5, ECHO, b"c"),
        ]
        await loop.sock_sendall(sock, b"".join(calls))  # one read: one batch on the server
        got = [parse_reply(r) for r in await _replies(sock, 5, slow=slow)]
        assert [g.xid for g in got] == [1, 2, 3, 4, 5]
        assert [Decoder(got[i].body).opaque() for i in (0, 2, 4)] == [b"a", b"b", b"c"]
        _check_big(got[1].body, want)
        _check_big(got[3].body, want)
        sock.close()

    srv = _run(t)
    assert srv.stats.replies == 5


def test_unsent_rest_is_copied_not_referenced() -> None:
    """BIG then SCRIBBLE in one batch, the client not reading yet: most of BIG's data cannot
    leave before SCRIBBLE overwrites the buffer it came from, yet the client gets it intact."""

    async def t(app: App, srv: TcpServer) -> None:
        want = bytes(app.data[:BIG_SIZE])
        loop = asyncio.get_running_loop()
        sock = await _small_window(srv.port)
        await loop.sock_sendall(sock, _call(1, BIG) + _call(2, SCRIBBLE) + _call(3, BIG))
        while srv.stats.replies < 3:  # all answered (and SCRIBBLE done) before we read
            await asyncio.sleep(0.005)
        got = [parse_reply(r) for r in await _replies(sock, 3, slow=True)]
        assert [g.xid for g in got] == [1, 2, 3]
        _check_big(got[0].body, want)
        _check_big(got[2].body, b"X" * BIG_SIZE)
        sock.close()

    _run(t)


def test_pieces_after_buffered_data_keep_their_place() -> None:
    """A reply in pieces written while asyncio's buffer still holds an earlier reply goes
    behind it (no writev past buffered data)."""

    async def t(app: App, srv: TcpServer) -> None:
        want = bytes(app.data[:BIG_SIZE])
        loop = asyncio.get_running_loop()
        sock = await _small_window(srv.port)
        # Separate sends: separate batches; the first BIG leaves a buffered rest behind.
        await loop.sock_sendall(sock, _call(1, BIG))
        while srv.stats.replies < 1:
            await asyncio.sleep(0.005)
        await loop.sock_sendall(sock, _call(2, ECHO, b"x") + _call(3, BIG))
        while srv.stats.replies < 3:
            await asyncio.sleep(0.005)
        got = [parse_reply(r) for r in await _replies(sock, 3, slow=False)]
        assert [g.xid for g in got] == [1, 2, 3]
        _check_big(got[0].body, want)
        assert Decoder(got[1].body).opaque() == b"x"
        _check_big(got[2].body, want)
        sock.close()

    _run(t)


def test_non_idempotent_pieces_are_joined_for_the_reply_cache() -> None:
    d = Dispatcher()

    def h(_a: None, _c: Call) -> EncodedParts:
        return EncodedParts((b"ab", memoryview(b"cd")))

    d.register(PROG, VERS, {1: Procedure("P", h), 2: Procedure("Q", h, idempotent=False)})
    from floatlock.address import ServerAddress
    from floatlock.rpc.message import encode_call as enc_call

    res = d.dispatch(enc_call(9, PROG, VERS, 1, b""), ("127.0.0.1", 1), ServerAddress(""), "tcp")
    assert isinstance(res, tuple) and b"".join(res)[-4:] == b"abcd"
    res = d.dispatch(enc_call(9, PROG, VERS, 2, b""), ("127.0.0.1", 1), ServerAddress(""), "tcp")
    assert type(res) is bytes and res.endswith(b"abcd")
    # A retransmission is answered from the cache, whole.
    again = d.dispatch(enc_call(9, PROG, VERS, 2, b""), ("127.0.0.1", 1), ServerAddress(""), "tcp")
    assert again == res


def _mapped_app(tmp_path: Path) -> tuple[App, bytes]:
    """An App with MAPPED: BIG's reply with its data a slice of a file's mapping, and GONE:
    the same, the file truncated after the slice was made (a race with another client)."""
    app = App()
    want = bytes(_pattern(5)[:BIG_SIZE])
    path = tmp_path / "mapped"
    path.write_bytes(want)
    fd = os.open(path, os.O_RDONLY)
    try:
        window = FileWindow(fd, 0, BIG_SIZE)
    finally:
        os.close(fd)

    def parts() -> EncodedParts:
        e = Encoder()
        e.u32(BIG_SIZE)
        data = window.slice(0, BIG_SIZE)
        assert data is not None
        return EncodedParts((e.getvalue(), data, b"\0" * (-BIG_SIZE & 3)))

    def gone(_args: None, _call: Call) -> EncodedParts:
        reply = parts()
        os.truncate(path, 1 << 20)
        return reply

    app.dispatcher.register(
        PROG + 1,
        VERS,
        {MAPPED: Procedure("MAPPED", lambda _a, _c: parts()), GONE: Procedure("GONE", gone)},
    )
    return app, want


MAPPED, GONE = 1, 2


def _run_app(app: App, fn: Any) -> TcpServer:
    async def main() -> TcpServer:
        server = TcpServer(app.dispatcher, "127.0.0.1", 0)
        await server.start()
        try:
            await fn(server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


def test_mapped_data_is_sent_whole_through_a_small_window(tmp_path: Path) -> None:
    """Mapped READ data the socket cannot take at once: its unsent rest is the kernel's copy
    of the file (copy_tail), in order with the replies around it."""
    app, want = _mapped_app(tmp_path)

    async def t(srv: TcpServer) -> None:
        loop = asyncio.get_running_loop()
        sock = await _small_window(srv.port)
        calls = [_call(1, ECHO, b"a"), _map_call(2, MAPPED), _call(3, ECHO, b"b")]
        await loop.sock_sendall(sock, b"".join(calls))
        got = [parse_reply(r) for r in await _replies(sock, 3, slow=True)]
        assert [g.xid for g in got] == [1, 2, 3]
        _check_big(got[1].body, want)
        assert Decoder(got[2].body).opaque() == b"b"
        sock.close()

    _run_app(app, t)


def test_mapped_data_truncated_before_it_left_closes_the_connection(tmp_path: Path) -> None:
    """The rest of a reply whose file shrank under it is not there to send: the connection is
    closed (the client resends the call) and the server goes on serving."""
    app, _want = _mapped_app(tmp_path)

    async def t(srv: TcpServer) -> None:
        loop = asyncio.get_running_loop()
        sock = await _small_window(srv.port)
        await loop.sock_sendall(sock, _map_call(1, GONE))
        with pytest.raises(ConnectionError):
            await _replies(sock, 1, slow=False)
        sock.close()
        again = await _small_window(srv.port)  # a new connection is served as before
        await loop.sock_sendall(again, _call(2, ECHO, b"z"))
        (reply,) = [parse_reply(r) for r in await _replies(again, 1, slow=False)]
        assert Decoder(reply.body).opaque() == b"z"
        again.close()

    _run_app(app, t)


def _map_call(xid: int, proc: int) -> bytes:
    return frame(encode_call(xid, PROG + 1, VERS, proc, b""))
