"""A reply part that is a range of an open file, for the TCP transport to send with sendfile(2).

Why
---
A 1 MiB NFS READ used to copy its data twice in the server: from the page cache into a buffer
(``preadv``), then from that buffer into the socket (``writev``).  A :class:`FileRange` in a
reply's :class:`~floatlock.rpc.dispatch.EncodedParts` names the data instead (descriptor,
offset, count), and the TCP transport (:func:`floatlock.net.gather.write_gathered`) hands it
to ``sendfile(2)``, which moves page-cache pages into the socket without a copy in user space.

Rules
-----
* The range's length is fixed when the reply is built (READ's count and eof are computed from
  it), so the bytes sent must be exactly ``count``: :meth:`FileRange.read` raises
  :class:`ShortRange` when the file no longer has them (truncated in between), and the
  transport then closes the connection rather than send a reply shorter than its length words
  say (the client retransmits on a new connection).
* The descriptor belongs to whoever made the range (the NFS open-file cache); ``release`` is
  called exactly once when the transport is done with it (sent, copied, or dropped), and until
  then the descriptor must stay open.  :meth:`FileRange.done` makes the once-only call.
* Only a range of data already in the page cache is handed to the event loop's transport (see
  :mod:`floatlock.nfs.pagecache`): ``sendfile`` of uncached data would wait for the disk on
  the loop thread.

Pure bookkeeping plus ``pread``: no sockets here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["FileRange", "ShortRange"]


class ShortRange(OSError):
    """The file ended before the range did: the promised bytes cannot be sent."""


class FileRange:
    """``count`` bytes of open file ``fd`` from ``offset`` (see the module docstring)."""

    __slots__ = ("_release", "count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int, release: Callable[[], None]) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count
        self._release: Callable[[], None] | None = release

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"FileRange(fd={self.fd}, offset={self.offset}, count={self.count})"

    def read(self, skip: int = 0) -> bytes:
        """The range's bytes from ``skip`` on, read with pread (a copy: for what sendfile did
        not send, and for transports that send one joined message).  Raises ShortRange."""
        want = self.count - skip
        data = os.pread(self.fd, want, self.offset + skip)
        if len(data) < want:
            raise ShortRange(f"file ended {want - len(data)} bytes before the range")
        return data

    def done(self) -> None:
        """Give the descriptor back (once; later calls do nothing)."""
        release, self._release = self._release, None
        if release is not None:
            release()
