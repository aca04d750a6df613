"""NFSv3 errors: an exception carrying an ``nfsstat3`` and the errno mapping (RFC 1813 2.6).

The operations layer lets the kernel decide (it runs every syscall as the caller), so nearly
every NFS error is an errno translated here.  The mapping follows RFC 1813 section 2.6's
descriptions, which were themselves written as the UNIX errno values they share numbers with.
"""

from __future__ import annotations

import errno

from floatlock.nfs.proto import Nfsstat3

_ERRNO: dict[int, Nfsstat3] = {
    errno.EPERM: Nfsstat3.PERM,
    errno.ENOENT: Nfsstat3.NOENT,
    errno.EIO: Nfsstat3.IO,
    errno.ENXIO: Nfsstat3.NXIO,
    errno.EACCES: Nfsstat3.ACCES,
    errno.EEXIST: Nfsstat3.EXIST,
    errno.EXDEV: Nfsstat3.XDEV,
    errno.ENODEV: Nfsstat3.NODEV,
    errno.ENOTDIR: Nfsstat3.NOTDIR,
    errno.EISDIR: Nfsstat3.ISDIR,
    errno.EINVAL: Nfsstat3.INVAL,
    errno.EFBIG: Nfsstat3.FBIG,
    errno.ENOSPC: Nfsstat3.NOSPC,
    errno.EROFS: Nfsstat3.ROFS,
    errno.EMLINK: Nfsstat3.MLINK,
    errno.ENAMETOOLONG: Nfsstat3.NAMETOOLONG,
    errno.ENOTEMPTY: Nfsstat3.NOTEMPTY,
    errno.EDQUOT: Nfsstat3.DQUOT,
    errno.ESTALE: Nfsstat3.STALE,
    errno.EOPNOTSUPP: Nfsstat3.NOTSUPP,
    errno.ELOOP: Nfsstat3.NOENT,  # O_NOFOLLOW on a symlink where a directory was needed
    errno.EBADF: Nfsstat3.STALE,
    errno.ENOSYS: Nfsstat3.NOTSUPP,
    errno.ETXTBSY: Nfsstat3.ACCES,
    errno.EAGAIN: Nfsstat3.JUKEBOX,
    errno.ENOMEM: Nfsstat3.JUKEBOX,
    errno.EOVERFLOW: Nfsstat3.INVAL,
    errno.E2BIG: Nfsstat3.INVAL,
}


def status_of_errno(err: int | None) -> Nfsstat3:
    """The nfsstat3 for an errno; anything unexpected is NFS3ERR_IO (section 2.6: "hard error")."""
    if err is None:
        return Nfsstat3.IO
    return _ERRNO.get(err, Nfsstat3.IO)


class NfsError(Exception):
    """Abort the current procedure with ``status`` (never NFS3_OK)."""

    def __init__(self, status: Nfsstat3, message: str = "") -> None:
        super().__init__(message or status.name)
        self.status = status

    @classmethod
    def from_os(cls, e: OSError) -> NfsError:
        return cls(status_of_errno(e.errno), str(e))
