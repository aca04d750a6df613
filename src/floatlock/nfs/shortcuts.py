"""The common case of the hottest metadata calls, answered straight from the call message.

GETATTR is the call an NFS client makes most (it revalidates its attribute cache with it),
LOOKUP and ACCESS (asked on open when the client's access cache is stale) come next, and
with one call in flight every microsecond of Python is a microsecond of the round trip.  The
general path builds, per call, the decoded arguments, a :class:`~floatlock.nfs.context.Request`
and its caller, an :class:`~floatlock.nfs.resolver.Obj`, the result object and then its bytes.
A shortcut does the same work on the same shared pieces
(:meth:`Resolver.cached <floatlock.nfs.resolver.Resolver.cached>`'s validation,
:class:`~floatlock.nfs.context.ExportAccess`'s decision, the result encoders of
:mod:`floatlock.nfs.proto_res`) without the objects in between: when they came in (the
sixth session), a GETATTR through the dispatcher went from 8.1 to 5.1-5.2 us, a LOOKUP as a
squashed caller from 27.2 to 22.6-22.9, an ACCESS of every bit from 29.1-29.6 to 24.2-24.6
(``python -m bench.nfs_dispatch``; more figures, with their commands, in
``docs/benchmarks.md``).

The rule that keeps it honest: a shortcut answers only the plain success of a call whose handle
is in the cache (and LOOKUP's NFS3ERR_NOENT), and returns None for everything else -- a handle
not cached, one that no longer validates, a client the export refuses, anything to log or to
count -- and the general path then does the whole call again, as if the shortcut had not been
tried. So every error, log line and refusal comes from the general path (the validation both
share may drop a cache entry, and log a directory moved out of the export, once, as the general
path alone would; an exception in a shortcut, a bug, is a SYSTEM_ERR the dispatcher logs as
it logs a handler's), and a shortcut's reply is byte for byte the general path's
(``tests/unit/test_nfs_shortcuts.py`` compares the two on every case). Shortcuts run only where
the general path would answer on the event loop (``inline_metadata``), and only for idempotent
procedures: they bypass the reply cache.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from stat import S_ISDIR

from floatlock.nfs.context import ExportAccess, acting_for
from floatlock.nfs.creds import squash
from floatlock.nfs.exports import ExportOptions
from floatlock.nfs.handlecache import CachedHandle
from floatlock.nfs.ops_attr import granted_access
from floatlock.nfs.proto import MAX_PATH, NAME_MAX, NFS3_FHSIZE, Nfsstat3
from floatlock.nfs.proto_attr import Fattr3
from floatlock.nfs.proto_res import access3resok, getattr3resok, lookup3resok, status_and_attr
from floatlock.nfs.resolver import Resolver
from floatlock.rpc.message import Call, success_header
from floatlock.xdr import XdrError, exactly, opaque_at

__all__ = ["Shortcuts"]


class Shortcuts:
    """The shortcut procedures of one NFS server (its resolver and export decisions)."""

    __slots__ = ("_access", "_cache", "_release", "_resolver")

    def __init__(self, resolver: Resolver, access: ExportAccess) -> None:
        self._resolver = resolver
        self._access = access
        self._cache = resolver.cache
        self._release = resolver.cache.release

    def _admitted(
        self, fh: bytes, call: Call
    ) -> tuple[CachedHandle, os.stat_result, ExportOptions] | None:
        """The validated cache entry of ``fh`` (in use: release it), its attributes and the
        options its export grants the caller; None (nothing held) when ``fh`` is not cached
        or no longer validates, or the export would refuse the caller."""
        hit = self._resolver.cached(fh)
        if hit is None:
            return None
        entry, st = hit
        client = call.client
        try:
            opts = self._access.options(entry.root.export, str(client[0]))
        except BaseException:
            self._release(entry)  # as Request.open does; the dispatcher answers SYSTEM_ERR
            raise
        if opts is None or (opts.secure and client[1] >= 1024):
            self._release(entry)
            return None
        return entry, st, opts

    def getattr3(self, data: bytes, call: Call) -> bytes | None:
        """GETATTR (RFC 1813 section 3.3.1) of a cached handle, for a client the export
        admits: the whole reply; None when the general path must answer."""
        try:
            fh, end = opaque_at(data, call.args, NFS3_FHSIZE)
            exactly(data, end)
        except XdrError:
            return None  # GARBAGE_ARGS, from the general path
        got = self._admitted(fh, call)
        if got is None:
            return None
        entry, st, _ = got
        try:
            fsid = entry.root.export.export_id
            return success_header(call.xid) + getattr3resok(Fattr3.from_stat(st, fsid))
        finally:
            self._release(entry)

    def lookup3(self, data: bytes, call: Call) -> bytes | None:
        """LOOKUP (RFC 1813 section 3.3.3) in a cached directory of a name whose file is
        cached too (a name looked up before), or of a name that does not exist (NFS3ERR_NOENT:
        negative lookups are common, a compiler's include path or a shell's PATH), for a
        client the export admits: the whole reply; None when the general path must answer.
        The name is found as the caller, as the general path does."""
        try:
            fh, pos = opaque_at(data, call.args, NFS3_FHSIZE)
            name, end = opaque_at(data, pos, MAX_PATH)
            exactly(data, end)
        except XdrError:
            return None
        if (
            not name
            or len(name) > NAME_MAX
            or name == b"."
            or name == b".."
            or b"/" in name
            or b"\0" in name
        ):
            # The general path's: refused names, and "." and ".." (the export root's ".." is
            # the root itself).  (A kernel would refuse a name over NAME_MAX too, but not
            # every filesystem need.)
            return None
        got = self._admitted(fh, call)
        if got is None:
            return None
        entry, dst, opts = got
        try:
            if not S_ISDIR(dst.st_mode):
                return None  # NOTDIR (a backstop: the stat below would fail with ENOTDIR)
            root = entry.root
            fsid = root.export.export_id
            try:
                with _as_caller(call, opts):
                    st = os.stat(name, dir_fd=entry.fd, follow_symlinks=False)
            except FileNotFoundError:
                # The status, then the directory's post_op_attr: those of the validation just
                # made (the general path takes them afresh, a microsecond later: either is
                # post-op, and the same unless the directory changed meanwhile).
                dir_attr = Fattr3.from_stat(dst, fsid)
                return success_header(call.xid) + status_and_attr(Nfsstat3.NOENT, dir_attr)
            except OSError:
                return None
            if st.st_dev != root.dev:
                return None  # a mount point: ACCES (a backstop: no entry of it is under root)
            child = self._cache.acquire_inode(root, st.st_dev, st.st_ino)
            if child is None:
                return None
            try:
                attr, dir_attr = Fattr3.from_stat(st, fsid), Fattr3.from_stat(dst, fsid)
                return success_header(call.xid) + lookup3resok(child.fh, attr, dir_attr)
            finally:
                self._release(child)
        finally:
            self._release(entry)

    def access3(self, data: bytes, call: Call) -> bytes | None:
        """ACCESS (RFC 1813 section 3.3.4) of a cached handle, for a client the export
        admits: each bit asked of the kernel as the caller, as the general path does
        (:func:`~floatlock.nfs.ops_attr.granted_access`); the whole reply, or None when the
        general path must answer."""
        try:
            fh, pos = opaque_at(data, call.args, NFS3_FHSIZE)
            exactly(data, pos + 4)
        except XdrError:
            return None
        requested = int.from_bytes(data[pos : pos + 4], "big")
        got = self._admitted(fh, call)
        if got is None:
            return None
        entry, st, opts = got
        try:
            with _as_caller(call, opts):
                granted = granted_access(entry.fd, S_ISDIR(st.st_mode), requested, opts.rw)
            attr = Fattr3.from_stat(st, entry.root.export.export_id)
            return success_header(call.xid) + access3resok(attr, granted)
        finally:
            self._release(entry)


def _as_caller(call: Call, opts: ExportOptions) -> AbstractContextManager[None]:
    """Context: the thread acts as ``call``'s caller after the export's squashing."""
    return acting_for(squash(call.auth, opts.squash, opts.anonuid, opts.anongid))
