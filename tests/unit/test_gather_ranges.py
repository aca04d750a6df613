"""write_with_ranges: buffers and file ranges go out in order on a real asyncio transport.

A socketpair's one end is an asyncio transport, the other is read back.  The range is sent
with sendfile(2) when the socket takes it, the rest through asyncio's buffer; a range whose
file is shorter than promised aborts the connection; every range is given back exactly once.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.net.gather import write_with_ranges
from floatlock.rpc.filerange import FileRange


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _send(parts_of: object, sndbuf: int | None = None) -> bytes:
    """Write the parts on one end of a socketpair, then close it; what the other end got."""
    a, b = socket.socketpair()
    if sndbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Sink, sock=a)
    b.setblocking(False)
    write_with_ranges(transport, a.fileno(), parts_of)  # type: ignore[arg-type]
    transport.close()
    got = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(b, 1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    await proto.lost
    b.close()
    return bytes(got)


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(3 << 20)
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def test_buffers_and_ranges_in_order(data_file: tuple[int, bytes]) -> None:
    fd, data = data_file
    given: list[int] = []
    ranges = [FileRange(fd, 5, 1000, lambda: given.append(1)),
              FileRange(fd, 1 << 20, 2 << 20, lambda: given.append(2))]  # fmt: skip
    parts = [b"head", ranges[0], b"mid", memoryview(b"dle"), ranges[1], b"tail"]
    got = asyncio.run(_send(parts))
    assert got == b"head" + data[5:1005] + b"middle" + data[1 << 20 : 3 << 20] + b"tail"
    assert given == [1, 2]


def test_a_full_socket_sends_the_rest_through_asyncio(data_file: tuple[int, bytes]) -> None:
    """A small send buffer: sendfile takes part of the range, pread + transport.write the rest."""
    fd, data = data_file
    given: list[int] = []
    parts = [b"h", FileRange(fd, 0, 3 << 20, lambda: given.append(1)), b"t"]
    got = asyncio.run(_send(parts, sndbuf=4096))
    assert got == b"h" + data + b"t"
    assert given == [1]


def test_a_file_shorter_than_its_range_aborts(data_file: tuple[int, bytes]) -> None:
    """The reply promised 20 bytes the file does not have: the connection is aborted after the
    10 it had (the tail never goes out, so the peer cannot take a short reply for a whole one)."""
    fd, data = data_file
    given: list[int] = []
    parts = [b"h", FileRange(fd, (3 << 20) - 10, 20, lambda: given.append(1)), b"t"]
    assert asyncio.run(_send(parts)) == b"h" + data[-10:]
    assert given == [1]
