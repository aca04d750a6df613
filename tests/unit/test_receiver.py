"""RecordReceiver: record marking received in place (get_buffer / buffer_updated)."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floatlock.net import receiver
from floatlock.net.receiver import RecordReceiver
from floatlock.net.recordmark import (
    LAST_FRAGMENT,
    RecordError,
    RecordReader,
    RecordTooLarge,
    TooManyFragments,
    frame,
)

BIG = bytes((i * 31 + 7) & 0xFF for i in range(1 << 20)) + b"tail"


def hdr(length: int, last: bool) -> bytes:
    return struct.pack(">I", (LAST_FRAGMENT if last else 0) | length)


def receive(r: RecordReceiver, data: bytes, read: int = 1 << 30) -> list[bytes]:
    """Deliver ``data`` as a socket would: at most ``read`` bytes, and at most the offered
    buffer, per receive."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        buf = r.get_buffer()
        assert len(buf) > 0 and not buf.readonly
        n = min(len(buf), read, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        del buf
        out += r.buffer_updated(n)
        pos += n
    return out


def receive_cuts(r: RecordReceiver, data: bytes, cuts: Iterable[int]) -> list[bytes]:
    out: list[bytes] = []
    for a, b in itertools.pairwise(cuts):
        out += receive(r, data[a:b])
    return out


def test_pipelined_small_records_are_cut_out_of_one_reused_buffer() -> None:
    r = RecordReceiver()
    calls = [bytes([i]) * 200 for i in range(32)]
    stream = b"".join(frame(c) for c in calls)
    for _ in range(3):
        buf = r.get_buffer()
        assert len(buf) == receiver.SCRATCH  # the whole scratch buffer, again
        buf[: len(stream)] = stream
        del buf
        out = r.buffer_updated(len(stream))
        assert out == calls and all(type(c) is bytes for c in out)
        assert r.pending == 0


def test_large_record_is_the_buffer_it_was_received_into(
    fresh_buffers: list[bytes | bytearray],
) -> None:
    made = fresh_buffers
    r = RecordReceiver(max_record=len(BIG))
    data = frame(BIG)
    assert r.buffer_updated(0) == []
    buf = r.get_buffer()
    buf[:1000] = data[:1000]
    del buf
    assert r.buffer_updated(1000) == []
    # From the header on, exactly the rest of the fragment is offered, in its own buffer.
    assert len(r.get_buffer()) == len(BIG) - 996
    assert r.pending == 996
    (rec,) = receive(r, data[1000:], read=256 << 10)
    assert rec == BIG and type(rec) is bytes
    assert made and rec is made[0]  # no join, no copy
    assert hash(rec[:32]) == hash(BIG[:32])  # slices of it are ordinary, hashable bytes
    assert r.pending == 0
    assert len(r.get_buffer()) == receiver.SCRATCH


def test_portable_buffer_gives_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver, "fresh_buffer", receiver._bytearray_buffer)
    r = RecordReceiver(max_record=len(BIG))
    out = receive(r, frame(BIG) + frame(b"after"), read=64 << 10)
    assert out == [BIG, b"after"] and all(type(c) is bytes for c in out)


def test_fresh_bytes_is_in_use_on_cpython() -> None:
    assert receiver.fresh_buffer is not receiver._bytearray_buffer
    obj, view = receiver.fresh_buffer(100)
    view[:] = b"z" * 100
    assert type(obj) is bytes and obj == b"z" * 100


@pytest.mark.parametrize("read", [1 << 30, 256 << 10, 65536, 4096, 4095, 1000, 7])
def test_big_record_in_any_chunking_is_byte_identical(read: int) -> None:
    r = RecordReceiver(max_record=len(BIG))
    out = receive(r, frame(b"x" * 5) + frame(BIG) + frame(b"y" * 300), read=read)
    assert out == [b"x" * 5, BIG, b"y" * 300]
    assert r.pending == 0


