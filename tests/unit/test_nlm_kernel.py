"""The OFD kernel mirror, against real files and real local lock holders (child processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nlm.files import ExportDirResolver, ExportFile
from floatlock.nlm.kernel import KERNEL_END, KernelHolder, KernelMirror, ReadOnlyFile, kernel_extent

END = 1 << 64  # the core's RANGE_END

# A child that takes a POSIX lock (fcntl.lockf: F_SETLK) and reports; it holds it until its
# stdin closes.  Argument: path, start, length, "x" (exclusive) or "s" (shared).
HOLDER = """
import fcntl, os, sys
path, start, length, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_RDWR)
op = fcntl.LOCK_EX if kind == "x" else fcntl.LOCK_SH
try:
    fcntl.lockf(fd, op | fcntl.LOCK_NB, length, start)
except OSError as e:
    print("busy", e.errno, flush=True)
    sys.exit(0)
print("locked", os.getpid(), flush=True)
sys.stdin.read()
"""


class LocalHolder:
    """A child process that tries a POSIX lock; ``locked`` tells whether it got it."""

    def __init__(self, path: Path, start: int, length: int, exclusive: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOLDER,
                str(path),
                str(start),
                str(length),
                "x" if exclusive else "s",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.answer = self.proc.stdout.readline().split()
        self.locked = self.answer[0] == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Path, ExportFile, KernelMirror]]:
    root = tmp_path / "export"
    root.mkdir()
    path = root / "data"
    path.write_bytes(b"0123456789" * 10)
    r = ExportDirResolver(root)
    m = KernelMirror()
    fds = len(os.listdir("/proc/self/fd"))
    yield path, r.resolve(r.handle("data")), m
    m.close_all()
    assert len(os.listdir("/proc/self/fd")) == fds  # no descriptor leaked
    r.close()


def test_kernel_extent_rule() -> None:
    assert kernel_extent(0, 10) == (0, 10)
    assert kernel_extent(5, END) == (5, 0)
    assert kernel_extent(0, KERNEL_END) == (0, 0)  # ends exactly at OFFSET_MAX + 1
    assert kernel_extent(0, KERNEL_END - 1) == (0, KERNEL_END - 1)
    assert kernel_extent(KERNEL_END - 1, KERNEL_END + 5) == (KERNEL_END - 1, 0)
    assert kernel_extent(KERNEL_END, END) is None  # nothing the kernel can name
    assert kernel_extent(3, 3) is None


def test_nlm_owners_are_distinct_in_the_kernel(
    env: tuple[Path, ExportFile, KernelMirror],
) -> None:
    _, f, m = env
    assert m.try_lock("h1", "A", f, 0, 10, exclusive=True) is None
    busy = m.try_lock("h2", "B", f, 5, 15, exclusive=False)
    assert busy == KernelHolder(-1, 0, 10, True)  # an OFD lock: no owning process
    assert not m.has("B", f.key) and len(m) == 1  # the failed owner's description is closed
    # The same owner may overlap, upgrade and downgrade its own ranges.
    assert m.try_lock("h1", "A", f, 5, 20, exclusive=False) is None
    assert m.try_lock("h1", "A", f, 0, END, exclusive=True) is None
    assert m.test("A", f, 0, END, exclusive=True) is None  # its own locks never count
    assert m.test("B", f, 50, 51, exclusive=False) == KernelHolder(-1, 0, END, True)
    m.unlock("A", f.key, 0, END)
    assert m.try_lock("h2", "B", f, 5, 15, exclusive=True) is None
    assert len(m) == 2


def test_local_posix_lock_blocks_nlm_and_names_its_pid(
    env: tuple[Path, ExportFile, KernelMirror],
) -> None:
    path, f, m = env
    child = LocalHolder(path, 10, 10)
    try:
        assert child.locked
        pid = child.proc.pid
        assert m.try_lock("h1", "A", f, 15, 16, exclusive=False) == KernelHolder(pid, 10, 20, True)
        assert m.test("A", f, 0, END, exclusive=False) == KernelHolder(pid, 10, 20, True)
        assert m.test("A", f, 20, 30, exclusive=True) is None
        assert m.try_lock("h1", "A", f, 20, 30, exclusive=True) is None
    finally:
        child.release()
    assert m.try_lock("h1", "A", f, 0, 20, exclusive=True) is None


def test_local_process_sees_nlm_locks(env: tuple[Path, ExportFile, KernelMirror]) -> None:
    path, f, m = env
    assert m.try_lock("h1", "A", f, 0, 10, exclusive=False) is None
    shared = LocalHolder(path, 0, 10, exclusive=False)
    shared.release()
    assert shared.locked  # shared with shared: fine
    excl = LocalHolder(path, 5, 1)
    assert not excl.locked and excl.answer[0] == "busy"
    excl.release()
    m.unlock("A", f.key, 0, 10)
    again = LocalHolder(path, 5, 1)
    again.release()
    assert again.locked


def test_drop_host_closes_descriptors_and_releases(
    env: tuple[Path, ExportFile, KernelMirror],
) -> None:
    path, f, m = env
    assert m.try_lock("h1", "A", f, 0, 10, exclusive=True) is None
    assert m.try_lock("h1", "A2", f, 50, 60, exclusive=True) is None
    assert m.try_lock("h2", "B", f, 20, 30, exclusive=True) is None
    assert m.drop_host("h1") == 2
    assert len(m) == 1 and m.has("B", f.key)
    probe = LocalHolder(path, 0, 10)
    probe.release()
    assert probe.locked
    assert m.drop_owner("B") == 1 and len(m) == 0
    assert m.drop_host("h1") == 0


def test_ranges_past_off_t_are_clamped(env: tuple[Path, ExportFile, KernelMirror]) -> None:
    path, f, m = env
    # Entirely past OFFSET_MAX: nothing to mirror, no descriptor.
    assert m.try_lock("h1", "A", f, KERNEL_END + 1, END, exclusive=True) is None
    assert len(m) == 0
    # Straddling 2**63: mirrored as "to the end of the file".
    assert m.try_lock("h1", "A", f, 100, KERNEL_END + 7, exclusive=True) is None
    assert m.test("B", f, KERNEL_END - 1, KERNEL_END, exclusive=False) == KernelHolder(
        -1, 100, END, True
    )
    late = LocalHolder(path, 1 << 40, 1)
    late.release()
    assert not late.locked


class _ReadOnly:
    """A LockFile whose file may only be opened for reading."""

    def __init__(self, inner: ExportFile) -> None:
        self.inner = inner
        self.key = inner.key
        self.display = inner.display

    def open(self, write: bool) -> int:
        if write:
            raise PermissionError(13, "read-only")
        return self.inner.open(False)


def test_read_only_file_allows_shared_refuses_exclusive(
    env: tuple[Path, ExportFile, KernelMirror],
) -> None:
    _, f, m = env
    ro = _ReadOnly(f)
    with pytest.raises(ReadOnlyFile):
        m.try_lock("h1", "A", ro, 0, 10, exclusive=True)
    assert len(m) == 0
    assert m.try_lock("h1", "A", ro, 0, 10, exclusive=False) is None
    with pytest.raises(ReadOnlyFile):
        m.try_lock("h1", "A", ro, 0, 10, exclusive=True)
    assert m.has("A", f.key)  # the existing shared lock stays
    assert m.try_lock("h2", "B", f, 0, 10, exclusive=True) == KernelHolder(-1, 0, 10, False)
    assert m.close("A", f.key) and not m.close("A", f.key)
    assert len(m) == 0


def test_released_descriptions_stay_idle_until_swept(
    env: tuple[Path, ExportFile, KernelMirror],
) -> None:
    path, f, m = env
    assert m.try_lock("h1", "A", f, 0, 10, exclusive=True) is None
    m.unlock("A", f.key, 0, 10)
    m.release("A", f.key)
    assert len(m) == 1 and m.idle() == 1 and m.in_use() == 0
    probe = LocalHolder(path, 0, 10)
    probe.release()
    assert probe.locked  # an idle description holds nothing
    # Reused by the owner's next lock, then idle again.
    assert m.try_lock("h1", "A", f, 0, 10, exclusive=True) is None
    assert len(m) == 1 and m.idle() == 0
    m.unlock("A", f.key, 0, 10)
    m.release("A", f.key)
    # A failed lock on an idle description leaves it idle.
    assert m.try_lock("h2", "B", f, 0, 10, exclusive=True) is None
    assert m.try_lock("h1", "A", f, 5, 6, exclusive=False) == KernelHolder(-1, 0, 10, True)
    assert m.has("A", f.key) and m.idle() == 1
    # A sweep closes only what was idle through the whole previous interval.
    assert m.sweep_idle() == 0
    assert m.sweep_idle() == 1 and not m.has("A", f.key) and len(m) == 1
    m.release("B", f.key)
    assert m.drop_host("h2") == 1 and len(m) == 0 and m.idle() == 0


def test_idle_descriptions_are_bounded(env: tuple[Path, ExportFile, KernelMirror]) -> None:
    _, f, m = env
    m.max_idle = 2
    for owner in ("A", "B", "C"):
        assert m.try_lock("h", owner, f, 0, 1, exclusive=False) is None
        m.unlock(owner, f.key, 0, 1)
        m.release(owner, f.key)
    assert m.idle() == 2 and not m.has("A", f.key)  # the oldest idle one was closed
    m.max_idle = 0
    assert m.try_lock("h", "D", f, 0, 1, exclusive=False) is None
    m.unlock("D", f.key, 0, 1)
    m.release("D", f.key)
    assert not m.has("D", f.key)  # no idle cache: closed at once
