"""Time statd's SM_NOTIFY to 5,000 clients after a takeover (loopback only).

5,000 fake clients are the addresses 127.1.x.y; one receiver socket on the wildcard address
answers for all of them (it replies from the address each datagram was sent to, IP_PKTINFO),
serving both the portmapper (PMAP GETPORT) and SM_NOTIFY, so every notification costs the real
two round trips.  The statd takes the virtual server 127.0.0.10 over with 5,000 records in its
store, sends from 127.0.0.10, and we time until every peer has answered.

Usage: python bench/notify_5000.py [--clients N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from floatlock.address import ServerAddress
from floatlock.net.udp import UdpServer
from floatlock.nsm import proto
from floatlock.nsm.monitor import Backoff, Callback, Record
from floatlock.nsm.proto import Proc, StatChge
from floatlock.nsm.statd import Statd, StatdConfig
from floatlock.nsm.store import StateDir
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import builtin_portmapper
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure

VS = "127.0.0.10"


def client_addr(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


async def main(n: int, concurrency: int) -> None:
    seen: set[str] = set()

    def on_notify(chge: StatChge, call: Call) -> None:
        assert chge.mon_name == VS and str(call.client[0]) == VS
        seen.add(str(call.server))

    recv_disp = Dispatcher()
    recv_disp.register(
        100024, 1, {Proc.SM_NOTIFY: Procedure("SM_NOTIFY", on_notify, proto.decode_stat_chge)}
    )
    receiver = UdpServer(recv_disp, "0.0.0.0", 0)
    await receiver.start()
    builtin_portmapper(recv_disp, [Endpoint(100024, 1, "udp", receiver.port)], port=receiver.port)

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        store = StateDir(tmp).identity(ServerAddress(VS))
        store.ensure()
        t0 = time.perf_counter()
        for i in range(n):
            a = client_addr(i)
            store.write_records(a, (Record(a, VS, Callback(100021, 4, 16), bytes(16)),))
        t_write = time.perf_counter() - t0
        cfg = StatdConfig(
            state_dir=Path(tmp),
            notify=False,
            pmap_port=receiver.port,
            notify_concurrency=concurrency,
            notify_timeout=2.0,
            notify_backoff=Backoff(first=0.5, cap=4.0, total=60.0),
        )
        statd = Statd(cfg, Dispatcher())
        await statd.start()
        t0 = time.perf_counter()
        await statd.takeover(VS)
        await statd.wait_idle()
        elapsed = time.perf_counter() - t0
        left = len(store.load_backup().records)
        await statd.stop()
    receiver.close()
    print(
        f"notify {n} clients (concurrency {concurrency}): {elapsed:.2f} s, "
        f"{n / elapsed:.0f} peers/s; answered {statd.notifier.sent}, given up "
        f"{statd.notifier.failed}, receiver saw {len(seen)} addresses, sm.bak left {left}; "
        f"writing {n} records took {t_write:.2f} s"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=256)
    a = ap.parse_args()
    asyncio.run(main(a.clients, a.concurrency))
