"""A bounded cache of open descriptors for READ and WRITE (what Linux nfsd's file cache does).

Opening a file for every READ or WRITE (``open_by_handle_at`` for the handle, then an open of
``/proc/self/fd/N`` as the caller, then two closes) costs more than the I/O of a small call.
So READ and WRITE keep one real descriptor per **(file handle, access mode)**: ``O_RDONLY``
for READ, ``O_WRONLY`` for WRITE, opened *as the server*, and shared by every caller.

Permission is still decided per call and per caller, by the kernel.  Before every use the
worker thread takes the caller's fsuid, fsgid and groups (:mod:`floatlock.nfs.fsuid`) and asks
``faccessat2(N, "", R_OK or W_OK, AT_EACCESS | AT_EMPTY_PATH)``: the same ``inode_permission`` check
(mode bits, owner, group, POSIX ACLs, capabilities of fsuid 0, immutable files, read-only
mounts) that opening the file as the caller made, only without creating a file description.
The owner and execute overrides of :mod:`floatlock.nfs.ops_io` apply to its answer as they
applied to a refused open.  Checking on every call (rather than keying the cache on the
identity) is what makes a ``chmod`` on the server effective for the very next call, and lets
callers share one descriptor.  What an open checks and ``faccessat`` does not:
``security_file_open`` of an LSM (none is used by floatlock's deployments), and ETXTBSY, which
the server's own open for writing still reports on a miss.

A cached entry is also the handle's resolution: a hit skips ``open_by_handle_at``.  The key is
the handle's exact bytes, which the resolver verified (tag, export, containment) when the
entry was made; ``fstat`` of the cached descriptor gives the attributes, and a file whose link
count dropped to 0 (removed, here or by a local process) is STALE as before and is dropped.

Bounds: at most ``max_open`` descriptors (least recently used evicted first) and none kept
longer than ``idle_seconds`` after its last use (a sweeper thread, stopped by :meth:`close`).
REMOVE and RENAME drop the entries of the inode they unlink or replace, so the space of a
deleted file is freed at once.  A descriptor is closed only when no call is using it (entries
are reference counted), so a descriptor number is never reused under a running ``pread``.
Like nfsd, an open writer lingers up to ``idle_seconds``: executing a just-written file *on the
server* may see ETXTBSY in that window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from floatlock.nfs.exportroot import ExportRoot
from floatlock.nfs.filemap import FileWindows
from floatlock.nfs.lru import RefCountedLru

DEFAULT_MAX_OPEN = 256
DEFAULT_IDLE_SECONDS = 2.0


@dataclass(slots=True, eq=False)
class OpenFile:
    """A cached descriptor; use it between :meth:`OpenFiles.get` (or ``add``) and
    :meth:`OpenFiles.release`."""

    fd: int
    root: ExportRoot
    fh: bytes
    write: bool
    inode: tuple[int, int]
    last_used: float
    users: int = 0
    dropped: bool = False
    closed: bool = False
    #: READ's mappings of the file (:mod:`floatlock.nfs.filemap`), made and used on the event
    #: loop only; dropped when the descriptor is closed (unmapped once no reply uses them).
    windows: FileWindows = field(default_factory=FileWindows)

    @property
    def proc_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"


Key = tuple[bytes, bool]


class OpenFiles(RefCountedLru[Key, OpenFile]):
    """(handle, write) -> open descriptor, bounded in number and idle time; thread safe."""

    touch_on_release = True

    def __init__(
        self,
        max_open: int = DEFAULT_MAX_OPEN,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweeper: bool = True,
    ) -> None:
        # Windows of entries the sweeper closed, unmapped after its sweep, outside the lock:
        # unmapping 64 MiB of populated windows took 0.67-1.12 ms here (an ad-hoc loop), time
        # the loop thread would spend waiting for the lock.
        self._retired: list[FileWindows] = []
        super().__init__(
            max_open,
            idle_seconds,
            clock=clock,
            sweeper=sweeper,
            thread_name="nfs-openfiles",
            limit_name="max_open",
        )

    @property
    def max_open(self) -> int:
        return self.max_entries

    def _key(self, entry: OpenFile) -> Key:
        return (entry.fh, entry.write)

    def _close(self, entry: OpenFile) -> None:  # type: ignore[override]
        """With the lock held: close, and drop the READ mappings (the sweeper's for later)."""
        RefCountedLru._close(entry)
        if len(entry.windows) and threading.current_thread() is self._thread:
            self._retired.append(entry.windows)
            entry.windows = FileWindows()
        else:  # a REMOVE, RENAME or eviction: a deleted file's space is freed at once
            entry.windows.clear()

    def sweep(self, now: float | None = None) -> int:
        dropped = super().sweep(now)
        with self._lock:
            retired, self._retired = self._retired, []
        retired.clear()  # unmapped here (once no reply uses them), the lock not held
        return dropped

    def get(self, fh: bytes, write: bool) -> OpenFile | None:
        """The cached entry for (fh, write), in use until ``release``; None on a miss."""
        return self.acquire((fh, write))

    def add(
        self, fh: bytes, write: bool, root: ExportRoot, fd: int, inode: tuple[int, int]
    ) -> OpenFile:
        """Cache descriptor ``fd`` (now owned by the cache) and return its entry, in use."""
        return self._add((fh, write), fd, lambda now: OpenFile(fd, root, fh, write, inode, now))
