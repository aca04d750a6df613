"""READ data sent straight from the page cache: read-only mappings of cached READ descriptors.

Why
---
A 1 MiB READ that copies makes two copies of the data on the server: ``preadv`` from the page
cache into a buffer, then ``writev`` from the buffer into the socket.  Sending from a shared,
read-only mapping of the file leaves one: ``writev`` copies from the page cache pages
themselves.  On this VM, READ of 1 MiB at 1 in flight went from 3,892 to 4,407 MiB/s, 0.87x
to 0.98x Ganesha (``python -m bench.nfs_io --seconds 2 --repeat 5 --cells READ``, before and
after; docs/benchmarks.md).  ``sendfile(2)``, which would leave none, was slower here
(docs/benchmarks.md, second session).

A window stays mapped while its descriptor is cached (:mod:`floatlock.nfs.openfiles`), so a
file read again is sent without a page fault; a file read once faults its pages in as it goes
(the kernel maps 16 pages per fault).

When it is used
---------------
Only on the event loop (inline READ, service.py), only for READs over TCP of at least
:data:`MIN_MAPPED` bytes, and only when ``cachestat(2)`` (Linux 6.5) says every page of the range
is in the page cache: the copy happens in the loop thread's ``writev`` and must not wait for
the disk.  (A page evicted between the check and the ``writev`` is read back in that
``writev``: the one case in which the loop waits for the disk, for one page.)  Anything else
copies as before.  Windows are :data:`WINDOW` bytes, aligned; a READ that crosses a window's end
copies.

Safety
------
The mapping is touched only by the kernel (``writev``).  Were the file truncated under a
mapping, a *user-space* read of a page past the new end would be SIGBUS, which kills the
daemon; the kernel's own copy returns EFAULT (or a short count) instead.  So a
:class:`FileSlice` is not a buffer Python code can read: the TCP transport hands its ``view``
to ``writev`` only, and what the socket did not take is copied with :meth:`FileSlice.copy_tail`,
a ``preadv`` from the window's own descriptor (a ``dup``, so the slice outlives the cached
descriptor's closing).  Data that is no longer there (truncated meanwhile) raises
:class:`Truncated`, and the transport closes the connection rather than send a reply shorter
than its header says: the client sends the READ again and gets the short answer.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import weakref

from floatlock.rpc.dispatch import MappedData

__all__ = ["MIN_MAPPED", "WINDOW", "FileSlice", "FileWindow", "Truncated", "resident"]

#: Bytes one mapping covers, aligned to a multiple of itself in the file.
WINDOW = 64 << 20
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
#: False once the kernel said it has no cachestat (ENOSYS, or a seccomp filter's EPERM).
available = _SYS_CACHESTAT is not None


class Truncated(OSError):
    """A mapped READ's data is gone (the file was truncated after the reply was built)."""


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
    if (
        _syscall(
            _SYS_CACHESTAT,
            ctypes.c_long(fd),
            ctypes.byref(_range),
            ctypes.byref(_stat),
            ctypes.c_long(0),
        )
        != 0
    ):
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            available = False
        return False
    return bool(_stat.nr_cache == last - first + 1)


class FileWindow:
    """A read-only shared mapping of ``WINDOW`` bytes (fewer at the end of the file) of a file,
    with its own descriptor for :meth:`FileSlice.copy_tail`; both are released when the window
    and every slice of it are gone."""

    __slots__ = ("__weakref__", "_fd", "_map", "_view", "end", "start")

    def __init__(self, fd: int, offset: int, size: int) -> None:
        start = offset - offset % WINDOW
        length = min(WINDOW, size - start)
        if length <= 0:
            raise ValueError("nothing to map")
        self._fd = os.dup(fd)
        try:
            self._map = mmap.mmap(
                self._fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start
            )
        except BaseException:
            os.close(self._fd)
            raise
        weakref.finalize(self, os.close, self._fd)
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
        buf = bytearray(count)
        got = os.preadv(self._fd, (buf,), offset)
        if got != count:
            raise Truncated(errno.EFAULT, f"{count - got} bytes of a mapped READ are gone")
        return bytes(buf)


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
