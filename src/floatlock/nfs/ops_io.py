"""Data procedures: READLINK, READ, WRITE, COMMIT (RFC 1813 sections 3.3.5-3.3.7, 3.3.21).

READ and WRITE use a cached descriptor per (handle, access mode), opened as the server
(:mod:`floatlock.nfs.openfiles`); before each call the kernel checks the *caller's* read or
write permission on the inode with ``faccessat2(AT_EACCESS)`` under the caller's fsuid, fsgid
and groups (:func:`~floatlock.nfs.fsuid.may`: the check an open as the caller made before the
cache).  Like Linux nfsd, the owner of a file may read and write it whatever its mode bits say
(a client checks permission at open(2) time, then keeps writing to a file it created
read-only, e.g. ``cp`` of a 0444 file), and a file that may be executed may be read (a client
must read a binary to execute it).

READ may run on the event loop (``inline_metadata``, service.py) when its descriptor is cached:
the same admission and permission checks, then, over TCP, the data named in the file's
mapping and copied by the kernel as the reply is sent (:mod:`floatlock.nfs.filemap`), or
``preadv2(RWF_NOWAIT)`` straight into the buffer the reply is sent from; data not all in the
page cache goes to a worker.  Reads that copy use buffers reused from call to call
(:mod:`floatlock.nfs.readbuf`): a fresh 1 MiB buffer costs a ``memset`` as long as a copy.

Write stability (section 3.3.7): UNSTABLE writes go to the page cache; DATA_SYNC and
FILE_SYNC are followed by fdatasync/fsync before the reply; COMMIT fsyncs.  The write verifier
is random per server start, so a client that sees it change after a restart resends what it
had not committed.
"""

from __future__ import annotations

import errno
import os
import stat

from floatlock.nfs import filemap
from floatlock.nfs.context import Request, attr_of, post_attr, pre_attr, status_of
from floatlock.nfs.errors import NfsError
from floatlock.nfs.filemap import FileSlice
from floatlock.nfs.fsuid import may
from floatlock.nfs.openfiles import OpenFile
from floatlock.nfs.proto import Nfsstat3, StableHow
from floatlock.nfs.proto_args import CommitArgs, FhArgs, ReadArgs, WriteArgs
from floatlock.nfs.proto_attr import Fattr3, WccAttr, WccData
from floatlock.nfs.proto_res_io import CommitRes, ReadlinkRes, ReadRes, WriteRes
from floatlock.nfs.readbuf import ReadBuffers
from floatlock.nfs.resolver import NotCached, Obj

_BUFFERS = ReadBuffers()
_ONE_BYTE = bytearray(1)  # mapped READs' access-time read (loop thread only)


def _check_regular(obj: Obj) -> None:
    mode = obj.st.st_mode
    if stat.S_ISDIR(mode):
        raise NfsError(Nfsstat3.ISDIR)
    if not stat.S_ISREG(mode):
        raise NfsError(Nfsstat3.INVAL)


