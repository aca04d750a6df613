"""READ data sent straight from the page cache: read-only mappings of cached READ descriptors.

Why
---
A 1 MiB READ that copies makes two copies of the data on the server: ``preadv`` from the page
cache into a buffer, then ``writev`` from the buffer into the socket.  Sending from a shared,
read-only mapping of the file leaves one: ``writev`` copies from the page cache pages
themselves.  On this VM, READ of 1 MiB at 1 in flight went from 3,892 to 4,259 MiB/s, 0.87x
to 0.95x Ganesha, and at 4 in flight from 0.91x to 1.11x (``python -m bench.nfs_io --seconds 2
--repeat 5 --cells READ``, before and after; docs/benchmarks.md).  ``sendfile(2)``, which would
leave none, was slower here (docs/benchmarks.md, second session).

A window stays mapped while its descriptor is cached (:mod:`floatlock.nfs.openfiles`), so a
file read again is sent without a page fault; a file read once faults its pages in as it goes
(the kernel's fault-around maps up to 64 KiB per fault by default).

The residency check is not free: ``resident`` of a 1 MiB range costs 8.4 us, of one page 1.6 us
(``python -m timeit -s "from floatlock.nfs import filemap; import os; fd = os.open(PATH,
os.O_RDONLY); os.pread(fd, 1 << 20, 0)" "filemap.resident(fd, 0, 1 << 20)"``, a cached file),
against the 1 MiB copy it saves (``preadv`` of 1 MiB: 34 us here).

When it is used
---------------
Only on the event loop (inline READ, service.py), only for READs over TCP of at least
:data:`MIN_MAPPED` bytes within one :data:`WINDOW`-aligned window, and only when
``cachestat(2)`` (Linux 6.5) says every page of the range is in the page cache: the copy
happens in the loop thread's ``writev`` and must not wait for the disk.  (A page evicted
between the check and the ``writev`` is read back in that ``writev``: the one case in which the
loop waits for the disk, for one page.)  Anything else copies as before.

Bounds.  Pages sent from a mapping count in the daemon's resident set (file-backed, shared with
the page cache), and so in the OOM killer's ranking.  So at most :data:`MAX_MAPPED` bytes are
mapped at once, over all windows; past that, READs copy until windows are released (their
descriptor closed, :mod:`floatlock.nfs.openfiles`, and no reply using them).

atime.  A copy from a mapping does not update the file's access time as ``read`` does, so a
mapped READ also reads one byte of its range (``RWF_NOWAIT``, 0.69 us by ``timeit``): the same
``touch_atime`` a copying READ makes, for whoever relies on access times on the server.  Where
that read fails (a filesystem without ``RWF_NOWAIT`` reads: tmpfs, network filesystems, whose
reads the loop must not wait for) the READ is not mapped: it goes where it went before.

Safety
------
The mapping is touched only by the kernel (``writev``).  Were the file truncated under a
mapping, a *user-space* read of a page past the new end would be SIGBUS, which kills the
daemon; the kernel's own copy returns EFAULT (or a short count) instead.  So a
:class:`FileSlice` is not a buffer Python code can read: the TCP transport hands its ``view``
to ``writev`` only, and what the socket did not take is copied with :meth:`FileSlice.copy_tail`,
a ``pread`` from the window's own descriptor (a ``dup``, so the slice outlives the cached
descriptor's closing).  Data that is no longer there (truncated meanwhile) raises
:class:`Truncated`, and the transport closes the connection rather than send a reply shorter
than its header says: the client sends the READ again and gets the short answer.  One race is
not caught: a truncation to a point inside the READ's last page leaves that page mapped, its
bytes past the new end zeroed by the kernel, and the reply carries those zeros (as it would
carry a concurrent write's bytes: a READ racing a change of its range sees some of it).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import threading
import weakref

from floatlock.rpc.parts import MappedData

__all__ = [
    "MAX_MAPPED",
    "MIN_MAPPED",
    "PER_FILE",
    "WINDOW",
    "FileSlice",
    "FileWindow",
    "FileWindows",
    "Truncated",
    "mapped_bytes",
    "resident",
]

#: Bytes one mapping covers, aligned to a multiple of itself in the file.
WINDOW = 8 << 20
#: Bytes mapped at most, over every window (module docstring, "Bounds").
MAX_MAPPED = 256 << 20
#: Windows one file keeps at most (the oldest goes first): 128 MiB of it.
PER_FILE = 16
#: READs shorter than this copy: a copy of a few KiB costs less than the residency check.
MIN_MAPPED = 64 << 10

# cachestat is 451 in every architecture's table (it came after the tables were unified).
_SYS_CACHESTAT = 451 if platform.machine() in ("x86_64", "aarch64", "ppc64le", "s390x") else None


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_range = _Range()
_stat = _Stat()
_PAGE = mmap.PAGESIZE
#: False once the kernel said it has no cachestat (ENOSYS).  An EPERM is about one file
#: (cachestat wants the caller to be allowed to open it) and answers False for it alone.
available = _SYS_CACHESTAT is not None

_mapped = 0  # bytes mapped now, over all windows
_mapped_lock = threading.Lock()  # a window's finalizer runs in whichever thread drops it


class Truncated(OSError):
    """A mapped READ's data is gone (the file was truncated after the reply was built)."""


def mapped_bytes() -> int:
    """Bytes mapped now, over every window."""
    return _mapped


