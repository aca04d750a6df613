"""Every NLM procedure of every version (v1, v3, v4) on real loopback sockets, plus the harness
the other lockd integration tests share.

127.0.0.10/11 play two virtual server addresses of one floatlock, 127.0.0.2/3 two client hosts.
Each client host runs its own lock manager (:class:`ClientNlm`: serves GRANTED, GRANTED_MSG and
the ``*_RES`` procedures and records who called from where) and its own portmapper, through
which lockd finds the client's NLM port, as it would on a real network (XNFS NLM,
"Asynchronous procedures": callbacks go to the client's NLM through its portmapper).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floatlock.address import ServerAddress
from floatlock.net.client import RpcClient, Transport
from floatlock.net.portpair import listen_pair
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.codec import codec_for
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.program import NlmProgram
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
    ShareRes,
    UnlockArgs,
)
from floatlock.nlm.proto import (
    TestArgs as NlmTestArgs,
)
from floatlock.nlm.proto import (
    TestRes as NlmTestRes,
)
from floatlock.nlm.service import NlmService
from floatlock.portmap.proto import uaddr
from floatlock.portmap.register import getport
from floatlock.portmap.registry import PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.rpc.message import AcceptStat, RpcError, encode_call
from floatlock.xdr import Decoder

VIP1 = "127.0.0.10"
VIP2 = "127.0.0.11"
A = "127.0.0.2"
B = "127.0.0.3"
P = NlmProc


def run(fn: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), timeout))


@dataclass(frozen=True)
class Seen:
    """A call a client's lock manager received."""

    proc: int
    vers: int
    args: Any
    sender: str  # the server address the call came from
    at: float  # time.monotonic() on arrival


class ClientNlm:
    """A client host's lock manager (NLM v1/v3/v4) and portmapper on ``addr``.

    GRANTED is answered ``granted_stat``; GRANTED_MSG is answered by a GRANTED_RES call back to
    the sender's NLM (``server_port``) when ``answer_msg``.
    """

    def __init__(self, addr: str, granted_stat: int = Nlm4Stat.GRANTED) -> None:
        self.addr = addr
        self.granted_stat = granted_stat
        self.answer_msg = True
        self.server_port = 0
        self.seen: list[Seen] = []
        self._changed = asyncio.Event()
        d = Dispatcher()
        for vers in (1, 3, 4):
            c = codec_for(vers)
            d.register(
                NLM_PROG,
                vers,
                {
                    P.GRANTED: Procedure("GRANTED", self._granted, c.testargs, c.encode_res),
                    P.GRANTED_MSG: Procedure("GRANTED_MSG", self._granted_msg, c.testargs),
                    P.TEST_RES: Procedure("TEST_RES", self._record, c.testres),
                    P.LOCK_RES: Procedure("LOCK_RES", self._record, c.res),
                    P.CANCEL_RES: Procedure("CANCEL_RES", self._record, c.res),
                    P.UNLOCK_RES: Procedure("UNLOCK_RES", self._record, c.res),
                },
            )
        self.nlm = UdpServer(d, addr, 0)
        self.registry = PortmapRegistry()
        pm = Dispatcher()
        PortmapService(self.registry).register(pm)
        self.portmap = UdpServer(pm, addr, 0)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.nlm.start()
        await self.portmap.start()
        for vers in (1, 3, 4):
            self.registry.set(NLM_PROG, vers, "udp", uaddr(self.addr, self.nlm.port))

    def close(self) -> None:
        self.nlm.close()
        self.portmap.close()
        for t in self._tasks:
            t.cancel()

    def _note(self, call: Call, args: Any) -> None:
        self.seen.append(Seen(call.proc, call.vers, args, call.client_ip, time.monotonic()))
        self._changed.set()

    def _granted(self, a: NlmTestArgs, call: Call) -> Res:
        self._note(call, a)
        return Res(a.cookie, self.granted_stat)

    def _granted_msg(self, a: NlmTestArgs, call: Call) -> None:
        self._note(call, a)
        if self.answer_msg:
            task = asyncio.ensure_future(self._send_granted_res(call, a.cookie))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_granted_res(self, call: Call, cookie: bytes) -> None:
        c = codec_for(call.vers)
        async with await RpcClient.connect(call.client_ip, self.server_port, source=self.addr) as r:
            await r.call(NLM_PROG, call.vers, P.GRANTED_RES, c.encode_res(Res(cookie, 0)))

    def _record(self, r: Any, call: Call) -> None:
        self._note(call, r)

    def of(self, proc: int) -> list[Seen]:
        return [s for s in self.seen if s.proc == proc]

    async def wait_for(self, proc: int, n: int = 1) -> list[Seen]:
        while len(self.of(proc)) < n:
            self._changed.clear()
            await self._changed.wait()
        return self.of(proc)


