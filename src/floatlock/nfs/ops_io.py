"""Data procedures: READLINK, READ, WRITE, COMMIT (RFC 1813 sections 3.3.5-3.3.7, 3.3.21).

READ and WRITE reopen the handle's inode through ``/proc/self/fd/N`` *as the caller*, so the
kernel checks read or write permission.  Like Linux nfsd, the owner of a file may read and
write it whatever its mode bits say (a client checks permission at open(2) time, then keeps
writing to a file it created read-only, e.g. ``cp`` of a 0444 file), and a file that may be
executed may be read (a client must read a binary to execute it): on EACCES those cases are
retried with the server's identity.

Write stability (section 3.3.7): UNSTABLE writes go to the page cache; DATA_SYNC and
FILE_SYNC are followed by fdatasync/fsync before the reply; COMMIT fsyncs.  The write verifier
is random per server start, so a client that sees it change after a restart resends what it
had not committed.
"""

from __future__ import annotations

import os
import stat

from floatlock.nfs.context import Request, attr_of, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.fsuid import as_server
from floatlock.nfs.proto import Nfsstat3, StableHow, WccData
from floatlock.nfs.proto_args import CommitArgs, FhArgs, ReadArgs, WriteArgs
from floatlock.nfs.proto_res import CommitRes, ReadlinkRes, ReadRes, WriteRes
from floatlock.nfs.resolver import Obj


def _check_regular(obj: Obj) -> None:
    mode = obj.st.st_mode
    if stat.S_ISDIR(mode):
        raise NfsError(Nfsstat3.ISDIR)
    if not stat.S_ISREG(mode):
        raise NfsError(Nfsstat3.INVAL)


def open_as_caller(req: Request, obj: Obj, write: bool) -> int:
    """A real descriptor of ``obj`` opened as the caller, with the owner/exec overrides."""
    flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(obj.proc_path, flags)
    except PermissionError:
        ident = req.identity
        assert ident is not None
        owner = obj.st.st_uid == ident.uid
        may_exec = not write and os.access(obj.proc_path, os.X_OK, effective_ids=True)
        if not (owner or may_exec):
            raise
    with as_server():
        return os.open(obj.proc_path, flags)


def readlink3(req: Request, a: FhArgs) -> ReadlinkRes:
    """Section 3.3.5."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return ReadlinkRes(e.status)
    with obj:
        if not stat.S_ISLNK(obj.st.st_mode):
            return ReadlinkRes(Nfsstat3.INVAL, attr_of(obj))
        try:
            with req.acting():
                target = os.readlink("", dir_fd=obj.fd)
        except OSError as e:
            return ReadlinkRes(status_of(e), attr_of(obj))
        return ReadlinkRes(Nfsstat3.OK, attr_of(obj), target)


def read3(req: Request, a: ReadArgs) -> ReadRes:
    """Section 3.3.6: at most the transport's rtmax; eof when the data reaches the end."""
    try:
        obj = req.open(a.fh)
    except NfsError as e:
        return ReadRes(e.status)
    with obj:
        try:
            _check_regular(obj)
            with req.acting():
                fd = open_as_caller(req, obj, write=False)
            try:
                count = min(a.count, req.max_io)
                data = os.pread(fd, count, a.offset) if count else b""
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except (OSError, NfsError) as e:
            return ReadRes(status_of(e), post_attr(obj))
        attr = post_attr(obj)
        return ReadRes(Nfsstat3.OK, attr, a.offset + len(data) >= size, data)


def write3(req: Request, a: WriteArgs) -> WriteRes:
    """Section 3.3.7."""
    try:
        obj = req.open(a.fh, modify=True)
    except NfsError as e:
        return WriteRes(e.status)
    with obj:
        pre = pre_attr(obj)
        verf = req.state.write_verf
        try:
            _check_regular(obj)
            if len(a.data) < a.count or a.count > req.max_io:
                raise NfsError(Nfsstat3.INVAL, "count does not match the data")
            with req.acting():
                fd = open_as_caller(req, obj, write=True)
            try:
                n = os.pwrite(fd, a.data[: a.count], a.offset) if a.count else 0
                if a.stable == StableHow.DATA_SYNC:
                    os.fdatasync(fd)
                elif a.stable == StableHow.FILE_SYNC:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, NfsError) as e:
            return WriteRes(status_of(e), WccData(pre, post_attr(obj)))
        return WriteRes(Nfsstat3.OK, WccData(pre, post_attr(obj)), n, a.stable, verf)


def commit3(req: Request, a: CommitArgs) -> CommitRes:
    """Section 3.3.21: flush the whole file (fsync); offset/count are only hints."""
    try:
        obj = req.open(a.fh, modify=True)
    except NfsError as e:
        return CommitRes(e.status)
    with obj:
        pre = pre_attr(obj)
        try:
            _check_regular(obj)
            # Flushing discloses nothing and the caller was admitted to modify the export:
            # open as the server, so a write-only file can be committed too.
            fd = os.open(obj.proc_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, NfsError) as e:
            return CommitRes(status_of(e), WccData(pre, post_attr(obj)))
        return CommitRes(Nfsstat3.OK, WccData(pre, post_attr(obj)), req.state.write_verf)