def resident(fd: int, offset: int, length: int) -> bool:
    """Whether every page of ``fd``'s bytes [offset, offset + length) is in the page cache
    (``cachestat(2)``); False when the kernel cannot tell.  Loop thread only (shared structs)."""
    global available
    if not available or length <= 0:
        return False
    first = offset // _PAGE
    last = (offset + length - 1) // _PAGE
    _range.off = first * _PAGE
    _range.len = (last - first + 1) * _PAGE
    args = (ctypes.byref(_range), ctypes.byref(_stat), ctypes.c_long(0))
    if _syscall(_SYS_CACHESTAT, ctypes.c_long(fd), *args) != 0:
        if ctypes.get_errno() == errno.ENOSYS:
            available = False
        return False
    return bool(_stat.nr_cache == last - first + 1)


def _reserve(length: int) -> None:
    global _mapped
    with _mapped_lock:
        taken = _mapped
        if taken + length <= MAX_MAPPED:
            _mapped = taken + length
            return
    # Raised outside the lock: nothing that could finalize a window runs while it is held.
    raise OSError(errno.ENOMEM, f"{taken} bytes of files are mapped already")


def _release(length: int) -> None:
    global _mapped
    with _mapped_lock:
        _mapped -= length


def _unmapped(fd: int, length: int) -> None:
    try:
        os.close(fd)
    finally:
        _release(length)


class FileWindow:
    """A read-only shared mapping of :data:`WINDOW` bytes (fewer at the end of the file) of a
    file, with its own descriptor for :meth:`FileSlice.copy_tail` (Python's ``mmap`` keeps a
    ``dup`` of its own too: two per window, 64 at most); all are released when the window and
    every slice of it are gone.

    Raises OSError (ENOMEM) when :data:`MAX_MAPPED` would be exceeded, OSError from ``mmap``,
    and ValueError when the file is now shorter than ``size`` says."""

    __slots__ = ("__weakref__", "_fd", "_map", "_view", "end", "start")

    def __init__(self, fd: int, offset: int, size: int) -> None:
        start = offset - offset % WINDOW
        length = min(WINDOW, size - start)
        if length <= 0:
            raise ValueError("nothing to map")
        _reserve(length)
        try:
            self._fd = os.dup(fd)
        except BaseException:
            _release(length)
            raise
        try:
            self._map = mmap.mmap(
                self._fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start
            )
        except BaseException:
            _unmapped(self._fd, length)
            raise
        weakref.finalize(self, _unmapped, self._fd, length)
        self._view = memoryview(self._map)
        self.start = start
        self.end = start + length

    def slice(self, offset: int, count: int) -> FileSlice | None:
        """Bytes [offset, offset + count) of the file, if this window maps them all."""
        if offset < self.start or offset + count > self.end:
            return None
        pos = offset - self.start
        return FileSlice(self._view[pos : pos + count], self, offset)

    def pread(self, count: int, offset: int) -> bytes:
        """``count`` bytes of the file at ``offset``, copied by the kernel (never SIGBUS)."""
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise Truncated(errno.EFAULT, f"{count - len(data)} bytes of a mapped READ are gone")
        return data


class FileWindows:
    """The windows of one file (one cached READ descriptor), at most :data:`PER_FILE`, the
    oldest dropped first; used on the event loop only, cleared when the descriptor closes."""

    __slots__ = ("_by_start",)

    def __init__(self) -> None:
        self._by_start: dict[int, FileWindow] = {}

    def __len__(self) -> int:
        return len(self._by_start)

    def slice(self, fd: int, offset: int, count: int, size: int) -> FileSlice | None:
        """Bytes [offset, offset + count) of the file open at ``fd`` (``size`` bytes long by
        its last fstat), from the window that holds them, mapped now if need be; None when
        they cross a window's end or cannot be mapped (over :data:`MAX_MAPPED`, or the file
        shrank): the caller copies."""
        start = offset - offset % WINDOW
        if offset + count > start + WINDOW:
            return None
        windows = self._by_start
        window = windows.get(start)
        if window is not None:
            got = window.slice(offset, count)
            if got is not None:
                return got
            del windows[start]  # the file grew past the window's end: map it again
        try:
            window = FileWindow(fd, offset, size)
        except OSError as e:
            if e.errno != errno.ENOMEM or not windows:
                return None
            # Over MAX_MAPPED: this file gives up its oldest window for the new one (freed at
            # once unless a reply still holds it), so a busy file keeps mapping as it moves on
            # instead of copying wherever it has not been before.
            del windows[next(iter(windows))]
            try:
                window = FileWindow(fd, offset, size)
            except (OSError, ValueError):
                return None
        except ValueError:  # the file shrank since its fstat
            return None
        if len(windows) >= PER_FILE:
            del windows[next(iter(windows))]
        windows[start] = window
        return window.slice(offset, count)

    def clear(self) -> None:
        """Drop every window (each is unmapped once no reply uses it)."""
        self._by_start = {}


class FileSlice(MappedData):
    """READ data in a :class:`FileWindow`; see the module docstring for who may read it."""

    __slots__ = ("_offset", "_window", "view")

    def __init__(self, view: memoryview, window: FileWindow, offset: int) -> None:
        self.view = view
        self._window = window
        self._offset = offset

    def __len__(self) -> int:
        return len(self.view)

    def copy_tail(self, skip: int) -> bytes:
        return self._window.pread(len(self.view) - skip, self._offset + skip)
