"""The procedures that make a new name: CREATE, MKDIR, SYMLINK, MKNOD, LINK.

RFC 1813 sections 3.3.8-3.3.11 and 3.3.15.  Each adds one name to a directory (a new file, or
for LINK a new link to an existing one); every name is one component, every syscall a ``*at``
call as the caller, and every reply carries the directory's weak cache consistency data
(section 2.6).  Apart from LOOKUP (:mod:`floatlock.nfs.ops_lookup`, whose directory and child
opening these use) and from the procedures that take names away (:mod:`floatlock.nfs.ops_remove`).

CREATE of a name that already exists (:func:`_create_existing`) runs on the event loop thread
when the directory's handle is cached (``inline_metadata``, see service.py).

EXCLUSIVE CREATE (section 3.3.8) stores the client's 8-byte verifier in the new file's
timestamps, as Linux nfsd does: the first four bytes (masked to 31 bits) as mtime seconds,
the last four as atime seconds.  A retransmitted CREATE that finds a file whose times carry
the same verifier succeeds with that file; the client then sets the real attributes with
SETATTR.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable

from floatlock.nfs.context import Request, attr_of, check_name, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.ops_attr import apply_sattr
from floatlock.nfs.ops_lookup import in_dir, open_child, open_dir
from floatlock.nfs.proto import CreateMode, DirOpArgs, Ftype3, Nfsstat3
from floatlock.nfs.proto_args import CreateArgs, LinkArgs, MkdirArgs, MknodArgs, SymlinkArgs
from floatlock.nfs.proto_attr import Fattr3, Sattr3, WccAttr, WccData
from floatlock.nfs.proto_res import CreateRes, LinkRes
from floatlock.nfs.resolver import NotCached, Obj

_VERF = struct.Struct(">II")


def _created(req: Request, d: Obj, name: str, pre: WccAttr, attrs: Sattr3 | None) -> CreateRes:
    """The reply for a new object ``name``: its handle and attributes, the dir's wcc."""
    child = open_child(req, d, name)
    with child:
        if attrs is not None:
            with req.acting():
                apply_sattr(child, attrs)
            child.restat()
        return CreateRes(Nfsstat3.OK, WccData(pre, post_attr(d)), child.fh, attr_of(child))


def _exclusive_match(st: os.stat_result, verf: bytes) -> bool:
    m, a = _VERF.unpack(verf)
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_mtime_ns == (m & 0x7FFFFFFF) * 1_000_000_000
        and st.st_atime_ns == (a & 0x7FFFFFFF) * 1_000_000_000
    )


def _create_existing(req: Request, a: CreateArgs) -> CreateRes:
    """CREATE of a name that exists, on the event loop (service.py, inline): the common
    retransmit and ``open(O_CREAT)`` of an existing file.  Read-only: a name that does not
    exist, or an UNCHECKED create that would change the size, raises NotCached before anything
    was done, and a worker runs :func:`create3` from the start.

    Same outcome as the worker's path: there ``open(O_CREAT | O_EXCL)`` as the caller fails
    with EEXIST, which needs only search permission on the directory (write permission is
    checked only for a name that does not exist), the permission the ``fstatat`` as the caller
    needs here; then only the size is applied, and an unchanged size is no change at all."""
    try:
        d = open_dir(req, a.where.dir)
    except NfsError as e:
        return CreateRes(e.status)
    with d:
        pre = pre_attr(d)
        name = a.where.name
        try:
            check_name(name, creating=True)
            try:
                with req.acting():
                    st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotCached from None
            if a.mode == CreateMode.GUARDED:
                raise NfsError(Nfsstat3.EXIST)
            if a.mode == CreateMode.EXCLUSIVE:
                if not _exclusive_match(st, a.verf):
                    raise NfsError(Nfsstat3.EXIST)
            elif not stat.S_ISREG(st.st_mode):
                raise NfsError(Nfsstat3.EXIST)
            elif a.attrs.size is not None and a.attrs.size != st.st_size:
                raise NotCached  # a truncate may take long: a worker's job
            child = open_child(req, d, name, st)
        except (OSError, NfsError) as e:
            return CreateRes(status_of(e), WccData(pre, attr_of(d)))
        with child:
            # Nothing changed: the directory's attributes of the open just now are post-op.
            return CreateRes(Nfsstat3.OK, WccData(pre, attr_of(d)), child.fh, attr_of(child))


def _create_in(
    req: Request, where: DirOpArgs, make: Callable[[Obj, WccAttr, str], CreateRes]
) -> CreateRes:
    """The frame of CREATE, MKDIR, SYMLINK and MKNOD: open directory ``where.dir`` for
    modification, check the new name, ``make(d, pre, name)``; a failure carries d's wcc."""

    def work(d: Obj, pre: WccAttr) -> CreateRes:
        check_name(where.name, creating=True)
        return make(d, pre, where.name)

    return in_dir(req, where.dir, work, CreateRes)


def _mode_of(attrs: Sattr3, default: int) -> int:
    return (attrs.mode if attrs.mode is not None else default) & 0o7777


