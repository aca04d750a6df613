"""NFSv3 file attributes and their XDR codecs (RFC 1813 sections 2.5 and 2.6).

Times (``nfstime3``), attributes (``fattr3``, ``post_op_attr``), weak cache consistency data
(``wcc_attr``, ``wcc_data``, section 2.6) and settable attributes (``sattr3``): what a reply
says about a file and what a call asks to change in it.  Apart from :mod:`floatlock.nfs.proto`
(status codes, enumerations, handles) because building attributes from a ``stat`` is a concern
of its own (the memo below) and almost every result carries them.  Pure codecs: no I/O.
"""

from __future__ import annotations

import os
import stat as st_mod
import struct
from dataclasses import dataclass, field

from floatlock.nfs.proto import Ftype3, TimeHow
from floatlock.xdr import Decoder, Encoder, XdrError

_TIME_HOWS = frozenset(TimeHow)  # built once: sattr3 is decoded per SETATTR/CREATE

_FTYPE_OF_MODE = {
    st_mod.S_IFREG: Ftype3.REG,
    st_mod.S_IFDIR: Ftype3.DIR,
    st_mod.S_IFBLK: Ftype3.BLK,
    st_mod.S_IFCHR: Ftype3.CHR,
    st_mod.S_IFLNK: Ftype3.LNK,
    st_mod.S_IFSOCK: Ftype3.SOCK,
    st_mod.S_IFIFO: Ftype3.FIFO,
}


def ftype_of_mode(mode: int) -> Ftype3:
    return _FTYPE_OF_MODE.get(st_mod.S_IFMT(mode), Ftype3.REG)


@dataclass(frozen=True, slots=True)
class NfsTime:
    """nfstime3 (RFC 1813 section 2.5): seconds and nanoseconds."""

    seconds: int
    nseconds: int

    @classmethod
    def from_ns(cls, ns: int) -> NfsTime:
        s, n = divmod(ns, 1_000_000_000)
        return cls(s & 0xFFFFFFFF, n)

    def to_ns(self) -> int:
        return self.seconds * 1_000_000_000 + self.nseconds


# type, mode, nlink, uid, gid, size, used, rdev major/minor, fsid, fileid, a/m/ctime
_FATTR = struct.Struct(">IIIIIQQIIQQIIIIII")
_WCC_ATTR = struct.Struct(">QIIII")

#: Attributes already built, by every stat field they are made of (and the fsid): the same
#: file is stat'ed over and over (a directory's attributes in each LOOKUP and CREATE reply),
#: and building an Fattr3 (four frozen objects) costs ten times the lookup.  The key holds
#: every input, so a hit is exactly what building would give; emptied when full.
_FATTR_MEMO: dict[tuple[int, ...], Fattr3] = {}
_WCC_MEMO: dict[tuple[int, int, int], WccAttr] = {}
_MEMO_MAX = 4096


@dataclass(frozen=True, slots=True)
class Fattr3:
    """fattr3, RFC 1813 section 2.5."""

    type: Ftype3
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: NfsTime
    mtime: NfsTime
    ctime: NfsTime
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_stat(cls, s: os.stat_result, fsid: int) -> Fattr3:
        key = (
            s.st_ino,
            s.st_dev,
            s.st_mode,
            s.st_nlink,
            s.st_uid,
            s.st_gid,
            s.st_size,
            s.st_blocks,
            s.st_rdev,
            s.st_atime_ns,
            s.st_mtime_ns,
            s.st_ctime_ns,
            fsid,
        )
        attr = _FATTR_MEMO.get(key)
        if attr is None:
            attr = cls._build(s, fsid)
            if len(_FATTR_MEMO) >= _MEMO_MAX:
                _FATTR_MEMO.clear()
            _FATTR_MEMO[key] = attr
        return attr

    @classmethod
    def _build(cls, s: os.stat_result, fsid: int) -> Fattr3:
        return cls(
            ftype_of_mode(s.st_mode),
            s.st_mode & 0o7777,
            min(s.st_nlink, 0xFFFFFFFF),
            s.st_uid,
            s.st_gid,
            s.st_size,
            s.st_blocks * 512,
            (os.major(s.st_rdev), os.minor(s.st_rdev)),
            fsid,
            s.st_ino,
            NfsTime.from_ns(s.st_atime_ns),
            NfsTime.from_ns(s.st_mtime_ns),
            NfsTime.from_ns(s.st_ctime_ns),
        )

    def wire(self) -> bytes:
        """The XDR ``fattr3`` bytes, packed on first use and kept with the object: a memoized
        Fattr3 (:meth:`from_stat`) goes out in many replies, and the reply encoders of GETATTR
        and LOOKUP join these bytes as they are."""
        b = self._wire
        if b is None:
            b = self._pack()
            object.__setattr__(self, "_wire", b)  # a cache of a derived value, not a change
        return b

    def encode(self, enc: Encoder) -> None:
        enc.raw(self.wire())

    def _pack(self) -> bytes:
        try:
            return _FATTR.pack(
                self.type,
                self.mode,
                self.nlink,
                self.uid,
                self.gid,
                self.size,
                self.used,
                self.rdev[0],
                self.rdev[1],
                self.fsid,
                self.fileid,
                self.atime.seconds,
                self.atime.nseconds,
                self.mtime.seconds,
                self.mtime.nseconds,
                self.ctime.seconds,
                self.ctime.nseconds,
            )
        except struct.error as e:  # (as Encoder.pack: a value out of its XDR range)
            raise XdrError(str(e)) from None

    @classmethod
    def decode(cls, dec: Decoder) -> Fattr3:
        v = dec.unpack(_FATTR)
        if v[0] not in Ftype3._value2member_map_:
            raise XdrError(f"bad ftype3 {v[0]}")
        return cls(
            Ftype3(v[0]),
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            (v[7], v[8]),
            v[9],
            v[10],
            NfsTime(v[11], v[12]),
            NfsTime(v[13], v[14]),
            NfsTime(v[15], v[16]),
        )


