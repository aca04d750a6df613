"""From an NFS file handle to an open file, for NFS and NLM alike.

:class:`Resolver` owns one ``O_PATH`` descriptor per export root
(:class:`~floatlock.nfs.exportroot.ExportRoot`, used as the ``mount_fd`` of
``open_by_handle_at``) and turns a handle into an ``O_PATH`` descriptor of the file, after:

1. :class:`~floatlock.nfs.handles.HandleCodec` checked the tag (forged or foreign handle:
   NFS3ERR_BADHANDLE);
2. the export id names a current export (else NFS3ERR_STALE: the export went away);
3. the kernel opened it (a deleted file: ESTALE, so NFS3ERR_STALE; a non-directory with no
   links left, still open somewhere, is STALE too);
4. **containment**.  The rule: a *directory* is served only if walking ``..`` from it reaches
   the export root before the filesystem root (the kernel connects directory dentries, so
   ``..`` is always meaningful).  A non-directory has no unique parent; it is served when its
   handle carries a valid tag for this export, i.e. when this server handed it out through
   LOOKUP, READDIRPLUS or a create inside the export (hard links and renames out of the
   export afterwards are the same caveat Linux ``no_subtree_check`` has).  When the export root
   is the root of its filesystem the walk is skipped: everything on it is inside.  Files on
   other filesystems are never reached (the handle is opened relative to the export's mount
   and LOOKUP does not cross mount points).

**Descriptor cache.**  Verified handles stay open in the resolver's
:class:`~floatlock.nfs.handlecache.HandleCache` (its bounds, sweep and invalidation: that
module).  Every use re-validates the entry cheaply:

* one ``fstat`` of the descriptor: ``st_nlink`` > 0 (removed files and directories are no
  longer served: the entry is dropped and the handle re-resolved, which gives STALE) and the
  same (st_dev, st_ino) as when it was made;
* for a directory of an export that is not a whole filesystem, the verdict is re-checked: if
  no RENAME or RMDIR went through this server since it was made (a generation counter that
  :meth:`HandleCache.dirs_changed` bumps), a ``readlink`` of ``/proc/self/fd/N`` (the kernel's
  ``d_path`` of the directory, taken under its rename lock) must still start with the export
  root's path; otherwise, or when it does not match, the full ``..`` walk decides again.  So a
  directory moved out of the export -- by NFS or by a local process -- is refused on its next
  use, as before.

Must be called with the thread's fsuid 0 (``open_by_handle_at`` needs CAP_DAC_READ_SEARCH).

The same resolver satisfies NLM's ``FileResolver`` protocol: :meth:`Resolver.resolve` returns a
:class:`LockFile` keyed by (st_dev, st_ino), whose ``open`` gives a real descriptor for the
kernel OFD lock mirror.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Hashable
from dataclasses import dataclass

from floatlock.nfs.errors import NfsError
from floatlock.nfs.exportroot import ExportRoot, fd_path
from floatlock.nfs.exports import Export
from floatlock.nfs.fhandle import name_to_handle, open_by_handle
from floatlock.nfs.handlecache import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_ENTRIES,
    CachedHandle,
    HandleCache,
)
from floatlock.nfs.handles import HandleCodec
from floatlock.nfs.proto import Nfsstat3
from floatlock.nlm.files import StaleHandle

log = logging.getLogger("floatlock.nfs")

_MAX_DEPTH = 4096
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class NotCached(Exception):
    """``open_handle(cached_only=True)`` of a handle not in the cache."""


class Obj:
    """A resolved file: an O_PATH descriptor, its attributes and its export (close it).

    The descriptor is the object's own, or a :class:`HandleCache` entry's (then ``close``
    releases the entry instead of closing it)."""

    __slots__ = ("_cache", "_entry", "fd", "fh", "root", "st")

    def __init__(
        self,
        root: ExportRoot,
        fd: int,
        st: os.stat_result,
        fh: bytes,
        cache: HandleCache | None = None,
        entry: CachedHandle | None = None,
    ) -> None:
        self.root = root
        self.fd = fd
        self.st = st
        self.fh = fh
        self._cache = cache
        self._entry = entry

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def proc_path(self) -> str:
        """A path that reaches this very inode (checked as the current fsuid when used)."""
        return f"/proc/self/fd/{self.fd}"

    def restat(self) -> os.stat_result:
        self.st = os.fstat(self.fd)
        return self.st

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        entry, self._entry = self._entry, None
        if entry is None:
            os.close(fd)
        elif self._cache is not None:
            self._cache.release(entry)

    def __enter__(self) -> Obj:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class LockFile:
    """What NLM needs of a file: an identity, a name for logs, and a way to open it."""

    key: Hashable
    display: str
    _resolver: Resolver
    _fh: bytes

    def open(self, write: bool) -> int:
        """A read or read-write descriptor of the file (opened as the server, for OFD locks)."""
        flags = os.O_RDWR if write else os.O_RDONLY
        try:
            parts = self._resolver.codec.decode(self._fh)
            root = self._resolver.root_by_id(parts.export_id)
            return open_by_handle(root.fd, parts.handle_type, parts.kernel, flags)
        except NfsError as e:
            raise StaleHandle(str(e)) from None
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ENOENT, errno.EINVAL):
                raise StaleHandle(str(e)) from None
            raise


class Resolver:
    """Handle <-> file for a set of exports."""

    def __init__(
        self,
        exports: list[Export],
        key: bytes,
        *,
        cache_entries: int = DEFAULT_MAX_ENTRIES,
        cache_idle: float = DEFAULT_IDLE_SECONDS,
        sweeper: bool = True,
    ) -> None:
        self.codec = HandleCodec(key)
        self.cache = HandleCache(cache_entries, cache_idle, sweeper=sweeper)
        self._roots: dict[int, ExportRoot] = {}
        try:
            for e in exports:
                if e.export_id in self._roots:
                    raise ValueError(f"duplicate export id {e.export_id} ({e.path})")
                self._roots[e.export_id] = ExportRoot(e, self.codec)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.cache.close()
        for r in self._roots.values():
            r.close()

    @property
    def roots(self) -> list[ExportRoot]:
        return list(self._roots.values())

    def root_by_id(self, export_id: int) -> ExportRoot:
        root = self._roots.get(export_id)
        if root is None:
            raise NfsError(Nfsstat3.STALE, f"no export with id {export_id}")
        return root

    def root_for_path(self, path: str) -> ExportRoot | None:
        norm = "/" + "/".join(p for p in path.split("/") if p)
        for r in self._roots.values():
            if r.export.path == norm:
                return r
        return None

    # -- handles out -----------------------------------------------------------------------

    def handle_of(self, root: ExportRoot, fd: int, name: str = "") -> bytes:
        """The NFS handle of ``name`` in directory ``fd`` (or of ``fd`` itself)."""
        htype, kernel = name_to_handle(fd, name)
        return self.codec.encode(root.export.export_id, htype, kernel)

    # -- handles in ------------------------------------------------------------------------

    def adopt(self, root: ExportRoot, fd: int, st: os.stat_result, fh: bytes, gen: int) -> Obj:
        """Cache ``fd`` (now the cache's), a file of ``root`` known to be inside the export
        since directory generation ``gen`` (a LOOKUP's child); the Obj holds the entry."""
        entry = self.cache.add(fh, root, fd, st, gen)
        return Obj(root, entry.fd, st, fh, self.cache, entry)

    def open_handle(self, fh: bytes, *, cached_only: bool = False) -> Obj:
        """An O_PATH descriptor of the file ``fh`` names, checked as the module doc says.

        With ``cached_only``, a handle not in the cache raises :class:`NotCached` instead of
        being opened (the caller cannot afford ``open_by_handle_at`` now)."""
        hit = self.cached(fh)
        if hit is not None:
            entry, st = hit
            return Obj(entry.root, entry.fd, st, fh, self.cache, entry)
        if cached_only:
            raise NotCached
        return self._open_uncached(fh)

    def cached(self, fh: bytes) -> tuple[CachedHandle, os.stat_result] | None:
        """The cache's entry of ``fh``, re-validated (module docstring), in use until
        ``cache.release(entry)``, and its fresh attributes; None when ``fh`` is not cached
        or its entry no longer holds (then dropped from the cache: the caller may resolve the
        handle afresh, which :meth:`open_handle` does, usually to STALE)."""
        cache = self.cache
        entry = cache.acquire(fh)
        if entry is None:
            return None
        try:
            st = os.fstat(entry.fd)
            if (
                st.st_nlink > 0
                and st.st_ino == entry.inode[1]
                and st.st_dev == entry.inode[0]
                and (not entry.is_dir or self._still_inside(entry, st))
            ):
                return entry, st
        except OSError:
            pass
        except BaseException:
            cache.release(entry)
            raise
        cache.discard(entry)  # removed, or moved out: resolve afresh (STALE)
        cache.release(entry)
        return None

    def _still_inside(self, entry: CachedHandle, st: os.stat_result) -> bool:
        root = entry.root
        if root.whole_fs or (st.st_ino == root.ino and st.st_dev == root.dev):
            return True
        gen = self.cache.dir_gen
        if entry.dir_gen == gen and root.prefix:
            try:
                path = fd_path(entry.fd)
            except OSError:
                path = ""
            if path.endswith(" (deleted)"):
                return False  # removed by a local process: open_by_handle_at says ESTALE
            if path.startswith(root.prefix):
                return True
        if not self._inside(root, entry.fd, st):
            log.warning("cached directory now outside %s refused", root.export.path)
            return False
        entry.dir_gen = gen
        root.refresh_prefix()  # the root itself may have been renamed
        return True

    def _open_uncached(self, fh: bytes) -> Obj:
        parts = self.codec.decode(fh)
        root = self.root_by_id(parts.export_id)
        gen = self.cache.dir_gen  # read before the verdict: a rename meanwhile forces a walk
        try:
            fd = open_by_handle(root.fd, parts.handle_type, parts.kernel, os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            # EINVAL / EBADF / ENOENT / ESTALE from the filesystem's decoder: no such file now.
            raise NfsError(Nfsstat3.STALE, f"open_by_handle_at: {e}") from None
        try:
            st = os.fstat(fd)
            if st.st_dev != root.dev:
                raise NfsError(Nfsstat3.STALE, "handle on another filesystem")
            if stat.S_ISDIR(st.st_mode):
                if not self._inside(root, fd, st):
                    log.warning("handle for a directory outside %s refused", root.export.path)
                    raise NfsError(Nfsstat3.STALE, "directory outside the export")
            elif st.st_nlink == 0:
                raise NfsError(Nfsstat3.STALE, "file was removed")
        except BaseException:
            os.close(fd)
            raise
        return self.adopt(root, fd, st, fh, gen)

    def _inside(self, root: ExportRoot, fd: int, st: os.stat_result) -> bool:
        if root.whole_fs or (st.st_ino == root.ino and st.st_dev == root.dev):
            return True
        cur = os.open("..", _O_PATH_DIR, dir_fd=fd)
        try:
            prev = (st.st_dev, st.st_ino)
            for _ in range(_MAX_DEPTH):
                s = os.fstat(cur)
                ident = (s.st_dev, s.st_ino)
                if ident == (root.dev, root.ino):
                    return True
                if ident == prev or s.st_dev != root.dev:
                    return False  # reached the filesystem root without meeting the export
                prev = ident
                up = os.open("..", _O_PATH_DIR, dir_fd=cur)
                os.close(cur)
                cur = up
            return False
        finally:
            os.close(cur)

    # -- NLM's FileResolver protocol -------------------------------------------------------

    def resolve(self, fh: bytes) -> LockFile:
        """The lock identity of the file ``fh`` names; raises StaleHandle (nlm.files)."""
        try:
            obj = self.open_handle(fh)
        except NfsError as e:
            raise StaleHandle(str(e)) from None
        with obj:
            display = f"{obj.root.export.path}:{obj.st.st_ino}"
            return LockFile((obj.st.st_dev, obj.st.st_ino), display, self, fh)
