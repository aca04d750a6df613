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

Copies
------
The common case (one whole single-fragment record per read) is served with one slice and no
intermediate buffer.  A record that spans reads (a 1 MiB NFS WRITE arrives in several) is kept
as a list of pieces of the input until its last byte is in, then joined: one copy of its
bytes, never a growing buffer re-allocated as it fills (``python -m bench.record_reassembly``:
a 1 MiB record from 64 KiB or 16 KiB reads cost 650-960 us appended to a ``bytearray``, 35-64
us joined).  Pieces of at least :data:`VIEW_MIN` bytes are memoryviews
of the (immutable) input; smaller ones are copied into a ``bytearray`` that grows behind them,
so a record cut into thousands of tiny fragments holds no per-fragment object.  The input a
view refers to stays alive until the record is complete; it is the same input the record
would otherwise have been copied out of, plus at most the fragment headers it carried
(bounded by ``max_fragments``) and the neighbouring records in the first and last read.
Records are ``bytes``: the dispatcher and the duplicate request cache need immutable ones.

:func:`frame` does the reverse for senders.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence, Sized
from typing import Any, TypeVar, cast

_P = TypeVar("_P", bound=Sized)

__all__ = [
    "LAST_FRAGMENT",
    "MAX_FRAGMENT",
    "VIEW_MIN",
    "Reassembly",
    "RecordError",
    "RecordReader",
    "RecordTooLarge",
    "TooManyFragments",
    "cut_whole",
    "frame",
    "frame_parts",
]

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF  # 31 bits of length (RFC 5531 section 11)

#: Pieces of a record at least this long are kept as views of the input, shorter ones copied.
VIEW_MIN = 4096


_HDR = struct.Struct(">I")
_unpack_hdr = _HDR.unpack_from
_pack_hdr = _HDR.pack


class RecordError(ValueError):
    """The stream broke the record-marking rules; the connection must be closed."""


class RecordTooLarge(RecordError):
    """A record would exceed the reader's ``max_record``."""


class TooManyFragments(RecordError):
    """A record is split into more fragments than the reader allows."""