@dataclass(frozen=True, slots=True)
class WccAttr:
    """wcc_attr, RFC 1813 section 2.6: the attributes before an operation."""

    size: int
    mtime: NfsTime
    ctime: NfsTime

    @classmethod
    def from_stat(cls, s: os.stat_result) -> WccAttr:
        key = (s.st_size, s.st_mtime_ns, s.st_ctime_ns)
        attr = _WCC_MEMO.get(key)
        if attr is None:
            attr = cls(s.st_size, NfsTime.from_ns(s.st_mtime_ns), NfsTime.from_ns(s.st_ctime_ns))
            if len(_WCC_MEMO) >= _MEMO_MAX:
                _WCC_MEMO.clear()
            _WCC_MEMO[key] = attr
        return attr

    def encode(self, enc: Encoder) -> None:
        m, c = self.mtime, self.ctime
        enc.pack(_WCC_ATTR, self.size, m.seconds, m.nseconds, c.seconds, c.nseconds)

    @classmethod
    def decode(cls, dec: Decoder) -> WccAttr:
        size, ms, mn, cs, cn = dec.unpack(_WCC_ATTR)
        return cls(size, NfsTime(ms, mn), NfsTime(cs, cn))


def _encode_fattr(enc: Encoder, a: Fattr3) -> None:
    a.encode(enc)


def _encode_wcc_attr(enc: Encoder, a: WccAttr) -> None:
    a.encode(enc)


@dataclass(frozen=True, slots=True)
class WccData:
    """wcc_data, RFC 1813 section 2.6: pre_op_attr and post_op_attr."""

    before: WccAttr | None = None
    after: Fattr3 | None = None

    def encode(self, enc: Encoder) -> None:
        enc.optional(self.before, _encode_wcc_attr)
        enc.optional(self.after, _encode_fattr)

    @classmethod
    def decode(cls, dec: Decoder) -> WccData:
        return cls(dec.optional(WccAttr.decode), dec.optional(Fattr3.decode))


NO_WCC = WccData()


def encode_time(enc: Encoder, t: NfsTime) -> None:
    enc.u32(t.seconds)
    enc.u32(t.nseconds)


def decode_time(dec: Decoder) -> NfsTime:
    return NfsTime(dec.u32(), dec.u32())


def encode_post_op_attr(enc: Encoder, attr: Fattr3 | None) -> None:
    enc.optional(attr, _encode_fattr)


def decode_post_op_attr(dec: Decoder) -> Fattr3 | None:
    return dec.optional(Fattr3.decode)


@dataclass(frozen=True, slots=True)
class Sattr3:
    """sattr3, RFC 1813 section 2.5.  Times: None (DONT_CHANGE), "server", or an NfsTime."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: NfsTime | str | None = None
    mtime: NfsTime | str | None = None

    def encode(self, enc: Encoder) -> None:
        enc.optional(self.mode, Encoder.u32)
        enc.optional(self.uid, Encoder.u32)
        enc.optional(self.gid, Encoder.u32)
        enc.optional(self.size, Encoder.u64)
        for t in (self.atime, self.mtime):
            if t is None:
                enc.u32(TimeHow.DONT_CHANGE)
            elif isinstance(t, str):
                enc.u32(TimeHow.SET_TO_SERVER_TIME)
            else:
                enc.u32(TimeHow.SET_TO_CLIENT_TIME)
                encode_time(enc, t)

    @classmethod
    def decode(cls, dec: Decoder) -> Sattr3:
        mode = dec.optional(Decoder.u32)
        uid = dec.optional(Decoder.u32)
        gid = dec.optional(Decoder.u32)
        size = dec.optional(Decoder.u64)
        times: list[NfsTime | str | None] = []
        for _ in range(2):
            how = dec.enum(_TIME_HOWS)
            if how == TimeHow.DONT_CHANGE:
                times.append(None)
            elif how == TimeHow.SET_TO_SERVER_TIME:
                times.append("server")
            else:
                times.append(decode_time(dec))
        return cls(mode, uid, gid, size, times[0], times[1])


NO_SATTR = Sattr3()
