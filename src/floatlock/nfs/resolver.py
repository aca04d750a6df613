"""From an NFS file handle to an open file, for NFS and NLM alike.

:class:`Resolver` owns one ``O_PATH`` descriptor per export root (used as the ``mount_fd`` of
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
from floatlock.nfs.exports import Export
from floatlock.nfs.fhandle import name_to_handle, open_by_handle
from floatlock.nfs.handles import MAX_KERNEL_HANDLE, HandleCodec
from floatlock.nfs.proto import Nfsstat3
from floatlock.nlm.files import StaleHandle

log = logging.getLogger("floatlock.nfs")

_MAX_DEPTH = 4096


class ExportRoot:
    """An export and the open root directory it is served from."""

    __slots__ = ("dev", "export", "fd", "ino", "root_fh", "whole_fs")

    def __init__(self, export: Export, codec: HandleCodec) -> None:
        self.export = export
        # A real descriptor: open_by_handle_at refuses an O_PATH mount_fd (EBADF).
        fd = os.open(export.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            up = os.stat("..", dir_fd=fd)
            htype, kernel = name_to_handle(fd)
        except BaseException:
            os.close(fd)
            raise
        if len(kernel) > MAX_KERNEL_HANDLE:
            os.close(fd)
            raise ValueError(f"{export.path}: file handles of {len(kernel)} B do not fit NFSv3")
        self.fd = fd
        self.dev, self.ino = st.st_dev, st.st_ino
        self.whole_fs = up.st_dev != st.st_dev or up.st_ino == st.st_ino
        self.root_fh = codec.encode(export.export_id, htype, kernel)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Obj:
    """A resolved file: an O_PATH descriptor, its attributes and its export (close it)."""

    __slots__ = ("fd", "fh", "root", "st")

    def __init__(self, root: ExportRoot, fd: int, st: os.stat_result, fh: bytes) -> None:
        self.root = root
        self.fd = fd
        self.st = st
        self.fh = fh

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
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

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

    def __init__(self, exports: list[Export], key: bytes) -> None:
        self.codec = HandleCodec(key)
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

    def open_handle(self, fh: bytes) -> Obj:
        """An O_PATH descriptor of the file ``fh`` names, checked as the module doc says."""
        parts = self.codec.decode(fh)
        root = self.root_by_id(parts.export_id)
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
        return Obj(root, fd, st, fh)

    def _inside(self, root: ExportRoot, fd: int, st: os.stat_result) -> bool:
        if root.whole_fs or (st.st_ino == root.ino and st.st_dev == root.dev):
            return True
        cur = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
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
                up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
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