def _rest_of(attrs: Sattr3, mode: int) -> Sattr3:
    """What is left to apply after mkdir(2) or mknod(2) with ``mode``: the mode again (they
    apply the server's umask; the client already applied its own), owner and times."""
    return Sattr3(mode, attrs.uid, attrs.gid, None, attrs.atime, attrs.mtime)


def create3(req: Request, a: CreateArgs) -> CreateRes:
    """Section 3.3.8: UNCHECKED, GUARDED, EXCLUSIVE."""
    if req.cached_only:
        return _create_existing(req, a)

    def make(d: Obj, pre: WccAttr, name: str) -> CreateRes:
        mode = 0o600 if a.mode == CreateMode.EXCLUSIVE else (a.attrs.mode or 0o644) & 0o7777
        flags = os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with req.acting():
                fd = os.open(name, flags, mode, dir_fd=d.fd)
        except FileExistsError:
            if a.mode == CreateMode.GUARDED:
                raise
            st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
            if a.mode == CreateMode.EXCLUSIVE:
                if not _exclusive_match(st, a.verf):
                    raise
                return _created(req, d, name, pre, None)
            if not stat.S_ISREG(st.st_mode):
                raise
            # UNCHECKED on an existing file: only the size is applied (Linux nfsd).
            size_only = Sattr3(size=a.attrs.size)
            return _created(req, d, name, pre, size_only)
        try:
            if a.mode == CreateMode.EXCLUSIVE:
                m, at = _VERF.unpack(a.verf)
                with req.acting():
                    os.utime(fd, (at & 0x7FFFFFFF, m & 0x7FFFFFFF))
                return _created(req, d, name, pre, None)
            if os.fstat(fd).st_mode & 0o7777 != mode:  # the server's umask applied
                with req.acting():
                    os.fchmod(fd, mode)
        finally:
            os.close(fd)
        at = a.attrs
        rest = Sattr3(None, at.uid, at.gid, at.size, at.atime, at.mtime)
        return _created(req, d, name, pre, rest)

    return _create_in(req, a.where, make)


def mkdir3(req: Request, a: MkdirArgs) -> CreateRes:
    """Section 3.3.9."""

    def make(d: Obj, pre: WccAttr, name: str) -> CreateRes:
        mode = _mode_of(a.attrs, 0o755)
        with req.acting():
            os.mkdir(name, mode, dir_fd=d.fd)
        return _created(req, d, name, pre, _rest_of(a.attrs, mode))

    return _create_in(req, a.where, make)


def symlink3(req: Request, a: SymlinkArgs) -> CreateRes:
    """Section 3.3.10: the target is stored as given; the mode of a symlink is ignored."""

    def make(d: Obj, pre: WccAttr, name: str) -> CreateRes:
        if not a.target:
            raise NfsError(Nfsstat3.INVAL, "empty symlink target")
        with req.acting():
            os.symlink(a.target, name, dir_fd=d.fd)
        return _created(req, d, name, pre, None)

    return _create_in(req, a.where, make)


_MKNOD_TYPES = {
    Ftype3.FIFO: stat.S_IFIFO,
    Ftype3.SOCK: stat.S_IFSOCK,
    Ftype3.CHR: stat.S_IFCHR,
    Ftype3.BLK: stat.S_IFBLK,
}


def mknod3(req: Request, a: MknodArgs) -> CreateRes:
    """Section 3.3.11: FIFO and socket for anyone; devices need CAP_MKNOD, which only an
    unsquashed root caller keeps (fsuid 0), so the kernel answers EPERM to anyone else."""

    def make(d: Obj, pre: WccAttr, name: str) -> CreateRes:
        ftype = _MKNOD_TYPES.get(a.type)
        if ftype is None:
            raise NfsError(Nfsstat3.BADTYPE)
        mode = _mode_of(a.attrs, 0o644)
        dev = os.makedev(*a.rdev) if a.type in (Ftype3.CHR, Ftype3.BLK) else 0
        with req.acting():
            os.mknod(name, mode | ftype, dev, dir_fd=d.fd)
        return _created(req, d, name, pre, _rest_of(a.attrs, mode))

    return _create_in(req, a.where, make)


def link3(req: Request, a: LinkArgs) -> LinkRes:
    """Section 3.3.15: linkat(2) of the file's /proc/self/fd path (no CAP needed)."""
    try:
        obj = req.open(a.fh, modify=True)
    except NfsError as e:
        return LinkRes(e.status)
    with obj:
        try:
            d = open_dir(req, a.link.dir)
        except NfsError as e:
            return LinkRes(e.status, attr_of(obj))
        with d:
            pre = pre_attr(d)
            status = Nfsstat3.OK
            try:
                if obj.root is not d.root:
                    raise NfsError(Nfsstat3.XDEV)
                if obj.is_dir:
                    raise NfsError(Nfsstat3.ISDIR)
                check_name(a.link.name, creating=True)
                with req.acting():
                    os.link(obj.proc_path, a.link.name, dst_dir_fd=d.fd, follow_symlinks=True)
            except (OSError, NfsError) as e:
                status = status_of(e)
            attr: Fattr3 | None = post_attr(obj)
            return LinkRes(status, attr, WccData(pre, post_attr(d)))
