"""Results of the NFSv3 data procedures and their XDR codecs: READLINK, READ, WRITE, COMMIT
(RFC 1813 sections 3.3.5-3.3.7, 3.3.21).

Separate from the metadata results (:mod:`floatlock.nfs.proto_res`, whose reply framing these
use) because they carry a file's contents or the write verifier: READ's reply may be sent in
pieces (:meth:`ReadRes.parts`) so that its data is never copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from floatlock.nfs.proto import NFS3_WRITEVERFSIZE, Nfsstat3, StableHow
from floatlock.nfs.proto_attr import NO_WCC, Fattr3, WccData
from floatlock.nfs.proto_res import (
    ZERO_VERF,
    decode_head,
    decode_wcc_head,
    encode_head,
    encode_wcc_head,
)
from floatlock.rpc.parts import MappedData, Part, joined
from floatlock.xdr import Decoder

_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")  # XDR padding of opaque data, by length
_STABLE_HOWS = frozenset(StableHow)


@dataclass(frozen=True, slots=True)
class ReadlinkRes:
    """READLINK3res, section 3.3.5."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    target: str = ""

    def encode(self) -> bytes:
        enc = encode_head(self.status, self.attr)
        if self.status == Nfsstat3.OK:
            enc.string(self.target)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> ReadlinkRes:
        s, attr = decode_head(dec)
        return cls(s, attr, dec.string() if s == Nfsstat3.OK else "")


@dataclass(frozen=True, slots=True)
class ReadRes:
    """READ3res, section 3.3.6."""

    status: Nfsstat3
    attr: Fattr3 | None = None
    eof: bool = False
    #: The server reads into a reused buffer, or (TCP) names the data in the file's mapping.
    data: bytes | bytearray | memoryview | MappedData = b""

    def encode(self) -> bytes:
        if self.status != Nfsstat3.OK:
            return encode_head(self.status, self.attr).getvalue()
        # The data is up to 1 MiB: copy it once (one join) rather than into the encoder's
        # buffer and out again.  Over TCP it is not copied at all (parts(), service.py).
        return joined(self.parts())

    def parts(self) -> tuple[Part, ...]:
        """A READ3resok as buffers to send back to back: the head (status, attributes, count,
        eof, the data's length), the data itself (not copied), its XDR padding if any."""
        enc = encode_head(self.status, self.attr)
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
        s, attr = decode_head(dec)
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
        enc = encode_wcc_head(self.status, self.wcc)
        if self.status == Nfsstat3.OK:
            enc.u32(self.count)
            enc.u32(self.committed)
            enc.opaque_fixed(self.verf, NFS3_WRITEVERFSIZE)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> WriteRes:
        s, wcc = decode_wcc_head(dec)
        if s != Nfsstat3.OK:
            return cls(s, wcc)
        count = dec.u32()
        committed = StableHow(dec.enum(_STABLE_HOWS))
        return cls(s, wcc, count, committed, dec.opaque_fixed(NFS3_WRITEVERFSIZE))


@dataclass(frozen=True, slots=True)
class CommitRes:
    """COMMIT3res, section 3.3.21."""

    status: Nfsstat3
    wcc: WccData = NO_WCC
    verf: bytes = ZERO_VERF

    def encode(self) -> bytes:
        enc = encode_wcc_head(self.status, self.wcc)
        if self.status == Nfsstat3.OK:
            enc.opaque_fixed(self.verf, NFS3_WRITEVERFSIZE)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> CommitRes:
        s, wcc = decode_wcc_head(dec)
        return cls(s, wcc, dec.opaque_fixed(NFS3_WRITEVERFSIZE) if s == Nfsstat3.OK else ZERO_VERF)
