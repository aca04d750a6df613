"""The NLM client library and the lock/unlock/test/share/unshare commands, over loopback.

The peer is a small scripted NLM server built here from Dispatcher + UdpServer/TcpServer: it
decodes what the client sent with :mod:`floatlock.nlm.proto`, records it, and answers as the
test tells it (grant, deny, block and later call the client's GRANTED).  Two built-in
portmappers on ephemeral ports stand for the server's and the client's port 111: the server
registers its NLM (and a MOUNT + NFS LOOKUP stub) in one, the client's GRANTED service
registers in the other, where the server looks it up as a real lockd does.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from floatlock.net.client import RpcClient
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_mount import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    MountProc,
    MountRes,
    Mountstat3,
    decode_dirpath,
)
from floatlock.nfs.proto_res import LookupRes
from floatlock.nlm import cli as nlm_cli
from floatlock.nlm import proto as nlmp
from floatlock.nlm.client import NlmClient, NlmError, NlmRangeError, default_oh, status_name
from floatlock.nlm.codec import codec_for
from floatlock.nlm.proto import (
    NLM_PROG,
    FshAccess,
    FshMode,
    Holder,
    Nlm4Stat,
    NlmProc,
    Res,
    ShareRes,
)
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.registry import PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.xdr import Decoder
from tests.integration.serving import serving

pytestmark = pytest.mark.timeout(60)

FH = bytes(range(32))
HOST = "127.0.0.1"


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await fn()

    return asyncio.run(bounded())


@asynccontextmanager
async def portmapper() -> AsyncIterator[tuple[int, PortmapRegistry]]:
    reg = PortmapRegistry()
    d = Dispatcher()
    PortmapService(reg).register(d)
    async with serving(d) as port:
        yield port, reg


@dataclass
class Seen:
    vers: int
    proc: int
    args: Any


@dataclass
class FakeNlm:
    """A scripted NLM server of versions 1, 3 and 4."""

    client_pmap: int = 0
    lock_replies: list[Nlm4Stat] = field(default_factory=list)  # popped; empty: GRANTED
    test_reply: nlmp.TestRes | None = None
    share_reply: Nlm4Stat = Nlm4Stat.GRANTED
    grant_after_block: str = ""  # "", "GRANTED" or "GRANTED_MSG"
    seen: list[Seen] = field(default_factory=list)
    granted_results: list[int] = field(default_factory=list)
    granted_res: asyncio.Queue[Res] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def procs(self, vers: int) -> dict[int, Procedure[Any, Any]]:
        c = codec_for(vers)

        def note(proc: int) -> Callable[[Any, Call], None]:
            def f(args: Any, _call: Call) -> None:
                self.seen.append(Seen(vers, proc, args))

            return f

        def test(a: nlmp.TestArgs, call: Call) -> nlmp.TestRes:
            note(NlmProc.TEST)(a, call)
            return self.test_reply or nlmp.TestRes(a.cookie, Nlm4Stat.GRANTED)

        def lock(a: Any, call: Call) -> Res:
            note(NlmProc.LOCK)(a, call)
            stat = self.lock_replies.pop(0) if self.lock_replies else Nlm4Stat.GRANTED
            if stat == Nlm4Stat.BLOCKED and self.grant_after_block:
                self._spawn(
                    self.grant(vers, call.client_ip, nlmp.TestArgs(a.cookie, a.exclusive, a.lock))
                )
            return Res(a.cookie, stat)

        def res(proc: int) -> Callable[[Any, Call], Res]:
            def f(a: Any, call: Call) -> Res:
                note(proc)(a, call)
                return Res(a.cookie, Nlm4Stat.GRANTED)

            return f

        def share(proc: int) -> Callable[[Any, Call], ShareRes]:
            def f(a: Any, call: Call) -> ShareRes:
                note(proc)(a, call)
                return ShareRes(a.cookie, self.share_reply if proc == NlmProc.SHARE else 0)

            return f

        def granted_res(r: Res, _call: Call) -> None:
            self.granted_res.put_nowait(r)

        return {
            NlmProc.TEST: Procedure("TEST", test, c.testargs, c.encode_testres),
            NlmProc.LOCK: Procedure("LOCK", lock, c.lockargs, c.encode_res),
            NlmProc.CANCEL: Procedure("CANCEL", res(NlmProc.CANCEL), c.cancargs, c.encode_res),
            NlmProc.UNLOCK: Procedure("UNLOCK", res(NlmProc.UNLOCK), c.unlockargs, c.encode_res),
            NlmProc.NM_LOCK: Procedure("NM_LOCK", res(NlmProc.NM_LOCK), c.lockargs, c.encode_res),
            NlmProc.SHARE: Procedure("SHARE", share(NlmProc.SHARE), c.shareargs, c.encode_shareres),
            NlmProc.UNSHARE: Procedure(
                "UNSHARE", share(NlmProc.UNSHARE), c.shareargs, c.encode_shareres
            ),
            NlmProc.FREE_ALL: Procedure("FREE_ALL", note(NlmProc.FREE_ALL), c.notify),
            NlmProc.GRANTED_RES: Procedure("GRANTED_RES", granted_res, c.res),
        }

    def _spawn(self, aw: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(aw)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def grant(self, vers: int, client_ip: str, args: nlmp.TestArgs) -> None:
        """What a lockd does when the lock frees: find the client's NLM through *its*
        portmapper and call GRANTED (or send GRANTED_MSG)."""
        from floatlock.portmap.register import getport

        c = codec_for(vers)
        port = await getport(client_ip, NLM_PROG, vers, "udp", port=self.client_pmap)
        assert port, "the client did not register its GRANTED service"
        async with await RpcClient.connect(client_ip, port, "udp", timeout=5) as rpc:
            if self.grant_after_block == "GRANTED":
                body = await rpc.call(NLM_PROG, vers, NlmProc.GRANTED, c.encode_testargs(args))
                self.granted_results.append(c.res(Decoder(body)).stat)
            else:
                # A message: no reply comes back; the answer is a GRANTED_RES call to us.
                with pytest.raises(TimeoutError):
                    await rpc.call(
                        NLM_PROG, vers, NlmProc.GRANTED_MSG, c.encode_testargs(args), timeout=0.3
                    )

    def of(self, proc: int) -> list[Any]:
        return [s.args for s in self.seen if s.proc == proc]


def mount_and_nfs(d: Dispatcher, tree: dict[tuple[bytes, str], bytes]) -> None:
    """MOUNT v3 MNT of /export and NFSv3 LOOKUP through ``tree`` (dir fh, name) -> fh."""

    def mnt(path: str, _call: Call) -> MountRes:
        if path != "/export":
            return MountRes(Mountstat3.NOENT)
        return MountRes(Mountstat3.OK, b"root-fh")

    def lookup(a: DirOpArgs, _call: Call) -> LookupRes:
        fh = tree.get((a.dir, a.name))
        if fh is None:
            return LookupRes(Nfsstat3.NOENT)
        return LookupRes(Nfsstat3.OK, None, fh, None)

    d.register(
        MOUNT_PROGRAM,
        MOUNT_V3,
        {MountProc.MNT: Procedure("MNT", mnt, decode_dirpath, MountRes.encode)},
    )
    d.register(
        NFS_PROGRAM, NFS_V3, {3: Procedure("LOOKUP", lookup, DirOpArgs.decode, LookupRes.encode)}
    )


@dataclass
class World:
    nlm: FakeNlm
    server_pmap: int
    client_pmap: int
    client_reg: PortmapRegistry


@asynccontextmanager
async def world() -> AsyncIterator[World]:
    async with portmapper() as (spmap, sreg), portmapper() as (cpmap, creg):
        nlm = FakeNlm(client_pmap=cpmap)
        d = Dispatcher()
        for v in (1, 3, 4):
            d.register(NLM_PROG, v, nlm.procs(v), name="nlockmgr")
        tree = {(b"root-fh", "dir"): b"dir-fh", (b"dir-fh", "file"): FH}
        mount_and_nfs(d, tree)
        async with serving(d) as port:
            for prog, v in (
                (NLM_PROG, 1),
                (NLM_PROG, 3),
                (NLM_PROG, 4),
                (MOUNT_PROGRAM, 3),
                (NFS_PROGRAM, 3),
            ):
                for t in ("udp", "tcp"):
                    ep = Endpoint(prog, v, t, port)
                    sreg.set(ep.prog, ep.vers, ep.netid, ep.uaddr)
            try:
                yield World(nlm, spmap, cpmap, creg)
            finally:
                for t in list(nlm.tasks):
                    t.cancel()


async def connect(w: World, vers: int, transport: str = "udp", **kw: Any) -> NlmClient:
    return await NlmClient.connect(
        HOST,
        version=vers,
        transport=transport,  # type: ignore[arg-type]
        pmap_port=w.server_pmap,
        local_pmap_port=w.client_pmap,
        caller_name="client.example",
        svid=4242,
        timeout=5,
        **kw,
    )


# -- encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("vers", "transport"), [(1, "udp"), (3, "tcp"), (4, "udp"), (4, "tcp")])
def test_requests_carry_owner_file_and_extent(vers: int, transport: str) -> None:
    async def main() -> None:
        async with world() as w:
            c = await connect(w, vers, transport)
            try:
                assert c.oh == default_oh(4242, "client.example") == b"4242@client.example"
                assert (await c.test(FH, 10, 20, exclusive=False)).granted
                assert await c.lock(FH, 10, 20, reclaim=True, state=7) == Nlm4Stat.GRANTED
                assert await c.cancel(FH, 10, 20, exclusive=False, block=False) == 0
                assert await c.unlock(FH, 10, 20) == Nlm4Stat.GRANTED
            finally:
                await c.close()
            nlm = w.nlm
            assert {s.vers for s in nlm.seen} == {vers}
            (t,) = nlm.of(NlmProc.TEST)
            (lk,) = nlm.of(NlmProc.LOCK)
            (ca,) = nlm.of(NlmProc.CANCEL)
            (un,) = nlm.of(NlmProc.UNLOCK)
            for a in (t, lk, ca, un):
                assert a.lock.caller_name == "client.example"
                assert (a.lock.fh, a.lock.oh, a.lock.svid) == (FH, b"4242@client.example", 4242)
                assert (a.lock.offset, a.lock.length) == (10, 20)
            assert t.exclusive is False
            assert (lk.block, lk.exclusive, lk.reclaim, lk.state) == (False, True, True, 7)
            assert (ca.block, ca.exclusive) == (False, False)
            cookies = [a.cookie for a in (t, lk, ca, un)]
            assert len(set(cookies)) == 4

    run(main)


@pytest.mark.parametrize("vers", [3, 4])
def test_share_unshare_nm_lock_and_free_all(vers: int) -> None:
    async def main() -> None:
        async with world() as w:
            async with await connect(w, vers, "tcp") as c:
                assert await c.share(FH, FshMode.DW, FshAccess.R, reclaim=True) == 0
                assert await c.unshare(FH, FshMode.DW, FshAccess.R) == 0
                assert await c.nm_lock(FH, 0, 5, exclusive=False) == 0
                await c.free_all("crashed.example", 99)
                w.nlm.share_reply = Nlm4Stat.DENIED
                assert await c.share(FH) == Nlm4Stat.DENIED
            sh, _ = w.nlm.of(NlmProc.SHARE)
            (us,) = w.nlm.of(NlmProc.UNSHARE)
            assert (sh.share.mode, sh.share.access, sh.reclaim) == (FshMode.DW, FshAccess.R, True)
            assert (sh.share.fh, sh.share.oh) == (FH, b"4242@client.example")
            assert sh.share.caller_name == "client.example"
            assert (us.share.mode, us.reclaim) == (FshMode.DW, False)
            (nm,) = w.nlm.of(NlmProc.NM_LOCK)
            assert (nm.block, nm.exclusive, nm.lock.length) == (False, False, 5)
            (fa,) = w.nlm.of(NlmProc.FREE_ALL)
            assert (fa.name, fa.state) == ("crashed.example", 99)

    run(main)


def test_v1_refuses_v3_procedures_and_32_bit_versions_refuse_wide_ranges() -> None:
    async def main() -> None:
        async with world() as w:
            async with await connect(w, 1) as c:
                with pytest.raises(NlmError, match="v3 or v4"):
                    await c.share(FH)
                with pytest.raises(NlmError, match="v3 or v4"):
                    await c.free_all()
                with pytest.raises(NlmRangeError, match="32-bit"):
                    await c.lock(FH, 1 << 32, 1)
                with pytest.raises(NlmRangeError):
                    await c.test(FH, 0, 1 << 32)
                assert await c.lock(FH, 0xFFFFFFFF, 0xFFFFFFFF) == 0
            async with await connect(w, 3) as c:
                with pytest.raises(NlmRangeError):
                    await c.unlock(FH, 1 << 40, 0)
            async with await connect(w, 4) as c:
                assert await c.lock(FH, 1 << 40, (1 << 64) - 1) == 0
                with pytest.raises(NlmRangeError, match="64-bit"):
                    await c.lock(FH, 1 << 64, 0)
            assert [s.vers for s in w.nlm.seen] == [1, 4]  # nothing refused reached the wire
            assert w.nlm.of(NlmProc.LOCK)[1].lock.offset == 1 << 40

    run(main)


def test_denied_test_names_the_holder_and_statuses_are_spelled_as_in_xnfs() -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.test_reply = nlmp.TestRes(b"", Nlm4Stat.DENIED, Holder(True, 77, b"owner", 5, 0))
            async with await connect(w, 4) as c:
                r = await c.test(FH)
            assert r.stat == Nlm4Stat.DENIED and not r.granted
            assert r.holder == Holder(True, 77, b"owner", 5, 0)

    run(main)
    assert status_name(Nlm4Stat.DENIED_GRACE_PERIOD, 4) == "NLM4_DENIED_GRACE_PERIOD"
    assert status_name(Nlm4Stat.STALE_FH, 4) == "NLM4_STALE_FH"
    assert status_name(Nlm4Stat.DENIED_NOLOCKS, 3) == "nlm_denied_nolocks"
    assert status_name(Nlm4Stat.GRANTED, 1) == "nlm_granted"


# -- blocking locks ---------------------------------------------------------------------------


@pytest.mark.parametrize(("vers", "how"), [(4, "GRANTED"), (3, "GRANTED"), (4, "GRANTED_MSG")])
def test_blocked_lock_is_completed_by_the_servers_granted_call(vers: int, how: str) -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.lock_replies = [Nlm4Stat.BLOCKED]
            w.nlm.grant_after_block = how
            async with await connect(w, vers, poll_interval=3600) as c:
                assert await c.lock(FH, 0, 100, block=True) == Nlm4Stat.GRANTED
                assert c.listener is not None and c.listener.registered
                assert c.listener.granted_calls == 1
                # Registered in the *client's* portmapper while the client runs.
                assert w.client_reg.getport(NLM_PROG, vers, 17) == c.listener.port
                if how == "GRANTED_MSG":
                    res = await w.nlm.granted_res.get()
                    assert res.stat == Nlm4Stat.GRANTED
            assert w.client_reg.getport(NLM_PROG, vers, 17) == 0  # unregistered on close
            if how == "GRANTED":
                assert w.nlm.granted_results == [Nlm4Stat.GRANTED]
            (lk,) = w.nlm.of(NlmProc.LOCK)
            assert lk.block is True
            assert w.nlm.of(NlmProc.CANCEL) == []

    run(main)


def test_wait_timeout_sends_cancel_and_a_late_granted_is_refused() -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.lock_replies = [Nlm4Stat.BLOCKED]
            async with await connect(w, 4, poll_interval=3600) as c:
                stat = await c.lock(FH, 3, 4, exclusive=False, block=True, wait_timeout=0.2)
                assert stat == Nlm4Stat.BLOCKED
                (ca,) = w.nlm.of(NlmProc.CANCEL)
                assert (ca.block, ca.exclusive) == (True, False)
                assert (ca.lock.offset, ca.lock.length, ca.lock.fh) == (3, 4, FH)
                # The lock frees after we gave up: our lock manager must say nlm_denied.
                w.nlm.grant_after_block = "GRANTED"
                (lk,) = w.nlm.of(NlmProc.LOCK)
                await w.nlm.grant(4, HOST, nlmp.TestArgs(b"c", False, lk.lock))
                assert w.nlm.granted_results == [Nlm4Stat.DENIED]

    run(main)


def test_blocked_lock_polls_when_no_granted_comes() -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.lock_replies = [Nlm4Stat.BLOCKED, Nlm4Stat.BLOCKED, Nlm4Stat.GRANTED]
            async with await connect(w, 4, poll_interval=0.05) as c:
                assert await c.lock(FH, block=True) == Nlm4Stat.GRANTED
            assert [a.block for a in w.nlm.of(NlmProc.LOCK)] == [True, True, True]

    run(main)


def test_granted_for_another_owner_or_range_is_refused() -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.lock_replies = [Nlm4Stat.BLOCKED]
            async with await connect(w, 4, poll_interval=3600) as c:
                task = asyncio.create_task(c.lock(FH, 0, 10, block=True, wait_timeout=5))
                while not w.nlm.of(NlmProc.LOCK):
                    await asyncio.sleep(0.01)
                (lk,) = w.nlm.of(NlmProc.LOCK)
                w.nlm.grant_after_block = "GRANTED"
                other = codec_for(4).lockargs(Decoder(codec_for(4).encode_lockargs(lk))).lock
                other.length = 11
                await w.nlm.grant(4, HOST, nlmp.TestArgs(b"x", True, other))
                other.length, other.svid = 10, 1
                await w.nlm.grant(4, HOST, nlmp.TestArgs(b"y", True, other))
                other.svid, other.oh = lk.lock.svid, b"someone-else"
                await w.nlm.grant(4, HOST, nlmp.TestArgs(b"o", True, other))
                assert not task.done()
                await w.nlm.grant(4, HOST, nlmp.TestArgs(b"z", True, lk.lock))
                assert await task == Nlm4Stat.GRANTED
            denied = Nlm4Stat.DENIED
            assert w.nlm.granted_results == [denied, denied, denied, Nlm4Stat.GRANTED]

    run(main)


# -- the commands -----------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="floatlock")
    nlm_cli.add_subcommands(p.add_subparsers(dest="command", required=True))
    return p.parse_args(argv)


def cmd(w: World, *argv: str) -> list[str]:
    return [*argv[:1], HOST, *argv[1:], "--pmap-port", str(w.server_pmap), "--timeout", "5"]


def test_cli_lock_keep_test_and_unlock(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with world() as w:
            argv = cmd(
                w,
                "lock",
                FH.hex(),
                "--keep",
                "--svid",
                "9",
                "--caller",
                "adm",
                "--offset",
                "5",
                "--length",
                "6",
            )
            assert await nlm_cli.run(parse(argv)) == 0
            line = capsys.readouterr().out.strip()
            assert line.startswith("NLM4_GRANTED: exclusive lock on " + FH.hex())
            assert "--svid 9 --oh " + b"9@adm".hex() in line
            (lk,) = w.nlm.of(NlmProc.LOCK)
            assert (lk.lock.svid, lk.lock.oh, lk.lock.offset, lk.lock.length) == (
                9,
                b"9@adm",
                5,
                6,
            )

            w.nlm.test_reply = nlmp.TestRes(b"", Nlm4Stat.DENIED, Holder(True, 9, b"9@adm", 5, 6))
            assert await nlm_cli.run(parse(cmd(w, "test", FH.hex(), "--shared"))) == 1
            out = capsys.readouterr().out
            assert out.startswith("NLM4_DENIED: shared lock") and "svid=9" in out

            argv = cmd(
                w,
                "unlock",
                FH.hex(),
                "--version",
                "3",
                "--tcp",
                "--svid",
                "9",
                "--oh",
                b"9@adm".hex(),
                "--caller",
                "adm",
                "--offset",
                "5",
            )
            assert await nlm_cli.run(parse(argv)) == 0
            assert capsys.readouterr().out.startswith("nlm_granted: unlock")
            un = w.nlm.seen[-1]
            assert (un.vers, un.proc, un.args.lock.oh, un.args.lock.offset) == (3, 4, b"9@adm", 5)

    run(main)


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with world() as w:
            w.nlm.lock_replies = [Nlm4Stat.DENIED_GRACE_PERIOD]
            assert await nlm_cli.run(parse(cmd(w, "lock", FH.hex(), "--keep"))) == 1
            assert capsys.readouterr().out.startswith("NLM4_DENIED_GRACE_PERIOD:")

            w.nlm.lock_replies = [Nlm4Stat.BLOCKED]
            argv = cmd(
                w,
                "lock",
                FH.hex(),
                "--wait",
                "--wait-timeout",
                "0.1",
                "--keep",
                "--local-pmap-port",
                str(w.client_pmap),
            )
            assert await nlm_cli.run(parse(argv)) == 1
            assert "wait timed out, cancelled" in capsys.readouterr().out
            assert len(w.nlm.of(NlmProc.CANCEL)) == 1

            # --hold: lock, hold, unlock.
            assert await nlm_cli.run(parse(cmd(w, "lock", FH.hex(), "--hold", "0"))) == 0
            assert w.nlm.seen[-1].proc == NlmProc.UNLOCK
            assert capsys.readouterr().out.splitlines()[1].startswith("NLM4_GRANTED: unlocked")

            # Usage and connection errors: 2.
            assert await nlm_cli.run(parse(cmd(w, "lock", "--keep"))) == 2
            assert "FILE_HANDLE_HEX or by --path" in capsys.readouterr().err
            assert await nlm_cli.run(parse(cmd(w, "share", FH.hex(), "--version", "1"))) == 2
            argv = cmd(w, "test", FH.hex(), "--tcp", "--port", "1")
            assert await nlm_cli.run(parse(argv)) == 2
            assert "floatlock: 127.0.0.1" in capsys.readouterr().err
            argv = cmd(w, "lock", FH.hex(), "--offset", str(1 << 32), "--version", "3")
            assert await nlm_cli.run(parse(argv)) == 2
        with pytest.raises(SystemExit) as e:
            parse(["lock", HOST, "zz"])
        assert e.value.code == 2

    run(main)


def test_cli_path_resolution_and_shares(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with world() as w:
            argv = cmd(
                w,
                "share",
                "--path",
                "/export:dir/file",
                "--keep",
                "--deny",
                "write",
                "--access",
                "read",
            )
            assert await nlm_cli.run(parse(argv)) == 0
            assert "release: floatlock unshare" in capsys.readouterr().out
            (sh,) = w.nlm.of(NlmProc.SHARE)
            assert sh.share.fh == FH  # MNT /export, LOOKUP dir, LOOKUP file
            assert (sh.share.mode, sh.share.access) == (FshMode.DW, FshAccess.R)
            argv = cmd(w, "unshare", "--path", "/export:dir/file", "--tcp")
            assert await nlm_cli.run(parse(argv)) == 0
            assert w.nlm.of(NlmProc.UNSHARE)[0].share.fh == FH

            argv = cmd(w, "lock", "--path", "/export:dir/missing", "--keep")
            assert await nlm_cli.run(parse(argv)) == 2
            assert "NFS3ERR_NOENT" in capsys.readouterr().err
            argv = cmd(w, "lock", "--path", "/nope:file", "--keep")
            assert await nlm_cli.run(parse(argv)) == 2
            assert "MNT /nope: NOENT" in capsys.readouterr().err
            assert w.nlm.of(NlmProc.LOCK) == []

    run(main)