class Reassembly:
    """The state of one record being reassembled from fragments, and the limits it obeys:
    what :class:`RecordReader` and :class:`floatlock.net.receiver.RecordReceiver` share
    (they differ in where the bytes come from and how a piece of a fragment is kept)."""

    __slots__ = (
        "_failed",
        "_frag_left",
        "_fragments",
        "_have",
        "_in_fragment",
        "_last",
        "_parts",
        "_small",
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
        # The current record so far, in order; _small is the last piece while it grows.
        self._parts: list[bytes | bytearray | memoryview] = []
        self._small: bytearray | None = None
        self._have = 0  # bytes of the current record received so far
        self._fragments = 0  # fragment headers seen for the current record
        self._in_fragment = False  # True: reading a fragment body, _frag_left bytes to go
        self._frag_left = 0
        self._last = False  # the current fragment ends the record
        self._failed = False

    def _fragment_header(self, length: int, last: bool) -> None:
        """A fragment header announcing ``length`` bytes: count it and start its body, or
        fail the stream if the record would break a limit."""
        self._fragments += 1
        if self._have + length > self.max_record:
            self._fail()
            raise RecordTooLarge(
                f"record of at least {self._have + length} bytes exceeds the "
                f"maximum of {self.max_record}"
            )
        if self._fragments > self.max_fragments:
            self._fail()
            raise TooManyFragments(f"record has more than {self.max_fragments} fragments")
        self._in_fragment = True
        self._frag_left = length
        self._last = last

    def _fragment_body(self, buf: Any, pos: int, end: int, out: list[bytes]) -> int:
        """Take what ``buf[pos:end]`` holds of the current fragment's body (``_keep`` says
        how); a finished record goes to ``out``.  Returns the new position."""
        take = min(self._frag_left, end - pos)
        if take:
            self._keep(buf, pos, take)
            pos += take
            self._frag_left -= take
        if self._frag_left == 0:
            self._in_fragment = False
            if self._last:
                out.append(self._take_record())
        return pos

    def _keep(self, buf: Any, pos: int, take: int) -> None:
        raise NotImplementedError

    def _take_record(self) -> bytes:
        """The current record as one bytes object (no copy when it is one bytes piece),
        and start the next."""
        parts = self._parts
        only = parts[0] if len(parts) == 1 else None
        record = only if type(only) is bytes else b"".join(parts)
        self._parts = []
        self._small = None
        self._have = 0
        self._fragments = 0
        return record

    def _fail(self) -> None:
        self._failed = True
        self._parts = []
        self._small = None
        self._have = 0


class RecordReader(Reassembly):
    """Reassembles records from a byte stream; see the module docstring."""

    __slots__ = ("_buf",)

    def __init__(self, max_record: int = 1 << 20, max_fragments: int | None = None) -> None:
        super().__init__(max_record, max_fragments)
        self._buf = b""  # unconsumed input: at most a partial header or fragment body

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete record (buffered input plus reassembled fragments)."""
        return len(self._buf) + self._have

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume ``data``; return the records it completed, in order.

        Raises :class:`RecordError` (and refuses any further input) on a framing violation.
        """
        if self._failed:
            raise RecordError("stream already failed")
        # bytes: immutable, so the views of it kept for a record cannot change under them.
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        if not self._in_fragment and not self._have and not self._parts:
            # Fast path: whole single-fragment records back to back (a pipelining client).
            # Anything else -- a partial record, a non-final fragment, an oversize header --
            # is left to the general loop below, from the same position.
            pos = cut_whole(buf, pos, n, self.max_record, out)
        while pos < n:
            if not self._in_fragment:
                if n - pos < 4:
                    break
                (hdr,) = _unpack_hdr(buf, pos)
                pos += 4
                length = hdr & MAX_FRAGMENT
                last = bool(hdr & LAST_FRAGMENT)
                self._fragment_header(length, last)
                # Fast path: a whole single-fragment record is already here.
                if last and not self._have and not self._parts and n - pos >= length:
                    out.append(buf[pos : pos + length])
                    pos += length
                    self._fragments = 0
                    self._in_fragment = False
                    continue
            pos = self._fragment_body(buf, pos, n, out)
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _keep(self, buf: bytes, pos: int, take: int) -> None:
        """Add ``buf[pos:pos + take]`` to the current record: a view if it is big, else a
        copy into the small-pieces buffer (module docstring, "Copies")."""
        self._have += take
        if take >= VIEW_MIN:
            self._small = None  # what it holds stays in _parts, in order
            self._parts.append(buf if take == len(buf) else memoryview(buf)[pos : pos + take])
            return
        small = self._small
        if small is None:
            small = self._small = bytearray()
            self._parts.append(small)
        small += memoryview(buf)[pos : pos + take]

    def _fail(self) -> None:
        super()._fail()
        self._buf = b""


def cut_whole(buf: bytes | mmap.mmap, pos: int, end: int, max_record: int, out: list[bytes]) -> int:
    """Append to ``out`` the whole single-fragment records lying back to back in
    ``buf[pos:end]`` (a pipelining client's calls), one slice each; return the offset of the
    first thing that is not one (a partial record, a non-final fragment, an oversize header),
    for the caller's general loop to take from there."""
    while end - pos >= 4:
        (hdr,) = _unpack_hdr(buf, pos)
        length = hdr & MAX_FRAGMENT
        stop = pos + 4 + length
        if not hdr & LAST_FRAGMENT or stop > end or length > max_record:
            break
        out.append(buf[pos + 4 : stop])
        pos = stop
    return pos


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


def frame_parts(parts: Sequence[_P]) -> list[_P | bytes]:
    """A record given in pieces, as pieces to send back to back: its mark, then the pieces
    themselves (not joined), or, past :data:`MAX_FRAGMENT`, :func:`frame` of them joined
    (pieces that are not buffers, such as mapped READ data, are never that large)."""
    size = 0
    for part in parts:
        size += len(part)
    if size > MAX_FRAGMENT:
        return [frame(b"".join(cast("Sequence[bytes | bytearray | memoryview]", parts)))]
    return [_pack_hdr(LAST_FRAGMENT | size), *parts]
