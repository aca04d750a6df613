"""Is a range of a file in the page cache?  ``cachestat(2)``, Linux 6.5 and later.

The event loop may only do file I/O that cannot wait for the disk (:mod:`floatlock.nfs.service`,
"inline metadata").  A READ sent with ``sendfile(2)`` (:mod:`floatlock.rpc.filerange`) reads
the page cache when the socket takes the data, so the loop thread may send it only when every
page of the range is cached.  ``cachestat`` counts the cached pages of a range without touching
them.  Where the kernel lacks it (ENOSYS: before 6.5, e.g. Debian 12's 6.1) :func:`all_cached`
answers None and READ keeps its copying path (``preadv2(RWF_NOWAIT)``).

A page evicted between the count and the send makes that one ``sendfile`` wait for the disk:
a rare, short stall, not an error.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import platform

__all__ = ["all_cached"]

# <asm/unistd_64.h> __NR_cachestat: 451 on every architecture that has the syscall table.
_SYS_CACHESTAT = {"x86_64": 451, "aarch64": 451}.get(platform.machine())
_PAGE = mmap.PAGESIZE


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
_supported = _SYS_CACHESTAT is not None


def all_cached(fd: int, offset: int, count: int) -> bool | None:
    """True when every page of ``[offset, offset + count)`` of ``fd`` is in the page cache,
    False when one is not, None when this kernel cannot tell (no cachestat)."""
    global _supported
    if not _supported or count <= 0:
        return None if not _supported else True
    first = offset // _PAGE
    last = (offset + count - 1) // _PAGE
    rng = _Range(first * _PAGE, (last - first + 1) * _PAGE)
    st = _Stat()
    if _syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            _supported = False  # (EPERM: a seccomp filter that refuses unknown syscalls)
        return None
    return int(st.nr_cache) >= last - first + 1
