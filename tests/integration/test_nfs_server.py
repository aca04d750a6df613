"""NFSv3 + MOUNT v3 end to end: a real server on loopback, a real RPC client, UDP and TCP.

The export is a fresh directory under the system temp dir (a real filesystem with kernel file
handles).  Needs root: handles are opened with open_by_handle_at and identities switched with
setfsuid.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from floatlock.net.client import RpcClient
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.nfs import filemap
from floatlock.nfs.client import ROOT_CRED, MountClient, NfsClient
from floatlock.nfs.exports import parse_exports
from floatlock.nfs.fhandle import name_to_handle
from floatlock.nfs.handles import HandleCodec
from floatlock.nfs.proto import (
    ACCESS3_EXECUTE,
    ACCESS3_LOOKUP,
    ACCESS3_MODIFY,
    ACCESS3_READ,
    CreateMode,
    DirOpArgs,
    Ftype3,
    Nfsstat3,
    StableHow,
)
from floatlock.nfs.proto_args import CreateArgs, MknodArgs
from floatlock.nfs.proto_attr import NfsTime, Sattr3
from floatlock.nfs.proto_mount import Mountstat3
from floatlock.nfs.service import NfsServer
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AuthSys

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

KEY = b"k" * 32
USER = AuthSys(0, "client", 1000, 1000, (1000,))


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), 120)

    return asyncio.run(bounded())


@dataclass
class Env:
    root: Path
    outside: Path
    server: NfsServer
    udp_port: int
    tcp_port: int
    root_fh: bytes = b""

    async def client(
        self, transport: str = "tcp", cred: AuthSys | None = ROOT_CRED
    ) -> tuple[RpcClient, NfsClient]:
        port = self.tcp_port if transport == "tcp" else self.udp_port
        rpc = await RpcClient.connect("127.0.0.1", port, transport)  # type: ignore[arg-type]
        return rpc, NfsClient(rpc, cred)


@asynccontextmanager
async def serving(exports_text: str = "{root} 127.0.0.1(rw,insecure)") -> AsyncIterator[Env]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        root = base / "export"
        outside = base / "outside"
        root.mkdir(mode=0o777)
        outside.mkdir()
        os.chmod(root, 0o777)
        exports = parse_exports(exports_text.format(root=root))
        server = NfsServer(exports, KEY, workers=4, resolve_names=False)
        dispatcher = Dispatcher()
        server.register(dispatcher)
        udp = UdpServer(dispatcher, "127.0.0.1", 0)
        await udp.start()
        tcp = TcpServer(dispatcher, "127.0.0.1", 0, max_record=(1 << 20) + 4096)
        await tcp.start()
        try:
            env = Env(root, outside, server, udp.port, tcp.port)
            env.root_fh = server.resolver.roots[0].root_fh
            yield env
        finally:
            await tcp.close()
            udp.close()
            server.close()


def test_mount_export_dump_umnt() -> None:
    async def main() -> None:
        async with serving() as env:
            rpc = await RpcClient.connect("127.0.0.1", env.tcp_port, "tcp")
            try:
                m = MountClient(rpc)
                res = await m.mnt(str(env.root))
                assert res.status == Mountstat3.OK
                assert res.fh == env.root_fh and res.flavors == (1,)
                assert [(e.hostname, e.directory) for e in await m.dump()] == [
                    ("127.0.0.1", str(env.root))
                ]
                exports = await m.exports()
                assert [(x.directory, x.groups) for x in exports] == [
                    (str(env.root), ("127.0.0.1",))
                ]
                assert (await m.mnt(str(env.outside))).status == Mountstat3.NOENT
                (env.root / "sub").mkdir()
                sub = await m.mnt(f"{env.root}/sub")
                assert sub.status == Mountstat3.OK and sub.fh != env.root_fh
                assert (await m.mnt(f"{env.root}/../outside")).status == Mountstat3.NOENT
                await m.umnt(str(env.root))
                assert [e.directory for e in await m.dump()] == [f"{env.root}/sub"]
                await m.umntall()
                assert await m.dump() == []
            finally:
                await rpc.close()

    run(main)


def test_mount_refused_for_unlisted_client_and_insecure_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        text = "{root} 127.0.0.2(rw,insecure)\n{root}/../outside 127.0.0.1(rw)"
        async with serving(text) as env:
            rpc = await RpcClient.connect("127.0.0.1", env.tcp_port, "tcp")
            try:
                m = MountClient(rpc)
                assert (await m.mnt(str(env.root))).status == Mountstat3.ACCES
                # "secure" (the default) wants a reserved source port; ours is ephemeral.
                assert (await m.mnt(str(env.outside))).status == Mountstat3.ACCES
                # NFS calls with the handle are refused too.
                nfs = NfsClient(rpc)
                assert (await nfs.getattr(env.root_fh)).status == Nfsstat3.ACCES
            finally:
                await rpc.close()
            priv = await RpcClient.connect("127.0.0.1", env.tcp_port, "tcp", privileged=True)
            try:
                assert (await MountClient(priv).mnt(str(env.outside))).status == Mountstat3.OK
            finally:
                await priv.close()

    run(main)
    assert any("not in the export's client list" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_file_lifecycle(transport: str) -> None:
    async def main() -> None:
        async with serving() as env:
            rpc, nfs = await env.client(transport)
            try:
                await nfs.null()
                root = env.root_fh
                cr = await nfs.create(
                    CreateArgs(DirOpArgs(root, "a.bin"), CreateMode.GUARDED, Sattr3(mode=0o640))
                )
                assert cr.status == Nfsstat3.OK and cr.fh is not None and cr.attr is not None
                assert cr.attr.mode == 0o640 and cr.attr.type == Ftype3.REG
                assert cr.dir_wcc.before is not None and cr.dir_wcc.after is not None
                fh = cr.fh
                again = await nfs.create(
                    CreateArgs(DirOpArgs(root, "a.bin"), CreateMode.GUARDED, Sattr3())
                )
                assert again.status == Nfsstat3.EXIST
                lk = await nfs.lookup(root, "a.bin")
                assert lk.status == Nfsstat3.OK and lk.fh == fh

                data = os.urandom(200_000)
                chunk = 32768
                verfs = set()
                for off in range(0, len(data), chunk):
                    w = await nfs.write(fh, off, data[off : off + chunk])
                    assert w.status == Nfsstat3.OK and w.count == len(data[off : off + chunk])
                    assert w.committed == StableHow.UNSTABLE
                    assert w.wcc.after is not None and w.wcc.after.size >= off
                    verfs.add(w.verf)
                c = await nfs.commit(fh)
                assert c.status == Nfsstat3.OK and {c.verf} == verfs
                got = b""
                while True:
                    r = await nfs.read(fh, len(got), chunk)
                    assert r.status == Nfsstat3.OK
                    got += r.data
                    if r.eof:
                        break
                assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
                assert (env.root / "a.bin").read_bytes() == data

                rn = await nfs.rename(root, "a.bin", root, "b.bin")
                assert rn.status == Nfsstat3.OK and rn.to_wcc.after is not None
                assert (await nfs.lookup(root, "a.bin")).status == Nfsstat3.NOENT
                assert (await nfs.getattr(fh)).status == Nfsstat3.OK  # handle survives rename

                ln = await nfs.link(fh, root, "c.bin")
                assert ln.status == Nfsstat3.OK and ln.attr is not None and ln.attr.nlink == 2

                sl = await nfs.symlink(root, "s", "b.bin")
                assert sl.status == Nfsstat3.OK and sl.fh is not None
                assert sl.attr is not None and sl.attr.type == Ftype3.LNK
                rl = await nfs.readlink(sl.fh)
                assert rl.status == Nfsstat3.OK and rl.target == "b.bin"
                assert (await nfs.readlink(fh)).status == Nfsstat3.INVAL

                md = await nfs.mkdir(root, "d", Sattr3(mode=0o750))
                assert md.status == Nfsstat3.OK and md.attr is not None
                assert md.attr.type == Ftype3.DIR and md.attr.mode == 0o750
                assert md.fh is not None
                inner = await nfs.create(
                    CreateArgs(DirOpArgs(md.fh, "x"), CreateMode.UNCHECKED, Sattr3())
                )
                assert inner.status == Nfsstat3.OK
                assert (await nfs.rmdir(root, "d")).status == Nfsstat3.NOTEMPTY
                assert (await nfs.remove(md.fh, "x")).status == Nfsstat3.OK
                assert (await nfs.remove(root, "d")).status == Nfsstat3.ISDIR
                assert (await nfs.rmdir(root, "d")).status == Nfsstat3.OK
                assert (await nfs.lookup(root, "d")).status == Nfsstat3.NOENT

                rm = await nfs.remove(root, "b.bin")
                assert rm.status == Nfsstat3.OK and rm.wcc.before is not None
                assert (await nfs.getattr(fh)).status == Nfsstat3.OK  # still linked as c.bin
                assert (await nfs.remove(root, "c.bin")).status == Nfsstat3.OK
                assert (await nfs.getattr(fh)).status == Nfsstat3.STALE
                assert (await nfs.read(fh, 0, 10)).status == Nfsstat3.STALE

                fi = await nfs.fsinfo(root)
                assert fi.status == Nfsstat3.OK
                want = 32768 if transport == "udp" else 1 << 20
                assert fi.rtmax == fi.wtmax == want
                fs = await nfs.fsstat(root)
                assert fs.status == Nfsstat3.OK and fs.tbytes >= fs.fbytes >= fs.abytes > 0
                pc = await nfs.pathconf(root)
                assert pc.status == Nfsstat3.OK and pc.name_max == 255
            finally:
                await rpc.close()

    run(main)


def test_readdir_many_entries_with_cookies() -> None:
    async def main() -> None:
        async with serving() as env:
            names = {f"entry-{i:04d}-{'x' * (i % 37)}" for i in range(1000)}
            for n in names:
                (env.root / n).touch()
            rpc, nfs = await env.client("tcp")
            try:
                seen: list[str] = []
                cookie, verf, calls = 0, b"\0" * 8, 0
                while True:
                    r = await nfs.readdir(env.root_fh, cookie, verf, count=4096)
                    assert r.status == Nfsstat3.OK and r.entries
                    calls += 1
                    seen += [e.name for e in r.entries]
                    cookie, verf = r.entries[-1].cookie, r.verf
                    if r.eof:
                        break
                assert calls > 5
                assert sorted(seen) == sorted([*names, ".", ".."])

                # READDIRPLUS: handles and attributes agree with LOOKUP.
                plus: dict[str, Any] = {}
                cookie, verf = 0, b"\0" * 8
                while True:
                    r = await nfs.readdirplus(env.root_fh, cookie, verf, 2048, 8192)
                    assert r.status == Nfsstat3.OK
                    plus.update({e.name: e for e in r.entries})
                    cookie, verf = r.entries[-1].cookie, r.verf
                    if r.eof:
                        break
                assert set(plus) == {*names, ".", ".."}
                for name in list(names)[:20]:
                    e = plus[name]
                    lk = await nfs.lookup(env.root_fh, name)
                    assert e.fh == lk.fh and e.attr is not None and lk.attr is not None
                    assert e.attr.fileid == lk.attr.fileid == e.fileid

                # A directory that changed invalidates the verifier of a listing in progress.
                first = await nfs.readdir(env.root_fh, 0, b"\0" * 8, count=1024)
                assert not first.eof
                os.utime(env.root, ns=(1, 1))  # a change of the directory's mtime
                stale = await nfs.readdir(env.root_fh, first.entries[-1].cookie, first.verf)
                assert stale.status == Nfsstat3.BAD_COOKIE
                small = await nfs.readdir(env.root_fh, 0, b"\0" * 8, count=100)
                assert small.status == Nfsstat3.TOOSMALL
            finally:
                await rpc.close()

    run(main)


def test_setattr_and_guard() -> None:
    async def main() -> None:
        async with serving("{root} 127.0.0.1(rw,insecure,no_root_squash)") as env:
            (env.root / "f").write_bytes(b"0123456789")
            rpc, nfs = await env.client("udp")
            try:
                fh = (await nfs.lookup(env.root_fh, "f")).fh
                r = await nfs.setattr(fh, Sattr3(mode=0o600, size=4, mtime=NfsTime(1000, 5)))
                assert r.status == Nfsstat3.OK and r.wcc.before is not None
                assert r.wcc.after is not None
                assert r.wcc.after.mode == 0o600 and r.wcc.after.size == 4
                assert r.wcc.after.mtime == NfsTime(1000, 5)
                st = os.stat(env.root / "f")
                assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 4
                bad = await nfs.setattr(fh, Sattr3(mode=0o644), guard=NfsTime(1, 2))
                assert bad.status == Nfsstat3.NOT_SYNC
                assert stat.S_IMODE(os.stat(env.root / "f").st_mode) == 0o600
                ctime = r.wcc.after.ctime
                ok = await nfs.setattr(fh, Sattr3(mode=0o644, uid=1000), guard=ctime)
                assert ok.status == Nfsstat3.OK
                assert os.stat(env.root / "f").st_uid == 1000
            finally:
                await rpc.close()

    run(main)


def test_permissions_enforced_as_squashed_caller() -> None:
    async def main() -> None:
        async with serving() as env:
            secret = env.root / "secret"
            secret.write_bytes(b"root only")
            os.chmod(secret, 0o600)
            mine = env.root / "mine"
            mine.write_bytes(b"user data")
            os.chown(mine, 1000, 1000)
            os.chmod(mine, 0o600)
            rpc, as_root = await env.client("tcp")  # uid 0: root_squash makes it 65534
            try:
                user = NfsClient(rpc, USER)
                fh = (await as_root.lookup(env.root_fh, "secret")).fh
                assert (await as_root.read(fh, 0, 100)).status == Nfsstat3.ACCES
                assert (await user.read(fh, 0, 100)).status == Nfsstat3.ACCES
                acc = await user.access(fh, ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXECUTE)
                assert acc.status == Nfsstat3.OK and acc.access == 0
                assert (await user.write(fh, 0, b"x")).status == Nfsstat3.ACCES
                assert (await user.remove(env.root_fh, "nonexistent")).status == Nfsstat3.NOENT
                mfh = (await user.lookup(env.root_fh, "mine")).fh
                r = await user.read(mfh, 0, 100)
                assert r.status == Nfsstat3.OK and r.data == b"user data"
                acc = await user.access(mfh, ACCESS3_READ | ACCESS3_MODIFY)
                assert acc.access == ACCESS3_READ | ACCESS3_MODIFY
                assert (await as_root.read(mfh, 0, 100)).status == Nfsstat3.ACCES
                # Files a squashed user creates belong to them.
                cr = await user.create(
                    CreateArgs(DirOpArgs(env.root_fh, "new"), CreateMode.UNCHECKED, Sattr3())
                )
                assert cr.status == Nfsstat3.OK and cr.attr is not None
                assert (cr.attr.uid, cr.attr.gid) == (1000, 1000)
                cr = await as_root.create(
                    CreateArgs(DirOpArgs(env.root_fh, "anon"), CreateMode.UNCHECKED, Sattr3())
                )
                assert cr.attr is not None and cr.attr.uid == 65534
                # The owner may write a file whose mode forbids it (Linux nfsd's override).
                os.chmod(mine, 0o400)
                assert (await user.write(mfh, 0, b"U")).status == Nfsstat3.OK
                # No devices for squashed callers; a FIFO is fine.
                dev = await user.mknod(
                    MknodArgs(DirOpArgs(env.root_fh, "null"), Ftype3.CHR, Sattr3(), (1, 3))
                )
                assert dev.status == Nfsstat3.PERM
                fifo = await user.mknod(MknodArgs(DirOpArgs(env.root_fh, "fifo"), Ftype3.FIFO))
                assert fifo.status == Nfsstat3.OK and fifo.attr is not None
                assert fifo.attr.type == Ftype3.FIFO
                # The root directory: user may look up and modify (mode 0777).
                acc = await user.access(env.root_fh, ACCESS3_LOOKUP | ACCESS3_MODIFY)
                assert acc.access == ACCESS3_LOOKUP | ACCESS3_MODIFY
                assert not os.path.exists(env.root / "null")
            finally:
                await rpc.close()

    run(main)


def test_forged_and_foreign_handles_are_refused() -> None:
    async def main() -> None:
        async with serving() as env:
            (env.outside / "private").write_bytes(b"outside the export")
            rpc, nfs = await env.client("tcp")
            try:
                fh = bytearray(env.root_fh)
                fh[10] ^= 1
                assert (await nfs.getattr(bytes(fh))).status == Nfsstat3.BADHANDLE
                assert (await nfs.getattr(b"\1" * 40)).status == Nfsstat3.BADHANDLE
                assert (await nfs.getattr(b"")).status == Nfsstat3.BADHANDLE
                # A correctly signed handle (the attacker has the key) of a directory outside
                # the export on the same filesystem: the containment walk refuses it.
                codec = HandleCodec(KEY)
                export_id = env.server.resolver.roots[0].export.export_id
                fd = os.open(env.outside, os.O_PATH)
                try:
                    htype, kernel = name_to_handle(fd)
                finally:
                    os.close(fd)
                outside_fh = codec.encode(export_id, htype, kernel)
                assert (await nfs.getattr(outside_fh)).status == Nfsstat3.STALE
                assert (await nfs.lookup(outside_fh, "private")).status == Nfsstat3.STALE
                # Unknown export id.
                assert (await nfs.getattr(codec.encode(12345, htype, kernel))).status == (
                    Nfsstat3.STALE
                )
                # ".." of the export root is the root itself.
                up = await nfs.lookup(env.root_fh, "..")
                assert up.status == Nfsstat3.OK and up.fh == env.root_fh
            finally:
                await rpc.close()

    run(main)


def test_exclusive_create_retransmission() -> None:
    async def main() -> None:
        async with serving() as env:
            rpc, nfs = await env.client("udp")
            try:
                verf = bytes.fromhex("0123456789abcdef")
                args = CreateArgs(DirOpArgs(env.root_fh, "ex"), CreateMode.EXCLUSIVE, verf=verf)
                first = await nfs.create(args)
                assert first.status == Nfsstat3.OK and first.fh is not None
                # A retransmission that missed the reply cache (new xid): same verifier wins.
                second = await nfs.create(args)
                assert second.status == Nfsstat3.OK and second.fh == first.fh
                other = CreateArgs(
                    DirOpArgs(env.root_fh, "ex"), CreateMode.EXCLUSIVE, verf=b"\0" * 7 + b"\1"
                )
                assert (await nfs.create(other)).status == Nfsstat3.EXIST
                # The client then sets the real attributes, as Linux does.
                done = await nfs.setattr(first.fh, Sattr3(mode=0o644, atime="server"))
                assert done.status == Nfsstat3.OK
                assert done.wcc.after is not None and done.wcc.after.mode == 0o644
            finally:
                await rpc.close()

    run(main)


def test_handles_survive_server_restart() -> None:
    async def main() -> None:
        async with serving() as env:
            (env.root / "keep").write_bytes(b"persistent")
            rpc, nfs = await env.client("tcp")
            try:
                fh = (await nfs.lookup(env.root_fh, "keep")).fh
            finally:
                await rpc.close()
            exports = [r.export for r in env.server.resolver.roots]
            # A second server (another "node") with the same key and export path.
            again = NfsServer(exports, KEY, workers=1, resolve_names=False)
            try:
                obj = again.resolver.open_handle(fh)
                with obj:
                    assert obj.st.st_size == len(b"persistent")
                lf = again.resolver.resolve(fh)
                fd = lf.open(False)
                try:
                    assert os.read(fd, 100) == b"persistent"
                finally:
                    os.close(fd)
                st = os.stat(env.root / "keep")
                assert lf.key == (st.st_dev, st.st_ino)
            finally:
                again.close()

    run(main)


def test_read_only_export() -> None:
    async def main() -> None:
        async with serving("{root} 127.0.0.1(ro,insecure,no_root_squash)") as env:
            (env.root / "f").write_bytes(b"ro")
            rpc, nfs = await env.client("tcp")
            try:
                fh = (await nfs.lookup(env.root_fh, "f")).fh
                assert (await nfs.read(fh, 0, 10)).data == b"ro"
                assert (await nfs.write(fh, 0, b"x")).status == Nfsstat3.ROFS
                assert (await nfs.remove(env.root_fh, "f")).status == Nfsstat3.ROFS
                acc = await nfs.access(fh, ACCESS3_READ | ACCESS3_MODIFY)
                assert acc.access == ACCESS3_READ
            finally:
                await rpc.close()

    run(main)


def _open_inodes() -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every descriptor this process has open."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


OTHER = AuthSys(0, "client", 2000, 2000, (2000,))


def test_cached_descriptors_still_check_each_caller() -> None:
    """READ/WRITE reuse one open descriptor (floatlock.nfs.openfiles), yet every call is
    checked against its own caller and the file's current mode."""

    async def main() -> None:
        async with serving() as env:
            f = env.root / "shared"
            f.write_bytes(b"0123456789")
            os.chown(f, 1000, 1000)
            os.chmod(f, 0o644)
            rpc, _ = await env.client("tcp")
            try:
                owner, other = NfsClient(rpc, USER), NfsClient(rpc, OTHER)
                fh = (await owner.lookup(env.root_fh, "shared")).fh
                assert (await owner.read(fh, 0, 4)).data == b"0123"
                assert (await owner.write(fh, 0, b"A")).status == Nfsstat3.OK
                assert len(env.server.files) == 2  # a read and a write descriptor
                r = await other.read(fh, 0, 4)
                assert r.status == Nfsstat3.OK and r.data == b"A123"
                w = await other.write(fh, 0, b"B")
                assert w.status == Nfsstat3.ACCES and w.wcc.after is not None
                os.chmod(f, 0o600)  # on the server, while the descriptors are cached
                r = await other.read(fh, 0, 4)
                assert r.status == Nfsstat3.ACCES and r.attr is not None
                assert (await owner.read(fh, 0, 4)).data == b"A123"
                os.chmod(f, 0o666)
                assert (await other.write(fh, 1, b"b")).status == Nfsstat3.OK
                os.chmod(f, 0o644)
                assert (await other.write(fh, 1, b"c")).status == Nfsstat3.ACCES
                os.chmod(f, 0o400)  # the owner still writes (nfsd's owner override)
                assert (await owner.write(fh, 2, b"C")).status == Nfsstat3.OK
                assert f.read_bytes() == b"AbC3456789"
                assert len(env.server.files) == 2  # all of it through the cached ones
            finally:
                await rpc.close()

    run(main)


