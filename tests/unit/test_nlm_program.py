"""lockd's RPC binding: LOCK answers synchronously once the host is monitored (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

from floatlock.address import ServerAddress
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.codec import V4
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.program import NlmProgram
from floatlock.nlm.proto import LockArgs, Nlm4Stat, NlmLock, NlmProc, UnlockArgs
from floatlock.nlm.service import NlmService
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AuthSys, encode_call, parse_reply
from floatlock.xdr import Decoder

VIP = ServerAddress("198.18.0.10")
CLIENT = ("198.18.1.1", 800)


def test_lock_is_synchronous_for_a_monitored_host(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")

    async def main() -> None:
        resolver = ExportDirResolver(tmp_path)
        fh = resolver.handle("f")
        kernel = KernelMirror()
        service = NlmService(HostTable(), GraceClocks(), resolver, kernel)
        monitored: list[MonitorHost] = []

        async def monitor(m: MonitorHost) -> bool:
            monitored.append(m)
            return True

        d = Dispatcher()
        NlmProgram(service, NlmCallbacks(), monitor).register(d)
        cred = AuthSys(0, "client", 0, 0, (0,))
        lk = NlmLock("client", fh, b"o", 1, 0, 10)
        xids = iter(range(1, 100))

        def call(proc: int, body: bytes) -> bytes | Awaitable[bytes | None] | None:
            msg = encode_call(next(xids), 100021, 4, proc, body, cred)
            return d.dispatch(msg, CLIENT, VIP, "udp")

        def stat(reply: object) -> int:
            assert isinstance(reply, bytes)
            return V4.res(Decoder(parse_reply(reply).body)).stat

        lock = V4.encode_lockargs(LockArgs(b"c", False, True, lk, False, 1))
        unlock = V4.encode_unlockargs(UnlockArgs(b"u", lk))
        first = call(NlmProc.LOCK, lock)
        assert not isinstance(first, bytes)  # SM_MON first: the dispatcher gets a coroutine
        assert first is not None
        assert stat(await first) == Nlm4Stat.GRANTED and len(monitored) == 1
        for _ in range(3):
            assert stat(call(NlmProc.UNLOCK, unlock)) == Nlm4Stat.GRANTED
            assert stat(call(NlmProc.LOCK, lock)) == Nlm4Stat.GRANTED  # bytes at once
        assert len(monitored) == 1 and len(service.locks.held()) == 1
        assert stat(call(NlmProc.UNLOCK, unlock)) == Nlm4Stat.GRANTED
        assert kernel.in_use() == 0
        kernel.close_all()
        resolver.close()

    asyncio.run(main())
