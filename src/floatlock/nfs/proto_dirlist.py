"""READDIR / READDIRPLUS results and their size accounting (RFC 1813 3.3.16, 3.3.17)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from floatlock.nfs.proto import NFS3_COOKIEVERFSIZE, Nfsstat3, decode_fh, encode_fh
from floatlock.nfs.proto_attr import Fattr3, decode_post_op_attr, encode_post_op_attr
from floatlock.nfs.proto_res import ZERO_VERF, status_of_reply
from floatlock.xdr import Decoder, Encoder


@dataclass(frozen=True, slots=True)
class DirEntry:
    """entry3 / entryplus3 (sections 3.3.16, 3.3.17); attr and fh only in READDIRPLUS."""

    fileid: int
    name: str
    cookie: int
    attr: Fattr3 | None = None
    fh: bytes | None = None


_ENTRY_HEAD = struct.Struct(">IQ")  # value_follows TRUE, fileid


def entry_size(name_len: int, plus: bool, fh_len: int) -> tuple[int, int]:
    """Encoded bytes of one entry: (dircount share, total) per section 3.3.17's accounting."""
    base = 4 + 8 + 4 + name_len + (-name_len & 3) + 8
    if not plus:
        return base, base
    return base, base + 4 + 84 + 4 + 4 + fh_len + (-fh_len & 3)


@dataclass(frozen=True, slots=True)
class ReaddirRes:
    """READDIR3res / READDIRPLUS3res (sections 3.3.16, 3.3.17)."""

    status: Nfsstat3
    dir_attr: Fattr3 | None = None
    verf: bytes = ZERO_VERF
    entries: tuple[DirEntry, ...] = ()
    eof: bool = False
    plus: bool = field(default=False)

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        encode_post_op_attr(enc, self.dir_attr)
        if self.status != Nfsstat3.OK:
            return enc.getvalue()
        enc.opaque_fixed(self.verf, NFS3_COOKIEVERFSIZE)
        plus = self.plus
        for e in self.entries:
            enc.pack(_ENTRY_HEAD, 1, e.fileid)
            enc.string(e.name)
            enc.u64(e.cookie)
            if plus:
                encode_post_op_attr(enc, e.attr)
                enc.optional(e.fh, encode_fh)
        enc.boolean(False)
        enc.boolean(self.eof)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder, plus: bool = False) -> ReaddirRes:
        s = status_of_reply(dec)
        attr = decode_post_op_attr(dec)
        if s != Nfsstat3.OK:
            return cls(s, attr, plus=plus)
        verf = dec.opaque_fixed(NFS3_COOKIEVERFSIZE)

        def entry(d: Decoder) -> DirEntry:
            fileid, name, cookie = d.u64(), d.string(), d.u64()
            if not plus:
                return DirEntry(fileid, name, cookie)
            return DirEntry(fileid, name, cookie, decode_post_op_attr(d), d.optional(decode_fh))

        entries = tuple(dec.linked_list(entry))
        return cls(s, attr, verf, entries, dec.boolean(), plus)