def test_remove_and_rename_over_drop_cached_descriptors() -> None:
    async def main() -> None:
        async with serving("{root} 127.0.0.1(rw,insecure,no_root_squash)") as env:
            rpc, nfs = await env.client("tcp")
            try:
                handles = {}
                for name in ("gone", "old", "new", "local"):
                    cr = await nfs.create(
                        CreateArgs(DirOpArgs(env.root_fh, name), CreateMode.UNCHECKED, Sattr3())
                    )
                    assert cr.status == Nfsstat3.OK and cr.fh is not None
                    handles[name] = cr.fh
                    assert (await nfs.write(cr.fh, 0, name.encode())).status == Nfsstat3.OK
                    assert (await nfs.read(cr.fh, 0, 10)).data == name.encode()
                inode = {n: (env.root / n).stat() for n in handles}
                ident = {n: (s.st_dev, s.st_ino) for n, s in inode.items()}
                assert set(ident.values()) <= _open_inodes()

                assert (await nfs.remove(env.root_fh, "gone")).status == Nfsstat3.OK
                assert ident["gone"] not in _open_inodes()  # space freed at once
                assert (await nfs.read(handles["gone"], 0, 10)).status == Nfsstat3.STALE

                rn = await nfs.rename(env.root_fh, "new", env.root_fh, "old")
                assert rn.status == Nfsstat3.OK
                assert ident["old"] not in _open_inodes()
                assert (await nfs.read(handles["old"], 0, 10)).status == Nfsstat3.STALE
                w = await nfs.write(handles["old"], 0, b"x")
                assert w.status == Nfsstat3.STALE
                assert (await nfs.read(handles["new"], 0, 10)).data == b"new"

                # Removed by a local process: the cached descriptor is noticed and dropped.
                os.unlink(env.root / "local")
                assert (await nfs.read(handles["local"], 0, 10)).status == Nfsstat3.STALE
                assert (await nfs.write(handles["local"], 0, b"x")).status == Nfsstat3.STALE
                assert ident["local"] not in _open_inodes()
            finally:
                await rpc.close()

    run(main)


