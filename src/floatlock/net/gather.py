"""Scatter-gather writes to a socket beside its asyncio transport.

Why
---
asyncio's ``transport.write`` takes one buffer and, in Python 3.11, copies whatever the socket
does not take at once into its own ``bytearray``; ``writelines`` joins its buffers first.  A
1 MiB NFS READ reply is a record mark, a head and the buffer the data was read into: joining
them, or buffering them whole, copies a MiB per call.  :func:`write_gathered` sends them with
one ``writev(2)`` straight on the socket's descriptor while the transport holds nothing (so
nothing can overtake what it holds), and hands only what the socket did not take to
``transport.write``: a memoryview of the unsent tail of the buffer the kernel stopped in, then
the buffers after it, in order.  asyncio then sends those when the socket is writable, and its
flow control (``pause_writing``) sees them as it sees any write.

The caller's buffers are sent or copied by the time this returns: they may be reused then.

A :class:`~floatlock.rpc.filerange.FileRange` among the buffers (a READ's data, named rather
than read) goes out with ``sendfile(2)`` when everything before it has been sent and asyncio
holds nothing: page-cache pages into the socket, no copy in user space.  What the socket did
not take is read (``pread``) and handed to ``transport.write`` like any unsent tail, and so is
the whole range when it cannot be sent directly.  Every range is given back (``done``) before
this returns.  A range whose file ended before it did (truncated since the reply was built)
cannot be sent as promised: the connection is aborted, and the client retransmits.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from floatlock.rpc.filerange import FileRange, ShortRange

__all__ = ["write_gathered", "write_with_ranges"]

log = logging.getLogger("floatlock.net.tcp")

Buffer = bytes | bytearray | memoryview


def write_with_ranges(
    transport: asyncio.Transport, fd: int, bufs: Sequence[Buffer | FileRange]
) -> None:
    """:func:`write_gathered` for buffers among which may be FileRanges (module docstring)."""
    try:
        start = 0
        for i, item in enumerate(bufs):
            if type(item) is FileRange:
                if i > start:
                    write_gathered(transport, fd, bufs[start:i])  # type: ignore[arg-type]
                _send_range(transport, fd, item)
                start = i + 1
        if start < len(bufs):
            write_gathered(transport, fd, bufs[start:])  # type: ignore[arg-type]
    except ShortRange as e:
        log.warning("closing TCP connection: a READ reply could not be completed: %s", e)
        transport.abort()
    finally:
        for item in bufs:
            if type(item) is FileRange:
                item.done()


def _send_range(transport: asyncio.Transport, fd: int, rng: FileRange) -> None:
    sent = 0
    if fd >= 0 and not transport.get_write_buffer_size() and not transport.is_closing():
        while sent < rng.count:
            try:
                n = os.sendfile(fd, rng.fd, rng.offset + sent, rng.count - sent)
            except (BlockingIOError, InterruptedError):
                break  # the socket is full: the rest goes through asyncio's buffer
            except OSError:
                break  # the transport's own write below meets a socket error and closes
            if n == 0:
                raise ShortRange(f"file ended {rng.count - sent} bytes before the range")
            sent += n
    if sent < rng.count and not transport.is_closing():
        transport.write(rng.read(sent))


def write_gathered(transport: asyncio.Transport, fd: int, bufs: Sequence[Buffer]) -> None:
    """Write ``bufs`` in order on ``transport`` whose socket is ``fd`` (-1: unknown)."""
    sent = 0
    if fd >= 0 and not transport.get_write_buffer_size() and not transport.is_closing():
        try:
            sent = os.writev(fd, bufs)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # the transport's own write below meets the error and closes
    if not sent:
        for buf in bufs:
            transport.write(buf)
        return
    for i, buf in enumerate(bufs):
        n = len(buf)
        if sent < n:
            transport.write(memoryview(buf)[sent:])
            for rest in bufs[i + 1 :]:
                transport.write(rest)
            return
        sent -= n
