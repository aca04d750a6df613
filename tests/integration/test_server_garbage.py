"""A real floatlock daemon, in-process on 127.0.0.1, fed thousands of bad messages.

The daemon is :func:`floatlock.server.build_daemon` (statd, lockd, NFS, MOUNT) on ephemeral
ports with the built-in portmapper's program added to the same dispatcher, so every program
floatlock serves is reachable.  It is fed, over UDP and TCP, for every program and procedure
number (and unknown ones):

* random bytes, truncated call headers, replies, RPC version 3, bad AUTH_SYS credentials;
* well-formed headers with random bodies, or with *valid* arguments (encoded with our own
  codecs, naming a real file) that were then truncated, had bytes or words changed, words
  inserted or removed;
* over TCP, records cut into fragments, and bad record marks (a length past the limit).

Between batches good calls must keep being answered correctly: NULL on every program, NLM v4
TEST / LOCK / TEST from a second owner (DENIED, naming the first) / UNLOCK, NFS GETATTR.  At the
end the dispatcher's stats must show garbage counted and no SYSTEM_ERR (a handler that raised
on arguments that decoded: each such reply is kept with the message that caused it, and the
test prints them), and no lock of the good owner may be left, in lockd or in the kernel.

Nothing leaves loopback: name lookups and RPC clients to other addresses are refused for the
duration of the test, statd sends no SM_NOTIFY, and lockd's callbacks find no client port.
Bounded by message count; the deadlines below only bound the waits, they assert nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from floatlock.config import (
    Config,
    ExportSection,
    NlmSection,
    PortmapSection,
    PortsSection,
    ServerSection,
    StatdSection,
)
from floatlock.daemon import Daemon
from floatlock.net import client as net_client
from floatlock.net.client import RpcClient
from floatlock.net.recordmark import LAST_FRAGMENT, frame
from floatlock.nfs.client import MountClient, NfsClient
from floatlock.nfs.proto import NFS_PROGRAM, CreateMode, DirOpArgs, Ftype3
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
from floatlock.nfs.proto_attr import NfsTime, Sattr3
from floatlock.nfs.proto_mount import MOUNT_PROGRAM, encode_dirpath
from floatlock.nlm.client import NlmClient
from floatlock.nlm.codec import NlmCodec, codec_for
from floatlock.nlm.proto import (
    NLM_PROG,
    CancArgs,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    NlmProc,
    Notify,
    Res,
    Share,
    ShareArgs,
    SmStatus,
    TestArgs,
    UnlockArgs,
)
from floatlock.nsm import proto as nsm
from floatlock.portmap.proto import PMAP_PROG, Netbuf, PmapMapping, Rpcb
from floatlock.portmap.registry import PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.message import AcceptStat, AuthSys, encode_call
from floatlock.server import build_daemon
from floatlock.xdr import Encoder

LOOPBACK = "127.0.0.1"
SEED = 20240611
ROUNDS = 40
UDP_PER_ROUND = 120
TCP_PER_ROUND = 40
GOOD = b"good file contents\n"
VERSIONS = {PMAP_PROG: (2, 3, 4), NFS_PROGRAM: (3,), MOUNT_PROGRAM: (3,), NLM_PROG: (1, 3, 4)}
VERSIONS[nsm.SM_PROG] = (1,)
CRED = AuthSys(1, "garbage-test", 0, 0, ())
INTERESTING = [0, 1, 2, 3, 4, 16, 64, 255, 256, 1024, 1025, 0x7FFFFFFF, 0xFFFFFFFF]


# -- nothing leaves loopback -----------------------------------------------------------------


def _loopback(host: Any) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host is not None and not _loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"test: no name lookups ({host!r})")
        return real_getaddrinfo(host, *args, **kw)

    def gethostbyaddr(ip: str) -> Any:
        raise socket.herror(1, f"test: no reverse lookups ({ip})")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
    real_connect = RpcClient.connect.__func__  # type: ignore[attr-defined]

    async def connect(cls: type[RpcClient], host: str, *args: Any, **kw: Any) -> RpcClient:
        if not _loopback(host):
            raise OSError(f"test: no RPC to {host!r}")
        return await real_connect(cls, host, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(net_client.RpcClient, "connect", classmethod(connect))


# -- the daemon ----------------------------------------------------------------------------------


def _config(tmp: Path) -> Config:
    return Config(
        server=ServerSection(listen=(LOOPBACK,), state_dir=tmp / "state", log_level="warning"),
        ports=PortsSection(nfs=0, mount=0, nlm=0, statd=0, portmap=0),
        portmap=PortmapSection("off"),
        exports=(ExportSection(tmp / "export", "*(rw,insecure)"),),
        nlm=NlmSection(grace_seconds=0),
        statd=StatdSection(notify=False),
    )


def _quiet(daemon: Daemon) -> None:
    """No callbacks or name resolution can leave the machine (see loopback_only too)."""

    async def no_port(*_args: Any) -> int:
        return 0

    statd: Any = daemon.components["statd"]
    statd.config.resolve_names = False
    statd.callbacks.resolver = no_port
    nlm: Any = daemon.components["nlm"]
    nlm.callbacks._port_of = no_port


def _port(daemon: Daemon, service: str) -> int:
    for listener in daemon.listeners:
        if listener.service == service:
            return listener.udp.port
    raise AssertionError(f"no listener for {service}")


# -- garbage -------------------------------------------------------------------------------------


def _enc(write: Callable[[Encoder], None]) -> bytes:
    enc = Encoder()
    write(enc)
    return enc.getvalue()


def seeds(dir_fh: bytes, fh: bytes) -> dict[tuple[int, int], list[bytes]]:
    """Valid arguments for (prog, proc), naming the victim file: the inputs to mutate."""
    out: dict[tuple[int, int], list[bytes]] = {}

    def add(prog: int, proc: int, body: bytes) -> None:
        out.setdefault((prog, proc), []).append(body)

    for vers in (1, 4):
        c: NlmCodec = codec_for(vers)
        lk = NlmLock("garbage", fh, b"oh-garbage", 7, 0, 10)
        for proc in (NlmProc.TEST, NlmProc.TEST_MSG, NlmProc.GRANTED, NlmProc.GRANTED_MSG):
            add(NLM_PROG, proc, c.encode_testargs(TestArgs(b"ck", True, lk)))
        for proc in (NlmProc.LOCK, NlmProc.LOCK_MSG, NlmProc.NM_LOCK):
            add(NLM_PROG, proc, c.encode_lockargs(LockArgs(b"ck", False, True, lk, False, 3)))
        for proc in (NlmProc.CANCEL, NlmProc.CANCEL_MSG):
            add(NLM_PROG, proc, c.encode_cancargs(CancArgs(b"ck", True, True, lk)))
        for proc in (NlmProc.UNLOCK, NlmProc.UNLOCK_MSG):
            add(NLM_PROG, proc, c.encode_unlockargs(UnlockArgs(b"ck", lk)))
        for proc in range(NlmProc.TEST_RES, NlmProc.GRANTED_RES + 1):
            add(NLM_PROG, proc, c.encode_res(Res(b"ck", 0)))
        share = ShareArgs(b"ck", Share("garbage", fh, b"oh-garbage", 1, 3), False)
        add(NLM_PROG, NlmProc.SHARE, c.encode_shareargs(share))
        add(NLM_PROG, NlmProc.UNSHARE, c.encode_shareargs(share))
    add(NLM_PROG, NlmProc.FREE_ALL, NlmCodec.encode_notify(Notify("garbage", 1)))
    status = SmStatus(LOOPBACK, 3, bytes(16))
    add(NLM_PROG, NlmProc.SM_NOTIFY, NlmCodec.encode_sm_status(status))

    my_id = nsm.MyId(LOOPBACK, 0x20000F1B, 1, 1)  # a callback program nobody serves
    mon_id = nsm.MonId("198.18.0.99", my_id)
    add(nsm.SM_PROG, nsm.Proc.SM_STAT, nsm.encode_sm_name("198.18.0.99"))
    add(nsm.SM_PROG, nsm.Proc.SM_MON, nsm.encode_mon(nsm.Mon(mon_id, bytes(16))))
    add(nsm.SM_PROG, nsm.Proc.SM_MON2, nsm.encode_mon(nsm.Mon(mon_id, bytes(16))))
    add(nsm.SM_PROG, nsm.Proc.SM_UNMON, nsm.encode_mon_id(mon_id))
    add(nsm.SM_PROG, nsm.Proc.SM_UNMON_ALL, nsm.encode_my_id(my_id))
    add(nsm.SM_PROG, nsm.Proc.SM_NOTIFY, nsm.encode_stat_chge(nsm.StatChge("198.18.0.99", 5)))

    where = DirOpArgs(dir_fh, "victim")
    other = DirOpArgs(dir_fh, "other")
    attrs = Sattr3(mode=0o644, atime="server", mtime=NfsTime(1, 2))
    nfs_args: dict[int, Any] = {
        1: FhArgs(fh),
        2: SetattrArgs(fh, attrs),
        3: where,
        4: AccessArgs(fh, 0x3F),
        5: FhArgs(fh),
        6: ReadArgs(fh, 0, 64),
        7: WriteArgs(fh, 0, 4, 0, b"junk"),  # type: ignore[arg-type]
        8: CreateArgs(other, CreateMode.UNCHECKED, attrs),
        9: MkdirArgs(DirOpArgs(dir_fh, "d"), Sattr3()),
        10: SymlinkArgs(DirOpArgs(dir_fh, "l"), Sattr3(), "victim"),
        11: MknodArgs(DirOpArgs(dir_fh, "p"), Ftype3.FIFO, Sattr3()),
        12: other,
        13: DirOpArgs(dir_fh, "d"),
        14: RenameArgs(other, DirOpArgs(dir_fh, "other2")),
        15: LinkArgs(fh, DirOpArgs(dir_fh, "hard")),
        16: ReaddirArgs(dir_fh, 0, bytes(8), 1024),
        17: ReaddirArgs(dir_fh, 0, bytes(8), 4096, 1024, True),
        18: FhArgs(fh),
        19: FhArgs(fh),
        20: FhArgs(fh),
        21: ReadArgs(fh, 0, 0),
    }
    for proc, args in nfs_args.items():
        add(NFS_PROGRAM, proc, _enc(args.encode))
    for proc in (1, 3):
        add(MOUNT_PROGRAM, proc, encode_dirpath("/"))

    add(PMAP_PROG, 3, PmapMapping(NLM_PROG, 4, 17, 0).to_bytes())
    add(PMAP_PROG, 1, PmapMapping(0x20000F1B, 1, 17, 999).to_bytes())
    add(PMAP_PROG, 2, PmapMapping(0x20000F1B, 1, 17, 999).to_bytes())
    rpcb = Rpcb(0x20000F1B, 1, "udp", "127.0.0.1.3.231", "garbage").to_bytes()
    for proc in (1, 2, 3, 9, 11):
        add(PMAP_PROG, proc, rpcb)
    add(PMAP_PROG, 7, _enc(lambda e: e.string("127.0.0.1.0.111")))
    add(PMAP_PROG, 8, _enc(Netbuf(16, bytes([2, 0, 0, 111, 127, 0, 0, 1]) + bytes(8)).encode))
    return out


class Garbage:
    """Deterministic bad messages; each valid-header message gets its own xid."""

    def __init__(self, rng: random.Random, seed_args: dict[tuple[int, int], list[bytes]]):
        self.rng = rng
        self.seeds = seed_args
        self.xid = 0x6A000000

    def words(self, n: int) -> bytes:
        r = self.rng
        ws = [r.choice(INTERESTING) if r.random() < 0.5 else r.getrandbits(32) for _ in range(n)]
        return struct.pack(f">{n}I", *ws)

    def mutate(self, good: bytes) -> bytes:
        r = self.rng
        data = bytearray(good)
        for _ in range(r.randint(1, 3)):
            n = len(data)
            op = r.randrange(5)
            if op == 0:
                del data[r.randint(0, n) :]
            elif op == 1 and n:
                data[r.randrange(n)] = r.randrange(256)
            elif op == 2 and n >= 4:
                i = r.randrange(n // 4) * 4
                data[i : i + 4] = struct.pack(">I", r.choice(INTERESTING))
            elif op == 3:
                i = r.randint(0, n)
                data[i:i] = self.words(r.randint(1, 3))
            elif op == 4 and n >= 4:
                i = r.randrange(n // 4) * 4
                del data[i : i + 4]
        return bytes(data)

    def target(self) -> tuple[int, int, int]:
        r = self.rng
        prog = r.choice([*VERSIONS, 100099, r.getrandbits(32)])
        vers = r.choice([*VERSIONS.get(prog, (1,)), 0, 2, 5, r.getrandbits(32)])
        if r.random() < 0.8:
            vers = r.choice(VERSIONS.get(prog, (vers,)))
        proc = r.choice([r.randrange(25), r.randrange(25), r.randrange(25), 100, 0xFFFFFFFF])
        return prog, vers, proc

    def message(self) -> tuple[int | None, bytes]:
        """(xid or None when the header itself is broken, message)."""
        r = self.rng
        kind = r.random()
        if kind < 0.08:
            return None, r.randbytes(r.randrange(64))
        prog, vers, proc = self.target()
        self.xid += 1
        xid = self.xid
        cred = CRED if r.random() < 0.7 else None
        seeds = self.seeds.get((prog, proc))
        if seeds and r.random() < 0.75:
            body = self.mutate(r.choice(seeds))
        elif r.random() < 0.5:
            body = self.words(r.randrange(24))
        else:
            body = r.randbytes(r.randrange(128))
        msg = encode_call(xid, prog, vers, proc, body, cred)
        if kind < 0.16:
            return None, self.mutate(msg[:40])  # the header itself is damaged
        if kind < 0.20:  # a bad AUTH_SYS body (the flavor is checked, then its contents)
            gids = list(range(r.randrange(20)))
            bad = _enc(lambda e: (e.u32(1), e.string("x" * r.randrange(300)), e.u32(0),
                                  e.u32(0), e.uint_array(gids)))  # fmt: skip
            body_bytes = _enc(lambda e: e.opaque(self.mutate(bad), 1024))
            head = struct.pack(">IIIIIII", xid, 0, 2, prog, vers, proc, 1)
            return xid, head + body_bytes + bytes(8) + body
        if kind < 0.22:
            return xid, struct.pack(">IIII", xid, 0, 3, prog) + body  # RPC version 3
        return xid, msg

    def tcp_stream(self, n: int) -> tuple[list[int], bytes]:
        r = self.rng
        xids: list[int] = []
        out = bytearray()
        for _ in range(n):
            xid, msg = self.message()
            if xid is not None:
                xids.append(xid)
            if r.random() < 0.3 and len(msg) > 8:
                out += frame(msg, fragment_size=r.randint(1, len(msg) - 1))
            else:
                out += frame(msg)
        if r.random() < 0.3:  # a record mark past the daemon's limit: the connection ends
            out += struct.pack(">I", LAST_FRAGMENT | r.randint(1 << 22, 0x7FFFFFFF))
            out += r.randbytes(64)
        return xids, bytes(out)


# -- the test -----------------------------------------------------------------------------------


class Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.data.append(data)


def system_errs(replies: list[bytes], sent: dict[int, bytes]) -> list[str]:
    out = []
    for rep in replies:
        if len(rep) >= 24:
            xid, mtype, stat, _vf, _vl, accept = struct.unpack_from(">IIIIII", rep)
            if mtype == 1 and stat == 0 and accept == AcceptStat.SYSTEM_ERR:
                out.append(f"SYSTEM_ERR for {sent.get(xid, b'?').hex()}")
    return out


async def _tcp_burst(port: int, data: bytes) -> list[bytes]:
    """Send ``data`` on a new connection, half-close, read every reply until EOF."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    replies: list[bytes] = []
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(20):
            while True:
                try:
                    mark = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    break
                (n,) = struct.unpack(">I", mark)
                replies.append(await reader.readexactly(n & 0x7FFFFFFF))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return replies


