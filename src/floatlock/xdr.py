"""XDR (RFC 4506): an encoder and a bounds-checked decoder.

Theory of operation
-------------------
Every request floatlock serves passes through this module, so it is built for two things:
never trusting the bytes, and not wasting time on the way.

* :class:`Decoder` is a cursor over an immutable buffer.  Each ``get`` checks that the bytes it
  needs are there (RFC 4506 section 3: everything is a multiple of four bytes, padded with
  zeros) and raises :class:`XdrError`, and only that, when they are not or when a length is
  over the maximum the protocol allows.  Callers map :class:`XdrError` to GARBAGE_ARGS (RFC 5531
  section 9) or drop the message; nothing else can escape from decoding.
* :class:`Encoder` appends to one ``bytearray`` with precompiled :class:`struct.Struct` objects;
  values out of range for their XDR type raise :class:`XdrError` too.

Padding bytes are not checked on input: RFC 4506 section 3 says senders set them to zero, and
the Linux and Solaris decoders accept any value, so being strict would only break interop.

Hot protocol paths (NLM, NFS) may use the module-level ``struct.Struct`` objects directly to
decode several fixed fields at once; they still go through ``Decoder`` for anything variable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = [
    "I32",
    "I64",
    "U32",
    "U64",
    "Decoder",
    "Encoder",
    "XdrError",
    "exactly",
    "opaque_at",
    "pad_len",
]

T = TypeVar("T")

U32 = struct.Struct(">I")
I32 = struct.Struct(">i")
U64 = struct.Struct(">Q")
I64 = struct.Struct(">q")

_unpack_u32 = U32.unpack_from
_unpack_i32 = I32.unpack_from
_unpack_u64 = U64.unpack_from
_unpack_i64 = I64.unpack_from

# Arrays and opaques may never claim more than this many elements/bytes, whatever the caller's
# maximum says: a single RPC record is bounded well below it, so a larger count is garbage.
HARD_MAX = 1 << 26


class XdrError(ValueError):
    """Malformed or out-of-range XDR data; the only exception this module raises."""


def pad_len(n: int) -> int:
    """Number of zero bytes that follow ``n`` bytes of opaque data (RFC 4506 section 4.10)."""
    return -n & 3


def opaque_at(data: bytes, pos: int, maxlen: int) -> tuple[bytes, int]:
    """A variable-length opaque (RFC 4506 section 4.10) at ``data[pos:]``, at most ``maxlen``
    bytes, and the offset after it and its padding: :meth:`Decoder.opaque` without a cursor
    object, for the ``decode_at`` fast paths that decode a whole call's arguments straight
    from the message (``rpc.dispatch.Procedure.decode_at``)."""
    if pos + 4 > len(data):
        raise XdrError(f"truncated: need 4 bytes at offset {pos}")
    (n,) = _unpack_u32(data, pos)
    if n > maxlen or n > HARD_MAX:
        raise XdrError(f"length {n} exceeds maximum {maxlen}")
    pos += 4
    end = pos + n + (-n & 3)
    if end > len(data):
        raise XdrError(f"truncated opaque: {n} bytes at offset {pos}")
    return data[pos : pos + n], end


def exactly(data: bytes, end: int) -> None:
    """Raise unless arguments decoded by a ``decode_at`` path ended at the message's end
    (:meth:`Decoder.done`)."""
    if end != len(data):
        raise XdrError(f"{len(data) - end} trailing bytes")


class Decoder:
    """A bounds-checked cursor over ``data[pos:end]``."""

    __slots__ = ("_data", "_end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        if isinstance(data, memoryview | bytearray):
            data = bytes(data)
        self._data: bytes = data
        self.pos = pos
        self._end = len(data) if end is None else min(end, len(data))

    # -- fixed-size items (RFC 4506 sections 4.1-4.5) -------------------------------------

    def _need(self, n: int) -> int:
        pos = self.pos
        if pos + n > self._end:
            raise XdrError(f"truncated: need {n} bytes at offset {pos}, have {self._end - pos}")
        self.pos = pos + n
        return pos

    def u32(self) -> int:
        pos = self.pos
        if pos + 4 > self._end:
            raise XdrError(f"truncated: need 4 bytes at offset {pos}")
        self.pos = pos + 4
        return _unpack_u32(self._data, pos)[0]  # type: ignore[no-any-return]

    def i32(self) -> int:
        pos = self.pos
        if pos + 4 > self._end:
            raise XdrError(f"truncated: need 4 bytes at offset {pos}")
        self.pos = pos + 4
        return _unpack_i32(self._data, pos)[0]  # type: ignore[no-any-return]

    def u64(self) -> int:
        pos = self.pos
        if pos + 8 > self._end:
            raise XdrError(f"truncated: need 8 bytes at offset {pos}")
        self.pos = pos + 8
        return _unpack_u64(self._data, pos)[0]  # type: ignore[no-any-return]

    def i64(self) -> int:
        pos = self.pos
        if pos + 8 > self._end:
            raise XdrError(f"truncated: need 8 bytes at offset {pos}")
        self.pos = pos + 8
        return _unpack_i64(self._data, pos)[0]  # type: ignore[no-any-return]

    def boolean(self) -> bool:
        # RFC 4506 section 4.4: a boolean is an enum with exactly the values 0 and 1.
        v = self.u32()
        if v > 1:
            raise XdrError(f"bad boolean value {v}")
        return v == 1

    def enum(self, valid: frozenset[int] | range | None = None) -> int:
        v = self.i32()
        if valid is not None and v not in valid:
            raise XdrError(f"enum value {v} not allowed")
        return v

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        """Decode several fixed-size fields at once with a precompiled ``struct``."""
        pos = self._need(st.size)
        return st.unpack_from(self._data, pos)

    # -- variable-size items (RFC 4506 sections 4.9-4.13) ---------------------------------

    def opaque_fixed(self, n: int) -> bytes:
        pos = self._need(n + (-n & 3))
        return self._data[pos : pos + n]

    def _length(self, maxlen: int) -> int:
        n = self.u32()
        if n > maxlen or n > HARD_MAX:
            raise XdrError(f"length {n} exceeds maximum {maxlen}")
        return n

    def opaque(self, maxlen: int = HARD_MAX) -> bytes:
        n = self._length(maxlen)
        pos = self.pos
        end = pos + n + (-n & 3)
        if end > self._end:
            raise XdrError(f"truncated opaque: {n} bytes at offset {pos}")
        self.pos = end
        return self._data[pos : pos + n]

    def string(self, maxlen: int = HARD_MAX) -> str:
        """An XDR string as text.  Non-UTF-8 bytes survive a round trip (surrogateescape)."""
        return self.opaque(maxlen).decode("utf-8", "surrogateescape")

    def optional(self, item: Callable[[Decoder], T]) -> T | None:
        # RFC 4506 section 4.19: optional-data is a bool followed by the item when TRUE.
        return item(self) if self.boolean() else None

    def array(self, item: Callable[[Decoder], T], maxcount: int = HARD_MAX) -> list[T]:
        n = self._length(maxcount)
        # Every element takes at least 4 bytes: refuse a count the buffer cannot hold before
        # looping, so a huge claimed count costs nothing.
        if n * 4 > self._end - self.pos:
            raise XdrError(f"array of {n} cannot fit in {self._end - self.pos} bytes")
        return [item(self) for _ in range(n)]

    def uint_array(self, maxcount: int = HARD_MAX) -> list[int]:
        n = self._length(maxcount)
        pos = self._need(4 * n)
        return list(struct.unpack_from(f">{n}I", self._data, pos))

    def linked_list(self, item: Callable[[Decoder], T], maxcount: int = HARD_MAX) -> list[T]:
        """A list coded as ``*next`` optional links (RFC 1813 READDIR entries, DUMP lists)."""
        out: list[T] = []
        while self.boolean():
            if len(out) >= maxcount:
                raise XdrError(f"list longer than {maxcount}")
            out.append(item(self))
        return out

    # -- cursor ---------------------------------------------------------------------------

    def remaining(self) -> int:
        return self._end - self.pos

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = self._end
        return self._data[pos : self._end]

    def done(self) -> None:
        """Raise unless every byte was consumed."""
        if self.pos != self._end:
            raise XdrError(f"{self._end - self.pos} trailing bytes")


class Encoder:
    """Appends XDR items to one buffer; :meth:`getvalue` returns the bytes."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append already-encoded XDR bytes (a multiple of four)."""
        self._buf += data

    def pack(self, st: struct.Struct, *values: int) -> None:
        try:
            self._buf += st.pack(*values)
        except struct.error as e:
            raise XdrError(str(e)) from None

    def u32(self, v: int) -> None:
        try:
            self._buf += U32.pack(v)
        except struct.error as e:
            raise XdrError(f"uint out of range: {v}") from e

    def i32(self, v: int) -> None:
        try:
            self._buf += I32.pack(v)
        except struct.error as e:
            raise XdrError(f"int out of range: {v}") from e

    enum = i32

    def u64(self, v: int) -> None:
        try:
            self._buf += U64.pack(v)
        except struct.error as e:
            raise XdrError(f"uhyper out of range: {v}") from e

    def i64(self, v: int) -> None:
        try:
            self._buf += I64.pack(v)
        except struct.error as e:
            raise XdrError(f"hyper out of range: {v}") from e

    def boolean(self, v: bool) -> None:
        self._buf += b"\0\0\0\1" if v else b"\0\0\0\0"

    def opaque_fixed(self, data: bytes, n: int | None = None) -> None:
        if n is not None and len(data) != n:
            raise XdrError(f"fixed opaque needs {n} bytes, got {len(data)}")
        self._buf += data
        self._buf += b"\0" * (-len(data) & 3)

    def opaque(self, data: bytes | bytearray | memoryview, maxlen: int = HARD_MAX) -> None:
        n = len(data)
        if n > maxlen:
            raise XdrError(f"opaque of {n} bytes exceeds maximum {maxlen}")
        buf = self._buf
        buf += U32.pack(n)
        buf += data
        buf += b"\0" * (-n & 3)

    def string(self, s: str | bytes, maxlen: int = HARD_MAX) -> None:
        if isinstance(s, str):
            try:
                s = s.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as e:  # a lone surrogate no decoded name can contain
                raise XdrError(f"string cannot be encoded: {e.reason}") from None
        self.opaque(s, maxlen)

    def optional(self, v: T | None, item: Callable[[Encoder, T], None]) -> None:
        if v is None:
            self._buf += b"\0\0\0\0"
        else:
            self._buf += b"\0\0\0\1"
            item(self, v)

    def array(
        self, items: Sequence[T], item: Callable[[Encoder, T], None], maxcount: int = HARD_MAX
    ) -> None:
        if len(items) > maxcount:
            raise XdrError(f"array of {len(items)} exceeds maximum {maxcount}")
        self._buf += U32.pack(len(items))
        for v in items:
            item(self, v)

    def uint_array(self, items: Sequence[int], maxcount: int = HARD_MAX) -> None:
        if len(items) > maxcount:
            raise XdrError(f"array of {len(items)} exceeds maximum {maxcount}")
        try:
            self._buf += struct.pack(f">I{len(items)}I", len(items), *items)
        except struct.error as e:
            raise XdrError(str(e)) from None

    def linked_list(self, items: Iterable[T], item: Callable[[Encoder, T], None]) -> None:
        for v in items:
            self._buf += b"\0\0\0\1"
            item(self, v)
        self._buf += b"\0\0\0\0"
