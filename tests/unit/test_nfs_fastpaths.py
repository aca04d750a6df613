"""The NFS fast paths agree with the general codecs they stand in for.

``FhArgs.decode_at`` / ``DirOpArgs.decode_at`` (the dispatcher's no-Decoder path) must accept
exactly what ``decode`` over a Decoder (plus ``done()``) accepts and decode it the same way,
and refuse the rest with XdrError. ``GetattrRes.encode`` / ``LookupRes.encode`` /
``AccessRes.encode`` join cached attribute bytes; they must give the bytes an Encoder gives
when it writes every field of the result one by one (built here independently of the codec's
packed format).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from floatlock.nfs.proto import MAX_PATH, NFS3_FHSIZE, DirOpArgs, Ftype3, Nfsstat3
from floatlock.nfs.proto_args import FhArgs
from floatlock.nfs.proto_attr import Fattr3, NfsTime
from floatlock.nfs.proto_res import AccessRes, GetattrRes, LookupRes
from floatlock.xdr import Decoder, Encoder, XdrError


def general(decode: Any, data: bytes, pos: int) -> Any:
    dec = Decoder(data, pos)
    value = decode(dec)
    dec.done()
    return value


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except XdrError:
        return ("error", None)


def opaque(b: bytes, claimed: int | None = None) -> bytes:
    n = len(b) if claimed is None else claimed
    return n.to_bytes(4, "big") + b + b"\0" * (-len(b) & 3)


# Messages built to sit near every boundary: lengths at and past the limits, lying length
# words, truncation anywhere, trailing bytes, and a header of random size before the args.
pieces = st.one_of(
    st.binary(max_size=70).map(opaque),
    st.tuples(st.binary(max_size=8), st.integers(0, 2**32 - 1)).map(lambda t: opaque(*t)),
    st.binary(max_size=6),
)
messages = st.tuples(st.binary(max_size=12), st.lists(pieces, max_size=3), st.integers(0, 8))


@settings(max_examples=600)
@given(messages)
def test_decode_at_matches_the_decoder(m: tuple[bytes, list[bytes], int]) -> None:
    head, parts, cut = m
    data = head + b"".join(parts)
    data = data[: len(data) - cut] if cut and len(data) > len(head) + cut else data
    pos = len(head)
    for cls in (FhArgs, DirOpArgs):
        assert outcome(cls.decode_at, data, pos) == outcome(general, cls.decode, data, pos)


def test_decode_at_on_the_edges() -> None:
    fh = b"h" * NFS3_FHSIZE
    ok = opaque(fh)
    assert FhArgs.decode_at(b"xx" + ok, 2) == FhArgs(fh)
    assert outcome(FhArgs.decode_at, opaque(fh + b"h"), 0)[0] == "error"  # 65-byte handle
    assert outcome(FhArgs.decode_at, ok + b"\0\0\0\0", 0)[0] == "error"  # trailing bytes
    assert outcome(FhArgs.decode_at, ok[:-1], 0)[0] == "error"  # truncated
    assert outcome(FhArgs.decode_at, b"\0\0\0", 0)[0] == "error"  # no length word
    longest = opaque(b"fh") + opaque(b"n" * MAX_PATH)  # names are decoded up to MAX_PATH
    assert DirOpArgs.decode_at(longest, 0).name == "n" * MAX_PATH
    assert outcome(DirOpArgs.decode_at, opaque(b"fh") + opaque(b"n" * (MAX_PATH + 1)), 0)[0] == (
        "error"
    )
    for data in (longest, opaque(b"fh") + opaque(b"n" * (MAX_PATH + 1))):
        assert outcome(DirOpArgs.decode_at, data, 0) == outcome(general, DirOpArgs.decode, data, 0)
    name = "caf\xe9".encode() + b"\xff"  # not UTF-8 at the end: survives (surrogateescape)
    args = DirOpArgs.decode_at(opaque(b"fh") + opaque(name), 0)
    assert args == DirOpArgs(b"fh", name.decode("utf-8", "surrogateescape"))


fattrs = st.builds(
    Fattr3,
    st.sampled_from(list(Ftype3)),
    st.integers(0, 0o7777),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    *[st.builds(NfsTime, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))] * 3,
)


def fattr_bytes(a: Fattr3) -> bytes:
    """fattr3 item by item with an Encoder (RFC 1813 section 2.5's field order and sizes)."""
    enc = Encoder()
    for v in (a.type, a.mode, a.nlink, a.uid, a.gid):
        enc.u32(v)
    enc.u64(a.size)
    enc.u64(a.used)
    enc.u32(a.rdev[0])  # specdata3
    enc.u32(a.rdev[1])
    enc.u64(a.fsid)
    enc.u64(a.fileid)
    for t in (a.atime, a.mtime, a.ctime):
        enc.u32(t.seconds)
        enc.u32(t.nseconds)
    return enc.getvalue()


def post_op(a: Fattr3 | None) -> bytes:
    return b"\0\0\0\0" if a is None else b"\0\0\0\1" + fattr_bytes(a)


@given(fattrs, st.binary(max_size=NFS3_FHSIZE), st.one_of(st.none(), fattrs))
def test_result_fast_encoders_match_item_by_item(a: Fattr3, fh: bytes, d: Fattr3 | None) -> None:
    assert a.wire() == fattr_bytes(a)
    enc = Encoder()
    a.encode(enc)
    assert enc.getvalue() == fattr_bytes(a)
    assert GetattrRes(Nfsstat3.OK, a).encode() == b"\0\0\0\0" + fattr_bytes(a)
    assert GetattrRes(Nfsstat3.STALE).encode() == struct.pack(">I", Nfsstat3.STALE)
    want = b"\0\0\0\0" + opaque(fh) + post_op(a) + post_op(d)
    assert LookupRes(Nfsstat3.OK, d, fh, a).encode() == want
    assert LookupRes(Nfsstat3.OK, d, fh, None).encode() == (
        b"\0\0\0\0" + opaque(fh) + post_op(None) + post_op(d)
    )
    assert LookupRes(Nfsstat3.NOENT, d).encode() == struct.pack(">I", 2) + post_op(d)
    bits = a.mode & 0x3F
    assert AccessRes(Nfsstat3.OK, d, bits).encode() == b"\0\0\0\0" + post_op(d) + (
        struct.pack(">I", bits)
    )
    assert AccessRes(Nfsstat3.STALE, d).encode() == struct.pack(">I", 70) + post_op(d)


def test_lookup_res_refuses_an_oversize_handle() -> None:
    res = LookupRes(Nfsstat3.OK, None, b"h" * (NFS3_FHSIZE + 1), None)
    assert outcome(res.encode)[0] == "error"


def test_an_out_of_range_attribute_is_an_xdr_error_as_before() -> None:
    t = NfsTime(0, 0)
    a = Fattr3(Ftype3.REG, 0, 1, 2**33, 0, 0, 0, (0, 0), 0, 0, t, t, t)  # uid past 32 bits
    assert outcome(GetattrRes(Nfsstat3.OK, a).encode)[0] == "error"
    assert outcome(a.encode, Encoder())[0] == "error"
