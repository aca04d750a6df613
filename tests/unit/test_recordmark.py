"""Record marking (RFC 5531 section 11): reassembly, limits and abuse."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floatlock.net.recordmark import (
    LAST_FRAGMENT,
    VIEW_MIN,
    RecordError,
    RecordReader,
    RecordTooLarge,
    TooManyFragments,
    frame,
)


def hdr(length: int, last: bool) -> bytes:
    return struct.pack(">I", (LAST_FRAGMENT if last else 0) | length)


def test_frame_single_fragment() -> None:
    assert frame(b"abcd") == b"\x80\x00\x00\x04abcd"
    assert frame(b"") == b"\x80\x00\x00\x00"


def test_frame_splits_into_fragments() -> None:
    assert frame(b"abcdefg", fragment_size=3) == (
        hdr(3, False) + b"abc" + hdr(3, False) + b"def" + hdr(1, True) + b"g"
    )
    with pytest.raises(ValueError):
        frame(b"abc", fragment_size=0)


def test_single_record_in_one_chunk() -> None:
    r = RecordReader()
    assert r.feed(frame(b"hello world!")) == [b"hello world!"]
    assert r.pending == 0


def test_several_records_in_one_chunk_and_a_partial_tail() -> None:
    r = RecordReader()
    data = frame(b"one") + frame(b"two", fragment_size=1) + frame(b"three")
    assert r.feed(data + frame(b"four")[:6]) == [b"one", b"two", b"three"]
    assert r.pending == 2  # the header is consumed, two bytes of data are held
    assert r.feed(frame(b"four")[6:]) == [b"four"]
    assert r.pending == 0


def test_multi_fragment_record_is_joined() -> None:
    r = RecordReader()
    assert r.feed(hdr(2, False) + b"ab") == []
    assert r.feed(hdr(0, False)) == []  # an empty non-final fragment is legal
    assert r.feed(hdr(3, True) + b"cde") == [b"abcde"]


def test_one_byte_at_a_time() -> None:
    r = RecordReader()
    data = frame(b"x" * 37, fragment_size=10) + frame(b"") + frame(b"yz")
    out: list[bytes] = []
    for i in range(len(data)):
        out += r.feed(data[i : i + 1])
    assert out == [b"x" * 37, b"", b"yz"]


def test_accepts_memoryview_and_bytearray() -> None:
    r = RecordReader()
    data = frame(b"abcdef")
    assert r.feed(memoryview(data)[:5]) == []
    assert r.feed(bytearray(data[5:])) == [b"abcdef"]


def test_record_exactly_at_the_limit_is_accepted() -> None:
    r = RecordReader(max_record=8)
    assert r.feed(frame(b"12345678", fragment_size=3)) == [b"12345678"]


def test_oversize_refused_on_the_header_before_any_data() -> None:
    r = RecordReader(max_record=1000)
    with pytest.raises(RecordTooLarge):
        r.feed(hdr(0x7FFFFFFF, True))
    assert r.pending == 0
    # The stream cannot be resynchronised: further input is refused.
    with pytest.raises(RecordError):
        r.feed(frame(b"ok"))


def test_oversize_across_fragments() -> None:
    r = RecordReader(max_record=10)
    assert r.feed(hdr(6, False) + b"123456") == []
    with pytest.raises(RecordTooLarge):
        r.feed(hdr(5, True))


def test_flood_of_empty_fragments_is_refused_without_growing() -> None:
    r = RecordReader(max_fragments=1000)
    empty = hdr(0, False)
    for _ in range(999):
        assert r.feed(empty) == []
    assert r.pending == 0
    with pytest.raises(TooManyFragments):
        r.feed(empty * 10)
    # One big chunk of empty fragments is refused too, in a single call.
    with pytest.raises(TooManyFragments):
        RecordReader(max_fragments=1000).feed(empty * 100_000)


def test_fragment_count_resets_per_record() -> None:
    r = RecordReader(max_fragments=3)
    for _ in range(10):
        assert r.feed(frame(b"abc", fragment_size=1)) == [b"abc"]


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        RecordReader(max_record=0)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.binary(max_size=64), max_size=8),
    fragment_size=st.integers(min_value=1, max_value=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_any_split_of_the_stream_gives_the_same_records(
    records: list[bytes], fragment_size: int, cuts: list[int]
) -> None:
    data = b"".join(frame(rec, fragment_size) for rec in records)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    r = RecordReader(max_record=64, max_fragments=100)
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += r.feed(data[a:b])
    assert out == records
    assert r.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_only_raises_record_error(data: bytes) -> None:
    r = RecordReader(max_record=256, max_fragments=16)
    try:
        for rec in r.feed(data):
            assert len(rec) <= 256
    except RecordError:
        pass
    assert r.pending <= 256 + 4


def test_default_fragment_limit_follows_the_record_limit() -> None:
    r = RecordReader(max_record=4096)
    assert r.max_fragments == 1024
    # Honest fragmentation of a maximal record passes...
    assert r.feed(frame(b"z" * 4096, fragment_size=4)) == [b"z" * 4096]
    # ...but headers alone may not outweigh the largest record.
    with pytest.raises(TooManyFragments):
        r.feed(hdr(0, False) * 1025)


def test_whole_records_then_fragments_partial_and_oversize_in_one_chunk() -> None:
    # The back-to-back whole records take the fast path; what follows is left to the
    # general loop from the same position.
    r = RecordReader(max_record=8)
    data = frame(b"a") + frame(b"bb") + hdr(1, False) + b"c" + hdr(1, True) + b"d"
    assert r.feed(data + frame(b"eeee")[:3]) == [b"a", b"bb", b"cd"]
    assert r.feed(frame(b"eeee")[3:] + frame(b"f")) == [b"eeee", b"f"]
    with pytest.raises(RecordTooLarge):
        r.feed(frame(b"g") + hdr(9, True))


# -- big records spanning reads (pieces kept as views, joined once) -------------------------

BIG = bytes((i * 31 + 7) & 0xFF for i in range(1 << 20)) + b"tail"


@pytest.mark.parametrize("chunk", [1 << 30, 256 * 1024, 65536, 4096, 4095, 1000, 7])
def test_big_record_in_any_chunking_is_byte_identical(chunk: int) -> None:
    data = frame(BIG)
    r = RecordReader(max_record=len(BIG))
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out += r.feed(data[i : i + chunk])
        if i + chunk < len(data):
            assert r.pending == min(i + chunk, len(data)) - 4
    assert len(out) == 1 and type(out[0]) is bytes
    assert out[0] == BIG
    assert r.pending == 0


def test_big_record_of_mixed_fragments_then_pipelined_small_records() -> None:
    # Fragments above and below VIEW_MIN (views and copies interleaved), then small whole
    # records in the same chunk as the big record's end, then a second big record.
    sizes = [VIEW_MIN * 3, 10, VIEW_MIN, VIEW_MIN - 1, 0, 100_000]
    parts, pos = [], 0
    for size in sizes:
        parts.append(hdr(size, False) + BIG[pos : pos + size])
        pos += size
    rest = len(BIG) - pos
    stream = b"".join(parts) + hdr(rest, True) + BIG[pos:]
    stream += frame(b"one") + frame(b"two") + frame(BIG) + frame(b"three")
    for chunk in (len(stream), 300_000, 5000):
        r = RecordReader(max_record=len(BIG))
        out: list[bytes] = []
        for i in range(0, len(stream), chunk):
            out += r.feed(stream[i : i + chunk])
        assert out == [BIG, b"one", b"two", BIG, b"three"]
        assert all(type(rec) is bytes for rec in out)
        assert r.pending == 0


def test_records_do_not_change_when_the_callers_buffer_does() -> None:
    # A caller may reuse its buffer after feed returns: the pieces kept must be the reader's.
    data = bytearray(frame(BIG[: VIEW_MIN * 4]))
    r = RecordReader()
    half = len(data) // 2
    view = memoryview(data)
    assert r.feed(view[:half]) == []
    data[:half] = b"X" * half  # overwrite what was fed
    (rec,) = r.feed(view[half:])
    assert rec == BIG[: VIEW_MIN * 4]


def test_many_tiny_fragments_hold_no_object_each() -> None:
    # 1000 one-byte fragments: one growing small-pieces buffer, not 1000 pieces.
    r = RecordReader(max_record=2000, max_fragments=2000)
    assert r.feed(b"".join(hdr(1, False) + b"z" for _ in range(1000))) == []
    assert len(r._parts) == 1
    assert r.feed(hdr(1, True) + b"!") == [b"z" * 1000 + b"!"]
