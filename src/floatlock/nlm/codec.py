"""XDR codecs of the NLM wire types (nlm/proto.py), versions 1, 3 and 4.

Theory of operation
-------------------
The codecs come in two instances, :data:`V1` (also used for v3: XNFS "Network Lock Manager
Protocol", 32-bit extents) and :data:`V4` (XNFS "NLM Version 4", 64-bit extents), with the
same methods; ``codec_for(vers)`` picks one.  Decoders take a :class:`floatlock.xdr.Decoder`
and raise :class:`floatlock.xdr.XdrError` (GARBAGE_ARGS) on anything malformed; encoders
return ``bytes``.  The hot procedures have ``*_at`` decoders that read straight from the
message bytes (the dispatcher's fast path, same checks) and one-pack whole replies; the fixed
tail of ``nlm_lockargs`` (svid, offset, length, reclaim, state) is one precompiled struct.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from floatlock.nlm.proto import (
    LM_MAXNAMELEN,
    LM_MAXSTRLEN,
    MAXNETOBJ_SZ,
    SM_PRIV_SIZE,
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    Notify,
    Res,
    Share,
    ShareArgs,
    ShareRes,
    SmStatus,
    TestArgs,
    TestRes,
    UnlockArgs,
    narrow_extent,
    v1_status,
)
from floatlock.xdr import Decoder, Encoder, XdrError

__all__ = ["V1", "V4", "NlmCodec", "codec_for"]


_V1_STATS: Final = frozenset(range(0, 5))  # nlm_stats values (v1, v3)
_V4_STATS: Final = frozenset(range(0, 10))  # nlm4_stats values
_FSH: Final = frozenset(range(0, 4))  # valid fsh_mode / fsh_access values
_STAT_CACHE: Final = tuple(Nlm4Stat)

# -- codecs -----------------------------------------------------------------------------------

_BOOL2: Final = struct.Struct(">II")
_U32_PACK: Final = struct.Struct(">I").pack
_U32_AT: Final = struct.Struct(">I").unpack_from
_I32_PACK: Final = struct.Struct(">i").pack
_PADDING: Final = (b"", b"\0", b"\0\0", b"\0\0\0")


class _ResReplyPackers(dict[int, Callable[..., bytes]]):
    """Packers of a whole successful RPC reply carrying an ``nlm_res``, by cookie length: the
    accepted-reply header (xid, REPLY, MSG_ACCEPTED, null verifier, SUCCESS), the cookie's
    length, the cookie zero-padded by struct's "s" format, the status.  Made on first use
    (``__missing__``), so a known length is one dict lookup; lengths are at most MAXNETOBJ_SZ
    (checked first), so at most 1,025 packers."""

    def __missing__(self, n: int) -> Callable[..., bytes]:
        pack = self[n] = struct.Struct(f">7I{(n + 3) & ~3}si").pack
        return pack


_RES_REPLY: Final = _ResReplyPackers()


_SHARE_TAIL: Final = struct.Struct(">iiI")  # mode, access, reclaim
_NOTIFY_STATE: Final = struct.Struct(">i")


def _bool(v: int) -> bool:
    if v > 1:
        raise XdrError(f"bad boolean value {v}")
    return v == 1


class NlmCodec:
    """Codecs for one wire generation: 32-bit extents (v1, v3) or 64-bit extents (v4)."""

    __slots__ = (
        "_holder",
        "_lock_tail",
        "_lockargs_tail",
        "_stats",
        "wide",
    )

    def __init__(self, wide: bool) -> None:
        self.wide = wide
        ext = "Q" if wide else "I"
        # nlm_lock tail: int svid; unsigned l_offset; unsigned l_len  (v4: int32, uint64 x2).
        self._lock_tail = struct.Struct(f">i{ext}{ext}")
        # nlm_lockargs after the caller_name/fh/oh opaques: svid, offset, len, reclaim, state.
        self._lockargs_tail = struct.Struct(f">i{ext}{ext}Ii")
        # nlm_holder: bool exclusive; int svid; netobj oh; offset; len -> two fixed parts.
        self._holder = struct.Struct(f">{ext}{ext}")
        self._stats = _V4_STATS if wide else _V1_STATS

    # -- pieces -------------------------------------------------------------------------

    def _lock_head(self, dec: Decoder) -> tuple[str, bytes, bytes]:
        caller = dec.string(LM_MAXSTRLEN)
        fh = dec.opaque(MAXNETOBJ_SZ)
        oh = dec.opaque(MAXNETOBJ_SZ)
        return caller, fh, oh

    def lock(self, dec: Decoder) -> NlmLock:
        caller, fh, oh = self._lock_head(dec)
        svid, offset, length = dec.unpack(self._lock_tail)
        return NlmLock(caller, fh, oh, svid, offset, length)

    def _ext(self, offset: int, length: int) -> tuple[int, int]:
        if not self.wide:
            return narrow_extent(offset, length)
        return offset, length

    def encode_lock(self, enc: Encoder, lk: NlmLock) -> None:
        enc.string(lk.caller_name, LM_MAXSTRLEN)
        enc.opaque(lk.fh, MAXNETOBJ_SZ)
        enc.opaque(lk.oh, MAXNETOBJ_SZ)
        enc.pack(self._lock_tail, lk.svid, *self._ext(lk.offset, lk.length))

    def _stat(self, dec: Decoder) -> int:
        v = dec.i32()
        if v not in self._stats:
            raise XdrError(f"nlm_stats value {v} not allowed")
        return _STAT_CACHE[v]

    def _enc_stat(self, stat: int) -> int:
        return stat if self.wide else v1_status(stat)

    # -- arguments ----------------------------------------------------------------------

    def lockargs(self, dec: Decoder) -> LockArgs:
        """Decode ``nlm_lockargs`` / ``nlm4_lockargs`` (the hot path)."""
        cookie = dec.opaque(MAXNETOBJ_SZ)
        block, excl = dec.unpack(_BOOL2)
        caller = dec.string(LM_MAXSTRLEN)
        fh = dec.opaque(MAXNETOBJ_SZ)
        oh = dec.opaque(MAXNETOBJ_SZ)
        svid, offset, length, reclaim, state = dec.unpack(self._lockargs_tail)
        if block > 1 or excl > 1 or reclaim > 1:
            raise XdrError("bad boolean value in nlm_lockargs")
        return LockArgs(
            cookie,
            block == 1,
            excl == 1,
            NlmLock(caller, fh, oh, svid, offset, length),
            reclaim == 1,
            state,
        )

    def _lock_head_at(self, data: bytes, pos: int) -> tuple[str, bytes, bytes, int]:
        """caller_name, fh and oh of an ``nlm_lock`` at ``pos``, and the offset after them.

        Truncation surfaces as ``struct.error`` from the next unpack or as a final offset
        past the end; the ``*_at`` decoders turn both into XdrError."""
        (n,) = _U32_AT(data, pos)
        if n > LM_MAXSTRLEN:
            raise XdrError(f"caller_name of {n} bytes exceeds {LM_MAXSTRLEN}")
        pos += 4
        caller = data[pos : pos + n].decode("utf-8", "surrogateescape")
        pos += n + (-n & 3)
        (n,) = _U32_AT(data, pos)
        if n > MAXNETOBJ_SZ:
            raise XdrError(f"fh of {n} bytes exceeds {MAXNETOBJ_SZ}")
        pos += 4
        fh = data[pos : pos + n]
        pos += n + (-n & 3)
        (n,) = _U32_AT(data, pos)
        if n > MAXNETOBJ_SZ:
            raise XdrError(f"oh of {n} bytes exceeds {MAXNETOBJ_SZ}")
        pos += 4
        oh = data[pos : pos + n]
        return caller, fh, oh, pos + n + (-n & 3)

    def lockargs_at(self, data: bytes, pos: int) -> LockArgs:
        """:meth:`lockargs` straight from the message bytes: ``data[pos:]`` must be exactly
        one ``nlm_lockargs`` (the dispatcher's fast path; same checks, no Decoder calls)."""
        try:
            (n,) = _U32_AT(data, pos)
            if n > MAXNETOBJ_SZ:
                raise XdrError(f"cookie of {n} bytes exceeds {MAXNETOBJ_SZ}")
            pos += 4
            cookie = data[pos : pos + n]
            pos += n + (-n & 3)
            block, excl = _BOOL2.unpack_from(data, pos)
            caller, fh, oh, pos = self._lock_head_at(data, pos + 8)
            tail = self._lockargs_tail
            svid, offset, length, reclaim, state = tail.unpack_from(data, pos)
            pos += tail.size
        except struct.error as e:
            raise XdrError(f"truncated nlm_lockargs: {e}") from None
        except UnicodeDecodeError as e:  # pragma: no cover - surrogateescape never fails
            raise XdrError(str(e)) from None
        if pos != len(data):
            raise XdrError(f"{len(data) - pos} trailing bytes after nlm_lockargs")
        if block > 1 or excl > 1 or reclaim > 1:
            raise XdrError("bad boolean value in nlm_lockargs")
        return LockArgs(
            cookie,
            block == 1,
            excl == 1,
            NlmLock(caller, fh, oh, svid, offset, length),
            reclaim == 1,
            state,
        )

    def unlockargs_at(self, data: bytes, pos: int) -> UnlockArgs:
        """:meth:`unlockargs` straight from the message bytes (see :meth:`lockargs_at`)."""
        try:
            (n,) = _U32_AT(data, pos)
            if n > MAXNETOBJ_SZ:
                raise XdrError(f"cookie of {n} bytes exceeds {MAXNETOBJ_SZ}")
            pos += 4
            cookie = data[pos : pos + n]
            caller, fh, oh, pos = self._lock_head_at(data, pos + n + (-n & 3))
            tail = self._lock_tail
            svid, offset, length = tail.unpack_from(data, pos)
            pos += tail.size
        except struct.error as e:
            raise XdrError(f"truncated nlm_unlockargs: {e}") from None
        if pos != len(data):
            raise XdrError(f"{len(data) - pos} trailing bytes after nlm_unlockargs")
        return UnlockArgs(cookie, NlmLock(caller, fh, oh, svid, offset, length))

    def encode_lockargs(self, a: LockArgs) -> bytes:
        enc = Encoder()
        enc.opaque(a.cookie, MAXNETOBJ_SZ)
        enc.pack(_BOOL2, a.block, a.exclusive)
        self.encode_lock(enc, a.lock)
        enc.boolean(a.reclaim)
        enc.i32(a.state)
        return enc.getvalue()

    def testargs(self, dec: Decoder) -> TestArgs:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        excl = dec.boolean()
        return TestArgs(cookie, excl, self.lock(dec))

    def encode_testargs(self, a: TestArgs) -> bytes:
        enc = Encoder()
        enc.opaque(a.cookie, MAXNETOBJ_SZ)
        enc.boolean(a.exclusive)
        self.encode_lock(enc, a.lock)
        return enc.getvalue()

    def cancargs(self, dec: Decoder) -> CancArgs:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        block, excl = dec.unpack(_BOOL2)
        return CancArgs(cookie, _bool(block), _bool(excl), self.lock(dec))

    def encode_cancargs(self, a: CancArgs) -> bytes:
        enc = Encoder()
        enc.opaque(a.cookie, MAXNETOBJ_SZ)
        enc.pack(_BOOL2, a.block, a.exclusive)
        self.encode_lock(enc, a.lock)
        return enc.getvalue()

    def unlockargs(self, dec: Decoder) -> UnlockArgs:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        return UnlockArgs(cookie, self.lock(dec))

    def encode_unlockargs(self, a: UnlockArgs) -> bytes:
        enc = Encoder()
        enc.opaque(a.cookie, MAXNETOBJ_SZ)
        self.encode_lock(enc, a.lock)
        return enc.getvalue()

    def shareargs(self, dec: Decoder) -> ShareArgs:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        caller, fh, oh = self._lock_head(dec)
        mode, access, reclaim = dec.unpack(_SHARE_TAIL)
        if mode not in _FSH or access not in _FSH:
            raise XdrError(f"bad fsh_mode/fsh_access {mode}/{access}")
        return ShareArgs(cookie, Share(caller, fh, oh, mode, access), _bool(reclaim))

    def encode_shareargs(self, a: ShareArgs) -> bytes:
        enc = Encoder()
        enc.opaque(a.cookie, MAXNETOBJ_SZ)
        s = a.share
        enc.string(s.caller_name, LM_MAXSTRLEN)
        enc.opaque(s.fh, MAXNETOBJ_SZ)
        enc.opaque(s.oh, MAXNETOBJ_SZ)
        enc.pack(_SHARE_TAIL, s.mode, s.access, a.reclaim)
        return enc.getvalue()

    @staticmethod
    def notify(dec: Decoder) -> Notify:
        # nlm_notify: string name<MAXNAMELEN>; long state (32 bits on the wire).
        name = dec.string(LM_MAXNAMELEN)
        return Notify(name, dec.i32())

    @staticmethod
    def encode_notify(a: Notify) -> bytes:
        enc = Encoder()
        enc.string(a.name, LM_MAXNAMELEN)
        enc.i32(a.state)
        return enc.getvalue()

    @staticmethod
    def sm_status(dec: Decoder) -> SmStatus:
        # nlm_sm_status: string mon_name<LM_MAXSTRLEN>; int state; opaque priv[16].
        name = dec.string(LM_MAXSTRLEN)
        state = dec.i32()
        return SmStatus(name, state, dec.opaque_fixed(SM_PRIV_SIZE))

    @staticmethod
    def encode_sm_status(a: SmStatus) -> bytes:
        enc = Encoder()
        enc.string(a.mon_name, LM_MAXSTRLEN)
        enc.i32(a.state)
        enc.opaque_fixed(a.priv, SM_PRIV_SIZE)
        return enc.getvalue()

    # -- results ------------------------------------------------------------------------

    def res(self, dec: Decoder) -> Res:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        return Res(cookie, self._stat(dec))

    def encode_res(self, r: Res) -> bytes:
        """``nlm_res`` / ``nlm4_res`` (every LOCK and UNLOCK reply): one pack, no Encoder."""
        cookie = r.cookie
        n = len(cookie)
        if n > MAXNETOBJ_SZ:
            raise XdrError(f"cookie of {n} bytes exceeds {MAXNETOBJ_SZ}")
        stat = r.stat if self.wide else v1_status(r.stat)
        return b"".join((_U32_PACK(n), cookie, _PADDING[-n & 3], _I32_PACK(stat)))

    def encode_res_reply(self, xid: int, r: Res) -> bytes:
        """The whole successful reply to call ``xid`` carrying ``r``: the RPC accepted-reply
        header and :meth:`encode_res`'s bytes in one pack."""
        cookie = r.cookie
        n = len(cookie)
        if n > MAXNETOBJ_SZ:
            raise XdrError(f"cookie of {n} bytes exceeds {MAXNETOBJ_SZ}")
        stat = r.stat if self.wide else v1_status(r.stat)
        return _RES_REPLY[n](xid, 1, 0, 0, 0, 0, n, cookie, stat)

    def testres(self, dec: Decoder) -> TestRes:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        stat = self._stat(dec)
        holder = None
        if stat == Nlm4Stat.DENIED:
            # nlm_testrply: "case nlm_denied: struct nlm_holder holder;"
            excl = dec.boolean()
            svid = dec.i32()
            oh = dec.opaque(MAXNETOBJ_SZ)
            offset, length = dec.unpack(self._holder)
            holder = Holder(excl, svid, oh, offset, length)
        return TestRes(cookie, stat, holder)

    def encode_testres(self, r: TestRes) -> bytes:
        enc = Encoder()
        enc.opaque(r.cookie, MAXNETOBJ_SZ)
        stat = self._enc_stat(r.stat)
        enc.i32(stat)
        if stat == Nlm4Stat.DENIED:
            h = r.holder
            if h is None:
                raise XdrError("nlm_testres DENIED needs a holder")
            enc.boolean(h.exclusive)
            enc.i32(h.svid)
            enc.opaque(h.oh, MAXNETOBJ_SZ)
            enc.pack(self._holder, *self._ext(h.offset, h.length))
        return enc.getvalue()

    def shareres(self, dec: Decoder) -> ShareRes:
        cookie = dec.opaque(MAXNETOBJ_SZ)
        stat = self._stat(dec)
        return ShareRes(cookie, stat, dec.i32())

    def encode_shareres(self, r: ShareRes) -> bytes:
        enc = Encoder()
        enc.opaque(r.cookie, MAXNETOBJ_SZ)
        enc.i32(self._enc_stat(r.stat))
        enc.i32(r.sequence)
        return enc.getvalue()


V1: Final = NlmCodec(wide=False)
"""Codecs of NLM v1 and v3 (32-bit extents, ``nlm_stats``)."""
V4: Final = NlmCodec(wide=True)
"""Codecs of NLM v4 (64-bit extents, ``nlm4_stats``)."""


def codec_for(vers: int) -> NlmCodec:
    """The codec of NLM version ``vers`` (1, 3 or 4)."""
    if vers == 4:
        return V4
    if vers in (1, 3):
        return V1
    raise ValueError(f"no NLM version {vers}")
