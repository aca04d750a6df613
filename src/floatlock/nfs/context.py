"""One NFS request's context: who asks, the export decision, the identity to act as.

:class:`ServerState` is what every operation shares (resolver, export access decisions, the
write verifier, transfer sizes); :class:`Request` is built per call from the RPC credential
and peer address.  ``Request.open`` is the single gate every handle goes through: handle
checks (:mod:`floatlock.nfs.resolver`), then the export's client list (a client not listed is
refused with NFS3ERR_ACCES), the ``secure`` option (a source port >= 1024 is refused with
NFS3ERR_PERM, as Linux nfsd does), ``ro`` for modifying procedures (NFS3ERR_ROFS), and the
squashed identity (:mod:`floatlock.nfs.creds`) the operation then runs as.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from floatlock.nfs.creds import Identity, squash
from floatlock.nfs.errors import NfsError
from floatlock.nfs.exports import Export, ExportOptions
from floatlock.nfs.fsuid import acting_as
from floatlock.nfs.openfiles import OpenFiles
from floatlock.nfs.proto import NAME_MAX, Nfsstat3
from floatlock.nfs.proto_attr import Fattr3, WccAttr
from floatlock.nfs.resolver import Obj, Resolver
from floatlock.rpc.message import AuthSys

log = logging.getLogger("floatlock.nfs")

_UNCHANGED: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
#: The daemon's own filesystem identity is root's: acting as an unsquashed root caller then
#: changes nothing a permission check looks at (fsuid 0 keeps CAP_DAC_OVERRIDE and the other
#: filesystem capabilities whatever the groups), so it is skipped.
_DAEMON_IS_ROOT = os.geteuid() == 0 and os.getegid() == 0

TCP_MAX_IO = 1 << 20  # rtmax/wtmax over TCP
UDP_MAX_IO = 32 << 10  # a READ reply or WRITE call must fit a ~64 KiB datagram


def _forward(name: str) -> Iterable[str]:
    return {str(ai[4][0]) for ai in socket.getaddrinfo(name, None)}


def _reverse(ip: str) -> list[str]:
    try:
        host, aliases, _ = socket.gethostbyaddr(ip)
    except OSError:
        return []
    return [host, *aliases]


class ExportAccess:
    """Which options an export grants a client address; decisions are cached per address."""

    def __init__(self, *, resolve_names: bool = True) -> None:
        self._cache: dict[tuple[int, str], ExportOptions | None] = {}
        self._names = resolve_names

    def options(self, export: Export, ip: str) -> ExportOptions | None:
        key = (export.export_id, ip)
        try:
            return self._cache[key]
        except KeyError:
            pass
        opts = export.options_for(ip, _forward, _reverse) if self._names else export.options_for(ip)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[key] = opts
        return opts

    def forget(self) -> None:
        self._cache.clear()


@dataclass(slots=True)
class ServerState:
    resolver: Resolver
    access: ExportAccess
    write_verf: bytes
    files: OpenFiles  # READ/WRITE descriptors (floatlock.nfs.openfiles)

    def max_io(self, transport: str) -> int:
        return UDP_MAX_IO if transport == "udp" else TCP_MAX_IO


@dataclass(frozen=True, slots=True)
class Caller:
    auth: AuthSys | None
    ip: str
    port: int
    transport: str


class Request:
    """Per-call state: opens handles and runs syscalls as the caller."""

    __slots__ = ("_identity", "cached_only", "caller", "options", "state")

    def __init__(self, state: ServerState, caller: Caller, *, cached_only: bool = False) -> None:
        self.state = state
        self.caller = caller
        self._identity: Identity | None = None
        self.options: ExportOptions | None = None
        # On the event loop thread (service.py, inline_metadata): a handle not in the cache
        # raises resolver.NotCached and the call is handed to a worker instead.
        self.cached_only = cached_only

    def admit(self, export: Export, *, modify: bool = False) -> ExportOptions:
        c = self.caller
        opts = self.state.access.options(export, c.ip)
        if opts is None:
            log.warning("%s is not allowed to use export %s", c.ip, export.path)
            raise NfsError(Nfsstat3.ACCES, "client not in export list")
        if opts.secure and c.port >= 1024:
            log.warning("%s: request from insecure port %d for %s", c.ip, c.port, export.path)
            raise NfsError(Nfsstat3.PERM, "insecure port")
        if modify and not opts.rw:
            raise NfsError(Nfsstat3.ROFS, "read-only export")
        self.options = opts
        self._identity = None  # squashed when first needed (GETATTR never asks)
        return opts

    @property
    def identity(self) -> Identity | None:
        """The caller after the admitting export's squashing (None before :meth:`admit`)."""
        ident = self._identity
        if ident is None:
            opts = self.options
            if opts is None:
                return None
            ident = self._identity = squash(
                self.caller.auth, opts.squash, opts.anonuid, opts.anongid
            )
        return ident

    def open(self, fh: bytes, *, modify: bool = False) -> Obj:
        """Resolve ``fh`` and admit the caller to its export (see the module docstring)."""
        obj = self.state.resolver.open_handle(fh, cached_only=self.cached_only)
        try:
            self.admit(obj.root.export, modify=modify)
        except BaseException:
            obj.close()
            raise
        return obj

    def acting(self) -> contextlib.AbstractContextManager[None]:
        """Context: the thread's filesystem identity is the caller's (fsuid.acting_as)."""
        ident = self.identity
        assert ident is not None, "open a handle first"
        return acting_for(ident)

    @property
    def max_io(self) -> int:
        return self.state.max_io(self.caller.transport)


def acting_for(ident: Identity) -> contextlib.AbstractContextManager[None]:
    """Context: the thread's filesystem identity is ``ident`` (fsuid.acting_as), or nothing
    at all when that would change nothing (an unsquashed root caller)."""
    if ident.uid == 0 and ident.gid == 0 and _DAEMON_IS_ROOT:
        return _UNCHANGED
    return acting_as(ident)


def attr_of(obj: Obj) -> Fattr3:
    return Fattr3.from_stat(obj.st, obj.root.export.export_id)


def post_attr(obj: Obj) -> Fattr3 | None:
    """post_op_attr (RFC 1813 section 2.6): fresh attributes, or none if they cannot be had."""
    try:
        return Fattr3.from_stat(obj.restat(), obj.root.export.export_id)
    except OSError:
        return None


def pre_attr(obj: Obj) -> WccAttr:
    return WccAttr.from_stat(obj.st)


def status_of(e: BaseException) -> Nfsstat3:
    if isinstance(e, NfsError):
        return e.status
    if isinstance(e, OSError):
        return NfsError.from_os(e).status
    raise e


def check_name(name: str, *, creating: bool = False) -> None:
    """Names must be one path component (RFC 1813 section 2.5 filename3)."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise NfsError(Nfsstat3.NAMETOOLONG)
    if not name or "/" in name or "\0" in name:
        raise NfsError(Nfsstat3.ACCES, f"bad name {name!r}")
    if creating and name in (".", ".."):
        raise NfsError(Nfsstat3.EXIST)