async def _good_calls(
    ports: dict[str, int], nfs: NfsClient, fh: bytes, nlm: NlmClient, nlm2: NlmClient
) -> None:
    for prog, service in (
        (NFS_PROGRAM, "nfs"),
        (MOUNT_PROGRAM, "mountd"),
        (NLM_PROG, "nlockmgr"),
        (nsm.SM_PROG, "statd"),
        (PMAP_PROG, "nfs"),
    ):
        for vers in VERSIONS[prog]:
            async with await RpcClient.connect(LOOPBACK, ports[service], timeout=10) as c:
                assert await c.call(prog, vers, 0) == b""
    assert (await nlm.test(fh, 0, 100)).stat == Nlm4Stat.GRANTED
    assert await nlm.lock(fh, 0, 100) == Nlm4Stat.GRANTED
    r = await nlm2.test(fh, 50, 10)
    assert r.stat == Nlm4Stat.DENIED and r.holder is not None
    assert (r.holder.svid, r.holder.oh, r.holder.offset) == (nlm.svid, nlm.oh, 0)
    assert await nlm.unlock(fh, 0, 100) == Nlm4Stat.GRANTED
    assert (await nlm2.test(fh, 50, 10)).stat == Nlm4Stat.GRANTED
    attr = await nfs.getattr(fh)
    assert attr.status == 0 and attr.attr is not None and attr.attr.size == len(GOOD)


