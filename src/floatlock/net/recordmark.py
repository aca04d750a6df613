"""ONC RPC record marking over byte streams (RFC 5531 section 11), sans-IO.

Theory of operation
-------------------
On a stream transport every RPC message is a *record* sent as one or more *fragments*.  Each
fragment is a 4-byte big-endian header followed by that many bytes of data; the header's top
bit says "this is the last fragment of the record" and the other 31 bits are the fragment's
length (RFC 5531 section 11).

:class:`RecordReader` is fed whatever the socket delivered and returns the records completed
by those bytes.  It never trusts the peer:

* a record may never grow past ``max_record`` bytes.  The check is made on each fragment
  *header*, before any of its data is buffered, so a peer announcing a 2 GiB fragment costs
  nothing; the caller gets :class:`RecordTooLarge` and closes the connection.
* zero-length (and other tiny) non-final fragments are legal but useless.  A peer could send
  an endless stream of them: a record that never completes, while the traffic keeps an idle
  timer from firing.  A record made of more than ``max_fragments`` fragments is refused with
  :class:`TooManyFragments`.  By default that is ``max_record // 4``: the fragment headers of
  one record may not outweigh the largest record, so a record never costs more than about
  twice ``max_record`` bytes of input, however it is cut, while any honest fragmentation
  (Linux sends one fragment; others cut at a few KiB) passes.  Memory stays bounded either
  way: empty fragments add nothing to the buffer, and each call does work proportional to the
  bytes fed.

After either error the stream cannot be resynchronised (the next header position is
unknown), so the reader refuses further input; the owner must drop the connection.

The common case (one whole single-fragment record per read) is served with one slice and no
intermediate buffer.

:func:`frame` does the reverse for senders.
"""

from __future__ import annotations

import struct

__all__ = [
    "LAST_FRAGMENT",
    "MAX_FRAGMENT",
    "RecordError",
    "RecordReader",
    "RecordTooLarge",
    "TooManyFragments",
    "frame",
]

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF  # 31 bits of length (RFC 5531 section 11)

_HDR = struct.Struct(">I")
_unpack_hdr = _HDR.unpack_from
_pack_hdr = _HDR.pack


class RecordError(ValueError):
    """The stream broke the record-marking rules; the connection must be closed."""


class RecordTooLarge(RecordError):
    """A record would exceed the reader's ``max_record``."""


class TooManyFragments(RecordError):
    """A record is split into more fragments than the reader allows."""


class RecordReader:
    """Reassembles records from a byte stream; see the module docstring."""

    __slots__ = (
        "_buf",
        "_failed",
        "_frag_left",
        "_fragments",
        "_in_fragment",
        "_last",
        "_record",
        "max_fragments",
        "max_record",
    )

    def __init__(self, max_record: int = 1 << 20, max_fragments: int | None = None) -> None:
        if max_fragments is None:
            max_fragments = max(16, max_record // 4)
        if max_record < 1 or max_fragments < 1:
            raise ValueError("max_record and max_fragments must be positive")
        self.max_record = max_record
        self.max_fragments = max_fragments
        self._buf = b""  # unconsumed input: at most a partial header or fragment body
        self._record = bytearray()  # fragments of the current record received so far
        self._fragments = 0  # fragment headers seen for the current record
        self._in_fragment = False  # True: reading a fragment body, _frag_left bytes to go
        self._frag_left = 0
        self._last = False  # the current fragment ends the record
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete record (buffered input plus reassembled fragments)."""
        return len(self._buf) + len(self._record)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume ``data``; return the records it completed, in order.

        Raises :class:`RecordError` (and refuses any further input) on a framing violation.
        """
        if self._failed:
            raise RecordError("stream already failed")
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        record = self._record
        if not self._in_fragment and not record and self.max_fragments >= 1:
            # Fast path: whole single-fragment records back to back (a pipelining client).
            # Anything else -- a partial record, a non-final fragment, an oversize header --
            # is left to the general loop below, from the same position.
            max_record = self.max_record
            while n - pos >= 4:
                (hdr,) = _unpack_hdr(buf, pos)
                length = hdr & MAX_FRAGMENT
                end = pos + 4 + length
                if not hdr & LAST_FRAGMENT or end > n or length > max_record:
                    break
                out.append(buf[pos + 4 : end])
                pos = end
        while pos < n:
            if not self._in_fragment:
                if n - pos < 4:
                    break
                (hdr,) = _unpack_hdr(buf, pos)
                pos += 4
                length = hdr & MAX_FRAGMENT
                last = bool(hdr & LAST_FRAGMENT)
                self._fragments += 1
                if len(record) + length > self.max_record:
                    self._fail()
                    raise RecordTooLarge(
                        f"record of at least {len(record) + length} bytes exceeds the "
                        f"maximum of {self.max_record}"
                    )
                if self._fragments > self.max_fragments:
                    self._fail()
                    raise TooManyFragments(f"record has more than {self.max_fragments} fragments")
                # Fast path: a whole single-fragment record is already here.
                if last and not record and n - pos >= length:
                    out.append(buf[pos : pos + length])
                    pos += length
                    self._fragments = 0
                    continue
                self._in_fragment = True
                self._frag_left = length
                self._last = last
            take = min(self._frag_left, n - pos)
            if take:
                record += buf[pos : pos + take]
                pos += take
                self._frag_left -= take
            if self._frag_left == 0:
                self._in_fragment = False
                if self._last:
                    out.append(bytes(record))
                    record.clear()
                    self._fragments = 0
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _fail(self) -> None:
        self._failed = True
        self._buf = b""
        self._record = bytearray()


def frame(record: bytes | bytearray | memoryview, fragment_size: int = MAX_FRAGMENT) -> bytes:
    """Encode ``record`` as a record-marked byte string.

    One fragment unless ``fragment_size`` is smaller than the record (tests and interop use
    this to exercise reassembly).  An empty record is one empty last fragment.
    """
    n = len(record)
    if n <= fragment_size:
        return _pack_hdr(LAST_FRAGMENT | n) + record
    if fragment_size < 1 or fragment_size > MAX_FRAGMENT:
        raise ValueError(f"bad fragment size {fragment_size}")
    parts: list[bytes | bytearray | memoryview] = []
    for start in range(0, n, fragment_size):
        chunk = record[start : start + fragment_size]
        end = start + fragment_size >= n
        parts.append(_pack_hdr((LAST_FRAGMENT if end else 0) | len(chunk)))
        parts.append(chunk)
    return b"".join(parts)
