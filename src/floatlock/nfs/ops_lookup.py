"""LOOKUP (RFC 1813 section 3.3.3), and the opening of a directory and of its children.

:func:`open_dir` and :func:`open_child` are shared with the procedures that change names
(:mod:`floatlock.nfs.ops_create`, :mod:`floatlock.nfs.ops_remove`); finding a name is apart
from changing it.  Every name is one component (no '/'), every syscall is a ``*at`` call
relative to the directory's O_PATH descriptor, made as the caller.

LOOKUP answers from the handle cache when the child's inode is in it (one ``fstatat`` as the
caller).  LOOKUP runs on the event loop thread when the directory's handle is cached
(``inline_metadata``, see service.py).

LOOKUP does not cross mount points: a name whose inode is on another filesystem than the
export is refused with NFS3ERR_ACCES (the handle could not be opened relative to the export).
LOOKUP of ".." in the export root answers the root itself, never its parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from floatlock.nfs.context import Request, attr_of, check_name, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.proto import DirOpArgs, Nfsstat3
from floatlock.nfs.proto_attr import NO_WCC, WccAttr, WccData
from floatlock.nfs.proto_res import LookupRes
from floatlock.nfs.resolver import Obj

_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


R = TypeVar("R")


def open_child(req: Request, d: Obj, name: str, st: os.stat_result | None = None) -> Obj:
    """Open ``name`` in directory ``d`` (O_PATH, no symlink following) as the caller.

    A child already in the handle cache (found by inode after an ``fstatat``) is not opened
    again; a new descriptor goes into the cache, for the GETATTR or ACCESS that follows.
    ``st``: that ``fstatat`` as the caller, if the caller just made it."""
    root = d.root
    resolver = req.state.resolver
    if name == "." or (name == ".." and d.st.st_ino == root.ino and d.st.st_dev == root.dev):
        fd = os.open(".", _O_PATH, dir_fd=d.fd)
        try:
            st = os.fstat(fd)
            fh = resolver.handle_of(root, fd)
        except BaseException:
            os.close(fd)
            raise
        return Obj(root, fd, st, fh)
    cache = resolver.cache
    gen = cache.dir_gen  # d is inside the export, so is its child (".." of d: d != root)
    if st is None:
        with req.acting():
            st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
    if st.st_dev != root.dev:
        raise NfsError(Nfsstat3.ACCES, "mount point inside the export")
    entry = cache.acquire_inode(root, st.st_dev, st.st_ino)
    if entry is not None:
        return Obj(root, entry.fd, st, entry.fh, cache, entry)
    with req.acting():
        fd = os.open(name, _O_PATH, dir_fd=d.fd)
    try:
        st = os.fstat(fd)
        if st.st_dev != root.dev:
            raise NfsError(Nfsstat3.ACCES, "mount point inside the export")
        fh = resolver.handle_of(root, fd)
    except BaseException:
        os.close(fd)
        raise
    return resolver.adopt(root, fd, st, fh, gen)


def lookup3(req: Request, a: DirOpArgs) -> LookupRes:
    """Section 3.3.3."""
    try:
        d = req.open(a.dir)
    except NfsError as e:
        return LookupRes(e.status)
    with d:
        if not d.is_dir:
            return LookupRes(Nfsstat3.NOTDIR, attr_of(d))
        try:
            check_name(a.name)
            child = open_child(req, d, a.name)
        except (OSError, NfsError) as e:
            return LookupRes(status_of(e), post_attr(d))
        with child:
            # LOOKUP changes nothing in d: its attributes of the open just now are post-op.
            return LookupRes(Nfsstat3.OK, attr_of(d), child.fh, attr_of(child))


def open_dir(req: Request, fh: bytes) -> Obj:
    d = req.open(fh, modify=True)
    if not d.is_dir:
        d.close()
        raise NfsError(Nfsstat3.NOTDIR)
    return d


def in_dir(
    req: Request,
    fh: bytes,
    work: Callable[[Obj, WccAttr], R],
    failed: Callable[[Nfsstat3, WccData], R],
) -> R:
    """The frame of a call that changes directory ``fh`` (CREATE, MKDIR, SYMLINK, MKNOD,
    REMOVE, RMDIR): open it for modification and return ``work(d, pre)``, ``pre`` its
    attributes before; a refused open is ``failed(status, NO_WCC)``, an OSError or NfsError
    of ``work`` ``failed(status, d's wcc_data)`` (RFC 1813 section 2.6: wcc in both arms)."""
    try:
        d = open_dir(req, fh)
    except NfsError as e:
        return failed(e.status, NO_WCC)
    with d:
        pre = pre_attr(d)
        try:
            return work(d, pre)
        except (OSError, NfsError) as e:
            return failed(status_of(e), WccData(pre, post_attr(d)))
