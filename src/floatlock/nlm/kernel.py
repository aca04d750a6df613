"""The kernel mirror of NLM locks: one open-file-description (OFD) lock set per NLM owner.

Theory of operation
-------------------
lockd's own tables (:mod:`floatlock.nlm.locks`) decide NLM against NLM.  But the files are
also used by local processes and by other servers exporting the same storage, so every lock
lockd grants is also taken in the kernel, and a lock a local process holds makes the NLM
request fail (XNFS NLM, "Lock semantics": NLM locks are the server's POSIX record locks).

Linux OFD locks (``F_OFD_SETLK``/``F_OFD_GETLK``, fcntl(2)) belong to an open file description
rather than a process, which is exactly the NLM owner model: :class:`KernelMirror` opens one
description per (NLM owner, file) and takes that owner's ranges on it, so the kernel merges,
splits, upgrades and conflicts NLM owners among themselves and with local processes with POSIX
semantics, like the core does.  Python 3.11's :mod:`fcntl` lacks the ``F_OFD_*`` constants, so
they are defined here and a packed ``struct flock`` (``l_pid`` must be 0) is passed.

Ranges.  The core works on ``[start, end)`` with ``end`` up to 2**64 (``RANGE_END``, "to the
end of the file"); the kernel's ``off_t`` ends at ``OFFSET_MAX`` = 2**63-1.  The rule
(:func:`kernel_extent`): the part of a range at or past 2**63 is *clamped away*: no local
process can name those bytes, so there is nothing there to conflict with.  A range ending past
2**63 becomes "to the end" (``l_len`` 0, which the kernel takes as up to OFFSET_MAX); a range
starting at or past 2**63 has no kernel part at all and is not mirrored (``try_lock`` succeeds
without a syscall).  Locks and unlocks are clamped the same way, so the kernel's view of each
owner stays the core's view restricted to ``[0, 2**63)``.

Descriptors outlive their locks.  Opening a description per lock and closing it at the unlock
cost two ``open_by_handle_at`` and a close per LOCK/UNLOCK pair; instead, when an owner holds
nothing more on a file, :meth:`KernelMirror.release` parks its description as *idle*: it holds
no lock, so it is invisible to the kernel's lock checks (an OFD with no locks is harmless), and
the owner's next lock on the file reuses it.  Idle descriptions are bounded (``max_idle``,
oldest closed first), closed by :meth:`KernelMirror.sweep_idle` once idle for a whole sweep
interval (lockd's housekeeping), and closed at once when their host is dropped.  The cost of
keeping one is a descriptor and, for a file removed meanwhile, its inode until the sweep.

Descriptors are opened read-write when the file allows it (an exclusive lock needs a writable
description: ``EBADF`` otherwise) and read-only as a fallback; an exclusive lock on a file that
only opens read-only raises :class:`ReadOnlyFile` (lockd answers ``NLM4_ROFS``).

This module makes real system calls but never blocks and has no asyncio.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

from floatlock.nlm.files import LockFile

__all__ = [
    "F_OFD_GETLK",
    "F_OFD_SETLK",
    "F_OFD_SETLKW",
    "KERNEL_END",
    "KernelHolder",
    "KernelMirror",
    "ReadOnlyFile",
    "kernel_extent",
]

# <asm-generic/fcntl.h> (Linux >= 3.15).
F_OFD_GETLK: Final = 36
F_OFD_SETLK: Final = 37
F_OFD_SETLKW: Final = 38

# struct flock on Linux LP64: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, then padding to 32 bytes.
_FLOCK: Final = struct.Struct("@hhqqi4x")
_SEEK_SET: Final = 0

#: First byte position the kernel cannot lock (OFFSET_MAX + 1).
KERNEL_END: Final = 1 << 63
_RANGE_END: Final = 1 << 64  # the core's "to the end" (floatlock.nlm.ranges.RANGE_END)

_EXCL = fcntl.F_WRLCK
_SHARED = fcntl.F_RDLCK
_UNLCK = fcntl.F_UNLCK


def kernel_extent(start: int, end: int) -> tuple[int, int] | None:
    """``(l_start, l_len)`` for the core range ``[start, end)``, or None: nothing to mirror."""
    if start >= KERNEL_END or end <= start:
        return None
    if end >= KERNEL_END:
        return start, 0
    return start, end - start


class ReadOnlyFile(OSError):
    """An exclusive lock was asked on a file lockd can only open for reading."""


@dataclass(frozen=True, slots=True)
class KernelHolder:
    """The kernel's answer about a conflicting lock.

    ``pid`` is the local process holding a POSIX lock, -1 for an OFD lock (another NLM owner or
    a local OFD user: no process owns it), 0 when the conflict went away before it could be
    identified.  ``end`` is exclusive, and ``1 << 64`` (the core's RANGE_END) for "to the end".
    """

    pid: int
    start: int
    end: int
    exclusive: bool


class _Ofd:
    __slots__ = ("fd", "host", "writable")

    def __init__(self, fd: int, host: Hashable, writable: bool) -> None:
        self.fd = fd
        self.host = host
        self.writable = writable


#: Idle descriptions kept for reuse at most (see the module doc).
DEFAULT_MAX_IDLE: Final = 4096


class KernelMirror:
    """Open file descriptions per (owner, file key), holding each NLM owner's kernel locks."""

    def __init__(self, max_idle: int = DEFAULT_MAX_IDLE) -> None:
        self._ofds: dict[tuple[Hashable, Hashable], _Ofd] = {}
        self._by_host: dict[Hashable, dict[tuple[Hashable, Hashable], None]] = {}
        #: descriptions holding no lock, oldest first -> the sweep generation they went idle in
        self._idle: dict[tuple[Hashable, Hashable], int] = {}
        self._generation = 0
        self.max_idle = max_idle

    def __len__(self) -> int:
        """Open descriptors, idle ones included."""
        return len(self._ofds)

    def in_use(self) -> int:
        """Open descriptors that are not idle (their owner may hold locks on them)."""
        return len(self._ofds) - len(self._idle)

    def idle(self) -> int:
        """Idle descriptors kept for reuse."""
        return len(self._idle)

    def has(self, owner: Hashable, file_key: Hashable) -> bool:
        return (owner, file_key) in self._ofds

    # -- descriptors ----------------------------------------------------------------------

    def _open(self, host: Hashable, owner: Hashable, file: LockFile) -> tuple[_Ofd, bool]:
        key = (owner, file.key)
        ofd = self._ofds.get(key)
        if ofd is not None:
            if self._idle:
                self._idle.pop(key, None)
            return ofd, False
        try:
            fd, writable = file.open(True), True
        except (PermissionError, IsADirectoryError):
            fd, writable = file.open(False), False
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.ETXTBSY):
                raise
            fd, writable = file.open(False), False
        ofd = _Ofd(fd, host, writable)
        self._ofds[key] = ofd
        self._by_host.setdefault(host, {})[key] = None
        return ofd, True

    def release(self, owner: Hashable, file_key: Hashable) -> None:
        """The owner holds nothing on the file any more: keep its description idle for reuse
        (closing the oldest idle one past ``max_idle``)."""
        key = (owner, file_key)
        if key not in self._ofds:
            return
        if self.max_idle <= 0:
            self.close(owner, file_key)
            return
        idle = self._idle
        idle.pop(key, None)
        idle[key] = self._generation
        if len(idle) > self.max_idle:
            old_owner, old_file = next(iter(idle))
            self.close(old_owner, old_file)

    def sweep_idle(self) -> int:
        """Close the descriptions idle since the previous sweep; returns how many."""
        gen = self._generation
        old = [k for k, g in self._idle.items() if g < gen]
        for owner_key, file_key in old:
            self.close(owner_key, file_key)
        self._generation = gen + 1
        return len(old)

    def close(self, owner: Hashable, file_key: Hashable) -> bool:
        """Close the owner's description of the file (it holds nothing there any more);
        closing releases whatever the kernel still had on it."""
        key = (owner, file_key)
        ofd = self._ofds.pop(key, None)
        if ofd is None:
            return False
        if self._idle:
            self._idle.pop(key, None)
        entries = self._by_host[ofd.host]
        del entries[key]
        if not entries:
            del self._by_host[ofd.host]
        os.close(ofd.fd)
        return True

    def drop_owner(self, owner: Hashable) -> int:
        """Close every description of ``owner``; returns how many."""
        keys = [k for k in self._ofds if k[0] == owner]
        for owner_key, file_key in keys:
            self.close(owner_key, file_key)
        return len(keys)

    def drop_host(self, host: Hashable) -> int:
        """Close every description of every owner of ``host``; returns how many."""
        keys = list(self._by_host.get(host, ()))
        for owner_key, file_key in keys:
            self.close(owner_key, file_key)
        return len(keys)

    def close_all(self) -> None:
        for owner_key, file_key in list(self._ofds):
            self.close(owner_key, file_key)

    # -- locks ----------------------------------------------------------------------------

    def try_lock(
        self,
        host: Hashable,
        owner: Hashable,
        file: LockFile,
        start: int,
        end: int,
        exclusive: bool,
    ) -> KernelHolder | None:
        """Take ``[start, end)`` for ``owner``; None when done, else the conflicting holder.

        Raises :class:`ReadOnlyFile` for an exclusive lock on a read-only description and
        OSError (e.g. ENOLCK) when the kernel refuses for another reason.
        """
        ext = kernel_extent(start, end)
        if ext is None:
            return None
        key = (owner, file.key)
        ofd = self._ofds.get(key)
        if ofd is not None and (ofd.writable or not exclusive):
            # The owner's description is open already (holding locks, or idle for reuse).
            idle = self._idle
            was_idle = bool(idle) and idle.pop(key, None) is not None
            try:
                fcntl.fcntl(
                    ofd.fd,
                    F_OFD_SETLK,
                    _FLOCK.pack(_EXCL if exclusive else _SHARED, _SEEK_SET, ext[0], ext[1], 0),
                )
                return None
            except OSError as e:
                return self._refused(e, owner, file, ofd.fd, exclusive, ext, was_idle)
        was_idle = key in self._idle
        ofd, fresh = self._open(host, owner, file)
        if exclusive and not ofd.writable and was_idle:
            # Opened read-only for an earlier shared lock; the file may be writable now.
            self.close(owner, file.key)
            ofd, fresh = self._open(host, owner, file)
            was_idle = False
        if exclusive and not ofd.writable:
            if fresh:
                self.close(owner, file.key)
            raise ReadOnlyFile(errno.EBADF, f"{file.display}: open read-only, no write lock")
        kind = _EXCL if exclusive else _SHARED
        try:
            fcntl.fcntl(ofd.fd, F_OFD_SETLK, _FLOCK.pack(kind, _SEEK_SET, ext[0], ext[1], 0))
        except OSError as e:
            if fresh:
                self.close(owner, file.key)
            return self._refused(
                e, owner, file, None if fresh else ofd.fd, exclusive, ext, was_idle
            )
        return None

    def _refused(
        self,
        err: OSError,
        owner: Hashable,
        file: LockFile,
        fd: int | None,
        exclusive: bool,
        ext: tuple[int, int],
        was_idle: bool,
    ) -> KernelHolder:
        """F_OFD_SETLK failed with ``err``: the conflicting holder (F_OFD_GETLK on ``fd``, or
        on a fresh read-only description when None), or ``err`` raised when it is not a
        conflict.  A description that was idle before the attempt goes back to idle."""
        try:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                kind = _EXCL if exclusive else _SHARED
                holder = self._getlk(fd, file, kind, ext)
                if holder is not None:
                    return holder
                end = _RANGE_END if ext[1] == 0 else ext[0] + ext[1]
                return KernelHolder(0, ext[0], end, exclusive)
            raise err
        finally:
            if was_idle:
                self.release(owner, file.key)  # still holds nothing: idle again

    def unlock(self, owner: Hashable, file_key: Hashable, start: int, end: int) -> None:
        """Release ``[start, end)`` of ``owner`` (nothing happens where it held nothing)."""
        ofd = self._ofds.get((owner, file_key))
        ext = kernel_extent(start, end)
        if ofd is None or ext is None:
            return
        fcntl.fcntl(ofd.fd, F_OFD_SETLK, _FLOCK.pack(_UNLCK, _SEEK_SET, ext[0], ext[1], 0))

    def test(
        self, owner: Hashable, file: LockFile, start: int, end: int, exclusive: bool
    ) -> KernelHolder | None:
        """Who in the kernel would block ``owner`` taking ``[start, end)`` (None: nobody).

        The owner's own description is used when it has one, so its own locks never count.
        """
        ext = kernel_extent(start, end)
        if ext is None:
            return None
        ofd = self._ofds.get((owner, file.key))
        return self._getlk(
            ofd.fd if ofd is not None else None, file, _EXCL if exclusive else _SHARED, ext
        )

    @staticmethod
    def _getlk(
        fd: int | None, file: LockFile, kind: int, ext: tuple[int, int]
    ) -> KernelHolder | None:
        own = fd is None
        if fd is None:
            fd = file.open(False)  # F_OFD_GETLK needs no write access, even for F_WRLCK
        try:
            res = fcntl.fcntl(fd, F_OFD_GETLK, _FLOCK.pack(kind, _SEEK_SET, ext[0], ext[1], 0))
        finally:
            if own:
                os.close(fd)
        l_type, _whence, l_start, l_len, l_pid = _FLOCK.unpack(res)
        if l_type == _UNLCK:
            return None
        end = _RANGE_END if l_len == 0 else l_start + l_len
        return KernelHolder(l_pid, l_start, end, l_type == _EXCL)
