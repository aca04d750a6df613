"""Attribute procedures: GETATTR, SETATTR, ACCESS, FSSTAT, FSINFO, PATHCONF (RFC 1813 3.3).

All syscalls that can be refused run as the caller (:meth:`Request.acting`); the kernel
decides.  Attributes are applied through ``/proc/self/fd/N`` of the handle's O_PATH
descriptor, which reaches the very inode the handle names.
"""

from __future__ import annotations

import os
import stat
import time

from floatlock.nfs.context import Request, attr_of, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.fsuid import may
from floatlock.nfs.proto import (
    ACCESS3_DELETE,
    ACCESS3_EXECUTE,
    ACCESS3_EXTEND,
    ACCESS3_LOOKUP,
    ACCESS3_MODIFY,
    ACCESS3_READ,
    FSF3_CANSETTIME,
    FSF3_HOMOGENEOUS,
    FSF3_LINK,
    FSF3_SYMLINK,
    Nfsstat3,
)
from floatlock.nfs.proto_args import AccessArgs, FhArgs, SetattrArgs
from floatlock.nfs.proto_attr import NfsTime, Sattr3, WccData
from floatlock.nfs.proto_res import AccessRes, GetattrRes, WccRes
from floatlock.nfs.proto_res_fs import FsinfoRes, FsstatRes, PathconfRes
from floatlock.nfs.resolver import Obj


def getattr3(req: Request, a: FhArgs) -> GetattrRes:
    """Section 3.3.1."""
    try:
        with req.open(a.fh) as obj:
            return GetattrRes(Nfsstat3.OK, attr_of(obj))
    except NfsError as e:
        return GetattrRes(e.status)


def _time_ns(t: NfsTime | str | None, current: int, now: int) -> int:
    if t is None:
        return current
    if isinstance(t, str):
        return now
    return t.to_ns()


def apply_sattr(obj: Obj, s: Sattr3, *, skip_mode: bool = False) -> None:
    """Apply sattr3 to ``obj`` as the current fsuid: size, owner, mode, times (Linux order)."""
    path = obj.proc_path
    if s.size is not None:
        if stat.S_ISDIR(obj.st.st_mode):
            raise NfsError(Nfsstat3.ISDIR)
        if not stat.S_ISREG(obj.st.st_mode):
            raise NfsError(Nfsstat3.INVAL)
        if s.size != obj.st.st_size:
            os.truncate(path, s.size)
    if s.uid is not None or s.gid is not None:
        uid = -1 if s.uid is None else s.uid
        gid = -1 if s.gid is None else s.gid
        os.chown(path, uid, gid)
    if s.mode is not None and not skip_mode and not stat.S_ISLNK(obj.st.st_mode):
        os.chmod(path, s.mode & 0o7777)
    if s.atime is not None or s.mtime is not None:
        if s.atime == "server" and s.mtime == "server":
            os.utime(path)  # UTIME_NOW: allowed to anyone who may write (utimensat(2))
        else:
            now = time.time_ns()
            st = obj.st
            os.utime(
                path,
                ns=(_time_ns(s.atime, st.st_atime_ns, now), _time_ns(s.mtime, st.st_mtime_ns, now)),
            )


def setattr3(req: Request, a: SetattrArgs) -> WccRes:
    """Section 3.3.2: with the guard, refuse with NOT_SYNC unless the ctime matches."""
    try:
        obj = req.open(a.fh, modify=True)
    except NfsError as e:
        return WccRes(e.status)
    with obj:
        pre = pre_attr(obj)
        if a.guard is not None and a.guard != pre.ctime:
            return WccRes(Nfsstat3.NOT_SYNC, WccData(pre, attr_of(obj)))
        status = Nfsstat3.OK
        try:
            with req.acting():
                apply_sattr(obj, a.attrs)
        except (OSError, NfsError) as e:
            status = status_of(e)
        return WccRes(status, WccData(pre, post_attr(obj)))


def access3(req: Request, a: AccessArgs) -> AccessRes:
    """Section 3.3.4: each bit answered by access(2) as the caller (AT_EACCESS: fsuid)."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return AccessRes(e.status)
    with obj:
        assert req.options is not None
        with req.acting():
            granted = granted_access(obj.fd, obj.is_dir, a.access, req.options.rw)
        return AccessRes(Nfsstat3.OK, attr_of(obj), granted)


# The ACCESS3 bits each kind of file can be granted, and the access(2) mode that decides each.
_DIR_CHECKS = (
    (ACCESS3_READ, os.R_OK),
    (ACCESS3_LOOKUP, os.X_OK),
    (ACCESS3_MODIFY, os.W_OK),
    (ACCESS3_EXTEND, os.W_OK),
    (ACCESS3_DELETE, os.W_OK),
)
_FILE_CHECKS = (
    (ACCESS3_READ, os.R_OK),
    (ACCESS3_MODIFY, os.W_OK),
    (ACCESS3_EXTEND, os.W_OK),
    (ACCESS3_EXECUTE, os.X_OK),
)
_WRITING = ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE


def granted_access(fd: int, is_dir: bool, requested: int, rw: bool) -> int:
    """The ACCESS3 bits of ``requested`` the thread's current filesystem identity has on
    ``fd`` (one access check per distinct mode asked; none that write on a read-only
    export).  Run it as the caller."""
    granted = 0
    results: dict[int, bool] = {}
    for bit, mode in _DIR_CHECKS if is_dir else _FILE_CHECKS:
        if requested & bit:
            ok = results.get(mode)
            if ok is None:
                ok = results[mode] = may(fd, mode)
            if ok:
                granted |= bit
    return granted if rw else granted & ~_WRITING


def fsstat3(req: Request, a: FhArgs) -> FsstatRes:
    """Section 3.3.18."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return FsstatRes(e.status)
    with obj:
        try:
            v = os.fstatvfs(obj.fd)
        except OSError as e:
            return FsstatRes(status_of(e), attr_of(obj))
        fr = v.f_frsize
        return FsstatRes(
            Nfsstat3.OK,
            attr_of(obj),
            v.f_blocks * fr,
            v.f_bfree * fr,
            v.f_bavail * fr,
            v.f_files,
            v.f_ffree,
            v.f_favail,
            0,
        )


def fsinfo3(req: Request, a: FhArgs) -> FsinfoRes:
    """Section 3.3.19: transfer sizes fit the transport the call came on."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return FsinfoRes(e.status)
    with obj:
        size = req.max_io
        return FsinfoRes(
            Nfsstat3.OK,
            attr_of(obj),
            rtmax=size,
            rtpref=size,
            rtmult=4096,
            wtmax=size,
            wtpref=size,
            wtmult=4096,
            dtpref=min(size, 64 << 10),
            maxfilesize=(1 << 63) - 1,
            time_delta=NfsTime(0, 1),
            properties=FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
        )


def pathconf3(req: Request, a: FhArgs) -> PathconfRes:
    """Section 3.3.20."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return PathconfRes(e.status)
    with obj:
        name_max = obj.root.name_max  # one filesystem per export: read at start-up
        return PathconfRes(Nfsstat3.OK, attr_of(obj), linkmax=65000, name_max=name_max)
