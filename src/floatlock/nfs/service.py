"""NFSv3 (100003 v3) and MOUNT v3 (100005 v3) on a Dispatcher: the asyncio adapter.

:class:`NfsServer` owns the resolver (shared with NLM: pass ``server.resolver`` to lockd as
its ``FileResolver``), the export access cache and a pool of worker threads
(:mod:`floatlock.nfs.workers`: one job queue, results delivered to the loop in batches).
Each call is decoded by the dispatcher, then run in a worker thread: the worker resolves the
handle as root and switches its own filesystem identity to the caller for the syscalls
(:mod:`floatlock.nfs.fsuid`), so the event loop never blocks on the disk and never changes
identity.

**Inline metadata** (``inline_metadata``, ``[nfs] inline_metadata`` in the configuration):
GETATTR, ACCESS, FSINFO and PATHCONF of a handle already in the resolver's descriptor cache,
LOOKUP and CREATE in a directory whose handle is in it, and READ of a file whose descriptor is
in the open-file cache, run on the event loop thread itself, skipping the hop to a worker and
back (which costs more than these calls).  The loop thread switches its own fsuid, fsgid and
groups to the caller for the syscalls and back to root (:mod:`floatlock.nfs.fsuid`); the call is
synchronous from start to end, so no other request interleaves with the borrowed identity.  A
handle not in the cache (``open_by_handle_at`` may read the disk) goes to a worker as usual.
LOOKUP inline is one ``fstatat`` of the name as the caller; a child whose inode is not in the
cache yet is opened (``O_PATH``) and named (``name_to_handle_at``) inline too, about 7 us: both
walk the dentry the ``fstatat`` just brought into the dcache.  CREATE inline answers only a name
that exists and is left unchanged (retransmits, ``open(O_CREAT)`` of an existing file: ops_create
``_create_existing``); whatever would create or truncate goes to a worker, from the start.  READ
inline reads with ``preadv2(RWF_NOWAIT)``, which fails rather than wait for the disk: data not
all in the page cache is read by a worker.  Every inline path raises ``NotCached`` before it
changed anything, and the worker then runs the call from the start.  The price: a filesystem
whose ``fstat`` can block (a cluster filesystem waiting for a lock held by another node, an
NFS-backed export with a dead server) stalls every client while it blocks, so turn it off for
such exports.  FSSTAT always goes to a worker (``statfs`` of a cluster filesystem is a
cluster-wide operation).  Default: on (``bench.nfs_io`` on 2 CPUs, 2 workers: GETATTR over TCP
25,900 calls/s at 1 in flight and 67,100 at 32, against 5,700 and 23,600 through a worker;
LOOKUP at 32 in flight 12,600 -> 31,500, CREATE of an existing file 11,400 -> ~20,000, READ of 1
MiB at 1 in flight 1,600 -> ~2,050 MiB/s).

**READ over TCP** answers with the reply in pieces (``rpc.parts.EncodedParts``): the head,
then the buffer the data was read into, or on the loop the data's place in the file's mapping
(:mod:`floatlock.nfs.filemap`), written to the socket with one ``writev`` by the TCP
transport; the data is never copied in user space.  Over UDP the reply is one datagram,
joined (at most 32 KiB).

Procedures that change state are registered non-idempotent (RFC 1813 section 4.4 "non-
idempotent procedures": CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK; SETATTR and
WRITE too, which Linux nfsd also caches), so the duplicate request cache answers a
retransmission with the first reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from floatlock.nfs import fsuid, ops_attr, ops_create, ops_io, ops_lookup, ops_readdir, ops_remove
from floatlock.nfs.context import Caller, ExportAccess, Request, ServerState
from floatlock.nfs.exports import Export
from floatlock.nfs.malloc import tune_for_large_buffers
from floatlock.nfs.mount import MountTable
from floatlock.nfs.openfiles import OpenFiles
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_args import (
    AccessArgs,
    CreateArgs,
    FhArgs,
    LinkArgs,
    MkdirArgs,
    MknodArgs,
    ReadArgs,
    ReaddirArgs,
    RenameArgs,
    SetattrArgs,
    SymlinkArgs,
    WriteArgs,
)
from floatlock.nfs.proto_mount import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    MountProc,
    MountRes,
    decode_dirpath,
    encode_exportlist,
    encode_mountlist,
)
from floatlock.nfs.proto_res_io import ReadRes
from floatlock.nfs.resolver import NotCached, Resolver
from floatlock.nfs.shortcuts import Shortcuts
from floatlock.nfs.workers import Workers
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.parts import EncodedParts

log = logging.getLogger("floatlock.nfs")

DEFAULT_WORKERS = 2  # on 2 CPUs, more threads only fight over the GIL (bench.nfs_io)
DEFAULT_INLINE_METADATA = True
INLINE_PROCEDURES = frozenset(
    {"GETATTR", "ACCESS", "FSINFO", "PATHCONF", "LOOKUP", "CREATE", "READ"}
)

A = TypeVar("A")
R = TypeVar("R")


def _encode(r: Any) -> bytes:
    return r.encode()  # type: ignore[no-any-return]


def _read3(req: Request, a: ReadArgs) -> ReadRes | EncodedParts:
    """READ; over TCP a successful reply in pieces, its data sent from the read buffer."""
    res = ops_io.read3(req, a)
    if res.status == Nfsstat3.OK and req.caller.transport == "tcp":
        return EncodedParts(res.parts())
    return res


#: What the wire's names decode with (``Decoder.string``, ``DirOpArgs.decode_at``: UTF-8 with
#: surrogateescape, which round-trips any bytes) must be what the os module encodes them with.
_NAME_ENCODING = ("utf-8", "surrogateescape")


class NameEncodingError(ValueError):
    """Python's filesystem encoding would not give back the bytes a client sent as a name."""


