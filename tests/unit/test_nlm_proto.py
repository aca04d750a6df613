"""NLM v1/v3/v4 codecs: golden vectors built by hand from the XDR definitions, round trips,
truncation and malformed input."""

from __future__ import annotations

import struct

import pytest

from floatlock.nlm.codec import V1, V4, codec_for
from floatlock.nlm.proto import (
    LM_MAXSTRLEN,
    MAXNETOBJ_SZ,
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    NlmProc,
    Notify,
    Res,
    Share,
    ShareArgs,
    ShareRes,
    SmStatus,
    UnlockArgs,
    narrow_extent,
    v1_status,
)
from floatlock.nlm.proto import TestArgs as NlmTestArgs
from floatlock.nlm.proto import TestRes as NlmTestRes
from floatlock.xdr import Decoder, XdrError


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def opaque(b: bytes) -> bytes:
    return u32(len(b)) + b + b"\0" * (-len(b) & 3)


def lock_v4_bytes() -> bytes:
    # nlm4_lockargs: cookie, block, exclusive, nlm4_lock{caller_name, fh, oh, svid, off, len},
    # reclaim, state.
    return (
        opaque(b"\x01\x02\x03")  # cookie, padded to 4
        + u32(1)  # block
        + u32(1)  # exclusive
        + opaque(b"client1")  # caller_name
        + opaque(b"F" * 32)  # fh
        + opaque(b"owner-handle")  # oh
        + i32(4242)  # svid
        + u64(0x1_0000_0000)  # l_offset (past 32 bits)
        + u64(0)  # l_len (to end)
        + u32(0)  # reclaim
        + i32(7)  # state
    )


def test_lockargs_v4_golden() -> None:
    data = lock_v4_bytes()
    a = V4.lockargs(Decoder(data))
    assert a == LockArgs(
        b"\x01\x02\x03",
        True,
        True,
        NlmLock("client1", b"F" * 32, b"owner-handle", 4242, 0x1_0000_0000, 0),
        False,
        7,
    )
    assert V4.encode_lockargs(a) == data


def test_lockargs_v1_golden_and_same_lock_as_v4() -> None:
    data = (
        opaque(b"")
        + u32(0)
        + u32(1)
        + opaque(b"c")
        + opaque(b"\xaa" * 32)
        + opaque(b"o")
        + i32(-5)
        + u32(100)
        + u32(0xFFFFFFFF)
        + u32(1)
        + i32(3)
    )
    a = V1.lockargs(Decoder(data))
    assert a.lock == NlmLock("c", b"\xaa" * 32, b"o", -5, 100, 0xFFFFFFFF)
    assert a.block is False and a.exclusive is True and a.reclaim is True and a.state == 3
    assert V1.encode_lockargs(a) == data
    # The same lock sent through v4 decodes to an identical description.
    v4 = V4.lockargs(Decoder(V4.encode_lockargs(a)))
    assert v4 == a


def test_testargs_cancargs_unlockargs_round_trip_both_versions() -> None:
    lk = NlmLock("host.example", b"\x00" * 7, b"oh", 1, 10, 20)
    for codec in (V1, V4):
        t = NlmTestArgs(b"ck", False, lk)
        assert codec.testargs(Decoder(codec.encode_testargs(t))) == t
        c = CancArgs(b"ck", True, False, lk)
        assert codec.cancargs(Decoder(codec.encode_cancargs(c))) == c
        u = UnlockArgs(b"", lk)
        assert codec.unlockargs(Decoder(codec.encode_unlockargs(u))) == u


def test_testargs_v1_golden() -> None:
    lk = NlmLock("ab", b"fh", b"", 9, 1, 2)
    expected = (
        opaque(b"c")
        + u32(0)
        + opaque(b"ab")
        + opaque(b"fh")
        + opaque(b"")
        + i32(9)
        + u32(1)
        + u32(2)
    )
    assert V1.encode_testargs(NlmTestArgs(b"c", False, lk)) == expected


def test_testres_denied_golden_v4_and_v1_clamps() -> None:
    h = Holder(True, 77, b"xy", 5, 0)
    r = NlmTestRes(b"k", Nlm4Stat.DENIED, h)
    v4 = opaque(b"k") + i32(1) + u32(1) + i32(77) + opaque(b"xy") + u64(5) + u64(0)
    assert V4.encode_testres(r) == v4
    assert V4.testres(Decoder(v4)) == r
    # A holder beyond 32 bits seen by a v1/v3 client: offset clamped, length "to the end".
    wide = NlmTestRes(b"k", Nlm4Stat.DENIED, Holder(False, 1, b"", 0x2_0000_0000, 10))
    v1 = opaque(b"k") + i32(1) + u32(0) + i32(1) + opaque(b"") + u32(0xFFFFFFFF) + u32(0)
    assert V1.encode_testres(wide) == v1


def test_testres_granted_has_no_holder() -> None:
    data = opaque(b"") + i32(0)
    assert V4.testres(Decoder(data)) == NlmTestRes(b"", Nlm4Stat.GRANTED, None)
    assert V4.encode_testres(NlmTestRes(b"", Nlm4Stat.GRANTED)) == data
    with pytest.raises(XdrError):
        V4.encode_testres(NlmTestRes(b"", Nlm4Stat.DENIED, None))


