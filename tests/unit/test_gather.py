"""net/gather.py's write_gathered: one writev, the unsent rest handed to the transport in order,
and mapped READ data (rpc.parts.MappedData) never handed over as a view of the mapping."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floatlock.net.gather import write_gathered
from floatlock.nfs.filemap import FileWindow
from floatlock.rpc.parts import MappedData, joined

MiB = 1 << 20


class FakeTransport:
    """What write_gathered uses of an asyncio transport: its buffer is empty until written."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    def get_write_buffer_size(self) -> int:
        return sum(len(b) for b in self.written)

    def is_closing(self) -> bool:
        return False

    def write(self, data: Any) -> None:
        # A view of a mapping here would be read by asyncio in user space: SIGBUS territory.
        assert not isinstance(data, MappedData)
        if isinstance(data, memoryview):
            assert not hasattr(data.obj, "madvise"), "a view of a file mapping was buffered"
        self.written.append(bytes(data))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # a 1 MiB writev goes in part
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _window(tmp_path: Path, data: bytes) -> FileWindow:
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return FileWindow(fd, 0, len(data))
    finally:
        os.close(fd)


def _received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_the_unsent_rest_of_mapped_data_is_a_kernel_copy(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, b = pair
    data = bytes(range(256)) * (4 * MiB // 256)
    part = _window(tmp_path, data).slice(0, 4 * MiB)
    assert part is not None
    t = FakeTransport()
    assert write_gathered(t, a.fileno(), [b"head", part, b"tail"])  # type: ignore[arg-type]
    sent = _received(b)
    assert 0 < len(sent) < 4 * MiB  # the socket took part of it: the rest was handed over
    assert sent + b"".join(t.written) == b"head" + data + b"tail"


def test_mapped_data_truncated_away_is_not_written(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, b = pair
    data = b"d" * (4 * MiB)
    part = _window(tmp_path, data).slice(0, 4 * MiB)
    assert part is not None
    os.truncate(tmp_path / "f", MiB)
    t = FakeTransport()
    assert not write_gathered(t, a.fileno(), [b"head", part])  # type: ignore[arg-type]
    assert b"".join(t.written) == b""  # what the socket took is all that left
    assert len(_received(b)) <= 4 + MiB


class Unreadable(MappedData):
    """Mapped data whose view must not be touched by anyone but a writev."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def view(self) -> memoryview:  # type: ignore[override]
        raise AssertionError("the mapping was read")

    def __len__(self) -> int:
        return len(self.data)

    def copy_tail(self, skip: int) -> bytes:
        return self.data[skip:]


def test_joined_copies_mapped_data_through_copy_tail() -> None:
    assert joined((b"a", Unreadable(b"bcd"), memoryview(b"e"))) == b"abcde"
