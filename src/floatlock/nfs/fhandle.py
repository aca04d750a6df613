"""Kernel file handles: name_to_handle_at(2) and open_by_handle_at(2) through ctypes.

A kernel handle names an inode independently of any path and survives reboots (it is the
filesystem's own NFS export handle: inode number + generation for ext4, and so on), so the
same handle opens the same file on any node that mounts the same filesystem.  Opening needs
CAP_DAC_READ_SEARCH, which the server has as root (and only while its fsuid is 0).

Also here: the handle signing key on disk (:func:`load_handle_key`), which must be the same on
every node serving an export for handles to move with the virtual address.
"""

from __future__ import annotations

import ctypes
import os
import secrets

_libc = ctypes.CDLL(None, use_errno=True)

MAX_HANDLE_SZ = 128  # <linux/exportfs.h>
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_FOLLOW = 0x400


class _FileHandle(ctypes.Structure):
    # struct file_handle { unsigned int handle_bytes; int handle_type; unsigned char f_handle[]; }
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    ]


_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(_FileHandle),
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_name_to_handle_at.restype = ctypes.c_int
_open_by_handle_at = _libc.open_by_handle_at
_open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int]
_open_by_handle_at.restype = ctypes.c_int


def name_to_handle(dirfd: int, name: str = "", *, follow: bool = False) -> tuple[int, bytes]:
    """(handle_type, handle bytes) of ``name`` relative to ``dirfd`` ("" means dirfd itself)."""
    fh = _FileHandle()
    fh.handle_bytes = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    flags = (AT_EMPTY_PATH if not name else 0) | (AT_SYMLINK_FOLLOW if follow else 0)
    path = os.fsencode(name)
    if _name_to_handle_at(dirfd, path, ctypes.byref(fh), ctypes.byref(mount_id), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return fh.handle_type, bytes(fh.f_handle[: fh.handle_bytes])


def open_by_handle(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """Open the file a kernel handle names (needs CAP_DAC_READ_SEARCH); returns an fd."""
    if len(handle) > MAX_HANDLE_SZ:
        raise OSError(22, "handle too long")
    fh = _FileHandle()
    fh.handle_bytes = len(handle)
    fh.handle_type = handle_type
    ctypes.memmove(fh.f_handle, handle, len(handle))
    fd = _open_by_handle_at(mount_fd, ctypes.byref(fh), flags | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def load_handle_key(path: str) -> bytes:
    """The handle signing key stored at ``path``, created (32 random bytes, mode 0600) if absent.

    Keep it on storage every node of the cluster sees (or distribute it): a node with another
    key answers every handle the clients hold with NFS3ERR_BADHANDLE.
    """
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) < 16:
            raise ValueError(f"{path}: handle key shorter than 16 bytes")
        return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another node created it first: then use theirs
    except FileExistsError:
        os.unlink(tmp)
        return load_handle_key(path)
    os.unlink(tmp)
    return key
