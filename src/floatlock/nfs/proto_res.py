"""NFSv3 procedure results and their XDR codecs (RFC 1813 section 3.3).

Every result is a status and, by status, either the "resok" or the "resfail" arm.  The types
below hold the union of both arms: fields a failed reply does not carry are simply left at
their defaults and are not encoded.  ``decode`` methods exist for the client side (tests,
benchmarks).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from floatlock.nfs.proto import (
    NFS3_WRITEVERFSIZE,
    NO_WCC,
    Fattr3,
    Nfsstat3,
    NfsTime,
    StableHow,
    WccData,
    decode_fh,
    decode_post_op_attr,
    decode_time,
    encode_fh,
    encode_post_op_attr,
    encode_time,
)
from floatlock.xdr import Decoder, Encoder

ZERO_VERF = b"\0" * 8
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")  # XDR padding of opaque data, by length
ONE_NS = NfsTime(0, 1)
_STABLE_HOWS = frozenset(StableHow)


def status_of_reply(dec: Decoder) -> Nfsstat3:
    v = dec.u32()
    return Nfsstat3(v) if v in Nfsstat3._value2member_map_ else Nfsstat3.SERVERFAULT


def _encode_head(status: Nfsstat3, attr: Fattr3 | None) -> Encoder:
    """An encoder holding the status and the post_op_attr both arms of many results start with."""
    enc = Encoder()
    enc.u32(status)
    encode_post_op_attr(enc, attr)
    return enc


def _decode_head(dec: Decoder) -> tuple[Nfsstat3, Fattr3 | None]:
    """The status and post_op_attr of :func:`_encode_head`."""
    s = status_of_reply(dec)
    return s, decode_post_op_attr(dec)


def _encode_wcc_head(status: Nfsstat3, wcc: WccData) -> Encoder:
    """An encoder holding the status and the wcc_data both arms of some results start with."""
    enc = Encoder()
    enc.u32(status)
    wcc.encode(enc)
    return enc


def _decode_wcc_head(dec: Decoder) -> tuple[Nfsstat3, WccData]:
    """The status and wcc_data of :func:`_encode_wcc_head`."""
    s = status_of_reply(dec)
    return s, WccData.decode(dec)


@dataclass(frozen=True, slots=True)
class GetattrRes:
    """GETATTR3res, section 3.3.1."""

    status: Nfsstat3
    attr: Fattr3 | None = None

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        if self.status == Nfsstat3.OK:
            assert self.attr is not None
            self.attr.encode(enc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> GetattrRes:
        s = status_of_reply(dec)
        return cls(s, Fattr3.decode(dec) if s == Nfsstat3.OK else None)


@dataclass(frozen=True, slots=True)
class WccRes:
    """SETATTR3res, REMOVE3res, RMDIR3res (sections 3.3.2, 3.3.12, 3.3.13): wcc in both arms."""

    status: Nfsstat3
    wcc: WccData = NO_WCC

    def encode(self) -> bytes:
        enc = _encode_wcc_head(self.status, self.wcc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> WccRes:
        return cls(status_of_reply(dec), WccData.decode(dec))


@dataclass(frozen=True, slots=True)
class LookupRes:
    """LOOKUP3res, section 3.3.3."""

    status: Nfsstat3
    dir_attr: Fattr3 | None = None
    fh: bytes = b""
    attr: Fattr3 | None = None

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        if self.status == Nfsstat3.OK:
            encode_fh(enc, self.fh)
            encode_post_op_attr(enc, self.attr)
        encode_post_op_attr(enc, self.dir_attr)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> LookupRes:
        s = status_of_reply(dec)
        if s != Nfsstat3.OK:
            return cls(s, decode_post_op_attr(dec))
        fh = decode_fh(dec)
        attr = decode_post_op_attr(dec)
        return cls(s, decode_post_op_attr(dec), fh, attr)


@dataclass(frozen=True, slots=True)
class AccessRes:
    """ACCESS3res, section 3.3.4."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    access: int = 0

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.u32(self.access)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> AccessRes:
        s, attr = _decode_head(dec)
        return cls(s, attr, dec.u32() if s == Nfsstat3.OK else 0)


@dataclass(frozen=True, slots=True)
class ReadlinkRes:
    """READLINK3res, section 3.3.5."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    target: str = ""

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.string(self.target)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> ReadlinkRes:
        s, attr = _decode_head(dec)
        return cls(s, attr, dec.string() if s == Nfsstat3.OK else "")


@dataclass(frozen=True, slots=True)
class ReadRes:
    """READ3res, section 3.3.6."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    eof: bool = False
    data: bytes | bytearray | memoryview = b""  # the server reads into a bytearray

    def encode(self) -> bytes:
        if self.status != Nfsstat3.OK:
            return _encode_head(self.status, self.attr).getvalue()
        # The data is up to 1 MiB: copy it once (one join) rather than into the encoder's
        # buffer and out again.  Over TCP it is not copied at all (parts(), service.py).
        return b"".join(self.parts())

    def parts(self) -> tuple[bytes | bytearray | memoryview, ...]:
        """A READ3resok as buffers to send back to back: the head (status, attributes, count,
        eof, the data's length), the data itself (not copied), its XDR padding if any."""
        enc = _encode_head(self.status, self.attr)
        data = self.data
        n = len(data)
        enc.u32(n)
        enc.boolean(self.eof)
        enc.u32(n)
        pad = -n & 3
        if pad:
            return enc.getvalue(), data, _PADS[pad]
        return enc.getvalue(), data

    @classmethod
    def decode(cls, dec: Decoder) -> ReadRes:
        s, attr = _decode_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr)
        dec.u32()
        eof = dec.boolean()
        return cls(s, attr, eof, dec.opaque())


