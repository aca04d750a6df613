"""The READ/WRITE descriptor cache: bounds, idle closing, reference counts, invalidation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest

from floatlock.nfs.exportroot import ExportRoot
from floatlock.nfs.openfiles import OpenFiles

ROOT = cast(ExportRoot, None)  # the cache only carries it


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def is_open(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still this test's descriptor of ``path``."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (path.stat().st_dev, path.stat().st_ino)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        out.append(p)
    return out


def inode(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_dev, st.st_ino


def test_hit_miss_and_modes_are_separate(files: list[Path]) -> None:
    cache = OpenFiles(8, 5.0, clock=Clock(), sweeper=False)
    assert cache.get(b"a", False) is None
    fd = os.open(files[0], os.O_RDONLY)
    e = cache.add(b"a", False, ROOT, fd, inode(files[0]))
    cache.release(e)
    hit = cache.get(b"a", False)
    assert hit is e and hit.fd == fd
    cache.release(hit)
    assert cache.get(b"a", True) is None  # the write descriptor is another entry
    cache.close()
    assert not is_open(fd, files[0])


def test_lru_bound_closes_the_oldest(files: list[Path]) -> None:
    cache = OpenFiles(2, 5.0, clock=Clock(), sweeper=False)
    fds = []
    for i, p in enumerate(files[:3]):
        fd = os.open(p, os.O_RDONLY)
        fds.append(fd)
        cache.release(cache.add(bytes([i]), False, ROOT, fd, inode(p)))
        if i == 1:
            cache.release(cache.get(bytes([0]), False))  # type: ignore[arg-type]
    # 0 was used after 1, so 1 is the least recently used and goes.
    assert len(cache) == 2
    assert not is_open(fds[1], files[1])
    assert is_open(fds[0], files[0]) and is_open(fds[2], files[2])
    assert cache.get(bytes([1]), False) is None
    cache.close()


def test_entry_in_use_survives_eviction_until_released(files: list[Path]) -> None:
    cache = OpenFiles(1, 5.0, clock=Clock(), sweeper=False)
    fd0 = os.open(files[0], os.O_RDONLY)
    busy = cache.add(b"0", False, ROOT, fd0, inode(files[0]))  # not released: a running READ
    fd1 = os.open(files[1], os.O_RDONLY)
    cache.release(cache.add(b"1", False, ROOT, fd1, inode(files[1])))
    assert cache.get(b"0", False) is None  # evicted ...
    assert is_open(fd0, files[0])  # ... but still open for the call using it
    cache.release(busy)
    assert not is_open(fd0, files[0])
    cache.close()


def test_idle_entries_are_closed_by_sweep(files: list[Path]) -> None:
    clock = Clock()
    cache = OpenFiles(8, 2.0, clock=clock, sweeper=False)
    fd0 = os.open(files[0], os.O_RDONLY)
    fd1 = os.open(files[1], os.O_RDONLY)
    cache.release(cache.add(b"0", False, ROOT, fd0, inode(files[0])))
    clock.now += 1.5
    in_use = cache.add(b"1", False, ROOT, fd1, inode(files[1]))
    assert cache.sweep() == 0
    clock.now += 1.0  # 0 idle for 2.5 s, 1 in use
    assert cache.sweep() == 1
    assert not is_open(fd0, files[0]) and is_open(fd1, files[1])
    clock.now += 10
    assert cache.sweep() == 0  # in use: never idle
    cache.release(in_use)
    clock.now += 2.0
    assert cache.sweep() == 1
    assert not is_open(fd1, files[1]) and len(cache) == 0
    cache.close()


def test_forget_inode_drops_every_mode_and_handle(files: list[Path]) -> None:
    cache = OpenFiles(8, 5.0, clock=Clock(), sweeper=False)
    r = os.open(files[0], os.O_RDONLY)
    w = os.open(files[0], os.O_WRONLY)
    other = os.open(files[1], os.O_RDONLY)
    cache.release(cache.add(b"a", False, ROOT, r, inode(files[0])))
    cache.release(cache.add(b"a", True, ROOT, w, inode(files[0])))
    cache.release(cache.add(b"b", False, ROOT, other, inode(files[1])))
    assert cache.forget_inode(*inode(files[0])) == 2
    assert not is_open(r, files[0]) and not is_open(w, files[0])
    assert cache.get(b"a", False) is None and cache.get(b"a", True) is None
    assert is_open(other, files[1]) and len(cache) == 1
    assert cache.forget_inode(*inode(files[0])) == 0
    cache.close()


def test_racing_add_keeps_the_first_descriptor(files: list[Path]) -> None:
    cache = OpenFiles(8, 5.0, clock=Clock(), sweeper=False)
    first = os.open(files[0], os.O_RDONLY)
    second = os.open(files[0], os.O_RDONLY)
    e1 = cache.add(b"a", False, ROOT, first, inode(files[0]))
    e2 = cache.add(b"a", False, ROOT, second, inode(files[0]))
    assert e1 is e2 and e1.fd == first
    assert not is_open(second, files[0]) or second == first
    cache.release(e1)
    cache.release(e2)
    cache.close()
    assert not is_open(first, files[0])


def test_discard_and_close_with_sweeper_thread(files: list[Path]) -> None:
    cache = OpenFiles(8, 60.0)  # a real sweeper thread, stopped by close()
    fd = os.open(files[0], os.O_RDONLY)
    e = cache.add(b"a", False, ROOT, fd, inode(files[0]))
    cache.discard(e)
    assert cache.get(b"a", False) is None and is_open(fd, files[0])
    cache.release(e)
    assert not is_open(fd, files[0])
    cache.close()