def test_big_record_of_mixed_fragments_then_pipelined_small_records() -> None:
    sizes = [200_000, 10, 4096, 4095, 0, 70_000, 100]
    parts, pos = [], 0
    for size in sizes:
        parts.append(hdr(size, False) + BIG[pos : pos + size])
        pos += size
    stream = b"".join(parts) + hdr(len(BIG) - pos, True) + BIG[pos:]
    stream += frame(b"one") + frame(b"two") + frame(BIG) + frame(b"three")
    for read in (len(stream), 300_000, 65536, 5000):
        r = RecordReceiver(max_record=len(BIG))
        out = receive(r, stream, read=read)
        assert out == [BIG, b"one", b"two", BIG, b"three"]
        assert all(type(rec) is bytes for rec in out)
        assert r.pending == 0


def test_small_record_straddling_the_end_of_the_scratch_buffer_is_moved() -> None:
    # Smallest legal scratch: records of up to `large` bytes must still complete.
    r = RecordReceiver(large=100, scratch_size=108)
    recs = [bytes([i]) * (i * 7 % 101) for i in range(200)]
    assert receive(r, b"".join(frame(x) for x in recs), read=37) == recs
    assert r.pending == 0


def test_one_byte_at_a_time() -> None:
    r = RecordReceiver(large=16, scratch_size=24)
    recs = [b"x" * 37, b"", b"yz", b"w" * 40]
    data = frame(recs[0], fragment_size=10) + frame(b"") + frame(b"yz") + frame(recs[3])
    assert receive(r, data, read=1) == recs


def test_oversize_refused_on_the_header_before_any_buffer() -> None:
    r = RecordReceiver(max_record=1000)
    with pytest.raises(RecordTooLarge):
        receive(r, hdr(0x7FFFFFFF, True))
    assert r.pending == 0 and r._direct is None
    with pytest.raises(RecordError):
        receive(r, frame(b"ok"))


def test_oversize_across_fragments() -> None:
    r = RecordReceiver(max_record=10)
    assert receive(r, hdr(6, False) + b"123456") == []
    with pytest.raises(RecordTooLarge):
        receive(r, hdr(5, True))


def test_flood_of_empty_fragments_is_refused() -> None:
    r = RecordReceiver(max_fragments=1000)
    empty = hdr(0, False)
    assert receive(r, empty * 999) == []
    assert r.pending == 0
    with pytest.raises(TooManyFragments):
        receive(r, empty * 10)
    with pytest.raises(TooManyFragments):
        receive(RecordReceiver(max_fragments=1000), empty * 100_000)


def test_fragment_count_resets_per_record() -> None:
    r = RecordReceiver(max_fragments=3)
    for _ in range(10):
        assert receive(r, frame(b"abc", fragment_size=1)) == [b"abc"]


def test_misuse_and_bad_limits() -> None:
    r = RecordReceiver()
    with pytest.raises(ValueError):
        r.buffer_updated(len(r.get_buffer()) + 1)
    with pytest.raises(ValueError):
        RecordReceiver(max_record=0)
    with pytest.raises(ValueError):
        RecordReceiver(large=100, scratch_size=107)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.binary(max_size=300), max_size=8),
    fragment_size=st.integers(min_value=1, max_value=400),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=10),
    large=st.integers(min_value=1, max_value=120),
    spare=st.integers(min_value=8, max_value=200),
)
def test_any_split_gives_what_record_reader_gives(
    records: list[bytes], fragment_size: int, cuts: list[int], large: int, spare: int
) -> None:
    data = b"".join(frame(rec, fragment_size) for rec in records)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    r = RecordReceiver(max_record=300, max_fragments=400, large=large, scratch_size=large + spare)
    assert receive_cuts(r, data, points) == records
    assert r.pending == 0


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6),
    large=st.integers(min_value=1, max_value=64),
)
def test_garbage_is_judged_as_record_reader_judges_it(
    data: bytes, cuts: list[int], large: int
) -> None:
    expected: list[bytes] = []
    error: type[Exception] | None = None
    reader = RecordReader(max_record=256, max_fragments=16)
    try:
        expected = reader.feed(data)
    except RecordError as e:
        error = type(e)
    r = RecordReceiver(max_record=256, max_fragments=16, large=large, scratch_size=large + 8)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    if error is None:
        assert receive_cuts(r, data, points) == expected
        assert r.pending <= 256 + 4
    else:
        with pytest.raises(error):
            receive_cuts(r, data, points)
