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

Supplementary groups are switched lazily.  Going back to root restores fsuid and fsgid 0 but
leaves the last caller's groups in place, and the next caller's groups are set only when they
differ from what the thread has (the common case, one client user after another, sets none).
Groups grant nothing to a thread whose fsuid is 0 *and* that holds the filesystem
capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID): they
override every permission check groups take part in, and a file the thread creates takes its
group from the fsgid (0) or a set-group-ID directory, never from the supplementary list.  So
the lazy switch is used only when the daemon's effective set has all five (read from
``/proc/self/status`` at import: a unit with a narrower capability bounding set, or a user
namespace without them, restores the groups after every call as before).  (It holds where the
local kernel decides access: local and cluster filesystems, what floatlock exports.  A
filesystem whose remote server decides from the credential it is sent, such as a re-exported
NFS mount, would see the lingering groups in the daemon's own requests.)  Child processes
would inherit them too: whoever starts one from a thread that may have served a call gives it
the daemon's groups (:data:`DAEMON_GROUPS`; the HA callout, :mod:`floatlock.nsm.callout`).
That saves two ``setgroups`` per call: each replaces the thread's credentials (prepare_creds
and commit_creds, freed after an RCU grace period), 2.98 us here (``python -m timeit -s
"from floatlock.nfs import fsuid" "fsuid._setgroups(fsuid.DAEMON_GROUPS)"``), and an
``acting_as`` round trip went from 19.4 to 11.8 us (``python -m timeit -s "from
floatlock.nfs.fsuid import acting_as; from floatlock.nfs.creds import Identity; i =
Identity(65534, 65534, (65534,))" "with acting_as(i): pass"``, as root, against the generator
version with its two setgroups; ``python -m bench.nfs_dispatch`` shows it in LOOKUP and
CREATE).  What each thread has is tracked per thread (:class:`_ThreadGroups`), set only
after the kernel accepted it, and read from the kernel on a thread's first use (a thread
inherits the groups of the thread that started it).

A switch that fails half-way (an id the kernel refuses, or (uint32)-1, which ``setfsuid``
takes as "no change") is undone before :class:`IdentityError` is raised: the thread never
keeps part of a caller's identity.  A thread that cannot be switched back is unusable:
:class:`IdentityError` is raised and must not be swallowed (the worker thread pool is not to
be trusted after it).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
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
_c_long = ctypes.c_long
_AT_ACCESS_FLAGS = 0x1000 | 0x200  # AT_EMPTY_PATH | AT_EACCESS
_NO_CHANGE = 0xFFFFFFFF  # setfsuid(-1) fails and returns the current value: a pure query
#: The daemon's own supplementary groups (read at import, before any call is served): what a
#: thread goes back to when groups are not switched lazily, and what a child process gets.
DAEMON_GROUPS: tuple[int, ...] = tuple(os.getgroups())

# capabilities(7) numbers: CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
# CAP_FSETID, the filesystem capabilities that make supplementary groups moot at fsuid 0.
_FS_CAPS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


#: Leave a caller's groups on the thread after the call (see the module docstring).
LAZY_GROUPS = _effective_caps() & _FS_CAPS == _FS_CAPS


class IdentityError(RuntimeError):
    """The thread's identity could not be set or restored."""


class _ThreadGroups(threading.local):
    """The supplementary groups the kernel holds for the current thread (as last set).

    Read from the kernel on a thread's first use, not assumed: a new thread inherits the
    credentials of the thread that started it, which may be a caller's lingering groups."""

    def __init__(self) -> None:
        self.groups: tuple[int, ...] = tuple(os.getgroups())  # getgroups(2): this thread's


_thread = _ThreadGroups()


def _setgroups(groups: tuple[int, ...]) -> None:
    arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _syscall(_SYS_SETGROUPS, ctypes.c_size_t(len(groups)), arr) != 0:
        err = ctypes.get_errno()
        raise IdentityError(f"setgroups: {os.strerror(err)}")
    _thread.groups = groups


_SYS_FACCESSAT2 = 439  # the same number in every architecture's table (Linux 5.8)


