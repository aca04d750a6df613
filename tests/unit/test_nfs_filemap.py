"""READ data sent from the file's mapping (nfs/filemap.py): when it is used, that it holds the
file's bytes, that nothing but the kernel reads it, and what a truncation under it does."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nfs import filemap, ops_io
from floatlock.nfs.context import Request, ServerState
from floatlock.nfs.filemap import FileSlice, FileWindow, Truncated, resident
from floatlock.nfs.openfiles import OpenFiles
from floatlock.nfs.proto import Nfsstat3
from floatlock.nfs.proto_args import ReadArgs
from floatlock.nfs.proto_res_io import ReadRes
from floatlock.nfs.resolver import NotCached
from floatlock.xdr import Decoder
from tests.unit.nfsstate import handle_of, nfs_state, request

MiB = 1 << 20

needs_cachestat = pytest.mark.skipif(
    not filemap.available, reason="no cachestat(2) on this machine"
)


def _evictable(path: Path) -> None:
    """Skip unless clean pages of ``path`` can be dropped (not on tmpfs, whose pages are the
    storage), found from the mount table, not from what the test is about."""
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if str(path).startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best):
                best, fstype = mnt, fields[2]
    if fstype in ("tmpfs", "ramfs"):
        pytest.skip(f"{path} is on {fstype}: its pages cannot be dropped")


def _nowait_reads(path: Path) -> None:
    """Skip unless the filesystem of ``path`` reads with RWF_NOWAIT (tmpfs does not): only
    there are READs done on the loop, copied or mapped."""
    probe = path / ".nowait"
    probe.write_bytes(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.preadv(fd, (bytearray(1),), 0, os.RWF_NOWAIT)
    except OSError as e:
        pytest.skip(f"no RWF_NOWAIT reads on {path}: {e}")
    finally:
        os.close(fd)
        probe.unlink()


def _content(size: int) -> bytes:
    return bytes((i * 7 + i // 4096) & 0xFF for i in range(size))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, ServerState]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (open_by_handle_at)")
    export = tmp_path / "export"
    export.mkdir()
    with nfs_state(export) as st:
        yield export, st


def _cached(st: ServerState, path: Path, data: bytes) -> bytes:
    """A file holding ``data`` whose READ descriptor is cached (a worker's READ opened it)."""
    path.write_bytes(data)
    fh = handle_of(st, path)
    assert ops_io.read3(request(st, inline=False), ReadArgs(fh, 0, 1)).status == Nfsstat3.OK
    return fh


@needs_cachestat
def test_an_inline_tcp_read_is_sent_from_the_mapping(state: tuple[Path, ServerState]) -> None:
    export, st = state
    _nowait_reads(export)
    data = _content(3 * MiB + 5)
    fh = _cached(st, export / "f", data)
    a = ReadArgs(fh, MiB + 3, MiB)
    res = ops_io.read3(request(st), a)
    assert res.status == Nfsstat3.OK and isinstance(res.data, FileSlice)
    assert len(res.data) == MiB and bytes(res.data.view) == data[MiB + 3 : 2 * MiB + 3]
    # The worker's copy and the mapped reply encode alike (encode() copies through the kernel).
    worker = ops_io.read3(request(st, inline=False), a)
    assert res.encode() == worker.encode()
    assert ReadRes.decode(Decoder(res.encode())).data == data[MiB + 3 : 2 * MiB + 3]
    # The last bytes: the count is cut at the end of the file, and eof is set.
    end = ops_io.read3(request(st), ReadArgs(fh, 3 * MiB - 100_000, MiB))
    assert isinstance(end.data, FileSlice) and end.eof
    assert bytes(end.data.view) == data[3 * MiB - 100_000 :]


@needs_cachestat
def test_udp_small_and_window_crossing_reads_copy(
    state: tuple[Path, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    export, st = state
    _nowait_reads(export)
    monkeypatch.setattr(filemap, "WINDOW", MiB)
    monkeypatch.setattr(filemap, "MIN_MAPPED", 16384)  # UDP's 32 KiB would qualify but for UDP
    data = _content(3 * MiB)
    fh = _cached(st, export / "f", data)

    def copied(req: Request, a: ReadArgs) -> bytes:
        """The data read inline by copying, never from a mapping."""
        res = ops_io.read3(req, a)
        assert res.status == Nfsstat3.OK and not isinstance(res.data, FileSlice)
        return bytes(res.data)

    assert copied(request(st, transport="udp"), ReadArgs(fh, 0, 32768)) == data[:32768]
    assert isinstance(ops_io.read3(request(st), ReadArgs(fh, 0, 32768)).data, FileSlice)
    small = copied(request(st), ReadArgs(fh, 0, filemap.MIN_MAPPED - 1))
    assert small == data[: filemap.MIN_MAPPED - 1]
    crossing = copied(request(st), ReadArgs(fh, MiB - 4096, 8192 + filemap.MIN_MAPPED))
    assert crossing == data[MiB - 4096 : MiB + 4096 + filemap.MIN_MAPPED]
    # Within the next window: a new mapping of that window.
    inside = ops_io.read3(request(st), ReadArgs(fh, 2 * MiB, filemap.MIN_MAPPED))
    assert isinstance(inside.data, FileSlice)
    assert bytes(inside.data.view) == data[2 * MiB : 2 * MiB + filemap.MIN_MAPPED]


@needs_cachestat
def test_residency_is_asked_of_the_kernel(tmp_path: Path) -> None:
    _evictable(tmp_path)
    path = tmp_path / "f"
    path.write_bytes(_content(MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert not resident(fd, 0, MiB)
        os.pread(fd, 8192, 0)
        assert resident(fd, 0, 8192)
        assert not resident(fd, 0, MiB)
        os.pread(fd, MiB, 0)
        assert resident(fd, 100, MiB - 100)
    finally:
        os.close(fd)


@needs_cachestat
def test_residency_is_counted_page_by_page(tmp_path: Path) -> None:
    """Only page 2 cached: ranges reaching into page 1 or 3 by one byte are not resident."""
    _evictable(tmp_path)
    page = os.sysconf("SC_PAGESIZE")
    path = tmp_path / "f"
    path.write_bytes(bytes(8 * page))
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.pwrite(fd, b"p" * page, 2 * page)  # a whole page: cached without reading the disk
        assert resident(fd, 2 * page, page)
        assert resident(fd, 2 * page + 1, page - 1)
        assert not resident(fd, 2 * page, page + 1)
        assert not resident(fd, 2 * page - 1, 2)
    finally:
        os.close(fd)


def test_windows_are_bounded_and_release_what_they_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most MAX_MAPPED bytes mapped; a window's descriptor and its share of the bound go
    when the window and its last slice are gone."""
    monkeypatch.setattr(filemap, "WINDOW", MiB)
    base = filemap.mapped_bytes()  # windows other tests' objects may still hold
    monkeypatch.setattr(filemap, "MAX_MAPPED", base + 2 * MiB)
    path = tmp_path / "f"
    path.write_bytes(_content(3 * MiB))
    fd = os.open(path, os.O_RDONLY)

    def open_on_file() -> int:  # descriptors of this process on the file, ours included
        n = 0
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/self/fd/{name}") == str(path)
        return n

    try:
        first = FileWindow(fd, 0, 3 * MiB)
        second = FileWindow(fd, MiB, 3 * MiB)
        assert open_on_file() == 5  # ours, and two per window (its own, and mmap's dup)
        assert filemap.mapped_bytes() == base + 2 * MiB
        with pytest.raises(OSError):
            FileWindow(fd, 2 * MiB, 3 * MiB)
        part = second.slice(MiB, 4096)
        del first, second
        gc.collect()
        assert filemap.mapped_bytes() == base + MiB  # the slice keeps its window
        del part
        gc.collect()
        assert filemap.mapped_bytes() == base
        assert open_on_file() == 1
        assert FileWindow(fd, 2 * MiB, 3 * MiB).end == 3 * MiB
    finally:
        os.close(fd)


@needs_cachestat
def test_a_mapped_read_sets_the_access_time_a_copy_would(
    state: tuple[Path, ServerState],
) -> None:
    export, st = state
    _nowait_reads(export)
    if os.statvfs(export).f_flag & os.ST_NOATIME:
        pytest.skip("mounted noatime")
    fh = _cached(st, export / "f", _content(MiB))
    assert isinstance(ops_io.read3(request(st), ReadArgs(fh, 0, MiB)).data, FileSlice)
    old = os.stat(export / "f")  # the window is mapped (mmap itself sets the atime): now
    os.utime(export / "f", ns=(old.st_mtime_ns - 10**12, old.st_mtime_ns))  # atime < mtime
    res = ops_io.read3(request(st), ReadArgs(fh, 0, MiB))
    assert isinstance(res.data, FileSlice)
    assert os.stat(export / "f").st_atime_ns > old.st_mtime_ns - 10**12


@needs_cachestat
def test_pages_not_cached_go_to_a_worker(state: tuple[Path, ServerState]) -> None:
    export, st = state
    _evictable(export)
    data = _content(MiB)
    fh = _cached(st, export / "f", data)
    fd = os.open(export / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        # The first page back in the cache: the one-byte read at the offset succeeds, so only
        # the residency check of the whole range can send the READ to a worker.
        os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    with pytest.raises(NotCached):  # neither mapped nor read inline: the disk is needed
        ops_io.read3(request(st), ReadArgs(fh, 0, MiB))
    assert ops_io.read3(request(st, inline=False), ReadArgs(fh, 0, MiB)).data == data


def test_a_truncated_window_is_never_read_in_user_space(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = _content(2 * MiB)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        window = FileWindow(fd, MiB + 10, 2 * MiB)
    finally:
        os.close(fd)  # the window has its own descriptor
    part = window.slice(MiB, MiB)
    assert part is not None and window.slice(MiB - 1, 10) is not None
    assert window.slice(2 * MiB - 10, 11) is None  # past the mapped end
    assert part.copy_tail(MiB - 10) == data[-10:]
    os.truncate(path, MiB + 4096)
    r, w = os.pipe()
    try:
        # The kernel's copy of a page past the new end fails; it is not SIGBUS.
        with pytest.raises(OSError):
            os.writev(w, [part.view[8192:12288]])
    finally:
        os.close(r)
        os.close(w)
    kept = window.slice(MiB, 4096)
    assert kept is not None and kept.copy_tail(0) == data[MiB : MiB + 4096]
    with pytest.raises(Truncated):
        part.copy_tail(0)
    assert part.copy_tail(MiB) == b""


def test_closing_the_descriptor_drops_the_windows(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = _cached(st, export / "f", _content(MiB))
    entry = st.files.get(fh, False)
    assert entry is not None
    assert entry.windows.slice(entry.fd, 0, MiB, MiB) is not None
    st.files.discard(entry)
    assert len(entry.windows) == 1  # still in use
    st.files.release(entry)
    assert entry.closed and len(entry.windows) == 0


def test_a_file_keeps_its_windows_up_to_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows of one file are kept side by side (a file read again is not mapped again), the
    oldest dropped past PER_FILE; one grown past its end is mapped again, longer."""
    monkeypatch.setattr(filemap, "WINDOW", MiB)
    monkeypatch.setattr(filemap, "PER_FILE", 2)
    path = tmp_path / "f"
    data = _content(3 * MiB + 100)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        windows = filemap.FileWindows()
        first = windows.slice(fd, 0, 4096, len(data))
        second = windows.slice(fd, MiB, 4096, len(data))
        assert first is not None and second is not None and len(windows) == 2
        again = windows.slice(fd, 8192, 4096, len(data))
        assert again is not None and again._window is first._window  # not mapped again
        assert windows.slice(fd, MiB - 10, 20, len(data)) is None  # crosses a window's end
        third = windows.slice(fd, 2 * MiB, 4096, len(data))
        assert third is not None and len(windows) == 2  # the oldest window went
        renewed = windows.slice(fd, 0, 4096, len(data))
        assert renewed is not None and renewed._window is not first._window
        last = windows.slice(fd, 3 * MiB, 100, len(data))
        assert last is not None and last._window.end == len(data)
        with open(path, "ab") as f:
            f.write(b"more")
        longer = windows.slice(fd, 3 * MiB, 104, len(data) + 4)
        assert longer is not None and longer.copy_tail(100) == b"more"
    finally:
        os.close(fd)


def test_over_the_bound_a_busy_file_gives_up_its_oldest_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every mapped byte taken, a file that has windows trades its oldest for the one it
    needs; a file that has none copies."""
    monkeypatch.setattr(filemap, "WINDOW", MiB)
    monkeypatch.setattr(filemap, "MAX_MAPPED", filemap.mapped_bytes() + 2 * MiB)
    path = tmp_path / "f"
    path.write_bytes(_content(4 * MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        busy, other = filemap.FileWindows(), filemap.FileWindows()
        assert busy.slice(fd, 0, 4096, 4 * MiB) is not None
        assert busy.slice(fd, MiB, 4096, 4 * MiB) is not None
        assert other.slice(fd, 0, 4096, 4 * MiB) is None  # nothing of its own to give up
        third = busy.slice(fd, 2 * MiB, 4096, 4 * MiB)
        assert third is not None and len(busy) == 2
        assert third.copy_tail(0) == _content(4 * MiB)[2 * MiB : 2 * MiB + 4096]
    finally:
        os.close(fd)


def test_the_sweeper_unmaps_an_idle_files_windows_outside_the_lock(tmp_path: Path) -> None:
    """Unmapping a file's windows takes milliseconds: the sweeper does it after its sweep, not
    with the cache's lock held (which READs on the loop take)."""
    path = tmp_path / "f"
    path.write_bytes(_content(MiB))
    files = OpenFiles(idle_seconds=0.05)
    seen: list[bool] = []
    try:
        fd = os.open(path, os.O_RDONLY)
        entry = files.add(b"fh", False, None, fd, (0, 0))  # type: ignore[arg-type]
        part = entry.windows.slice(fd, 0, 4096, MiB)
        assert part is not None
        weakref.finalize(part._window, lambda: seen.append(files._lock.locked()))
        del part
        files.release(entry)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert entry.closed and seen == [False]
    finally:
        files.close()


@needs_cachestat
def test_without_nowait_reads_a_read_is_not_mapped_nor_waited_for(
    state: tuple[Path, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses RWF_NOWAIT reads (tmpfs, network filesystems) gets no mapped
    READ: the call goes to a worker, as a copying READ on the loop would."""
    export, st = state
    _nowait_reads(export)
    fh = _cached(st, export / "f", _content(MiB))
    plain = os.preadv

    def no_nowait(fd: int, buffers: object, offset: int, flags: int = 0) -> int:
        if flags & os.RWF_NOWAIT:
            raise OSError(errno.EOPNOTSUPP, "no RWF_NOWAIT here")
        return plain(fd, buffers, offset, flags)  # type: ignore[arg-type]

    monkeypatch.setattr(ops_io.os, "preadv", no_nowait)
    with pytest.raises(NotCached):
        ops_io.read3(request(st), ReadArgs(fh, 0, MiB))
    entry = st.files.get(fh, False)
    assert entry is not None and len(entry.windows) == 0  # nothing was mapped either
    st.files.release(entry)