def _ofd_locks(path: Path) -> list[str]:
    ino = os.stat(path).st_ino
    lines = Path("/proc/locks").read_text().splitlines()
    return [ln for ln in lines if "OFDLCK" in ln and f":{ino} " in ln]


@pytest.mark.timeout(240)
def test_daemon_survives_garbage_and_keeps_answering(tmp_path: Path, loopback_only: None) -> None:
    daemon = build_daemon(_config(tmp_path))
    PortmapService(PortmapRegistry()).register(daemon.dispatcher)
    _quiet(daemon)
    export = tmp_path / "export"

    async def main() -> tuple[list[str], int, dict[str, int]]:
        await daemon.start()
        try:
            ports = {s: _port(daemon, s) for s in ("nfs", "mountd", "nlockmgr", "statd")}
            async with (
                await RpcClient.connect(LOOPBACK, ports["mountd"], timeout=10) as mrpc,
                await RpcClient.connect(LOOPBACK, ports["nfs"], timeout=10) as nrpc,
            ):
                mnt = await MountClient(mrpc).mnt(str(export))
                assert mnt.status == 0, mnt
                root = mnt.fh
                nfs = NfsClient(nrpc)
                made = await nfs.create(CreateArgs(DirOpArgs(root, "good"), CreateMode.GUARDED))
                assert made.status == 0 and made.fh is not None
                fh = made.fh
                assert (await nfs.write(fh, 0, GOOD)).status == 0
                victim = await nfs.create(
                    CreateArgs(DirOpArgs(root, "victim"), CreateMode.UNCHECKED)
                )
                assert victim.fh is not None
                gen = Garbage(random.Random(SEED), seeds(root, victim.fh))
                nlm = await NlmClient.connect(
                    LOOPBACK, port=ports["nlockmgr"], caller_name="good", svid=4242
                )
                nlm2 = await NlmClient.connect(
                    LOOPBACK, port=ports["nlockmgr"], caller_name="good2", svid=4343
                )
                loop = asyncio.get_running_loop()
                replies = Replies()
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: replies, local_addr=(LOOPBACK, 0)
                )
                sent: dict[int, bytes] = {}
                tcp_replies: list[bytes] = []
                count = 0
                try:
                    all_ports = list(ports.values())
                    for _ in range(ROUNDS):
                        for _ in range(UDP_PER_ROUND):
                            xid, msg = gen.message()
                            if xid is not None:
                                sent[xid] = msg
                            udp.sendto(msg, (LOOPBACK, gen.rng.choice(all_ports)))
                            count += 1
                            if count % 20 == 0:
                                await asyncio.sleep(0)  # let the daemon drain its socket
                        _xids, stream = gen.tcp_stream(TCP_PER_ROUND)
                        count += TCP_PER_ROUND
                        tcp_replies += await _tcp_burst(gen.rng.choice(all_ports), stream)
                        await _good_calls(ports, nfs, fh, nlm, nlm2)
                    # Each good call above was answered after the garbage sent before it; one
                    # last round of them lets the last datagrams through too.
                    await _good_calls(ports, nfs, fh, nlm, nlm2)
                    await daemon_idle(daemon)
                finally:
                    udp.close()
                    await nlm.close()
                    await nlm2.close()
                errs = system_errs(replies.data + tcp_replies, sent)
                program: Any = daemon.components["nlm"]
                held = program.service.locks.held()
                print("locks held at the end:", held)
                assert [lk for lk in held if "good" in repr(lk)] == [], held
                assert _ofd_locks(export / "good") == []
                return errs, count, daemon.dispatcher.stats.as_dict()
        finally:
            await daemon.stop()

    errs, count, stats = asyncio.run(main())
    print(f"{count} bad messages; dispatcher stats: {stats}")
    assert count >= 5000
    assert errs == [], "\n".join(errs[:20])
    assert stats["system_err"] == 0, stats
    assert stats["garbage_args"] > 100, stats
    assert stats["malformed_dropped"] > 100, stats
    assert stats["denied"] > 10 and stats["prog_unavail"] > 10, stats
    assert stats["proc_unavail"] > 10 and stats["prog_mismatch"] > 10, stats


async def daemon_idle(daemon: Daemon, rounds: int = 200) -> None:
    """Give handlers still running in worker threads a chance to finish (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0.01)
