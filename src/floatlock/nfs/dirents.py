"""Directory entries with their kernel positions: getdents64(2) through ctypes.

``os.scandir`` hides where each entry sits in the directory.  NFS needs it: a READDIR cookie
must name a position the next call can resume from, and stay valid while other entries come
and go.  The kernel's ``d_off`` is exactly that (ext4: a hash of the name; tmpfs, btrfs, xfs:
a per-directory offset), it is what ``lseek(fd, d_off, SEEK_SET)`` accepts to resume after the
entry, and it is the same on every node that mounts the filesystem.  Linux nfsd uses it as the
cookie too.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "ppc64le": 202, "s390x": 220}[platform.machine()]
_HEAD = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type
_BUF_SIZE = 32768


@dataclass(frozen=True, slots=True)
class Dirent:
    ino: int
    off: int  # position after this entry: resume with seek(off)
    dtype: int
    name: str


def read_entries(fd: int, start: int) -> Iterator[Dirent]:
    """Entries of the directory open (O_RDONLY) on ``fd`` from position ``start`` on."""
    os.lseek(fd, start, os.SEEK_SET)
    buf = ctypes.create_string_buffer(_BUF_SIZE)
    while True:
        n = _syscall(_SYS_GETDENTS64, fd, buf, ctypes.c_size_t(_BUF_SIZE))
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        if n == 0:
            return
        raw = buf.raw[:n]
        pos = 0
        while pos < n:
            ino, off, reclen, dtype = _HEAD.unpack_from(raw, pos)
            end = raw.index(b"\0", pos + _HEAD.size)
            yield Dirent(ino, off, dtype, os.fsdecode(raw[pos + _HEAD.size : end]))
            pos += reclen
