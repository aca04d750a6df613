"""lockd over TCP (record marking, pipelining) on loopback; GRANTED still goes back over UDP.

Linux lockd sends NLM_GRANTED over UDP from the address the client talked to even when the
LOCK came over TCP (callbacks go to the client's NLM as registered with its portmapper); so
does floatlock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import pytest

from floatlock.net.client import RpcClient
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

OWNERS = 32


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_pipelined_lock_unlock_of_many_owners(
    tmp_path: Path, transport: Literal["udp", "tcp"]
) -> None:
    """32 owners send LOCK then UNLOCK on one connection, all in flight at once."""
    (tmp_path / "f").write_bytes(b"x" * 100)

    async def main() -> None:
        a = ClientNlm(A)
        await a.start()
        lockd = Lockd(tmp_path, [a])
        await lockd.start()
        try:
            async with await RpcClient.connect(VIP1, lockd.port, transport, source=A) as ra:
                na = Nlm(ra, 4, lockd.fh("f"), A)
                # Disjoint ranges: every LOCK is granted whatever the order of arrival.
                locks = await asyncio.gather(*(na.lock(n, n * 10, 10) for n in range(OWNERS)))
                assert locks == [GRANTED] * OWNERS
                assert len(lockd.service.locks.held()) == OWNERS
                # A conflicting owner is refused, naming some holder.
                assert await na.lock(999, 0, 0) == DENIED
                unlocks = await asyncio.gather(*(na.unlock(n, n * 10, 10) for n in range(OWNERS)))
                assert unlocks == [GRANTED] * OWNERS
                assert lockd.service.locks.held() == []
                assert lockd.service.kernel is not None and lockd.service.kernel.in_use() == 0
                assert lockd.service.open_files() == 0
                # Contended: all owners ask for the same range; exactly one wins.
                stats = await asyncio.gather(*(na.lock(n, 0, 10) for n in range(OWNERS)))
                assert sorted(stats) == [GRANTED] + [DENIED] * (OWNERS - 1)
                winner = stats.index(GRANTED)
                assert await na.unlock(winner, 0, 10) == GRANTED
        finally:
            await lockd.close()
            a.close()

    run(main)


def test_tcp_blocked_lock_is_granted_over_udp_from_the_right_address(tmp_path: Path) -> None:

    async def main() -> None:
        async with served(tmp_path, VIP1, VIP2, "tcp") as env:
            lockd, a, b, ra, rb, fh = env.lockd, env.a, env.b, env.ra, env.rb, env.fh
            na, nb = Nlm(ra, 4, fh, A), Nlm(rb, 4, fh, B)
            assert await na.lock(1, 0, 10) == GRANTED
            blocked = await asyncio.gather(*(nb.lock(n, 0, 10, block=True) for n in (2, 3)))
            assert blocked == [BLOCKED, BLOCKED]
            assert await na.unlock(1, 0, 10) == GRANTED
            (g,) = await b.wait_for(NlmProc.GRANTED)  # the first waiter only
            assert g.sender == VIP2 and g.args.lock.svid == 2  # UDP callback from VIP2
            await lockd.program.drain()
            assert await nb.unlock(2, 0, 10) == GRANTED
            g2 = (await b.wait_for(NlmProc.GRANTED, 2))[1]
            assert g2.sender == VIP2 and g2.args.lock.svid == 3
            await lockd.program.drain()
            assert await nb.unlock(3, 0, 10) == GRANTED
            assert lockd.service.locks.held() == [] and a.seen == []

    run(main)
