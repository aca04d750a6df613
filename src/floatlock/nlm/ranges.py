"""Byte ranges of NLM locks: (offset, length) on the wire, [start, end) in the core.

Theory of operation
-------------------
NLM v4 (Open Group XNFS, NLM chapter "nlm4_lock") carries a lock's extent as a 64-bit
``l_offset`` and ``l_len``, where ``l_len == 0`` means "from the offset to the end of the file,
however large it grows".  The lock core works on half-open ranges ``[start, end)`` so that
overlap, adjacency and splitting are plain integer comparisons.  "To the end" is the sentinel
``RANGE_END`` (2**64): no byte can lie at or past it, so a range ending exactly at 2**64 and a
range of length 0 are the same range, and both are stored with ``end == RANGE_END``.

A range whose last byte would lie past 2**64 - 1 (``offset + length > 2**64``) cannot be
expressed by a 64-bit client and is rejected with :class:`LockRangeError`; lockd maps that to
``NLM4_FBIG`` (Linux lockd refuses the same overflow in its v4 argument decoder).  NLM v1/v3
32-bit extents are widened by the caller before they get here.
"""

from __future__ import annotations

__all__ = ["RANGE_END", "LockRangeError", "byte_range", "range_length"]

#: Exclusive upper bound of every range; ``end == RANGE_END`` means "to end of file".
RANGE_END = 1 << 64


class LockRangeError(ValueError):
    """An (offset, length) pair that does not describe a range of 64-bit byte positions."""


def byte_range(offset: int, length: int) -> tuple[int, int]:
    """Return ``(start, end)`` for a wire ``(offset, length)``; length 0 is "to the end".

    Raises :class:`LockRangeError` when either value is outside 0..2**64-1 or when
    ``offset + length`` wraps past 2**64.
    """
    if not 0 <= offset < RANGE_END:
        raise LockRangeError(f"lock offset {offset} outside 0..2**64-1")
    if not 0 <= length < RANGE_END:
        raise LockRangeError(f"lock length {length} outside 0..2**64-1")
    if length == 0:
        return offset, RANGE_END
    end = offset + length
    if end > RANGE_END:
        raise LockRangeError(f"lock range offset={offset} length={length} wraps past 2**64")
    return offset, end


def range_length(start: int, end: int) -> int:
    """The wire length of ``[start, end)``: 0 when the range runs to the end."""
    return 0 if end >= RANGE_END else end - start
