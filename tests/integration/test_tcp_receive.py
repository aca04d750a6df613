"""The TCP server receives in place (BufferedProtocol): big calls are not copied, small
pipelined ones are cut out of one buffer; on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Hashable

import pytest

from floatlock.address import ServerAddress
from floatlock.net import receiver
from floatlock.net.recordmark import RecordReader, frame
from floatlock.net.tcp import TcpServer
from floatlock.rpc.dispatch import Call, Dispatcher, DispatchResult, Procedure
from floatlock.rpc.message import encode_call, parse_reply
from floatlock.xdr import Decoder, Encoder

pytestmark = pytest.mark.timeout(60)

PROG, VERS, SIZE = 0x20000F11, 1, 1


class Recording(Dispatcher):
    """Remembers every record it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def dispatch(
        self, data: bytes, client: Hashable, server: ServerAddress, transport: str
    ) -> DispatchResult:
        self.seen.append(data)
        return super().dispatch(data, client, server, transport)


def _size(data: bytes, _call: Call) -> int:
    return len(data)


def _enc_u32(v: int) -> bytes:
    e = Encoder()
    e.u32(v)
    return e.getvalue()


def size_call(xid: int, payload: bytes) -> bytes:
    e = Encoder()
    e.opaque(payload)
    return encode_call(xid, PROG, VERS, SIZE, e.getvalue())


def test_big_calls_arrive_uncopied_between_pipelined_small_ones(
    fresh_buffers: list[bytes | bytearray],
) -> None:
    made = fresh_buffers
    big = bytes(range(256)) * 4096  # 1 MiB
    sizes = [200] * 32 + [len(big)] + [100] * 5 + [70_000, len(big) - 1, 3]
    calls = [size_call(xid, big[:n]) for xid, n in enumerate(sizes)]

    async def main() -> Recording:
        disp = Recording()
        disp.register(PROG, VERS, {SIZE: Procedure("SIZE", _size, lambda d: d.opaque(), _enc_u32)})
        server = TcpServer(disp, "127.0.0.1", 0, max_record=(1 << 20) + 4096)
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.setblocking(False)
                await loop.sock_sendall(s, b"".join(frame(c) for c in calls))
                rm = RecordReader()
                replies: list[bytes] = []
                while len(replies) < len(calls):
                    data = await asyncio.wait_for(loop.sock_recv(s, 65536), 20)
                    assert data
                    replies += rm.feed(data)
            for xid, (n, reply) in enumerate(zip(sizes, replies, strict=True)):
                rep = parse_reply(reply)
                assert rep.xid == xid and Decoder(rep.body).u32() == n
        finally:
            await server.close()
        return disp

    disp = asyncio.run(main())
    assert disp.seen == calls
    assert all(type(rec) is bytes for rec in disp.seen)
    # A record too big for the scratch buffer is the very object it was received into (one
    # over 64 KiB that a single read brought whole is cut out of the scratch buffer instead).
    large = [rec for rec in disp.seen if len(rec) > receiver.SCRATCH]
    assert len(large) == 2
    assert all(any(rec is obj for obj in made) for rec in large)
