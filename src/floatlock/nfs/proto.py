"""NFSv3 common constants, status codes, file handles and their XDR codecs (RFC 1813 2.5, 2.6).

This module holds the constants and the data types that several procedures share: the status
codes (``nfsstat3``, section 2.6), the enumerations, file handles (``nfs_fh3``) and
``diropargs3``.  File attributes (``fattr3``, ``sattr3``, weak cache consistency data) live in
:mod:`floatlock.nfs.proto_attr`, procedure arguments in :mod:`floatlock.nfs.proto_args`,
results in :mod:`floatlock.nfs.proto_res`.  Pure codecs: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from floatlock.xdr import Decoder, Encoder, exactly, opaque_at

NFS_PROGRAM = 100003
NFS_V3 = 3

NFS3_FHSIZE = 64  # RFC 1813 section 2.4: the largest nfs_fh3
NFS3_COOKIEVERFSIZE = 8
NFS3_CREATEVERFSIZE = 8
NFS3_WRITEVERFSIZE = 8
MAX_PATH = 4096  # nfspath3: symlink targets
# filename3 is unbounded in XDR: names are decoded up to MAX_PATH, and one longer than this
# (Linux NAME_MAX) gets NFS3ERR_NAMETOOLONG.
NAME_MAX = 255


class Nfsstat3(IntEnum):
    """RFC 1813 section 2.6 nfsstat3."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    NXIO = 6
    ACCES = 13
    EXIST = 17
    XDEV = 18
    NODEV = 19
    NOTDIR = 20
    ISDIR = 21
    INVAL = 22
    FBIG = 27
    NOSPC = 28
    ROFS = 30
    MLINK = 31
    NAMETOOLONG = 63
    NOTEMPTY = 66
    DQUOT = 69
    STALE = 70
    REMOTE = 71
    BADHANDLE = 10001
    NOT_SYNC = 10002
    BAD_COOKIE = 10003
    NOTSUPP = 10004
    TOOSMALL = 10005
    SERVERFAULT = 10006
    BADTYPE = 10007
    JUKEBOX = 10008


class Ftype3(IntEnum):
    """RFC 1813 section 2.5 ftype3."""

    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class StableHow(IntEnum):
    """RFC 1813 section 3.3.7 stable_how."""

    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class CreateMode(IntEnum):
    """RFC 1813 section 3.3.8 createmode3."""

    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


class TimeHow(IntEnum):
    """RFC 1813 section 2.5 time_how (sattr3 set_atime / set_mtime)."""

    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


# ACCESS3 bits, RFC 1813 section 3.3.4.
ACCESS3_READ = 0x0001
ACCESS3_LOOKUP = 0x0002
ACCESS3_MODIFY = 0x0004
ACCESS3_EXTEND = 0x0008
ACCESS3_DELETE = 0x0010
ACCESS3_EXECUTE = 0x0020

# FSINFO properties, RFC 1813 section 3.3.19.
FSF3_LINK = 0x0001
FSF3_SYMLINK = 0x0002
FSF3_HOMOGENEOUS = 0x0008
FSF3_CANSETTIME = 0x0010


def encode_fh(enc: Encoder, fh: bytes) -> None:
    enc.opaque(fh, NFS3_FHSIZE)


def decode_fh(dec: Decoder) -> bytes:
    return dec.opaque(NFS3_FHSIZE)


@dataclass(frozen=True, slots=True)
class DirOpArgs:
    """diropargs3, RFC 1813 section 3.3.3."""

    dir: bytes
    name: str

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.dir)
        enc.string(self.name)

    @classmethod
    def decode(cls, dec: Decoder) -> DirOpArgs:
        # filename3 has no XDR bound; a longer name is still decoded (up to a sane limit) so
        # that the procedure can answer NFS3ERR_NAMETOOLONG rather than GARBAGE_ARGS.
        return cls(decode_fh(dec), dec.string(MAX_PATH))

    @classmethod
    def decode_at(cls, data: bytes, pos: int) -> DirOpArgs:
        """:meth:`decode` of ``data[pos:]``, which must be exactly one diropargs3 (LOOKUP's
        fast path: same checks, no Decoder)."""
        fh, pos = opaque_at(data, pos, NFS3_FHSIZE)
        name, pos = opaque_at(data, pos, MAX_PATH)
        exactly(data, pos)
        return cls(fh, name.decode("utf-8", "surrogateescape"))