def _faccessat2(fd: int, mode: int) -> int:
    return int(
        _syscall(_SYS_FACCESSAT2, _c_long(fd), b"", _c_long(mode), _c_long(_AT_ACCESS_FLAGS))
    )


def _faccessat2_probe() -> bool:
    """Whether faccessat2 answers at all: an old kernel says ENOSYS, and some container
    seccomp filters made before it existed say EPERM to everything.  (An architecture
    without a setgroups number above does not get this far: the import fails.)"""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        return _faccessat2(fd, os.F_OK) == 0
    finally:
        os.close(fd)


#: Whether :func:`may` can ask the kernel (faccessat2, Linux 5.8).  Without it nothing can:
#: ``access()`` checks the real ids, and glibc's emulation of ``faccessat(AT_EACCESS)`` the
#: effective ones, both root's in this daemon, so it would grant everything.  The NFS server
#: refuses to start then (:meth:`floatlock.nfs.service.NfsServer.__init__`).
FACCESSAT2 = _faccessat2_probe()


def may(fd: int, mode: int) -> bool:
    """Whether the thread's filesystem identity may access the file open at ``fd`` with
    ``mode`` (``os.R_OK``, ``W_OK``, ``X_OK``): the kernel's ``inode_permission`` check, as
    ``faccessat2(fd, "", mode, AT_EACCESS | AT_EMPTY_PATH)`` (AT_EACCESS: the fsuid, fsgid
    and groups, not the real ids), 1.58 us here against 2.97 for ``access()`` of
    ``/proc/self/fd/N`` (``python -m timeit -s "from floatlock.nfs import fsuid; import os;
    fd = os.open(PATH, os.O_RDONLY)" "fsuid.may(fd, os.R_OK)"``, and ``os.access`` of the
    /proc path).  Raises IdentityError without faccessat2."""
    if not FACCESSAT2:
        raise IdentityError("faccessat2 is unavailable: cannot check permission as the caller")
    return _faccessat2(fd, mode) == 0


def current_fsids() -> tuple[int, int]:
    """The calling thread's (fsuid, fsgid)."""
    return _setfsuid(_NO_CHANGE), _setfsgid(_NO_CHANGE)


def _switch(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    # Groups and gid first: once the fsuid is not 0 nothing else matters for permission, and
    # switching back goes the other way (uid first) so root's capabilities are regained first.
    try:
        if groups != _thread.groups:
            _setgroups(groups)
        _setfsgid(gid)
        _setfsuid(uid)
        if current_fsids() != (uid, gid):
            raise IdentityError(f"could not become fsuid {uid} fsgid {gid}")
    except BaseException:
        _back_to_root()  # whatever part of the switch happened is undone
        raise


def _back_to_root() -> None:
    _setfsuid(0)
    _setfsgid(0)
    if current_fsids() != (0, 0):
        raise IdentityError("could not return to fsuid 0")
    if not LAZY_GROUPS:
        base_groups()


class acting_as:  # lower case: used like the function it replaced
    """Context: the thread's filesystem identity is ``ident`` for the body; then fsuid and
    fsgid 0 again (groups stay until a caller with other groups comes: module docstring).

    A class rather than a ``@contextmanager`` generator: it runs around every NFS call that
    touches a name, and the generator's machinery cost about 1 us of the round trip."""

    __slots__ = ("_ident", "_switched")

    def __init__(self, ident: Identity) -> None:
        self._ident = ident
        self._switched = False

    def __enter__(self) -> None:
        ident = self._ident
        if ident.uid == 0 and ident.gid == 0:
            return
        _switch(ident.uid, ident.gid, ident.groups)
        self._switched = True

    def __exit__(self, *exc: object) -> None:
        if self._switched:
            self._switched = False
            _back_to_root()


def base_groups() -> tuple[int, ...]:
    """Put the thread's supplementary groups back to the daemon's own (tests, and code that
    must show the process's groups); a no-op when they are already."""
    if _thread.groups != DAEMON_GROUPS:
        _setgroups(DAEMON_GROUPS)
    return DAEMON_GROUPS


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
