"""Reusable buffers for READ data, one small pool per thread.

Why
---
A 1 MiB READ used to read into a fresh ``bytearray(count)``: Python zeroes it first (a 1 MiB
``memset`` per call, as much work as a copy), and the allocator hands back memory that may
have to be faulted in again (:mod:`floatlock.nfs.malloc`).  Over TCP the reply's data is sent
straight from that buffer (``rpc.parts.EncodedParts``, ``net.tcp``), so the buffer the
kernel reads the file into is the one it sends from, and it can be reused as soon as the reply
has gone.

When a buffer is free
---------------------
The data goes out as a ``memoryview`` of the buffer: the reply holds it until the socket took
it or asyncio copied the unsent rest into its own buffer (UDP replies are joined, a copy).  A
``bytearray`` with a live memoryview cannot be resized (``BufferError``), which is exactly
the test :meth:`ReadBuffers.get` makes: growing a buffer by one byte fails while any view of it
(any slice of any view) is alive; such a buffer is skipped.  So a buffer is never read into
while a reply still refers to it, whatever transport, thread or cache holds that reply.

Each thread (the event loop's, each worker) has its own pool, so a free buffer found by one
thread cannot be taken by another between the test and the read.
"""

from __future__ import annotations

import threading

__all__ = ["ReadBuffers"]


class ReadBuffers:
    """Per-thread pools of at most ``per_thread`` buffers; see the module docstring."""

    def __init__(self, per_thread: int = 4) -> None:
        self.per_thread = per_thread
        self._local = threading.local()

    def get(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes of a buffer no one else refers to.

        Its contents are whatever the last read left: the caller overwrites what it uses and
        must send only that.  The view keeps the buffer busy until it (and every slice of it)
        is released."""
        pool: list[bytearray] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = []
        for buf in pool:
            if len(buf) < size:
                continue
            try:
                buf.append(0)  # fails while a view of buf is alive (module docstring)
            except BufferError:
                continue
            del buf[-1]
            return memoryview(buf)[:size]
        buf = bytearray(size)
        if len(pool) < self.per_thread:
            pool.append(buf)
        return memoryview(buf)[:size]

    def drop(self) -> None:
        """Forget the calling thread's buffers (they are freed once no reply refers to them)."""
        self._local.pool = []
