"""statd never blocks the event loop on fsync: while its writer holds a batch in the middle of
its directory fsync, the same dispatcher (UDP on 127.0.0.1) answers a NULL call, the SM_MON
waits, and the SM_MONs that arrive meanwhile are committed together in the next batch.

No timing assertions: the "slow fsync" is a gate (threading.Event) the test opens itself;
timeouts only keep a broken build from hanging.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from floatlock.net.client import RpcClient
from floatlock.net.udp import UdpServer
from floatlock.nsm import proto
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res
from floatlock.nsm.statd import Statd, StatdConfig
from floatlock.nsm.store import StateDir, fsync_dir
from floatlock.nsm.writer import StoreWriter
from floatlock.rpc.dispatch import Dispatcher
from floatlock.xdr import Decoder

GUARD = 30.0  # seconds before a broken build is declared hung (never reached when correct)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatedSync:
    """A directory fsync that, while ``hold`` is set, stops until the test opens the gate."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.thread: str | None = None

    def __call__(self, path: Path) -> None:
        if self.hold.is_set():
            self.thread = threading.current_thread().name
            self.entered.set()
            assert self.gate.wait(GUARD), "gate never opened"
        fsync_dir(path)


def mon_args(i: int) -> bytes:
    mid = MonId(f"client{i}.example", MyId("127.0.0.1", 100021, 4, 16))
    return proto.encode_mon(Mon(mid, i.to_bytes(16, "big")))


def test_event_loop_serves_while_a_batch_is_fsynced(tmp_path: Path) -> None:
    async def main() -> None:
        sync = GatedSync()
        disp = Dispatcher()
        cfg = StatdConfig(state_dir=tmp_path, notify=False, resolve_names=False)
        writer = StoreWriter(StateDir(tmp_path), sync_dir=sync)
        statd = Statd(cfg, disp, writer=writer)
        await statd.start()
        port = free_port()
        udp = UdpServer(disp, "127.0.0.1", port)
        await udp.start()
        client = await RpcClient.connect("127.0.0.1", port, "udp", timeout=GUARD, retries=0)
        loop = asyncio.get_running_loop()
        try:
            sync.hold.set()
            first = asyncio.create_task(client.call(proto.SM_PROG, 1, Proc.SM_MON, mon_args(0)))
            # The writer thread is now inside the directory fsync of the first batch.
            assert await loop.run_in_executor(None, sync.entered.wait, GUARD)
            assert sync.thread == "statd-writer"
            # The event loop is free: the same dispatcher answers NULL over UDP meanwhile...
            assert await client.call(proto.SM_PROG, 1, 0, b"") == b""
            # ...and SM_STAT, while the SM_MON is still waiting for durability.
            body = await client.call(proto.SM_PROG, 1, Proc.SM_STAT, proto.encode_sm_name("x"))
            assert proto.decode_sm_stat_res(Decoder(body)).state == 1
            assert not first.done()
            # More SM_MONs arrive while the batch is held: they queue for the next batch.
            sync.hold.clear()
            rest = [
                asyncio.create_task(client.call(proto.SM_PROG, 1, Proc.SM_MON, mon_args(i)))
                for i in range(1, 11)
            ]
            while writer.submitted < 11:  # every one has reached statd and the writer queue
                await asyncio.sleep(0.01)
            assert not any(t.done() for t in [first, *rest])
            assert writer.batches == 1  # the node's start; the first SM_MON's batch is held
            sync.gate.set()
            for body in await asyncio.wait_for(asyncio.gather(first, *rest), GUARD):
                assert proto.decode_sm_stat_res(Decoder(body)).res_stat == Res.STAT_SUCC
            # Group commit: the ten that waited went to disk in one batch, one directory fsync.
            assert writer.batches == 3 and writer.jobs == 12
            loaded = StateDir(tmp_path).identity(statd.identities()[0]).load().records
            assert sorted(r.mon_name for r in loaded) == sorted(
                f"client{i}.example" for i in range(11)
            )
        finally:
            sync.gate.set()
            await client.close()
            udp.close()
            await statd.stop()

    asyncio.run(main())


def test_in_process_monitor_awaits_durability_without_blocking(tmp_path: Path) -> None:
    """lockd's in-process route (``floatlock serve``): ``monitor_local`` completes only once
    the record is durable, and the loop keeps running meanwhile."""

    async def main() -> None:
        sync = GatedSync()
        cfg = StatdConfig(state_dir=tmp_path, notify=False, resolve_names=False)
        statd = Statd(cfg, Dispatcher(), writer=StoreWriter(StateDir(tmp_path), sync_dir=sync))
        await statd.start()
        loop = asyncio.get_running_loop()
        sync.hold.set()
        mon = asyncio.create_task(statd.monitor_local("127.0.0.7", "x", (100021, 4, 16), b"p" * 16))
        assert await loop.run_in_executor(None, sync.entered.wait, GUARD)
        ticks = 0
        for _ in range(3):  # the loop runs other callbacks while the batch is held
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 3 and not mon.done()
        sync.hold.clear()
        unmon = asyncio.create_task(statd.unmonitor_local("127.0.0.7", "x", (100021, 4, 16)))
        await asyncio.sleep(0)
        assert not unmon.done()  # SM_UNMON waits for its removal to be durable
        sync.gate.set()
        r = await asyncio.wait_for(mon, GUARD)
        assert r.ok and r.state == 1
        assert await asyncio.wait_for(unmon, GUARD) == 1
        assert StateDir(tmp_path).identity(statd.identities()[0]).load().records == []
        await statd.stop()

    asyncio.run(main())
