"""Record marking received in place: the TCP server's side of RFC 5531 section 11 (sans-IO).

Why a second reassembler
------------------------
:class:`floatlock.net.recordmark.RecordReader` is fed the ``bytes`` each read returned
(``asyncio.Protocol.data_received``) and must join a big record's pieces into one ``bytes``
object: a 1 MiB NFS WRITE cost a 1 MiB copy, and asyncio, reading at most 256 KiB per turn of
its event loop into a fresh object each time, took four or more turns per MiB.
:class:`RecordReceiver` applies the same framing rules, limits and errors to bytes received
*into its own buffers* (``recv_into``, asyncio's ``BufferedProtocol``):
:meth:`~RecordReceiver.get_buffer` says where the next bytes go,
:meth:`~RecordReceiver.buffer_updated` how many came, and returns the records they completed.
The RPC client (:mod:`floatlock.net.replies`) keeps :class:`RecordReader`: replies to it are
small.

How
---
* **Small records** (NLM LOCK/UNLOCK: ~200 bytes, dozens per read) are received into one
  reusable scratch buffer per stream and cut out of it, one slice each, as a fresh read's
  ``bytes`` would have been.  A small record cut short by the end of a read stays in the
  scratch buffer (moved to its front if it would not fit behind) until its last byte is in.
  The scratch buffer is an anonymous ``mmap`` allocated on first use: its pages cost memory
  only once bytes land in them, and a stream whose reads end on record boundaries keeps
  reusing the first few.
* **Large fragments** (a header announcing more than :data:`LARGE` bytes, say a 1 MiB NFS
  WRITE) get a buffer of exactly their size the moment their header is read; what the read
  brought of their body is copied into it (at most one scratch buffer full) and the rest of
  the body is received straight into it.  A record that is one such fragment (what Linux
  sends) *is* that buffer: no join, no copy.  Other multi-fragment records are joined once,
  as :class:`RecordReader` does.
* **Why the buffer can be bytes.**  CPython's C API lets the creator of a new ``bytes`` object
  fill it in place before anyone else sees it (``PyBytes_FromStringAndSize(NULL, n)``, then
  writing through ``PyBytes_AsString``: "must not be modified ... unless the object was just
  created using PyBytes_FromStringAndSize(NULL, size)").  :data:`fresh_buffer` does exactly
  that through ``ctypes.pythonapi`` (the writable view is ``PyMemoryView_FromMemory`` over
  those bytes, checked once at import): the receiver is the only holder of the object and of
  the view until the last byte is in, then it drops the view and hands the ``bytes`` on;
  nothing hashed it meanwhile.  The record is an ordinary ``bytes`` object, so the
  dispatcher's ``decode_at`` fast paths, hashable file handles sliced out of it and the reply
  cache's hashing all work unchanged.  Where that C API is not reachable (not CPython) the
  buffer is a ``bytearray`` copied once when complete: today's cost, not more.
* **Why 64 KiB.**  Cutting a record out of the scratch buffer costs a copy of it; receiving it
  into its own buffer costs an allocation and, for pipelined records, a ``recv`` of its own
  instead of a share of one.  A copy of 64 KiB takes about 2 us (``python -m timeit -s
  "b = bytearray(1 << 17); m = memoryview(b)" "bytes(m[:65536])"``), far less than a read and
  event-loop turn of its own (~16 us, ``python -m bench.record_reassembly``, one 200-byte call
  per read), so records up to that size share reads and are copied out; bigger fragments, which
  span several reads anyway, get their own buffer.  NFS WRITEs of the usual 256 KiB-1 MiB are
  well above it, NLM and metadata calls far below.  Scratch is :data:`SCRATCH`
  bytes (two such records), so any small record fits in it whole.
* **Memory.**  A large fragment's buffer is allocated when its header arrives, before its
  data: at most ``max_record`` per stream, the bound :class:`RecordReader` has too (it
  reaches it once the peer sends the data, which a peer can always do).  The scratch
  buffer, :data:`SCRATCH` bytes of address space per stream, is resident only where reads
  have landed.

"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable

from floatlock.net.recordmark import (
    LAST_FRAGMENT,
    MAX_FRAGMENT,
    VIEW_MIN,
    Reassembly,
    RecordError,
    cut_whole,
)

__all__ = ["LARGE", "SCRATCH", "FreshBuffer", "RecordReceiver", "fresh_buffer"]

#: :class:`RecordReceiver`: fragments longer than this are received into a buffer of their own
#: (module docstring); shorter ones are cut out of the scratch buffer.
LARGE = 64 << 10
#: :class:`RecordReceiver`'s scratch buffer: two records of :data:`LARGE` bytes with headers.
SCRATCH = 2 * LARGE + 4096

_unpack_hdr = struct.Struct(">I").unpack_from

#: A buffer of ``n`` bytes to receive into, as (the object, a writable view of all of it).
FreshBuffer = Callable[[int], tuple[bytes | bytearray, memoryview]]

_PYBUF_WRITE = 0x200  # Include/pybuffer.h


def _bytearray_buffer(n: int) -> tuple[bytes | bytearray, memoryview]:
    buf = bytearray(n)
    return buf, memoryview(buf)


def _make_fresh_bytes() -> FreshBuffer:
    """A :data:`FreshBuffer` making new ``bytes`` objects to be filled in place (module
    docstring, "Why the buffer can be bytes"), or :func:`_bytearray_buffer` where CPython's C
    API is not reachable.  Private function pointers: the shared ``ctypes.pythonapi``
    attributes keep the types other users gave them."""
    try:
        api = ctypes.pythonapi
        new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
            ("PyBytes_FromStringAndSize", api)
        )
        contents = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(("PyBytes_AsString", api))
        # A view of raw memory: no ctypes array type per length (ctypes caches those).
        view_of = ctypes.PYFUNCTYPE(
            ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int
        )(("PyMemoryView_FromMemory", api))
    except (AttributeError, OSError, TypeError):  # not CPython
        return _bytearray_buffer

    def fresh_bytes(n: int) -> tuple[bytes | bytearray, memoryview]:
        # n > 1: sizes 0 and 1 may be shared singletons, never filled in place.
        obj = new(None, n)
        view = view_of(contents(obj), n, _PYBUF_WRITE)
        assert type(obj) is bytes and type(view) is memoryview
        return obj, view

    try:  # prove it once, rather than trust it
        obj, view = fresh_bytes(64)
        view[:] = bytes(range(64))
        ok = obj == bytes(range(64)) and not view.readonly
    except Exception:  # anything at all: use the portable buffer
        ok = False
    return fresh_bytes if ok else _bytearray_buffer


#: How :class:`RecordReceiver` allocates the buffer of a large fragment.
fresh_buffer: FreshBuffer = _make_fresh_bytes()


class RecordReceiver(Reassembly):
    """Reassembles records received in place (``recv_into``; see the module docstring), with
    the same limits and errors as :class:`~floatlock.net.recordmark.RecordReader`.

    Call :meth:`get_buffer`, receive at most ``len()`` of it bytes into it, then call
    :meth:`buffer_updated` with the count before asking for the next buffer.

    Args:
        max_record, max_fragments: as for :class:`RecordReader`.
        large: fragments longer than this get a buffer of their own.
        scratch_size: the scratch buffer's size; at least ``large + 8``, so a record of up
            to ``large`` bytes always fits in it whole.
    """

    __slots__ = (
        "_direct",
        "_direct_obj",
        "_direct_pos",
        "_end",
        "_scratch",
        "_start",
        "_view",
        "large",
        "scratch_size",
    )

    def __init__(
        self,
        max_record: int = 1 << 20,
        max_fragments: int | None = None,
        *,
        large: int = LARGE,
        scratch_size: int = SCRATCH,
    ) -> None:
        super().__init__(max_record, max_fragments)
        if large < 1 or scratch_size < large + 8:
            raise ValueError("scratch_size must hold a record of `large` bytes and more")
        self.large = large
        self.scratch_size = scratch_size
        # Received, not yet consumed: _scratch[_start:_end] (allocated on first use).
        self._scratch: mmap.mmap | None = None
        self._view = memoryview(b"")
        self._start = 0
        self._end = 0
        # A large fragment being received in place: its object, a view of it, bytes in.
        self._direct: memoryview | None = None
        self._direct_obj: bytes | bytearray | None = None
        self._direct_pos = 0

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete record (unparsed input plus reassembled fragments)."""
        return self._end - self._start + self._have

    def get_buffer(self) -> memoryview:
        """Where the next bytes go: never empty, valid until :meth:`buffer_updated`."""
        direct = self._direct
        if direct is not None:
            return direct[self._direct_pos :]
        if self._scratch is None:
            # Anonymous mmap: pages cost memory once written, not at allocation.
            self._scratch = mmap.mmap(-1, self.scratch_size)
            self._view = memoryview(self._scratch)
        end = self._end
        return self._view[end:] if end else self._view

    def buffer_updated(self, nbytes: int) -> list[bytes]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`; return the
        records they completed, in order.

        Raises :class:`RecordError` (and refuses any further input) on a framing violation.
        """
        if self._direct is not None or self._failed or nbytes <= 0:
            return self._other_update(nbytes)
        end = self._end + nbytes
        if end > self.scratch_size:
            raise ValueError(f"{nbytes} bytes received into a smaller buffer")
        m = self._scratch
        assert m is not None
        pos = self._start
        out: list[bytes] = []
        if not self._fragments:
            # Fast path: whole single-fragment records back to back (a pipelining client),
            # one slice each.  Anything else is left to the general loop, from here.
            pos = cut_whole(m, pos, end, self.max_record, out)
            if pos == end:
                self._start = self._end = 0
                return out
        self._end = end
        return self._parse(m, pos, out)

    def _other_update(self, nbytes: int) -> list[bytes]:
        """:meth:`buffer_updated` into a large fragment's buffer, or in an odd state."""
        if self._failed:
            raise RecordError("stream already failed")
        if nbytes <= 0:
            if nbytes:
                raise ValueError(f"negative byte count {nbytes}")
            return []
        direct = self._direct
        assert direct is not None
        pos = self._direct_pos + nbytes
        if pos > len(direct):
            raise ValueError(f"{nbytes} bytes received into a smaller buffer")
        self._have += nbytes
        if pos < len(direct):
            self._direct_pos = pos
            return []
        # The fragment is complete: from now on nobody writes into its object.
        obj = self._direct_obj
        assert obj is not None  # set together with _direct
        self._parts.append(obj)
        self._direct = self._direct_obj = None
        self._direct_pos = 0
        self._small = None
        self._in_fragment = False
        self._frag_left = 0
        return [self._take_record()] if self._last else []

    def _parse(self, m: mmap.mmap, pos: int, out: list[bytes]) -> list[bytes]:
        """Consume the rest of ``m[pos:self._end]`` (module docstring for the rules)."""
        end = self._end
        max_record = self.max_record
        large = self.large
        while pos < end:
            if not self._in_fragment:
                if end - pos < 4:
                    break
                (hdr,) = _unpack_hdr(m, pos)
                length = hdr & MAX_FRAGMENT
                last = bool(hdr & LAST_FRAGMENT)
                if last and not self._fragments and length <= large and length <= max_record:
                    # A small single-fragment record: cut out whole, or left where it is
                    # until the rest is in (there is room for it: see below).
                    if end - pos - 4 < length:
                        break
                    out.append(m[pos + 4 : pos + 4 + length])
                    pos += 4 + length
                    continue
                pos += 4
                self._fragment_header(length, last)  # raises when over a limit
                if length > large and length > end - pos:
                    # Large and not all here: the rest goes straight into its own buffer.
                    obj, view = fresh_buffer(length)
                    got = end - pos
                    view[:got] = self._view[pos:end]
                    self._have += got
                    self._direct, self._direct_obj, self._direct_pos = view, obj, got
                    pos = end
                    break
            pos = self._fragment_body(m, pos, end, out)
        if pos == end:
            self._start = self._end = 0
        else:
            # Left: part of a header, or part of a small record.  Moved to the front when
            # the record would not fit behind it, or little room is left: the next read
            # then has room for all of it (scratch_size >= large + 8).
            self._start = pos
            left = end - pos
            need = 4 + (_unpack_hdr(m, pos)[0] & MAX_FRAGMENT) if left >= 4 else 4
            size = self.scratch_size
            if pos + need > size or size - end < VIEW_MIN:
                m.move(0, pos, left)
                self._start = 0
                self._end = left
        return out

    def _keep(self, m: mmap.mmap, pos: int, take: int) -> None:
        """Add ``m[pos:pos + take]`` to the current record: big pieces as their own bytes,
        small ones appended to the small-pieces buffer."""
        self._have += take
        if take >= VIEW_MIN:
            self._small = None
            self._parts.append(m[pos : pos + take])
            return
        small = self._small
        if small is None:
            small = self._small = bytearray()
            self._parts.append(small)
        small += self._view[pos : pos + take]

    def _fail(self) -> None:
        super()._fail()
        self._direct = self._direct_obj = None
        self._start = self._end = 0
