"""A bounded cache of open descriptors for READ and WRITE (what Linux nfsd's file cache does).

Opening a file for every READ or WRITE (``open_by_handle_at`` for the handle, then an open of
``/proc/self/fd/N`` as the caller, then two closes) costs more than the I/O of a small call.
So READ and WRITE keep one real descriptor per **(file handle, access mode)**: ``O_RDONLY``
for READ, ``O_WRONLY`` for WRITE, opened *as the server*, and shared by every caller.

Permission is still decided per call and per caller, by the kernel.  Before every use the
worker thread takes the caller's fsuid, fsgid and groups (:mod:`floatlock.nfs.fsuid`) and asks
``faccessat(/proc/self/fd/N, R_OK or W_OK, AT_EACCESS)``: the same ``inode_permission`` check
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

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from floatlock.nfs.resolver import ExportRoot

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

    @property
    def proc_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"


Key = tuple[bytes, bool]


class OpenFiles:
    """(handle, write) -> open descriptor, bounded in number and idle time; thread safe."""

    def __init__(
        self,
        max_open: int = DEFAULT_MAX_OPEN,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweeper: bool = True,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.max_open = max_open
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, OpenFile] = OrderedDict()
        self._by_inode: dict[tuple[int, int], set[Key]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if sweeper:
            self._thread = threading.Thread(target=self._sweep_loop, name="nfs-openfiles")
            self._thread.daemon = True
            self._thread.start()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, fh: bytes, write: bool) -> OpenFile | None:
        """The cached entry for (fh, write), in use until ``release``; None on a miss."""
        key = (fh, write)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            entry.users += 1
            entry.last_used = self._clock()
            return entry

    def add(
        self, fh: bytes, write: bool, root: ExportRoot, fd: int, inode: tuple[int, int]
    ) -> OpenFile:
        """Cache descriptor ``fd`` (now owned by the cache) and return its entry, in use."""
        key = (fh, write)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # another thread made it meanwhile: use theirs
                os.close(fd)
                self._entries.move_to_end(key)
            else:
                entry = OpenFile(fd, root, fh, write, inode, self._clock())
                self._entries[key] = entry
                self._by_inode.setdefault(inode, set()).add(key)
                while len(self._entries) > self.max_open:
                    _, old = self._entries.popitem(last=False)
                    self._unindex(old)
                    self._drop(old)
            entry.users += 1
            entry.last_used = self._clock()
            return entry

    def release(self, entry: OpenFile) -> None:
        with self._lock:
            entry.users -= 1
            entry.last_used = self._clock()
            if entry.dropped and entry.users == 0:
                self._close(entry)

    def discard(self, entry: OpenFile) -> None:
        """Forget ``entry`` (e.g. its file was removed); closed once no call uses it."""
        with self._lock:
            if self._entries.get((entry.fh, entry.write)) is entry:
                del self._entries[(entry.fh, entry.write)]
                self._unindex(entry)
                self._drop(entry)

    def forget_inode(self, dev: int, ino: int) -> int:
        """Drop every entry of inode (dev, ino) (REMOVE, RENAME over it); how many."""
        with self._lock:
            keys = self._by_inode.pop((dev, ino), set())
            for key in keys:
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self._drop(entry)
            return len(keys)

    def sweep(self, now: float | None = None) -> int:
        """Close the entries idle for ``idle_seconds`` or more; how many were dropped."""
        now = self._clock() if now is None else now
        dropped = 0
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.users == 0 and now - entry.last_used >= self.idle_seconds:
                    del self._entries[key]
                    self._unindex(entry)
                    self._drop(entry)
                    dropped += 1
        return dropped

    def close(self) -> None:
        """Stop the sweeper and close everything (entries in use: when released)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for entry in self._entries.values():
                self._drop(entry)
            self._entries.clear()
            self._by_inode.clear()

    # -- with the lock held ----------------------------------------------------------------

    def _unindex(self, entry: OpenFile) -> None:
        keys = self._by_inode.get(entry.inode)
        if keys is not None:
            keys.discard((entry.fh, entry.write))
            if not keys:
                del self._by_inode[entry.inode]

    def _drop(self, entry: OpenFile) -> None:
        entry.dropped = True
        if entry.users == 0:
            self._close(entry)

    @staticmethod
    def _close(entry: OpenFile) -> None:
        if not entry.closed:
            entry.closed = True
            os.close(entry.fd)

    def _sweep_loop(self) -> None:
        interval = max(self.idle_seconds / 2, 0.05)
        while not self._stop.wait(interval):
            self.sweep()