def test_res_status_mapping_for_v1() -> None:
    assert V4.encode_res(Res(b"", Nlm4Stat.FBIG)) == opaque(b"") + i32(8)
    assert V1.encode_res(Res(b"", Nlm4Stat.DEADLCK)) == opaque(b"") + i32(1)
    assert V1.encode_res(Res(b"", Nlm4Stat.STALE_FH)) == opaque(b"") + i32(2)
    assert V1.encode_res(Res(b"", Nlm4Stat.DENIED_GRACE_PERIOD)) == opaque(b"") + i32(4)
    assert [v1_status(s) for s in Nlm4Stat] == [0, 1, 2, 3, 4, 1, 2, 2, 2, 2]
    # A v1 peer may not send a v4-only status; a v4 peer may.
    with pytest.raises(XdrError):
        V1.res(Decoder(opaque(b"") + i32(5)))
    assert V4.res(Decoder(opaque(b"") + i32(9))).stat is Nlm4Stat.FAILED
    with pytest.raises(XdrError):
        V4.res(Decoder(opaque(b"") + i32(10)))


def test_share_golden_and_round_trip() -> None:
    a = ShareArgs(b"c1", Share("me", b"fh", b"o", 3, 1), True)
    data = opaque(b"c1") + opaque(b"me") + opaque(b"fh") + opaque(b"o") + i32(3) + i32(1) + u32(1)
    for codec in (V1, V4):
        assert codec.encode_shareargs(a) == data
        assert codec.shareargs(Decoder(data)) == a
    r = ShareRes(b"c1", Nlm4Stat.DENIED, 0)
    assert V4.encode_shareres(r) == opaque(b"c1") + i32(1) + i32(0)
    assert V4.shareres(Decoder(V4.encode_shareres(r))) == r
    bad = opaque(b"") + opaque(b"") + opaque(b"") + opaque(b"") + i32(4) + i32(0) + u32(0)
    with pytest.raises(XdrError):
        V4.shareargs(Decoder(bad))


def test_notify_and_sm_status_golden() -> None:
    data = opaque(b"client.example") + i32(13)
    assert V4.notify(Decoder(data)) == Notify("client.example", 13)
    assert V4.encode_notify(Notify("client.example", 13)) == data
    priv = bytes(range(16))
    sm = opaque(b"198.18.0.9") + i32(5) + priv
    assert V4.sm_status(Decoder(sm)) == SmStatus("198.18.0.9", 5, priv)
    assert V4.encode_sm_status(SmStatus("198.18.0.9", 5, priv)) == sm
    with pytest.raises(XdrError):
        V4.sm_status(Decoder(sm[:-1]))


def test_every_truncation_raises_xdr_error() -> None:
    data = lock_v4_bytes()
    for n in range(len(data)):
        with pytest.raises(XdrError):
            V4.lockargs(Decoder(data[:n]))
    v1 = V1.encode_lockargs(V4.lockargs(Decoder(data)))
    for n in range(len(v1)):
        with pytest.raises(XdrError):
            V1.lockargs(Decoder(v1[:n]))


def test_limits_and_bad_booleans() -> None:
    too_long = opaque(b"") + u32(0) + u32(0) + opaque(b"x" * (LM_MAXSTRLEN + 1))
    with pytest.raises(XdrError, match="exceeds maximum"):
        V4.lockargs(Decoder(too_long))
    big_fh = opaque(b"") + u32(0) + opaque(b"c") + opaque(b"f" * (MAXNETOBJ_SZ + 1))
    with pytest.raises(XdrError):
        V4.testargs(Decoder(big_fh))
    data = bytearray(lock_v4_bytes())
    data[8:12] = u32(2)  # block = 2 is not a boolean
    with pytest.raises(XdrError, match="boolean"):
        V4.lockargs(Decoder(bytes(data)))


def test_v1_encoder_narrows_and_v4_refuses_out_of_range() -> None:
    lk = NlmLock("c", b"", b"", 0, 0x1_0000_0005, 3)
    out = V1.unlockargs(Decoder(V1.encode_unlockargs(UnlockArgs(b"", lk))))
    assert (out.lock.offset, out.lock.length) == (0xFFFFFFFF, 0)
    with pytest.raises(XdrError):
        V4.encode_unlockargs(UnlockArgs(b"", NlmLock("c", b"", b"", 0, 1 << 64, 0)))


def test_narrow_extent_rule() -> None:
    assert narrow_extent(0, 0) == (0, 0)
    assert narrow_extent(10, 5) == (10, 5)
    assert narrow_extent(0xFFFFFFFF, 0xFFFFFFFF) == (0xFFFFFFFF, 0xFFFFFFFF)  # fits: unchanged
    assert narrow_extent(7, 1 << 32) == (7, 0)
    assert narrow_extent(1 << 40, 1) == (0xFFFFFFFF, 0)


def test_procedure_numbers_and_codec_for() -> None:
    assert [NlmProc.GRANTED_RES, NlmProc.SM_NOTIFY, NlmProc.SHARE, NlmProc.FREE_ALL] == [
        15,
        16,
        20,
        23,
    ]
    assert codec_for(1) is V1 and codec_for(3) is V1 and codec_for(4) is V4
    with pytest.raises(ValueError):
        codec_for(2)
