"""NFSv3 file handles: a kernel handle tagged with its export and a MAC (sans-IO).

Layout (at most 64 bytes, RFC 1813 section 2.4 NFS3_FHSIZE)::

    0  version (1)          1  kernel handle_type (1)   2  kernel handle length (1)   3  0
    4  export id (4, big-endian)
    8  kernel handle (n bytes, n <= 44)
    8+n  tag: the first 12 bytes of HMAC-SHA256(key, bytes 0 .. 8+n)

The kernel handle (see :mod:`floatlock.nfs.fhandle`) makes the handle survive restarts and a
move to another node that mounts the same filesystem with the same export id and key.  The
tag makes the handle unforgeable: a client can only present handles this server (or a node
sharing its key) issued *for that export*, so a guessed inode number, a handle for another
export, or one edited by hand is refused with NFS3ERR_BADHANDLE before the kernel sees it.
What the tag cannot prove -- that a file is still inside the export directory -- the resolver
checks (:mod:`floatlock.nfs.resolver`).
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from floatlock.nfs.errors import NfsError
from floatlock.nfs.proto import NFS3_FHSIZE, Nfsstat3

VERSION = 1
TAG_LEN = 12
_HEAD = struct.Struct(">BBBxI")
MAX_KERNEL_HANDLE = NFS3_FHSIZE - _HEAD.size - TAG_LEN  # 44


@dataclass(frozen=True, slots=True)
class HandleParts:
    export_id: int
    handle_type: int
    kernel: bytes


class HandleCodec:
    """Packs and checks NFS file handles with one secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("handle key must be at least 16 bytes")
        self._key = key

    def _tag(self, body: bytes) -> bytes:
        return hmac.digest(self._key, body, "sha256")[:TAG_LEN]  # one-shot C path

    def encode(self, export_id: int, handle_type: int, kernel: bytes) -> bytes:
        if len(kernel) > MAX_KERNEL_HANDLE or not 0 <= handle_type <= 255:
            # A filesystem whose handles do not fit cannot be exported (checked at start-up).
            raise NfsError(Nfsstat3.SERVERFAULT, f"kernel handle of {len(kernel)} B won't fit")
        body = _HEAD.pack(VERSION, handle_type, len(kernel), export_id) + kernel
        return body + self._tag(body)

    def decode(self, fh: bytes) -> HandleParts:
        """The parts of a handle this codec issued; NfsError(BADHANDLE) for anything else."""
        if len(fh) < _HEAD.size + TAG_LEN:
            raise NfsError(Nfsstat3.BADHANDLE, "short handle")
        version, htype, klen, export_id = _HEAD.unpack_from(fh)
        if version != VERSION or len(fh) != _HEAD.size + klen + TAG_LEN:
            raise NfsError(Nfsstat3.BADHANDLE, "malformed handle")
        body = fh[: _HEAD.size + klen]
        if not hmac.compare_digest(fh[_HEAD.size + klen :], self._tag(body)):
            raise NfsError(Nfsstat3.BADHANDLE, "handle tag mismatch")
        return HandleParts(export_id, htype, body[_HEAD.size :])
