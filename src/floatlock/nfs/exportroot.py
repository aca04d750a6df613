"""An export as the resolver serves it: its open root directory and what containment needs.

:class:`ExportRoot` holds the real descriptor of the export's root (the ``mount_fd`` of
``open_by_handle_at``), the root's (st_dev, st_ino) and NFS handle, whether the export is a
whole filesystem (then no containment walk is needed), and the root's path as the kernel names
it (a containment hint).  Separate from :mod:`floatlock.nfs.resolver` because the handle cache,
the open-file cache and MOUNT carry an export root without resolving anything.
"""

from __future__ import annotations

import os

from floatlock.nfs.exports import Export
from floatlock.nfs.fhandle import name_to_handle
from floatlock.nfs.handles import MAX_KERNEL_HANDLE, HandleCodec


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class ExportRoot:
    """An export and the open root directory it is served from."""

    __slots__ = ("dev", "export", "fd", "ino", "name_max", "prefix", "root_fh", "whole_fs")

    def __init__(self, export: Export, codec: HandleCodec) -> None:
        self.export = export
        # A real descriptor: open_by_handle_at refuses an O_PATH mount_fd (EBADF).
        fd = os.open(export.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            up = os.stat("..", dir_fd=fd)
            htype, kernel = name_to_handle(fd)
            self.name_max = os.fstatvfs(fd).f_namemax
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
        self.prefix = ""  # the root's path + "/" as the kernel names it (a containment hint)
        self.refresh_prefix()

    def refresh_prefix(self) -> None:
        try:
            path = fd_path(self.fd)
        except OSError:
            path = ""
        # "/" (whole_fs anyway) or an unreachable/deleted root: no fast path, walk.
        ok = path.startswith("/") and not path.endswith(" (deleted)") and path != "/"
        self.prefix = path + "/" if ok else ""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
