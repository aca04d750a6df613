"""The procedures that take a name away: REMOVE, RMDIR, RENAME (RFC 1813 3.3.12-3.3.14).

RENAME takes its source name away, and the target's if it replaces one.  Every name is one
component, every syscall a ``*at`` call as the caller, and every reply carries the
directories' weak cache consistency data (section 2.6).  Apart from the procedures that make
names (:mod:`floatlock.nfs.ops_create`) because what these unlink must leave the caches:

REMOVE, RMDIR and RENAME drop the cached descriptors (READ/WRITE ones of
:mod:`floatlock.nfs.openfiles`, O_PATH ones of the resolver's handle cache) of the file they
unlink or replace, so its space is freed now rather than when they idle out; RMDIR and the
RENAME of a directory also make every cached directory verdict be walked again.
"""

from __future__ import annotations

import os
import stat

from floatlock.nfs.context import Request, check_name, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.ops_lookup import in_dir, open_dir
from floatlock.nfs.proto import DirOpArgs, Nfsstat3
from floatlock.nfs.proto_args import RenameArgs
from floatlock.nfs.proto_attr import WccAttr, WccData
from floatlock.nfs.proto_res import RenameRes, WccRes
from floatlock.nfs.resolver import Obj


def _stat_of(d: Obj, name: str) -> os.stat_result | None:
    """The attributes of ``name`` in ``d`` if it exists: the cached descriptors of what
    REMOVE, RMDIR or RENAME unlinks are dropped (floatlock.nfs.openfiles, resolver)."""
    try:
        return os.stat(name, dir_fd=d.fd, follow_symlinks=False)
    except OSError:
        return None


def _forget(req: Request, st: os.stat_result | None) -> None:
    if st is None:
        return
    if stat.S_ISREG(st.st_mode):
        req.state.files.forget_inode(st.st_dev, st.st_ino)
    req.state.resolver.cache.forget_inode(st.st_dev, st.st_ino)


def _remove(req: Request, a: DirOpArgs, rmdir: bool) -> WccRes:
    def work(d: Obj, pre: WccAttr) -> WccRes:
        check_name(a.name)
        if a.name == ".":
            raise NfsError(Nfsstat3.INVAL if rmdir else Nfsstat3.ISDIR)
        if a.name == "..":
            raise NfsError(Nfsstat3.NOTEMPTY if rmdir else Nfsstat3.ISDIR)
        gone = _stat_of(d, a.name)
        with req.acting():
            if rmdir:
                os.rmdir(a.name, dir_fd=d.fd)
            else:
                os.unlink(a.name, dir_fd=d.fd)
        if rmdir:
            req.state.resolver.cache.dirs_changed()
        _forget(req, gone)
        return WccRes(Nfsstat3.OK, WccData(pre, post_attr(d)))

    return in_dir(req, a.dir, work, WccRes)


def remove3(req: Request, a: DirOpArgs) -> WccRes:
    """Section 3.3.12 (a directory gives EISDIR from unlinkat, so NFS3ERR_ISDIR)."""
    return _remove(req, a, rmdir=False)


def rmdir3(req: Request, a: DirOpArgs) -> WccRes:
    """Section 3.3.13."""
    return _remove(req, a, rmdir=True)


def rename3(req: Request, a: RenameArgs) -> RenameRes:
    """Section 3.3.14: both directories must be in the same export (else NFS3ERR_XDEV)."""
    try:
        src = open_dir(req, a.src.dir)
    except NfsError as e:
        return RenameRes(e.status)
    with src:
        pre_src = pre_attr(src)
        try:
            dst = open_dir(req, a.dst.dir)
        except NfsError as e:
            return RenameRes(e.status, WccData(pre_src, post_attr(src)))
        with dst:
            pre_dst = pre_attr(dst)
            status = Nfsstat3.OK
            try:
                if src.root is not dst.root:
                    raise NfsError(Nfsstat3.XDEV)
                check_name(a.src.name)
                check_name(a.dst.name)
                if a.src.name in (".", "..") or a.dst.name in (".", ".."):
                    raise NfsError(Nfsstat3.INVAL)
                moved = _stat_of(src, a.src.name)
                replaced = _stat_of(dst, a.dst.name)
                with req.acting():
                    os.rename(a.src.name, a.dst.name, src_dir_fd=src.fd, dst_dir_fd=dst.fd)
                if moved is None or stat.S_ISDIR(moved.st_mode):
                    req.state.resolver.cache.dirs_changed()  # re-walk directory verdicts
                if replaced is not None and (
                    moved is None
                    or (replaced.st_dev, replaced.st_ino) != (moved.st_dev, moved.st_ino)
                ):
                    _forget(req, replaced)
            except (OSError, NfsError) as e:
                status = status_of(e)
            return RenameRes(
                status, WccData(pre_src, post_attr(src)), WccData(pre_dst, post_attr(dst))
            )
