"""Results that describe a filesystem and their XDR codecs: FSSTAT, FSINFO, PATHCONF
(RFC 1813 sections 3.3.18-3.3.20).

Separate from the results about one file (:mod:`floatlock.nfs.proto_res`, whose reply framing
these use): space and file counts, transfer sizes and limits, name rules; fixed-layout bodies
packed with precompiled structs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from floatlock.nfs.proto import Nfsstat3
from floatlock.nfs.proto_attr import Fattr3, NfsTime, decode_time, encode_time
from floatlock.nfs.proto_res import decode_head, encode_head
from floatlock.xdr import Decoder

ONE_NS = NfsTime(0, 1)
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
        enc = encode_head(self.status, self.attr)
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
        s, attr = decode_head(dec)
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
        enc = encode_head(self.status, self.attr)
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
        s, attr = decode_head(dec)
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
        enc = encode_head(self.status, self.attr)
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
        s, attr = decode_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr)
        linkmax, name_max = dec.u32(), dec.u32()
        return cls(s, attr, linkmax, name_max, *(dec.boolean() for _ in range(4)))