class _Refused(Exception):
    """READ/WRITE cannot proceed: the status and the attributes to reply with."""

    def __init__(self, status: Nfsstat3, attr: Fattr3 | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.attr = attr


def _permit(req: Request, fd: int, st: os.stat_result, write: bool) -> None:
    """Raise NfsError(ACCES) unless the caller may read (write) the inode open at ``fd``."""
    ident = req.identity
    assert ident is not None
    with req.acting():
        if may(fd, os.W_OK if write else os.R_OK):
            return
        if st.st_uid == ident.uid:  # the owner override
            return
        if not write and may(fd, os.X_OK):  # read to execute
            return
    raise NfsError(Nfsstat3.ACCES, "permission denied")


def _open_file(req: Request, fh: bytes, write: bool) -> tuple[OpenFile, os.stat_result]:
    """The cached descriptor for READ (WRITE) of ``fh``, admitted and permitted for the
    caller, with fresh attributes; release it with ``req.state.files.release``."""
    files = req.state.files
    entry = files.get(fh, write)
    if entry is not None:
        try:
            try:
                req.admit(entry.root.export, modify=write)
            except NfsError as e:
                raise _Refused(e.status) from None
            st = os.fstat(entry.fd)
            if st.st_nlink == 0:  # removed since it was cached
                files.discard(entry)
                req.state.resolver.cache.forget_inode(st.st_dev, st.st_ino)
                raise _Refused(Nfsstat3.STALE)
            try:
                _permit(req, entry.fd, st, write)
            except (OSError, NfsError) as e:
                attr = Fattr3.from_stat(st, entry.root.export.export_id)
                raise _Refused(status_of(e), attr) from None
        except BaseException:
            files.release(entry)
            raise
        return entry, st
    if req.cached_only:
        raise NotCached  # opening a descriptor is a worker's job
    try:
        obj = req.open(fh, modify=write)
    except NfsError as e:
        raise _Refused(e.status) from None
    with obj:
        try:
            _check_regular(obj)
            _permit(req, obj.fd, obj.st, write)
            # As the server (the thread's fsuid is 0 here): the check above was the caller's.
            flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC
            fd = os.open(obj.proc_path, flags)
        except (OSError, NfsError) as e:
            raise _Refused(status_of(e), attr_of(obj)) from None
        entry = files.add(fh, write, obj.root, fd, (obj.st.st_dev, obj.st.st_ino))
        return entry, obj.st


def _fattr(entry: OpenFile, st: os.stat_result) -> Fattr3:
    return Fattr3.from_stat(st, entry.root.export.export_id)


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


def _read_cached(fd: int, count: int, offset: int) -> memoryview:
    """``count`` bytes at ``offset`` if the page cache has them all (``RWF_NOWAIT``: never
    waits for the disk), read straight into the buffer the reply is sent from; raises
    NotCached when the disk would be needed (the call then goes to a worker)."""
    try:
        return _read_into(fd, count, offset, os.RWF_NOWAIT)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
            raise NotCached from None
        raise


def _read_into(fd: int, count: int, offset: int, flags: int = 0) -> memoryview:
    """At most ``count`` bytes at ``offset``, in a reused buffer: a view of exactly the bytes
    read (the rest of the buffer holds an earlier call's data and is never sent)."""
    view = _BUFFERS.get(count)
    n = os.preadv(fd, (view,), offset, flags)
    return view if n == count else view[:n]


def _mapped(req: Request, entry: OpenFile, count: int, offset: int, size: int) -> FileSlice | None:
    """The data as a slice of the file's mapping (:mod:`floatlock.nfs.filemap`), if this READ
    may be sent from it: over TCP, big enough, within one window, all in the page cache, on a
    filesystem that reads without waiting, and mapped bytes to spare (loop thread only)."""
    count = min(count, size - offset)
    if count < filemap.MIN_MAPPED or req.caller.transport != "tcp":
        return None
    try:
        # One byte read as a copying READ would read it: the same access time (filemap), and
        # only where RWF_NOWAIT works, where inline READs copied before (not tmpfs or a
        # network filesystem, whose reads the loop must not wait for): copy there as before.
        # First, as it is the cheap test (0.69 us against cachestat's 8.4 for 1 MiB).
        os.preadv(entry.fd, (_ONE_BYTE,), offset, os.RWF_NOWAIT)
    except OSError:
        return None
    if not filemap.resident(entry.fd, offset, count):
        return None
    return entry.windows.slice(entry.fd, offset, count, size)


def read3(req: Request, a: ReadArgs) -> ReadRes:
    """Section 3.3.6: at most the transport's rtmax; eof when the data reaches the end.

    On the event loop (``cached_only``, service.py): only with a cached descriptor and data
    all in the page cache; otherwise NotCached before anything was read."""
    try:
        entry, st = _open_file(req, a.fh, write=False)
    except _Refused as e:
        return ReadRes(e.status, e.attr)
    try:
        data: bytes | bytearray | memoryview | FileSlice
        try:
            count = min(a.count, req.max_io)
            if not count:
                data = b""
            elif req.cached_only:
                data = _mapped(req, entry, count, a.offset, st.st_size) or _read_cached(
                    entry.fd, count, a.offset
                )
            else:
                data = _read_into(entry.fd, count, a.offset)
            if type(data) is not FileSlice:  # mapped data is copied as it is sent: st stands
                st = os.fstat(entry.fd)
        except OSError as e:
            return ReadRes(status_of(e), _fattr(entry, st))
        eof = a.offset + len(data) >= st.st_size
        if req.cached_only and len(data) < count and not eof:
            raise NotCached  # only part of it was cached: a worker reads it all
        return ReadRes(Nfsstat3.OK, _fattr(entry, st), eof, data)
    finally:
        req.state.files.release(entry)


def write3(req: Request, a: WriteArgs) -> WriteRes:
    """Section 3.3.7."""
    try:
        entry, st = _open_file(req, a.fh, write=True)
    except _Refused as e:
        return WriteRes(e.status, WccData(None, e.attr))
    try:
        pre = WccAttr.from_stat(st)
        verf = req.state.write_verf
        if len(a.data) < a.count or a.count > req.max_io:
            return WriteRes(Nfsstat3.INVAL, WccData(pre, _fattr(entry, st)))
        try:
            n = os.pwrite(entry.fd, memoryview(a.data)[: a.count], a.offset) if a.count else 0
            if a.stable == StableHow.DATA_SYNC:
                os.fdatasync(entry.fd)
            elif a.stable == StableHow.FILE_SYNC:
                os.fsync(entry.fd)
            post = os.fstat(entry.fd)
        except OSError as e:
            return WriteRes(status_of(e), WccData(pre, post_attr_fd(entry)))
        return WriteRes(Nfsstat3.OK, WccData(pre, _fattr(entry, post)), n, a.stable, verf)
    finally:
        req.state.files.release(entry)


def post_attr_fd(entry: OpenFile) -> Fattr3 | None:
    try:
        return _fattr(entry, os.fstat(entry.fd))
    except OSError:
        return None


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