@dataclass(frozen=True, slots=True)
class WriteRes:
    """WRITE3res, section 3.3.7."""

    status: Nfsstat3
    wcc: WccData = NO_WCC
    count: int = 0
    committed: StableHow = StableHow.FILE_SYNC
    verf: bytes = ZERO_VERF

    def encode(self) -> bytes:
        enc = _encode_wcc_head(self.status, self.wcc)
        if self.status == Nfsstat3.OK:
            enc.u32(self.count)
            enc.u32(self.committed)
            enc.opaque_fixed(self.verf, NFS3_WRITEVERFSIZE)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> WriteRes:
        s, wcc = _decode_wcc_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, wcc)
        count = dec.u32()
        committed = StableHow(dec.enum(_STABLE_HOWS))
        return cls(s, wcc, count, committed, dec.opaque_fixed(NFS3_WRITEVERFSIZE))


@dataclass(frozen=True, slots=True)
class CreateRes:
    """CREATE3res, MKDIR3res, SYMLINK3res, MKNOD3res (sections 3.3.8-3.3.11)."""

    status: Nfsstat3
    dir_wcc: WccData = NO_WCC
    fh: bytes | None = None
    attr: Fattr3 | None = None

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        if self.status == Nfsstat3.OK:
            enc.optional(self.fh, encode_fh)
            encode_post_op_attr(enc, self.attr)
        self.dir_wcc.encode(enc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> CreateRes:
        s = status_of_reply(dec)
        if s != Nfsstat3.OK:
            return cls(s, WccData.decode(dec))
        fh = dec.optional(decode_fh)
        attr = decode_post_op_attr(dec)
        return cls(s, WccData.decode(dec), fh, attr)


@dataclass(frozen=True, slots=True)
class RenameRes:
    """RENAME3res, section 3.3.14: wcc of both directories in either arm."""

    status: Nfsstat3
    from_wcc: WccData = NO_WCC
    to_wcc: WccData = NO_WCC

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        self.from_wcc.encode(enc)
        self.to_wcc.encode(enc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> RenameRes:
        return cls(status_of_reply(dec), WccData.decode(dec), WccData.decode(dec))


@dataclass(frozen=True, slots=True)
class LinkRes:
    """LINK3res, section 3.3.15."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    dir_wcc: WccData = NO_WCC

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        self.dir_wcc.encode(enc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> LinkRes:
        return cls(status_of_reply(dec), decode_post_op_attr(dec), WccData.decode(dec))


_FSSTAT = struct.Struct(">QQQQQQI")


@dataclass(frozen=True, slots=True)
class FsstatRes:
    """FSSTAT3res, section 3.3.18."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    tbytes: int = 0
    fbytes: int = 0
    abytes: int = 0
    tfiles: int = 0
    ffiles: int = 0
    afiles: int = 0
    invarsec: int = 0

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.pack(
                _FSSTAT,
                self.tbytes,
                self.fbytes,
                self.abytes,
                self.tfiles,
                self.ffiles,
                self.afiles,
                self.invarsec,
            )
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> FsstatRes:
        s, attr = _decode_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr)
        return cls(s, attr, *dec.unpack(_FSSTAT))


_FSINFO = struct.Struct(">IIIIIIIQ")


@dataclass(frozen=True, slots=True)
class FsinfoRes:
    """FSINFO3res, section 3.3.19."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    rtmax: int = 0
    rtpref: int = 0
    rtmult: int = 0
    wtmax: int = 0
    wtpref: int = 0
    wtmult: int = 0
    dtpref: int = 0
    maxfilesize: int = 0
    time_delta: NfsTime = ONE_NS
    properties: int = 0

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.pack(
                _FSINFO,
                self.rtmax,
                self.rtpref,
                self.rtmult,
                self.wtmax,
                self.wtpref,
                self.wtmult,
                self.dtpref,
                self.maxfilesize,
            )
            encode_time(enc, self.time_delta)
            enc.u32(self.properties)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> FsinfoRes:
        s, attr = _decode_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr)
        rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref, maxsize = dec.unpack(_FSINFO)
        return cls(
            s,
            attr,
            rtmax,
            rtpref,
            rtmult,
            wtmax,
            wtpref,
            wtmult,
            dtpref,
            maxsize,
            decode_time(dec),
            dec.u32(),
        )


@dataclass(frozen=True, slots=True)
class PathconfRes:
    """PATHCONF3res, section 3.3.20."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    linkmax: int = 0
    name_max: int = 0
    no_trunc: bool = True
    chown_restricted: bool = True
    case_insensitive: bool = False
    case_preserving: bool = True

    def encode(self) -> bytes:
        enc = _encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.u32(self.linkmax)
            enc.u32(self.name_max)
            for b in (
                self.no_trunc,
                self.chown_restricted,
                self.case_insensitive,
                self.case_preserving,
            ):
                enc.boolean(b)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> PathconfRes:
        s, attr = _decode_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr)
        linkmax, name_max = dec.u32(), dec.u32()
        return cls(s, attr, linkmax, name_max, *(dec.boolean() for _ in range(4)))


@dataclass(frozen=True, slots=True)
class CommitRes:
    """COMMIT3res, section 3.3.21."""

    status: Nfsstat3
    wcc: WccData = NO_WCC
    verf: bytes = ZERO_VERF

    def encode(self) -> bytes:
        enc = _encode_wcc_head(self.status, self.wcc)
        if self.status == Nfsstat3.OK:
            enc.opaque_fixed(self.verf, NFS3_WRITEVERFSIZE)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> CommitRes:
        s, wcc = _decode_wcc_head(dec)
        return cls(s, wcc, dec.opaque_fixed(NFS3_WRITEVERFSIZE) if s == Nfsstat3.OK else ZERO_VERF)
