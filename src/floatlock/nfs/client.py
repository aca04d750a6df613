"""A small typed NFSv3 / MOUNT v3 client over :class:`~floatlock.net.client.RpcClient`.

For tests, benchmarks and tools: each method encodes the arguments with the same codecs the
server decodes with and returns the decoded result type.  Not a file system client: no caching.
"""

from __future__ import annotations

from floatlock.net.client import RpcClient
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, StableHow
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
from floatlock.nfs.proto_attr import NO_SATTR, NfsTime, Sattr3
from floatlock.nfs.proto_dirlist import ReaddirRes
from floatlock.nfs.proto_mount import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    ExportNode,
    MountEntry,
    MountProc,
    MountRes,
    decode_exportlist,
    decode_mountlist,
    encode_dirpath,
)
from floatlock.nfs.proto_res import (
    AccessRes,
    CreateRes,
    GetattrRes,
    LinkRes,
    LookupRes,
    RenameRes,
    WccRes,
)
from floatlock.nfs.proto_res_fs import FsinfoRes, FsstatRes, PathconfRes
from floatlock.nfs.proto_res_io import CommitRes, ReadlinkRes, ReadRes, WriteRes
from floatlock.rpc.message import AuthSys
from floatlock.xdr import Decoder, Encoder

ROOT_CRED = AuthSys(0, "floatlock-test", 0, 0, ())

_Args = (
    FhArgs
    | SetattrArgs
    | DirOpArgs
    | AccessArgs
    | ReadArgs
    | WriteArgs
    | CreateArgs
    | MkdirArgs
    | SymlinkArgs
    | MknodArgs
    | RenameArgs
    | LinkArgs
    | ReaddirArgs
)


class NfsClient:
    """Typed calls; ``cred`` is the AUTH_SYS credential (None: AUTH_NONE)."""

    def __init__(self, rpc: RpcClient, cred: AuthSys | None = ROOT_CRED) -> None:
        self.rpc = rpc
        self.cred = cred

    async def raw(self, proc: int, args: _Args) -> Decoder:
        enc = Encoder()
        args.encode(enc)
        return Decoder(
            await self.rpc.call(NFS_PROGRAM, NFS_V3, proc, enc.getvalue(), cred=self.cred)
        )

    async def null(self) -> None:
        await self.rpc.call(NFS_PROGRAM, NFS_V3, 0, b"", cred=self.cred)

    async def getattr(self, fh: bytes) -> GetattrRes:
        return GetattrRes.decode(await self.raw(1, FhArgs(fh)))

    async def setattr(self, fh: bytes, attrs: Sattr3, guard: NfsTime | None = None) -> WccRes:
        return WccRes.decode(await self.raw(2, SetattrArgs(fh, attrs, guard)))

    async def lookup(self, dir_fh: bytes, name: str) -> LookupRes:
        return LookupRes.decode(await self.raw(3, DirOpArgs(dir_fh, name)))

    async def access(self, fh: bytes, bits: int) -> AccessRes:
        return AccessRes.decode(await self.raw(4, AccessArgs(fh, bits)))

    async def readlink(self, fh: bytes) -> ReadlinkRes:
        return ReadlinkRes.decode(await self.raw(5, FhArgs(fh)))

    async def read(self, fh: bytes, offset: int, count: int) -> ReadRes:
        return ReadRes.decode(await self.raw(6, ReadArgs(fh, offset, count)))

    async def write(
        self, fh: bytes, offset: int, data: bytes, stable: StableHow = StableHow.UNSTABLE
    ) -> WriteRes:
        return WriteRes.decode(await self.raw(7, WriteArgs(fh, offset, len(data), stable, data)))

    async def create(self, args: CreateArgs) -> CreateRes:
        return CreateRes.decode(await self.raw(8, args))

    async def mkdir(self, dir_fh: bytes, name: str, attrs: Sattr3 = NO_SATTR) -> CreateRes:
        return CreateRes.decode(await self.raw(9, MkdirArgs(DirOpArgs(dir_fh, name), attrs)))

    async def symlink(self, dir_fh: bytes, name: str, target: str) -> CreateRes:
        args = SymlinkArgs(DirOpArgs(dir_fh, name), Sattr3(), target)
        return CreateRes.decode(await self.raw(10, args))

    async def mknod(self, args: MknodArgs) -> CreateRes:
        return CreateRes.decode(await self.raw(11, args))

    async def remove(self, dir_fh: bytes, name: str) -> WccRes:
        return WccRes.decode(await self.raw(12, DirOpArgs(dir_fh, name)))

    async def rmdir(self, dir_fh: bytes, name: str) -> WccRes:
        return WccRes.decode(await self.raw(13, DirOpArgs(dir_fh, name)))

    async def rename(self, src: bytes, sname: str, dst: bytes, dname: str) -> RenameRes:
        args = RenameArgs(DirOpArgs(src, sname), DirOpArgs(dst, dname))
        return RenameRes.decode(await self.raw(14, args))

    async def link(self, fh: bytes, dir_fh: bytes, name: str) -> LinkRes:
        return LinkRes.decode(await self.raw(15, LinkArgs(fh, DirOpArgs(dir_fh, name))))

    async def readdir(
        self, fh: bytes, cookie: int = 0, verf: bytes = b"\0" * 8, count: int = 4096
    ) -> ReaddirRes:
        return ReaddirRes.decode(await self.raw(16, ReaddirArgs(fh, cookie, verf, count)))

    async def readdirplus(
        self,
        fh: bytes,
        cookie: int = 0,
        verf: bytes = b"\0" * 8,
        dircount: int = 4096,
        maxcount: int = 16384,
    ) -> ReaddirRes:
        args = ReaddirArgs(fh, cookie, verf, maxcount, dircount, True)
        return ReaddirRes.decode(await self.raw(17, args), plus=True)

    async def fsstat(self, fh: bytes) -> FsstatRes:
        return FsstatRes.decode(await self.raw(18, FhArgs(fh)))

    async def fsinfo(self, fh: bytes) -> FsinfoRes:
        return FsinfoRes.decode(await self.raw(19, FhArgs(fh)))

    async def pathconf(self, fh: bytes) -> PathconfRes:
        return PathconfRes.decode(await self.raw(20, FhArgs(fh)))

    async def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> CommitRes:
        return CommitRes.decode(await self.raw(21, ReadArgs(fh, offset, count)))


class MountClient:
    """MOUNT v3 calls."""

    def __init__(self, rpc: RpcClient, cred: AuthSys | None = ROOT_CRED) -> None:
        self.rpc = rpc
        self.cred = cred

    async def _call(self, proc: int, args: bytes = b"") -> Decoder:
        return Decoder(await self.rpc.call(MOUNT_PROGRAM, MOUNT_V3, proc, args, cred=self.cred))

    async def mnt(self, path: str) -> MountRes:
        return MountRes.decode(await self._call(MountProc.MNT, encode_dirpath(path)))

    async def umnt(self, path: str) -> None:
        await self._call(MountProc.UMNT, encode_dirpath(path))

    async def umntall(self) -> None:
        await self._call(MountProc.UMNTALL)

    async def dump(self) -> list[MountEntry]:
        return decode_mountlist(await self._call(MountProc.DUMP))

    async def exports(self) -> list[ExportNode]:
        return decode_exportlist(await self._call(MountProc.EXPORT))
