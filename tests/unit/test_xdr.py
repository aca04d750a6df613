"""XDR codec (RFC 4506): golden vectors, round trips, and bad input raising only XdrError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floatlock.xdr import Decoder, Encoder, XdrError


def enc(fn: Callable[[Encoder], None]) -> bytes:
    e = Encoder()
    fn(e)
    return e.getvalue()


def test_golden_vectors() -> None:
    # RFC 4506 section 4: big-endian, four-byte units, zero padding.
    assert enc(lambda e: e.u32(1)) == b"\0\0\0\1"
    assert enc(lambda e: e.i32(-2)) == b"\xff\xff\xff\xfe"
    assert enc(lambda e: e.u64(1 << 40)) == b"\0\0\1\0\0\0\0\0"
    assert enc(lambda e: e.i64(-1)) == b"\xff" * 8
    assert enc(lambda e: e.boolean(True)) == b"\0\0\0\1"
    assert enc(lambda e: e.opaque(b"abcde")) == b"\0\0\0\5abcde\0\0\0"
    assert enc(lambda e: e.opaque_fixed(b"ab")) == b"ab\0\0"
    assert enc(lambda e: e.string("sillyprog")) == b"\0\0\0\x09sillyprog\0\0\0"
    assert enc(lambda e: e.optional(None, Encoder.u32)) == b"\0\0\0\0"
    assert enc(lambda e: e.optional(7, Encoder.u32)) == b"\0\0\0\1\0\0\0\7"
    assert enc(lambda e: e.array([1, 2], Encoder.u32)) == b"\0\0\0\2\0\0\0\1\0\0\0\2"
    assert enc(lambda e: e.uint_array([3])) == b"\0\0\0\1\0\0\0\3"
    assert enc(lambda e: e.linked_list([5], Encoder.u32)) == b"\0\0\0\1\0\0\0\5\0\0\0\0"


@pytest.mark.parametrize(
    ("fn", "value"),
    [
        (Encoder.u32, -1),
        (Encoder.u32, 1 << 32),
        (Encoder.i32, 1 << 31),
        (Encoder.u64, 1 << 64),
        (Encoder.i64, -(1 << 63) - 1),
    ],
)
def test_encode_out_of_range(fn: Callable[[Encoder, int], None], value: int) -> None:
    with pytest.raises(XdrError):
        fn(Encoder(), value)


def test_encode_limits() -> None:
    with pytest.raises(XdrError):
        Encoder().opaque(b"x" * 5, maxlen=4)
    with pytest.raises(XdrError):
        Encoder().array([1, 2, 3], Encoder.u32, maxcount=2)
    with pytest.raises(XdrError):
        Encoder().opaque_fixed(b"abc", 4)


def test_decode_limits_and_truncation() -> None:
    with pytest.raises(XdrError, match="exceeds maximum"):
        Decoder(b"\0\0\0\5abcde\0\0\0").opaque(4)
    with pytest.raises(XdrError, match="truncated"):
        Decoder(b"\0\0\0\5abcd").opaque()
    with pytest.raises(XdrError, match="bad boolean"):
        Decoder(b"\0\0\0\2").boolean()
    with pytest.raises(XdrError, match="not allowed"):
        Decoder(b"\0\0\0\x09").enum(frozenset({0, 1}))
    # A huge claimed array count fails before any element is read or allocated.
    with pytest.raises(XdrError):
        Decoder(b"\x00\xff\xff\xff" + b"\0" * 8).array(Decoder.u32)
    d = Decoder(b"\0\0\0\1\0\0\0\1")
    d.u32()
    with pytest.raises(XdrError, match="trailing"):
        d.done()
    with pytest.raises(XdrError, match="longer than"):
        Decoder(b"\0\0\0\1\0\0\0\1" * 3 + b"\0\0\0\0").linked_list(Decoder.u32, maxcount=2)


u32s = st.integers(0, (1 << 32) - 1)
i32s = st.integers(-(1 << 31), (1 << 31) - 1)
u64s = st.integers(0, (1 << 64) - 1)
i64s = st.integers(-(1 << 63), (1 << 63) - 1)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A record holding one of every XDR type the protocols use."""
    return {
        "u": draw(u32s),
        "i": draw(i32s),
        "uh": draw(u64s),
        "h": draw(i64s),
        "b": draw(st.booleans()),
        "e": draw(st.sampled_from([0, 1, 2, 3])),
        "fixed": draw(st.binary(min_size=16, max_size=16)),
        "var": draw(st.binary(max_size=70)),
        "s": draw(st.text(max_size=40)),
        "opt": draw(st.none() | u64s),
        "arr": draw(st.lists(u32s, max_size=16)),
        "strs": draw(st.lists(st.text(max_size=8), max_size=5)),
        "ll": draw(st.lists(i32s, max_size=5)),
    }


def encode_record(r: dict[str, Any]) -> bytes:
    e = Encoder()
    e.u32(r["u"])
    e.i32(r["i"])
    e.u64(r["uh"])
    e.i64(r["h"])
    e.boolean(r["b"])
    e.enum(r["e"])
    e.opaque_fixed(r["fixed"], 16)
    e.opaque(r["var"], 70)
    e.string(r["s"], 200)
    e.optional(r["opt"], Encoder.u64)
    e.uint_array(r["arr"], 16)
    e.array(r["strs"], lambda e2, v: e2.string(v, 40), 5)
    e.linked_list(r["ll"], Encoder.i32)
    return e.getvalue()


def decode_record(data: bytes) -> dict[str, Any]:
    d = Decoder(data)
    r = {
        "u": d.u32(),
        "i": d.i32(),
        "uh": d.u64(),
        "h": d.i64(),
        "b": d.boolean(),
        "e": d.enum(frozenset({0, 1, 2, 3})),
        "fixed": d.opaque_fixed(16),
        "var": d.opaque(70),
        "s": d.string(200),
        "opt": d.optional(Decoder.u64),
        "arr": d.uint_array(16),
        "strs": d.array(lambda d2: d2.string(40), 5),
        "ll": d.linked_list(Decoder.i32, 5),
    }
    d.done()
    return r


@given(records())
def test_every_type_round_trips(r: dict[str, Any]) -> None:
    data = encode_record(r)
    assert len(data) % 4 == 0
    assert decode_record(data) == r


@given(records(), st.data())
def test_truncation_raises_only_xdr_error(r: dict[str, Any], data: st.DataObject) -> None:
    blob = encode_record(r)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(XdrError):
        decode_record(blob[:cut])


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_xdr_error(blob: bytes) -> None:
    with contextlib.suppress(XdrError):
        decode_record(blob)


@given(st.binary(max_size=64), st.integers(0, 64))
def test_memoryview_and_offsets(blob: bytes, start: int) -> None:
    e = Encoder()
    e.opaque(blob)
    data = b"\0" * start + e.getvalue()
    assert Decoder(memoryview(data), start).opaque() == blob
    assert Decoder(bytearray(data), start).opaque() == blob


def test_unencodable_string_is_an_xdr_error() -> None:
    with pytest.raises(XdrError, match="cannot be encoded"):
        Encoder().string("\ud800")
    # Names decoded from arbitrary bytes survive the round trip (surrogateescape).
    e = Encoder()
    e.string(Decoder(b"\0\0\0\2\xff\xfe\0\0").string())
    assert e.getvalue() == b"\0\0\0\2\xff\xfe\0\0"
