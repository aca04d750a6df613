"""UDP transport on real sockets: destination learning, reply source, async handlers, garbage."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from floatlock.net.udp import UdpServer
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.message import encode_call, parse_reply
from floatlock.xdr import Decoder

PROG = 0x20000777


def _whoami(_args: None, call: Call) -> bytes:
    return call.server.encode()


def _encode_text(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text + b"\0" * (-len(text) & 3)


async def _slow_echo(args: int, _call: Call) -> int:
    await asyncio.sleep(0.01)
    return args


def make_dispatcher() -> Dispatcher:
    d = Dispatcher()
    d.register(
        PROG,
        1,
        {
            1: Procedure("WHOAMI", _whoami, None, _encode_text),
            2: Procedure("SLOW", _slow_echo, Decoder.u32, lambda v: struct.pack(">I", v)),
        },
    )
    return d


@pytest.fixture(params=[True, False], ids=["recvmmsg", "recvmsg"])
def batch(request: pytest.FixtureRequest) -> bool:
    """Every test runs over the batched path (Linux default) and the recvmsg fallback."""
    return bool(request.param)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 20))  # type: ignore[arg-type]


async def _exchange(
    sock: socket.socket, dest: tuple[str, int], msg: bytes
) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, msg, dest)
    data, src = await loop.sock_recvfrom(sock, 65536)
    return data, src


def test_reply_leaves_from_each_destination_address(batch: bool) -> None:
    """A wildcard socket answers 127.0.0.1 from 127.0.0.1 and 127.0.0.2 from 127.0.0.2."""

    async def main() -> None:
        server = UdpServer(make_dispatcher(), "0.0.0.0", 0, batch=batch)
        await server.start()
        try:
            for dest in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.setblocking(False)
                    s.bind(("127.0.0.1", 0))
                    data, src = await _exchange(s, (dest, server.port), encode_call(5, PROG, 1, 1))
                    reply = parse_reply(data)
                    assert src == (dest, server.port)
                    assert Decoder(reply.body).string() == dest
        finally:
            server.close()

    run(main)


def test_bound_socket_knows_its_address_without_pktinfo(batch: bool) -> None:
    """A socket bound to one address (drained with recvfrom/sendto, no control messages)
    tells handlers that address and answers from it."""

    async def main() -> None:
        server = UdpServer(make_dispatcher(), "127.0.0.2", 0, batch=batch)
        await server.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.bind(("127.0.0.1", 0))
                for xid in (7, 8, 9):
                    msg = encode_call(xid, PROG, 1, 1)
                    data, src = await _exchange(s, ("127.0.0.2", server.port), msg)
                    reply = parse_reply(data)
                    assert reply.xid == xid
                    assert src == ("127.0.0.2", server.port)
                    assert Decoder(reply.body).string() == "127.0.0.2"
            assert server.stats.replies == 3
        finally:
            server.close()

    run(main)


def test_ipv6_destination_learnt(batch: bool) -> None:
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this host")

    async def main() -> None:
        server = UdpServer(make_dispatcher(), "::", 0, batch=batch)
        await server.start()
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                data, src = await _exchange(s, ("::1", server.port), encode_call(6, PROG, 1, 1))
                assert src[0] == "::1"
                assert Decoder(parse_reply(data).body).string() == "::1"
        finally:
            server.close()

    run(main)


def test_async_handlers_and_garbage_do_not_stop_service(batch: bool) -> None:
    async def main() -> None:
        server = UdpServer(make_dispatcher(), "127.0.0.1", 0, batch=batch)
        await server.start()
        rng = __import__("random").Random(7)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                loop = asyncio.get_running_loop()
                dest = ("127.0.0.1", server.port)
                # Garbage of every length, including a CALL header with broken tails.
                good = encode_call(1, PROG, 1, 2, struct.pack(">I", 9))
                for n in range(200):
                    blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
                    if n % 3 == 0:
                        blob = good[: rng.randrange(len(good))]
                    await loop.sock_sendto(s, blob, dest)
                # Now 20 concurrent slow calls: all must come back, matched by xid.
                for xid in range(100, 120):
                    await loop.sock_sendto(
                        s, encode_call(xid, PROG, 1, 2, struct.pack(">I", xid)), dest
                    )
                seen: dict[int, int] = {}
                while len(seen) < 20:
                    data = await loop.sock_recv(s, 65536)
                    try:
                        reply = parse_reply(data)
                    except Exception:
                        continue  # replies to garbage that happened to parse as calls
                    if 100 <= reply.xid < 120:
                        seen[reply.xid] = struct.unpack(">I", reply.body)[0]
                assert seen == {x: x for x in range(100, 120)}
            assert server.stats.handler_errors == 0
        finally:
            server.close()

    run(main)
