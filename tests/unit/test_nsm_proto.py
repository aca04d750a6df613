"""NSM codecs: golden bytes (sm_inter.x layouts), round trips and length limits."""

from __future__ import annotations

import pytest

from floatlock.nsm import proto
from floatlock.nsm.proto import Mon, MonId, MyId, Res, SmMon2Res, SmStatRes, StatChge, Status
from floatlock.xdr import Decoder, XdrError

PRIV = bytes(range(16))


def test_mon_golden_bytes() -> None:
    mon = Mon(MonId("ab", MyId("c", 100021, 4, 16)), PRIV)
    data = proto.encode_mon(mon)
    assert data == (
        b"\0\0\0\2ab\0\0" + b"\0\0\0\1c\0\0\0" + (100021).to_bytes(4, "big")
        + b"\0\0\0\4" + b"\0\0\0\x10" + PRIV
    )  # fmt: skip
    dec = Decoder(data)
    assert proto.decode_mon(dec) == mon
    dec.done()


def test_status_and_stat_chge_round_trip() -> None:
    st = Status("client.example", 7, PRIV)
    assert proto.decode_status(Decoder(proto.encode_status(st))) == st
    ch = StatChge("198.18.0.1", -3)
    assert proto.decode_stat_chge(Decoder(proto.encode_stat_chge(ch))) == ch


def test_results() -> None:
    assert proto.encode_sm_stat_res(SmStatRes(Res.STAT_FAIL, 5)) == b"\0\0\0\1\0\0\0\5"
    r2 = SmMon2Res(Res.STAT_SUCC, 3, 42)
    assert proto.encode_sm_mon2_res(r2) == b"\0\0\0\0\0\0\0\3\0\0\0\x2a"
    assert proto.decode_sm_mon2_res(Decoder(proto.encode_sm_mon2_res(r2))) == r2
    assert proto.decode_sm_stat_res(Decoder(b"\0\0\0\0\0\0\0\x09")) == SmStatRes(Res.STAT_SUCC, 9)
    with pytest.raises(XdrError):
        proto.decode_sm_stat_res(Decoder(b"\0\0\0\7\0\0\0\x09"))


def test_names_longer_than_sm_maxstrlen_are_garbage() -> None:
    ok = "x" * proto.SM_MAXSTRLEN
    assert proto.decode_sm_name(Decoder(proto.encode_sm_name(ok))) == ok
    too_long = (1025).to_bytes(4, "big") + b"x" * 1028
    with pytest.raises(XdrError):
        proto.decode_sm_name(Decoder(too_long))
    with pytest.raises(XdrError):
        proto.encode_sm_name("y" * 1025)


def test_truncated_priv_is_garbage() -> None:
    data = proto.encode_mon(Mon(MonId("a", MyId("b", 1, 2, 3)), PRIV))
    with pytest.raises(XdrError):
        proto.decode_mon(Decoder(data[:-4]))
    with pytest.raises(XdrError):
        proto.encode_mon(Mon(MonId("a", MyId("b", 1, 2, 3)), b"short"))
