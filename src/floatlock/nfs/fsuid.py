"""Run the current thread's filesystem syscalls as a given identity (setfsuid(2) & co).

The kernel makes every access decision: before an operation the worker thread takes the
caller's fsuid, fsgid and supplementary groups, afterwards it goes back to root.  All three
are per thread in the kernel; glibc's ``setgroups()`` however changes *every* thread of the
process (it broadcasts with a signal), so the raw ``setgroups`` system call is used instead,
which affects only the calling thread.  ``setfsuid``/``setfsgid`` are plain system calls in
glibc already.

When the fsuid changes from 0 to another value the kernel drops the filesystem capabilities
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_CHOWN, CAP_FOWNER, CAP_FSETID, CAP_MKNOD...) from the
thread's effective set, and restores them when it goes back to 0 (capabilities(7), "Effect of
user ID changes on capabilities").  So a squashed caller can neither bypass permissions nor
create device nodes, and ``open_by_handle_at`` (which needs CAP_DAC_READ_SEARCH) must be called
before switching.

A thread that cannot be switched back is unusable: :class:`IdentityError` is raised and must
not be swallowed (the worker thread pool is not to be trusted after it).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

from floatlock.nfs.creds import Identity

_libc = ctypes.CDLL(None, use_errno=True)
_setfsuid = _libc.setfsuid
_setfsuid.argtypes = [ctypes.c_uint]
_setfsuid.restype = ctypes.c_int
_setfsgid = _libc.setfsgid
_setfsgid.argtypes = [ctypes.c_uint]
_setfsgid.restype = ctypes.c_int
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "ppc64le": 81, "s390x": 206}[platform.machine()]
_NO_CHANGE = 0xFFFFFFFF  # setfsuid(-1) fails and returns the current value: a pure query
_BASE_GROUPS = tuple(os.getgroups())  # what a worker thread goes back to


class IdentityError(RuntimeError):
    """The thread's identity could not be set or restored."""


def _setgroups(groups: tuple[int, ...]) -> None:
    arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _syscall(_SYS_SETGROUPS, ctypes.c_size_t(len(groups)), arr) != 0:
        err = ctypes.get_errno()
        raise IdentityError(f"setgroups: {os.strerror(err)}")


def current_fsids() -> tuple[int, int]:
    """The calling thread's (fsuid, fsgid)."""
    return _setfsuid(_NO_CHANGE), _setfsgid(_NO_CHANGE)


def _switch(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    # Groups and gid first: once the fsuid is not 0 nothing else matters for permission, and
    # switching back goes the other way (uid first) so root's capabilities are regained first.
    _setgroups(groups)
    _setfsgid(gid)
    _setfsuid(uid)
    if current_fsids() != (uid, gid):
        raise IdentityError(f"could not become fsuid {uid} fsgid {gid}")


@contextmanager
def acting_as(ident: Identity) -> Iterator[None]:
    """Run the body with the thread's filesystem identity set to ``ident``; then back to root."""
    if ident.uid == 0 and ident.gid == 0:
        yield
        return
    _switch(ident.uid, ident.gid, ident.groups)
    try:
        yield
    finally:
        _setfsuid(0)
        _setfsgid(0)
        _setgroups(_BASE_GROUPS)
        if current_fsids() != (0, 0):
            raise IdentityError("could not return to fsuid 0")


@contextmanager
def as_server() -> Iterator[None]:
    """Temporarily act as root inside :func:`acting_as` (owner override, see ops_io)."""
    uid, gid = current_fsids()
    if uid == 0 and gid == 0:
        yield
        return
    _setfsuid(0)
    _setfsgid(0)
    try:
        yield
    finally:
        _setfsgid(gid)
        _setfsuid(uid)
