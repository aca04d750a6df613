"""Keep glibc malloc from handing the buffers of large replies back to the kernel each time.

Why
---
A 1 MiB READ reply passes through several transient multi-MiB buffers (the data read, the
encoded reply, the RPC record, the part of it the socket did not take at once).  With glibc's
default, *dynamic* thresholds those buffers are either ``mmap``-ed and ``munmap``-ed per call,
or carved from the top of the heap and trimmed back (``brk``/``MADV_DONTNEED``) as soon as they
are freed.  Either way every reply touches fresh pages: measured under ``floatlock serve``,
about 550 page faults (kernel page zeroing included) per 1 MiB READ, which put the median
latency of one READ at 2.5-5 ms instead of well under 1 ms.  Which of the two happens depends
on the process's allocation history (which is why the same code was fast in one process and
slow in another).

What
----
:func:`tune_for_large_buffers` fixes both thresholds with ``mallopt(3)``: allocations up to
``mmap_threshold`` come from the heap, and up to ``trim_threshold`` bytes of free memory at
the top of a heap are kept for the next call.  Setting them explicitly also turns glibc's
dynamic adjustment off, so the behaviour no longer depends on history.  The cost is memory
that stays mapped: at most ``trim_threshold`` per malloc arena that served a large buffer
(the event loop's and a few worker threads'), tens of MiB on a server that moves MiB-sized
records.  Other C libraries (musl) have no ``mallopt``; then nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["tune_for_large_buffers"]

log = logging.getLogger("floatlock.nfs")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_done = False


def tune_for_large_buffers(mmap_threshold: int = 8 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Set glibc's mmap and trim thresholds once per process; True if they were set."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    if not ok:
        log.debug("mallopt refused the thresholds; large replies may page-fault")
    _done = ok
    return ok
