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

Mapped READ data (:class:`~floatlock.rpc.parts.MappedData`) goes to ``writev`` as its
``view``; what the socket did not take of it is handed on as :meth:`~floatlock.rpc.parts.
MappedData.copy_tail`'s kernel-made copy, never read from the mapping here.  When that data is
gone (the file was truncated meanwhile) nothing more is written and the caller must close the
connection: the record's mark already promised its length, and the client sends the call
again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from floatlock.rpc.parts import MappedData, Part

__all__ = ["write_gathered"]

log = logging.getLogger("floatlock.net.tcp")


def write_gathered(
    transport: asyncio.Transport, fd: int, bufs: Sequence[Part], pieces: bool = True
) -> bool:
    """Write ``bufs`` in order on ``transport`` whose socket is ``fd`` (-1: unknown); False
    when mapped data was gone and the rest could not be written (the caller closes).
    ``pieces`` False: the caller knows no buffer is mapped data (replies that are bytes), and
    the buffers go to ``writev`` as they are."""
    sent = 0
    if fd >= 0 and not transport.get_write_buffer_size() and not transport.is_closing():
        try:
            if pieces:
                sent = os.writev(fd, [b.view if isinstance(b, MappedData) else b for b in bufs])
            else:
                sent = os.writev(fd, bufs)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # the transport's own write below meets the error and closes
    for buf in bufs:
        n = len(buf)
        if sent >= n:
            sent -= n
            continue
        if isinstance(buf, MappedData):
            try:
                transport.write(buf.copy_tail(sent))
            except OSError as e:
                log.info("closing a TCP connection: the rest of a reply is gone (%s)", e)
                return False
        else:
            transport.write(memoryview(buf)[sent:] if sent else buf)
        sent = 0
    return True