def test_metadata_is_never_answered_from_a_cache() -> None:
    """GETATTR and LOOKUP ask the kernel every time, through the shortcuts too: a size
    written, a name removed or created by a local process (or another node of a cluster
    filesystem) shows in the very next answer.  (NFS-Ganesha's defaults answer both from
    its metadata cache; bench.nfs_io measures it both ways, see test_bench_ganesha.)"""

    async def main() -> None:
        async with serving("{root} 127.0.0.1(rw,insecure,no_root_squash)") as env:
            assert env.server.inline_metadata  # the shortcuts answer these calls
            rpc, nfs = await env.client("tcp")
            try:
                for name in ("size", "gone"):
                    cr = await nfs.create(
                        CreateArgs(DirOpArgs(env.root_fh, name), CreateMode.UNCHECKED, Sattr3())
                    )
                    assert cr.status == Nfsstat3.OK and cr.fh is not None
                fh = (await nfs.lookup(env.root_fh, "size")).fh
                assert (await nfs.getattr(fh)).attr.size == 0
                (env.root / "size").write_bytes(b"y" * 100)
                assert (await nfs.getattr(fh)).attr.size == 100

                assert (await nfs.lookup(env.root_fh, "gone")).status == Nfsstat3.OK
                (env.root / "gone").unlink()
                assert (await nfs.lookup(env.root_fh, "gone")).status == Nfsstat3.NOENT

                assert (await nfs.lookup(env.root_fh, "new")).status == Nfsstat3.NOENT
                (env.root / "new").touch()
                assert (await nfs.lookup(env.root_fh, "new")).status == Nfsstat3.OK
            finally:
                await rpc.close()

    run(main)