class NfsServer:
    """NFSv3 and MOUNT v3 over local directories.

    Args:
        exports: what to serve (from :func:`~floatlock.nfs.exports.parse_exports` or config).
        key: the handle signing key, the same on every node (see ``fhandle.load_handle_key``).
        workers: threads doing the file system calls.
        resolve_names: match host-name client specs with DNS (off: addresses only).
        inline_metadata: cheap metadata calls of cached handles on the loop thread (see the
            module docstring).
    """

    def __init__(
        self,
        exports: list[Export],
        key: bytes,
        *,
        workers: int = DEFAULT_WORKERS,
        resolve_names: bool = True,
        inline_metadata: bool = DEFAULT_INLINE_METADATA,
    ) -> None:
        if (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()) != _NAME_ENCODING:
            # Names travel as bytes; str paths are encoded with Python's filesystem encoding,
            # so any other would look up other names than the ones the client sent.
            raise NameEncodingError(
                f"file names would be encoded as {sys.getfilesystemencoding()}, not as the"
                " bytes clients send: start Python in UTF-8 mode (PYTHONUTF8=1 or -X utf8)"
            )
        if not fsuid.FACCESSAT2:
            raise fsuid.IdentityError(
                "the kernel does not answer faccessat2 (Linux 5.8 or later, not refused by a"
                " seccomp filter): floatlock cannot check permission as the NFS caller"
            )
        self.inline_metadata = inline_metadata
        self.resolver = Resolver(exports, key)
        self.access = ExportAccess(resolve_names=resolve_names)
        self.files = OpenFiles()
        self.state = ServerState(self.resolver, self.access, os.urandom(8), self.files)
        self.mounts = MountTable(self.resolver, self.access)
        self.shortcuts = Shortcuts(self.resolver, self.access)
        self._pool = Workers(workers, "nfs")
        # 1 MiB READ/WRITE records must not page-fault fresh memory on every call.
        tune_for_large_buffers()

    def close(self) -> None:
        self._pool.close()
        self.files.close()
        self.resolver.close()

    def _caller(self, call: Call) -> Caller:
        client = call.client
        return Caller(call.auth, str(client[0]), int(client[1]), call.transport)

    def _nfs(
        self,
        name: str,
        fn: Callable[[Request, A], R],
        decode: Callable[..., A],
        idem: bool = True,
        decode_at: Callable[[bytes, int], A] | None = None,
        shortcut: Callable[[bytes, Call], bytes | None] | None = None,
    ) -> Procedure[A, R]:
        state, submit, caller = self.state, self._pool.submit, self._caller

        # A worker's future is the handler's result itself (the dispatcher chains the reply
        # to it), not a coroutine awaiting it: no Task per call.
        def handler(args: A, call: Call) -> asyncio.Future[R]:
            return submit(fn, Request(state, caller(call)), args)

        if not (self.inline_metadata and name in INLINE_PROCEDURES):
            return Procedure(name, handler, decode, _encode, idem, decode_at)

        def inline(args: A, call: Call) -> R | asyncio.Future[R]:
            c = caller(call)
            try:
                return fn(Request(state, c, cached_only=True), args)
            except NotCached:  # nothing was done yet: the worker does it all
                return submit(fn, Request(state, c), args)

        return Procedure(name, inline, decode, _encode, idem, decode_at, shortcut=shortcut)

    def nfs_procedures(self) -> dict[int, Procedure[Any, Any]]:
        p, fast = self._nfs, self.shortcuts
        return {
            # decode_at: the handle-only and LOOKUP arguments decode without a Decoder.
            1: p(
                "GETATTR", ops_attr.getattr3, FhArgs.decode, True, FhArgs.decode_at, fast.getattr3
            ),
            2: p("SETATTR", ops_attr.setattr3, SetattrArgs.decode, False),
            3: p(
                "LOOKUP",
                ops_lookup.lookup3,
                DirOpArgs.decode,
                True,
                DirOpArgs.decode_at,
                fast.lookup3,
            ),
            4: p("ACCESS", ops_attr.access3, AccessArgs.decode, True, None, fast.access3),
            5: p("READLINK", ops_io.readlink3, FhArgs.decode, True, FhArgs.decode_at),
            6: p("READ", _read3, ReadArgs.decode),
            # decode_at: the data stays a view of the record, not a 1 MiB copy.
            7: p("WRITE", ops_io.write3, WriteArgs.decode, False, WriteArgs.decode_at),
            8: p("CREATE", ops_create.create3, CreateArgs.decode, False),
            9: p("MKDIR", ops_create.mkdir3, MkdirArgs.decode, False),
            10: p("SYMLINK", ops_create.symlink3, SymlinkArgs.decode, False),
            11: p("MKNOD", ops_create.mknod3, MknodArgs.decode, False),
            12: p("REMOVE", ops_remove.remove3, DirOpArgs.decode, False),
            13: p("RMDIR", ops_remove.rmdir3, DirOpArgs.decode, False),
            14: p("RENAME", ops_remove.rename3, RenameArgs.decode, False),
            15: p("LINK", ops_create.link3, LinkArgs.decode, False),
            16: p("READDIR", ops_readdir.readdir3, ReaddirArgs.decode),
            17: p("READDIRPLUS", ops_readdir.readdir3, ReaddirArgs.decode_plus),
            18: p("FSSTAT", ops_attr.fsstat3, FhArgs.decode, True, FhArgs.decode_at),
            19: p("FSINFO", ops_attr.fsinfo3, FhArgs.decode, True, FhArgs.decode_at),
            20: p("PATHCONF", ops_attr.pathconf3, FhArgs.decode, True, FhArgs.decode_at),
            21: p("COMMIT", ops_io.commit3, ReadArgs.decode),
        }

    # -- MOUNT -----------------------------------------------------------------------------

    async def _mnt(self, path: str, call: Call) -> MountRes:
        c = self._caller(call)
        return await self._pool.submit(self.mounts.mnt, path, c.ip, c.port)

    def _umnt(self, path: str, call: Call) -> None:
        self.mounts.umnt(path, self._caller(call).ip)

    def _umntall(self, _args: None, call: Call) -> None:
        self.mounts.umntall(self._caller(call).ip)

    def _dump(self, _args: None, _call: Call) -> bytes:
        return encode_mountlist(self.mounts.dump())

    def _export(self, _args: None, _call: Call) -> bytes:
        return encode_exportlist(self.mounts.exports())

    def mount_procedures(self) -> dict[int, Procedure[Any, Any]]:
        raw: Callable[[bytes], bytes] = bytes
        return {
            MountProc.MNT: Procedure("MNT", self._mnt, decode_dirpath, _encode),
            MountProc.DUMP: Procedure("DUMP", self._dump, None, raw),
            MountProc.UMNT: Procedure("UMNT", self._umnt, decode_dirpath),
            MountProc.UMNTALL: Procedure("UMNTALL", self._umntall),
            MountProc.EXPORT: Procedure("EXPORT", self._export, None, raw),
        }

    def register(self, dispatcher: Dispatcher) -> None:
        """Register NFS 100003 v3 and MOUNT 100005 v3 on ``dispatcher``."""
        dispatcher.register(NFS_PROGRAM, NFS_V3, self.nfs_procedures(), "nfs")
        dispatcher.register(MOUNT_PROGRAM, MOUNT_V3, self.mount_procedures(), "mountd")
