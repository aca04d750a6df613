"""lockd end to end on loopback: NLM over real UDP sockets, GRANTED callbacks from the virtual
address, per-address grace, the kernel mirror.  127.0.0.10/11 play two virtual servers,
127.0.0.2/3 two clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from floatlock.address import ServerAddress
from floatlock.net.client import RpcClient
from floatlock.net.udp import UdpServer
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.codec import V1, V4
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.program import NlmProgram
from floatlock.nlm.proto import NLM_PROG, LockArgs, Nlm4Stat, NlmLock, NlmProc, Res, UnlockArgs
from floatlock.nlm.proto import TestArgs as NlmTestArgs
from floatlock.nlm.service import NlmService
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.xdr import Decoder

VIP1 = "127.0.0.10"
VIP2 = "127.0.0.11"
A = "127.0.0.2"
B = "127.0.0.3"


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), 30))


class FakeClientNlm:
    """A client's lock manager: records NLM_GRANTED calls and who sent them."""

    def __init__(self) -> None:
        self.granted: list[tuple[NlmTestArgs, str]] = []
        self.event = asyncio.Event()
        d = Dispatcher()
        d.register(
            NLM_PROG,
            4,
            {NlmProc.GRANTED: Procedure("GRANTED", self._granted, V4.testargs, V4.encode_res)},
        )
        self.server = UdpServer(d, B, 0)

    def _granted(self, a: NlmTestArgs, call: Call) -> Res:
        self.granted.append((a, str(call.server)))
        self.granted.append((a, call.client_ip))
        self.event.set()
        return Res(a.cookie, Nlm4Stat.GRANTED)


def test_lock_block_granted_callback_and_grace(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 64)

    async def main() -> None:
        resolver = ExportDirResolver(tmp_path)
        fh = resolver.handle("f")
        grace = GraceClocks()
        service = NlmService(HostTable(), grace, resolver, KernelMirror())
        monitored: list[MonitorHost] = []

        async def monitor(m: MonitorHost) -> bool:
            monitored.append(m)
            return True

        client_nlm = FakeClientNlm()
        await client_nlm.server.start()

        async def port_of(client: str, vers: int, source: str) -> int:
            assert (client, vers) == (B, 4)
            return client_nlm.server.port

        program = NlmProgram(service, NlmCallbacks(port_of=port_of), monitor)
        d = Dispatcher()
        program.register(d)
        server = UdpServer(d, "0.0.0.0", 0)
        await server.start()
        grace.start(ServerAddress(VIP2), 3600, time.monotonic())
        try:
            async with (
                await RpcClient.connect(VIP1, server.port, source=A) as a1,
                await RpcClient.connect(VIP2, server.port, source=A) as a2,
                await RpcClient.connect(VIP1, server.port, source=B) as b1,
            ):

                async def lock(rpc: RpcClient, svid: int, block: bool, vers: int = 4) -> int:
                    codec = V4 if vers == 4 else V1
                    args = LockArgs(
                        b"c%d" % svid, block, True, NlmLock("x", fh, b"o", svid, 0, 10), False, 1
                    )
                    body = await rpc.call(NLM_PROG, vers, NlmProc.LOCK, codec.encode_lockargs(args))
                    res = codec.res(Decoder(body))
                    assert res.cookie == args.cookie
                    return res.stat

                assert await lock(a1, 1, False) == Nlm4Stat.GRANTED
                assert [(m.mon_name, m.my_name) for m in monitored] == [(A, VIP1)]
                # Grace on VIP2 only: the same client through VIP2 is held, VIP1 is not.
                assert await lock(a2, 2, False) == Nlm4Stat.DENIED_GRACE_PERIOD
                # v1 sees the v4 lock (same extent): denied; then B queues a blocking lock.
                assert await lock(b1, 3, False, vers=1) == Nlm4Stat.DENIED
                assert await lock(b1, 3, True) == Nlm4Stat.BLOCKED
                unlock = UnlockArgs(b"u", NlmLock("x", fh, b"o", 1, 0, 10))
                body = await a1.call(NLM_PROG, 4, NlmProc.UNLOCK, V4.encode_unlockargs(unlock))
                assert V4.res(Decoder(body)).stat == Nlm4Stat.GRANTED
                await client_nlm.event.wait()
                await program.drain()
                (args, arrived_on), (_, sender) = client_nlm.granted
                assert args.cookie == b"c3" and args.lock.svid == 3 and args.exclusive
                assert arrived_on == B and sender == VIP1  # called from the virtual address
                held = service.locks.held()
                assert len(held) == 1 and held[0].owner[1:] == (3, b"o")  # type: ignore[index]
                # TEST from A through VIP1 reports B's lock.
                t = NlmTestArgs(b"t", True, NlmLock("x", fh, b"o", 1, 5, 1))
                body = await a1.call(NLM_PROG, 4, NlmProc.TEST, V4.encode_testargs(t))
                tr = V4.testres(Decoder(body))
                assert tr.stat == Nlm4Stat.DENIED and tr.holder is not None
                assert tr.holder.svid == 3
        finally:
            server.close()
            client_nlm.server.close()
            assert service.kernel is not None
            service.kernel.close_all()
            resolver.close()

    run(main)
