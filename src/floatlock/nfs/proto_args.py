"""NFSv3 procedure arguments and their XDR codecs (RFC 1813 section 3.3).

Each argument type decodes (server) and encodes (client: tests, benchmarks).  Procedures whose
only argument is a file handle (GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF) use
:class:`FhArgs`; those taking a ``diropargs3`` (LOOKUP, REMOVE, RMDIR) use
:class:`~floatlock.nfs.proto.DirOpArgs` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from floatlock.nfs.proto import (
    MAX_PATH,
    NFS3_COOKIEVERFSIZE,
    NFS3_CREATEVERFSIZE,
    NFS3_FHSIZE,
    CreateMode,
    DirOpArgs,
    Ftype3,
    StableHow,
    decode_fh,
    encode_fh,
)
from floatlock.nfs.proto_attr import NO_SATTR, NfsTime, Sattr3, decode_time, encode_time
from floatlock.xdr import Decoder, Encoder, XdrError, exactly, opaque_at

ZERO_VERF = b"\0" * 8
# Built once, not per decoded call.
_STABLE_HOWS = frozenset(StableHow)
_CREATE_MODES = frozenset(CreateMode)
_FTYPES = frozenset(Ftype3)


@dataclass(frozen=True, slots=True)
class FhArgs:
    """A lone nfs_fh3 (GETATTR3args, READLINK3args, FSSTAT3args, FSINFO3args, PATHCONF3args)."""

    fh: bytes

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)

    @classmethod
    def decode(cls, dec: Decoder) -> FhArgs:
        return cls(decode_fh(dec))

    @classmethod
    def decode_at(cls, data: bytes, pos: int) -> FhArgs:
        """:meth:`decode` of ``data[pos:]``, which must be exactly one nfs_fh3 (the fast path
        of GETATTR and the other handle-only calls: same checks, no Decoder)."""
        fh, pos = opaque_at(data, pos, NFS3_FHSIZE)
        exactly(data, pos)
        return cls(fh)


@dataclass(frozen=True, slots=True)
class SetattrArgs:
    """SETATTR3args, RFC 1813 section 3.3.2: guard is the expected ctime, or None."""

    fh: bytes
    attrs: Sattr3
    guard: NfsTime | None = None

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        self.attrs.encode(enc)
        enc.optional(self.guard, encode_time)

    @classmethod
    def decode(cls, dec: Decoder) -> SetattrArgs:
        return cls(decode_fh(dec), Sattr3.decode(dec), dec.optional(decode_time))


@dataclass(frozen=True, slots=True)
class AccessArgs:
    """ACCESS3args, RFC 1813 section 3.3.4."""

    fh: bytes
    access: int

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        enc.u32(self.access)

    @classmethod
    def decode(cls, dec: Decoder) -> AccessArgs:
        return cls(decode_fh(dec), dec.u32())


@dataclass(frozen=True, slots=True)
class ReadArgs:
    """READ3args (section 3.3.6) and COMMIT3args (section 3.3.21): fh, offset, count."""

    fh: bytes
    offset: int
    count: int

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        enc.u64(self.offset)
        enc.u32(self.count)

    @classmethod
    def decode(cls, dec: Decoder) -> ReadArgs:
        return cls(decode_fh(dec), dec.u64(), dec.u32())


CommitArgs = ReadArgs


@dataclass(frozen=True, slots=True)
class WriteArgs:
    """WRITE3args, RFC 1813 section 3.3.7.

    ``data`` is bytes from :meth:`decode`, and a read-only view of the call message from
    :meth:`decode_at` (the server's path): a 1 MiB WRITE's data goes from the record to
    ``pwrite`` without another copy."""

    fh: bytes
    offset: int
    count: int
    stable: StableHow
    data: bytes | memoryview

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        enc.u64(self.offset)
        enc.u32(self.count)
        enc.u32(self.stable)
        enc.opaque(self.data)

    @classmethod
    def decode(cls, dec: Decoder) -> WriteArgs:
        fh = decode_fh(dec)
        offset, count = dec.u64(), dec.u32()
        stable = StableHow(dec.enum(_STABLE_HOWS))
        return cls(fh, offset, count, stable, dec.opaque())

    @classmethod
    def decode_at(cls, data: bytes, pos: int) -> WriteArgs:
        """:meth:`decode` of the arguments at ``data[pos:]``, to the very end, with ``data``
        a view of the message (``Procedure.decode_at``); XdrError as ``decode`` raises it."""
        dec = Decoder(data, pos)
        fh = decode_fh(dec)
        offset, count = dec.u64(), dec.u32()
        stable = StableHow(dec.enum(_STABLE_HOWS))
        n = dec.u32()
        start = dec.pos
        end = start + n + (-n & 3)
        if end > len(data):  # (HARD_MAX needs no check: the record is shorter than it)
            raise XdrError(f"truncated opaque: {n} bytes at offset {start}")
        if end != len(data):
            raise XdrError(f"{len(data) - end} trailing bytes")
        return cls(fh, offset, count, stable, memoryview(data)[start : start + n])


@dataclass(frozen=True, slots=True)
class CreateArgs:
    """CREATE3args, RFC 1813 section 3.3.8: sattr3 for UNCHECKED/GUARDED, verf for EXCLUSIVE."""

    where: DirOpArgs
    mode: CreateMode
    attrs: Sattr3 = NO_SATTR
    verf: bytes = ZERO_VERF

    def encode(self, enc: Encoder) -> None:
        self.where.encode(enc)
        enc.u32(self.mode)
        if self.mode == CreateMode.EXCLUSIVE:
            enc.opaque_fixed(self.verf, NFS3_CREATEVERFSIZE)
        else:
            self.attrs.encode(enc)

    @classmethod
    def decode(cls, dec: Decoder) -> CreateArgs:
        where = DirOpArgs.decode(dec)
        mode = CreateMode(dec.enum(_CREATE_MODES))
        if mode == CreateMode.EXCLUSIVE:
            return cls(where, mode, NO_SATTR, dec.opaque_fixed(NFS3_CREATEVERFSIZE))
        return cls(where, mode, Sattr3.decode(dec))


@dataclass(frozen=True, slots=True)
class MkdirArgs:
    """MKDIR3args, RFC 1813 section 3.3.9."""

    where: DirOpArgs
    attrs: Sattr3

    def encode(self, enc: Encoder) -> None:
        self.where.encode(enc)
        self.attrs.encode(enc)

    @classmethod
    def decode(cls, dec: Decoder) -> MkdirArgs:
        return cls(DirOpArgs.decode(dec), Sattr3.decode(dec))


@dataclass(frozen=True, slots=True)
class SymlinkArgs:
    """SYMLINK3args, RFC 1813 section 3.3.10."""

    where: DirOpArgs
    attrs: Sattr3
    target: str

    def encode(self, enc: Encoder) -> None:
        self.where.encode(enc)
        self.attrs.encode(enc)
        enc.string(self.target, MAX_PATH)

    @classmethod
    def decode(cls, dec: Decoder) -> SymlinkArgs:
        return cls(DirOpArgs.decode(dec), Sattr3.decode(dec), dec.string(MAX_PATH))


@dataclass(frozen=True, slots=True)
class MknodArgs:
    """MKNOD3args, RFC 1813 section 3.3.11: rdev only for CHR/BLK, attrs not for REG/DIR/LNK."""

    where: DirOpArgs
    type: Ftype3
    attrs: Sattr3 = NO_SATTR
    rdev: tuple[int, int] = (0, 0)

    def encode(self, enc: Encoder) -> None:
        self.where.encode(enc)
        enc.u32(self.type)
        if self.type in (Ftype3.CHR, Ftype3.BLK):
            self.attrs.encode(enc)
            enc.u32(self.rdev[0])
            enc.u32(self.rdev[1])
        elif self.type in (Ftype3.SOCK, Ftype3.FIFO):
            self.attrs.encode(enc)

    @classmethod
    def decode(cls, dec: Decoder) -> MknodArgs:
        where = DirOpArgs.decode(dec)
        t = Ftype3(dec.enum(_FTYPES))
        if t in (Ftype3.CHR, Ftype3.BLK):
            attrs = Sattr3.decode(dec)
            return cls(where, t, attrs, (dec.u32(), dec.u32()))
        if t in (Ftype3.SOCK, Ftype3.FIFO):
            return cls(where, t, Sattr3.decode(dec))
        return cls(where, t)


@dataclass(frozen=True, slots=True)
class RenameArgs:
    """RENAME3args, RFC 1813 section 3.3.14."""

    src: DirOpArgs
    dst: DirOpArgs

    def encode(self, enc: Encoder) -> None:
        self.src.encode(enc)
        self.dst.encode(enc)

    @classmethod
    def decode(cls, dec: Decoder) -> RenameArgs:
        return cls(DirOpArgs.decode(dec), DirOpArgs.decode(dec))


@dataclass(frozen=True, slots=True)
class LinkArgs:
    """LINK3args, RFC 1813 section 3.3.15."""

    fh: bytes
    link: DirOpArgs

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        self.link.encode(enc)

    @classmethod
    def decode(cls, dec: Decoder) -> LinkArgs:
        return cls(decode_fh(dec), DirOpArgs.decode(dec))


@dataclass(frozen=True, slots=True)
class ReaddirArgs:
    """READDIR3args (section 3.3.16) and READDIRPLUS3args (section 3.3.17).

    For READDIR ``maxcount`` is the ``count`` field and ``dircount`` is unused (0).
    """

    fh: bytes
    cookie: int
    verf: bytes
    maxcount: int
    dircount: int = 0
    plus: bool = field(default=False)

    def encode(self, enc: Encoder) -> None:
        encode_fh(enc, self.fh)
        enc.u64(self.cookie)
        enc.opaque_fixed(self.verf, NFS3_COOKIEVERFSIZE)
        if self.plus:
            enc.u32(self.dircount)
        enc.u32(self.maxcount)

    @classmethod
    def decode(cls, dec: Decoder) -> ReaddirArgs:
        fh, cookie, verf = decode_fh(dec), dec.u64(), dec.opaque_fixed(NFS3_COOKIEVERFSIZE)
        return cls(fh, cookie, verf, dec.u32())

    @classmethod
    def decode_plus(cls, dec: Decoder) -> ReaddirArgs:
        fh, cookie, verf = decode_fh(dec), dec.u64(), dec.opaque_fixed(NFS3_COOKIEVERFSIZE)
        dircount = dec.u32()
        return cls(fh, cookie, verf, dec.u32(), dircount, True)