class Lockd:
    """floatlock's lockd (NlmProgram over UDP and TCP on one port) over ``root``'s files."""

    def __init__(self, root: Path, clients: list[ClientNlm], *, kernel: bool = True) -> None:
        self.resolver = ExportDirResolver(root)
        self.grace = GraceClocks()
        self.kernel = KernelMirror() if kernel else None
        self.service = NlmService(HostTable(), self.grace, self.resolver, self.kernel)
        self.monitored: list[MonitorHost] = []
        self.clients = {c.addr: c for c in clients}
        self.callbacks = NlmCallbacks(port_of=self._port_of, timeout=2.0, rto=0.2)
        self.program = NlmProgram(self.service, self.callbacks, self._monitor)
        self.dispatcher = Dispatcher()
        self.program.register(self.dispatcher)
        self.udp: UdpServer | None = None
        self.tcp: TcpServer | None = None
        self.port = 0

    async def _monitor(self, m: MonitorHost) -> bool:
        self.monitored.append(m)
        return True

    async def _port_of(self, client: str, vers: int, source: str) -> int:
        pm = self.clients[client].portmap.port
        return await getport(client, NLM_PROG, vers, "udp", source=source, port=pm, timeout=2)

    async def start(self) -> None:
        # lockd serves UDP and TCP on one port number (net/portpair.py).
        self.udp, self.tcp = await listen_pair(self.dispatcher, "0.0.0.0", 0)
        self.port = self.udp.port
        for c in self.clients.values():
            c.server_port = self.port

    async def close(self) -> None:
        self.program.close()
        await self.program.drain()
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            await self.tcp.close()
        if self.kernel is not None:
            self.kernel.close_all()
        self.resolver.close()

    def fh(self, name: str) -> bytes:
        return self.resolver.handle(name)

    def start_grace(self, vip: str, seconds: float = 3600) -> None:
        self.grace.start(ServerAddress(vip), seconds, time.monotonic())


_xids = itertools.count(0x5EED0000)