@pytest.mark.skipif(not filemap.available, reason="no cachestat(2) on this machine")
def test_large_reads_over_tcp_are_sent_from_the_mapping_and_stay_coherent() -> None:
    """1 MiB READs over TCP of cached data go out from the file's mapping (nfs/filemap.py):
    the same bytes, and a change made on the server since is what the next READ sees."""

    async def main() -> None:
        async with serving("{root} 127.0.0.1(rw,insecure,no_root_squash)") as env:
            data = os.urandom(3 * (1 << 20) + 12345)
            (env.root / "big").write_bytes(data)
            rpc, nfs = await env.client("tcp")
            try:
                fh = (await nfs.lookup(env.root_fh, "big")).fh
                assert fh is not None
                got = b""
                while True:  # the first READ opens the descriptor in a worker
                    r = await nfs.read(fh, len(got), 1 << 20)
                    assert r.status == Nfsstat3.OK
                    got += r.data
                    if r.eof:
                        break
                assert got == data
                entry = env.server.files.get(fh, False)
                assert entry is not None and len(entry.windows) > 0  # sent from the mapping
                env.server.files.release(entry)
                with open(env.root / "big", "r+b") as f:  # a local writer, and a truncation
                    f.seek(5)
                    f.write(b"local")
                    f.truncate(2 * (1 << 20))
                r = await nfs.read(fh, 0, 1 << 20)
                assert r.data == data[:5] + b"local" + data[10 : 1 << 20]
                r = await nfs.read(fh, 1 << 20, 1 << 20)
                assert r.eof and r.data == data[1 << 20 : 2 << 20]
                assert (await nfs.read(fh, 2 << 20, 1 << 20)).data == b""
            finally:
                await rpc.close()

    run(main)
