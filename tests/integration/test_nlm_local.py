"""NLM clients and processes on the server block each other, both ways, on real sockets.

Acceptance (lockd issue): "A process on the server holding an OFD or POSIX lock blocks an NLM
client, and the reverse"; "An NLM client on one address blocked behind another client is
granted by GRANTED from the right source address within 100 ms of the unlock (print the
latency)".  Latencies are printed (``pytest -s``), never asserted: this machine is shared.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import time
from pathlib import Path
from typing import Literal

import pytest

from floatlock.net.client import RpcClient
from floatlock.nlm.kernel import F_OFD_SETLK
from floatlock.nlm.proto import NlmProc
from tests.integration.test_nlm_wire import (
    BLOCKED,
    DENIED,
    GRANTED,
    VIP1,
    VIP2,
    A,
    B,
    ClientNlm,
    Lockd,
    Nlm,
    run,
    served,
)
from tests.unit.test_nlm_kernel import LocalHolder

_FLOCK = struct.Struct("@hhqqi4x")


class OfdHolder:
    """A local OFD lock on its own open file description (as another program would hold)."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self.fd = os.open(path, os.O_RDWR)
        fcntl.fcntl(self.fd, F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, 0, start, length, 0))
        self.locked = True

    def release(self) -> None:
        os.close(self.fd)  # closing the description releases its OFD locks


@pytest.mark.parametrize("kind", ["posix", "ofd"])
def test_local_holder_blocks_nlm_and_its_release_grants(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)

    async def main() -> None:
        b = ClientNlm(B)
        await b.start()
        lockd = Lockd(tmp_path, [b])
        await lockd.start()
        holder: LocalHolder | OfdHolder = (
            LocalHolder(path, 0, 10) if kind == "posix" else OfdHolder(path, 0, 10)
        )
        try:
            assert holder.locked
            async with await RpcClient.connect(VIP2, lockd.port, source=B) as rb:
                nb = Nlm(rb, 4, lockd.fh("f"), B)
                assert await nb.lock(2, 5, 10) == DENIED
                tr = await nb.test(2, 5, 10)
                assert tr.stat == DENIED and tr.holder is not None
                assert await nb.lock(2, 5, 10, block=True) == BLOCKED
                t0 = time.monotonic()
                holder.release()
                (g,) = await b.wait_for(NlmProc.GRANTED)
                print(f"\n{kind} holder released -> GRANTED: {(g.at - t0) * 1e3:.1f} ms")
                assert g.sender == VIP2 and g.args.lock.svid == 2
                await lockd.program.drain()
                # Now the NLM lock is in the kernel: a local process is refused.
                probe = LocalHolder(path, 6, 1)
                probe.release()
                assert not probe.locked
                assert await nb.unlock(2, 5, 10) == GRANTED
            assert len(lockd.service.local_waits) == 0
        finally:
            if kind == "posix" and isinstance(holder, LocalHolder) and holder.proc.poll() is None:
                holder.release()
            await lockd.close()
            b.close()

    run(main)


def test_nlm_lock_blocks_local_process_until_unlock(tmp_path: Path) -> None:
    """The reverse: a local F_SETLK fails and a local F_SETLKW waits for the NLM UNLOCK."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)

    async def main() -> None:
        a = ClientNlm(A)
        await a.start()
        lockd = Lockd(tmp_path, [a])
        await lockd.start()
        fd = os.open(path, os.O_RDWR)
        try:
            async with await RpcClient.connect(VIP1, lockd.port, source=A) as ra:
                na = Nlm(ra, 4, lockd.fh("f"), A)
                assert await na.lock(1, 0, 10) == GRANTED
                # A POSIX lock of this very process conflicts with lockd's OFD lock too.
                with pytest.raises(BlockingIOError):
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 2)
                waiter = asyncio.ensure_future(
                    asyncio.to_thread(fcntl.lockf, fd, fcntl.LOCK_EX, 5, 2)
                )
                t0 = time.monotonic()
                assert await na.unlock(1, 0, 10) == GRANTED
                await waiter
                ms = (time.monotonic() - t0) * 1e3
                print(f"\nNLM UNLOCK -> local F_SETLKW returns: {ms:.1f} ms")
                fcntl.lockf(fd, fcntl.LOCK_UN, 5, 2)
        finally:
            os.close(fd)
            await lockd.close()
            a.close()

    run(main)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_blocked_client_granted_from_its_address_after_other_clients_unlock(
    tmp_path: Path, transport: Literal["udp", "tcp"]
) -> None:
    """A (via VIP1) holds, B (via VIP2) waits; A's UNLOCK -> GRANTED from VIP2 over UDP."""

    async def main() -> None:
        async with served(tmp_path, VIP1, VIP2, transport) as env:
            lockd, a, b, ra, rb, fh = env.lockd, env.a, env.b, env.ra, env.rb, env.fh
            na, nb = Nlm(ra, 4, fh, A), Nlm(rb, 4, fh, B)
            assert await na.lock(1, 0, 0) == GRANTED
            assert await nb.lock(2, 10, 10, block=True) == BLOCKED
            t0 = time.monotonic()
            assert await na.unlock(1, 0, 0) == GRANTED
            (g,) = await b.wait_for(NlmProc.GRANTED)
            print(f"\n{transport}: UNLOCK -> GRANTED from {g.sender}: {(g.at - t0) * 1e3:.1f} ms")
            assert g.sender == VIP2  # from the address B talked to, not VIP1
            assert a.seen == []
            await lockd.program.drain()
            assert await nb.unlock(2, 10, 10) == GRANTED

    run(main)