def send_oneway(server: str, port: int, source: str, vers: int, proc: int, body: bytes) -> None:
    """Send a ``*_MSG``/``*_RES`` call over UDP without waiting for anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(encode_call(next(_xids), NLM_PROG, vers, proc, body), (server, port))


class Nlm:
    """Typed NLM calls of one client host (``caller_name`` = its address) over one transport."""

    def __init__(self, rpc: RpcClient, vers: int, fh: bytes, name: str = "client") -> None:
        self.rpc, self.vers, self.fh, self.name = rpc, vers, fh, name
        self.c = codec_for(vers)

    def lk(self, svid: int, off: int, length: int, fh: bytes | None = None) -> NlmLock:
        return NlmLock(self.name, self.fh if fh is None else fh, b"oh%d" % svid, svid, off, length)

    async def _call(self, proc: int, body: bytes) -> Decoder:
        return Decoder(await self.rpc.call(NLM_PROG, self.vers, proc, body))

    async def null(self) -> bytes:
        return await self.rpc.call(NLM_PROG, self.vers, P.NULL)

    async def test(self, svid: int, off: int, length: int, excl: bool = True) -> NlmTestRes:
        body = self.c.encode_testargs(NlmTestArgs(b"t%d" % svid, excl, self.lk(svid, off, length)))
        return self.c.testres(await self._call(P.TEST, body))

    def lockargs(
        self, svid: int, off: int, length: int, *, block: bool = False, excl: bool = True
    ) -> LockArgs:
        return LockArgs(b"l%d" % svid, block, excl, self.lk(svid, off, length), False, 1)

    async def lock(
        self,
        svid: int,
        off: int,
        length: int,
        *,
        block: bool = False,
        excl: bool = True,
        proc: int = P.LOCK,
    ) -> int:
        body = self.c.encode_lockargs(self.lockargs(svid, off, length, block=block, excl=excl))
        return self.c.res(await self._call(proc, body)).stat

    async def cancel(self, svid: int, off: int, length: int, excl: bool = True) -> int:
        a = CancArgs(b"c%d" % svid, True, excl, self.lk(svid, off, length))
        return self.c.res(await self._call(P.CANCEL, self.c.encode_cancargs(a))).stat

    async def unlock(self, svid: int, off: int, length: int) -> int:
        a = UnlockArgs(b"u%d" % svid, self.lk(svid, off, length))
        return self.c.res(await self._call(P.UNLOCK, self.c.encode_unlockargs(a))).stat

    async def share(self, oh: bytes, access: int, mode: int, proc: int = P.SHARE) -> int:
        a = ShareArgs(b"s", Share(self.name, self.fh, oh, mode, access), False)
        r: ShareRes = self.c.shareres(await self._call(proc, self.c.encode_shareargs(a)))
        return r.stat

    async def free_all(self, state: int = 5) -> None:
        await self._call(P.FREE_ALL, self.c.encode_notify(Notify(self.name, state)))


async def proc_unavail(rpc: RpcClient, vers: int, proc: int) -> None:
    try:
        await rpc.call(NLM_PROG, vers, proc, b"")
    except RpcError as e:
        assert e.accept_stat == AcceptStat.PROC_UNAVAIL, e
    else:
        raise AssertionError(f"v{vers} served procedure {proc}")


@dataclass
class Served:
    """What :func:`served` sets up: lockd, the client lockds of A and B, an RPC client from
    each of them, and the handle of file "f"."""

    lockd: Lockd
    a: ClientNlm
    b: ClientNlm
    ra: RpcClient
    rb: RpcClient
    fh: bytes


@contextlib.asynccontextmanager
async def served(
    root: Path, via_a: str = VIP1, via_b: str = VIP1, transport: Transport = "udp"
) -> AsyncIterator[Served]:
    """lockd over ``root`` (with a 100-byte file "f"), client lockds A and B, and RPC clients
    from A to ``via_a`` and from B to ``via_b``; everything closed afterwards."""
    (root / "f").write_bytes(b"x" * 100)
    a, b = ClientNlm(A), ClientNlm(B)
    await a.start()
    await b.start()
    lockd = Lockd(root, [a, b])
    await lockd.start()
    try:
        async with (
            await RpcClient.connect(via_a, lockd.port, transport, source=A) as ra,
            await RpcClient.connect(via_b, lockd.port, transport, source=B) as rb,
        ):
            yield Served(lockd, a, b, ra, rb, lockd.fh("f"))
    finally:
        await lockd.close()
        a.close()
        b.close()


GRANTED, DENIED, BLOCKED = Nlm4Stat.GRANTED, Nlm4Stat.DENIED, Nlm4Stat.BLOCKED
GRACE = Nlm4Stat.DENIED_GRACE_PERIOD


async def _every_procedure(root: Path, vers: int) -> None:
    async with served(root, VIP1, VIP1) as env:
        lockd, a, b, ra, rb, fh = env.lockd, env.a, env.b, env.ra, env.rb, env.fh
        na, nb = Nlm(ra, vers, fh, A), Nlm(rb, vers, fh, B)
        c = na.c
        assert await na.null() == b""  # NULL
        assert (await na.test(1, 0, 10)).stat == GRANTED  # TEST: free
        assert await na.lock(1, 0, 10) == GRANTED  # LOCK
        tr = await nb.test(2, 5, 1)  # TEST: names the holder
        assert tr.stat == DENIED and tr.holder is not None
        assert (tr.holder.svid, tr.holder.oh, tr.holder.offset) == (1, b"oh1", 0)
        assert await nb.lock(2, 0, 10) == DENIED
        assert await nb.lock(2, 0, 10, block=True) == BLOCKED
        assert await nb.cancel(2, 0, 10) == GRANTED  # CANCEL: nothing queued any more
        assert lockd.service.locks.waiting() == []
        assert await nb.lock(2, 0, 10, block=True) == BLOCKED
        assert await na.unlock(1, 0, 10) == GRANTED  # UNLOCK -> GRANTED callback
        (g,) = await b.wait_for(P.GRANTED)
        assert g.vers == vers and g.sender == VIP1 and g.args.lock.svid == 2
        await lockd.program.drain()
        assert [lk.owner[1] for lk in lockd.service.locks.held()] == [2]  # type: ignore[index]
        assert await nb.unlock(2, 0, 10) == GRANTED

        # The _MSG forms: no reply; the result comes as a *_RES call from VIP1.
        port = lockd.port
        send_oneway(
            VIP1,
            port,
            A,
            vers,
            P.TEST_MSG,
            c.encode_testargs(NlmTestArgs(b"tm", True, na.lk(1, 0, 5))),
        )
        (s,) = await a.wait_for(P.TEST_RES)
        assert s.sender == VIP1 and s.args.cookie == b"tm" and s.args.stat == GRANTED
        send_oneway(VIP1, port, A, vers, P.LOCK_MSG, c.encode_lockargs(na.lockargs(1, 0, 5)))
        (s,) = await a.wait_for(P.LOCK_RES)
        assert s.sender == VIP1 and s.args.stat == GRANTED
        # B blocks with LOCK_MSG: BLOCKED as LOCK_RES, later GRANTED_MSG, answered by
        # B's GRANTED_RES (procedure 15).
        send_oneway(
            VIP1, port, B, vers, P.LOCK_MSG, c.encode_lockargs(nb.lockargs(2, 0, 5, block=True))
        )
        (s,) = await b.wait_for(P.LOCK_RES)
        assert s.args.stat == BLOCKED
        cancel = CancArgs(b"cm", True, True, nb.lk(9, 0, 5))
        send_oneway(VIP1, port, B, vers, P.CANCEL_MSG, c.encode_cancargs(cancel))
        (s,) = await b.wait_for(P.CANCEL_RES)
        assert s.sender == VIP1 and s.args.cookie == b"cm"
        send_oneway(
            VIP1,
            port,
            A,
            vers,
            P.UNLOCK_MSG,
            c.encode_unlockargs(UnlockArgs(b"um", na.lk(1, 0, 5))),
        )
        (s,) = await a.wait_for(P.UNLOCK_RES)
        assert s.sender == VIP1 and s.args.stat == GRANTED
        (gm,) = await b.wait_for(P.GRANTED_MSG)
        assert gm.sender == VIP1 and gm.vers == vers and gm.args.lock.svid == 2
        await lockd.program.drain()  # GRANTED_RES arrived: the grant stands
        assert lockd.callbacks.failed == 0
        assert [lk.owner[1] for lk in lockd.service.locks.held()] == [2]  # type: ignore[index]
        # The server accepts *_RES calls (procedures 11-15) with a void reply.
        for proc, body in (
            (P.TEST_RES, c.encode_testres(NlmTestRes(b"x", GRANTED))),
            (P.LOCK_RES, c.encode_res(Res(b"x", GRANTED))),
            (P.CANCEL_RES, c.encode_res(Res(b"x", GRANTED))),
            (P.UNLOCK_RES, c.encode_res(Res(b"x", GRANTED))),
            (P.GRANTED_RES, c.encode_res(Res(b"x", GRANTED))),
        ):
            assert await ra.call(NLM_PROG, vers, proc, body) == b""
        assert await nb.unlock(2, 0, 5) == GRANTED

        # GRANTED is served by the *client's* lock manager (checked above, on real
        # sockets); floatlock only serves NLM, it is never an NLM client: PROC_UNAVAIL.
        await proc_unavail(ra, vers, P.GRANTED)
        await proc_unavail(ra, vers, P.GRANTED_MSG)
        if vers >= 3:
            # SHARE / UNSHARE (XNFS "NLM_VERSX"): A reads denying writes; B's write denied.
            assert await na.share(b"sa", 1, 2) == GRANTED  # access read, deny write
            assert await nb.share(b"sb", 2, 0) == DENIED
            assert await na.share(b"sa", 1, 2, P.UNSHARE) == GRANTED
            assert await nb.share(b"sb", 2, 0) == GRANTED
            assert await nb.share(b"sb", 2, 0, P.UNSHARE) == GRANTED
            # NM_LOCK: no monitoring, never blocks.
            before = len(lockd.monitored)
            async with await RpcClient.connect(VIP2, port, source=A) as ra2:
                n2 = Nlm(ra2, vers, fh, A)
                assert await n2.lock(7, 50, 10, proc=P.NM_LOCK) == GRANTED
                assert len(lockd.monitored) == before
                assert await nb.lock(8, 50, 10) == DENIED
                # FREE_ALL: A (through VIP2) restarted; its locks there go.
                await n2.free_all()
            assert await nb.lock(8, 50, 10) == GRANTED
            assert await nb.unlock(8, 50, 10) == GRANTED
        else:
            # v1 has no SHARE/UNSHARE/NM_LOCK/FREE_ALL (they came with v3).
            for proc in (P.SHARE, P.UNSHARE, P.NM_LOCK, P.FREE_ALL):
                await proc_unavail(ra, 1, proc)
        assert lockd.service.locks.held() == []
        assert lockd.service.open_files() == 0


def test_every_procedure_v1(tmp_path: Path) -> None:
    run(lambda: _every_procedure(tmp_path, 1))


def test_every_procedure_v3(tmp_path: Path) -> None:
    run(lambda: _every_procedure(tmp_path, 3))


def test_every_procedure_v4(tmp_path: Path) -> None:
    run(lambda: _every_procedure(tmp_path, 4))


def test_versions_interoperate_on_one_file(tmp_path: Path) -> None:
    """A v1 lock, a v3 lock and a v4 lock on the same file conflict as one lock table."""

    async def main() -> None:
        async with served(tmp_path, VIP1, VIP1) as env:
            lockd, b, ra, rb, fh = env.lockd, env.b, env.ra, env.rb, env.fh
            a1, a4 = Nlm(ra, 1, fh, A), Nlm(ra, 4, fh, A)
            b3, b4 = Nlm(rb, 3, fh, B), Nlm(rb, 4, fh, B)
            assert await a1.lock(1, 0, 10) == GRANTED  # v1
            assert await b4.lock(2, 5, 10) == DENIED  # v4 sees it
            tr = await b3.test(2, 0, 1)  # v3 TEST names the v1 holder
            assert tr.stat == DENIED and tr.holder is not None and tr.holder.svid == 1
            assert await b3.lock(2, 5, 10, block=True) == BLOCKED  # v3 waits ...
            assert await a4.unlock(1, 0, 10) == GRANTED  # ... for a v4 UNLOCK (same owner)
            (g,) = await b.wait_for(P.GRANTED)
            assert g.vers == 3 and g.sender == VIP1  # GRANTED in the waiter's version
            await lockd.program.drain()
            assert await b4.unlock(2, 5, 10) == GRANTED
            assert lockd.service.locks.held() == []

    run(main)
