"""The resolver's descriptor cache: verified NFS handles kept open as ``O_PATH`` descriptors.

Opening by handle (``open_by_handle_at``, ``fstat``, the ``..`` walk, ``close``) costs more
than a GETATTR itself, so :class:`HandleCache` keeps, per verified handle (its exact bytes), the
open ``O_PATH`` descriptor and the containment verdict: at most ``max_entries`` (least recently
used evicted first), none idle longer than ``idle_seconds`` (a sweeper thread; an ``O_PATH``
descriptor keeps a file removed by a local process allocated until it is closed).  The
resolver re-validates an entry on every use (:meth:`floatlock.nfs.resolver.Resolver.open_handle`);
:meth:`HandleCache.dirs_changed` bumps the generation counter that tells it whether a
directory's verdict may still hold.

REMOVE, RMDIR and RENAME (over a file) drop the entries of the inode they unlink
(:meth:`HandleCache.forget_inode`), so its space is freed at once.  A descriptor is closed
only when no call is using it (entries are reference counted;
:meth:`floatlock.nfs.resolver.Obj.close` releases).  LOOKUP and the create procedures add the
child's descriptor they opened (and find an existing entry by inode:
:meth:`HandleCache.acquire_inode`), so the GETATTR or ACCESS that follows hits.

Separate from :mod:`floatlock.nfs.resolver`, which decides whether a handle may be served: this
module only keeps what was decided, bounded and thread safe.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

from floatlock.nfs.exportroot import ExportRoot
from floatlock.nfs.lru import RefCountedLru

DEFAULT_MAX_ENTRIES = 4096
DEFAULT_IDLE_SECONDS = 30.0


class CachedHandle:
    """One cached resolution: a descriptor shared by the calls that hold it (``users``)."""

    __slots__ = (
        "closed",
        "dir_gen",
        "dropped",
        "fd",
        "fh",
        "inode",
        "is_dir",
        "last_used",
        "root",
        "users",
    )

    def __init__(
        self, fh: bytes, root: ExportRoot, fd: int, st: os.stat_result, dir_gen: int, now: float
    ) -> None:
        self.fh = fh
        self.root = root
        self.fd = fd
        self.inode = (st.st_dev, st.st_ino)
        self.is_dir = stat.S_ISDIR(st.st_mode)
        self.dir_gen = dir_gen  # HandleCache.dir_gen when the containment was last verified
        self.last_used = now
        self.users = 0
        self.dropped = False
        self.closed = False


class HandleCache(RefCountedLru[bytes, CachedHandle]):
    """Verified handle -> open O_PATH descriptor, bounded and thread safe (module docstring)."""

    ordered_last_used = True  # release does not count as a use

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweeper: bool = True,
    ) -> None:
        self.dir_gen = 0
        super().__init__(
            max_entries, idle_seconds, clock=clock, sweeper=sweeper, thread_name="nfs-handles"
        )

    def _key(self, entry: CachedHandle) -> bytes:
        return entry.fh

    def __contains__(self, fh: bytes) -> bool:
        return fh in self._entries

    def acquire_inode(self, root: ExportRoot, dev: int, ino: int) -> CachedHandle | None:
        """An entry of inode (dev, ino) in export ``root``, in use until release; or None."""
        with self._lock:
            for fh, entry in self._by_inode.get((dev, ino), {}).items():
                if entry.root is root:
                    return self._use(fh, entry)
            return None

    def add(
        self, fh: bytes, root: ExportRoot, fd: int, st: os.stat_result, dir_gen: int
    ) -> CachedHandle:
        """Cache ``fd`` (now the cache's) for ``fh``, verified at generation ``dir_gen``;
        the entry is returned in use."""
        return self._add(fh, fd, lambda now: CachedHandle(fh, root, fd, st, dir_gen, now))

    def dirs_changed(self) -> None:
        """A directory was renamed or removed: every directory verdict is re-walked."""
        with self._lock:
            self.dir_gen += 1
