"""Crash safety: statd (a subprocess) is SIGKILLed during a burst of SM_MON calls.

After a restart every SM_MON that was acknowledged is on disk and loaded, and the state number
moved on (odd, larger: the NSM rule after a crash).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from floatlock.address import ServerAddress
from floatlock.net.client import RpcClient
from floatlock.nsm import proto
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res
from floatlock.nsm.store import StateDir
from floatlock.xdr import Decoder

RUN = (
    "import argparse, asyncio, sys\n"
    "from floatlock.nsm import statd\n"
    "p = argparse.ArgumentParser(); statd.add_arguments(p)\n"
    "sys.exit(asyncio.run(statd.run(p.parse_args(sys.argv[1:]))))\n"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def spawn(state_dir: Path, port: int) -> asyncio.subprocess.Process:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN, "-P", str(state_dir), "-p", str(port), "--listen",
        "127.0.0.1", "--no-rpcbind", "--no-resolve", "-L", "-F",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening" in line, line
    return proc


def mon(i: int) -> bytes:
    m = Mon(MonId(f"client{i}.example", MyId("198.18.0.10", 100021, 4, 16)), i.to_bytes(16, "big"))
    return proto.encode_mon(m)


def test_sigkill_during_sm_mon_burst_loses_no_acknowledged_record(tmp_path: Path) -> None:
    port = free_port()

    async def main() -> None:
        proc = await spawn(tmp_path, port)
        acked: set[int] = set()
        client = await RpcClient.connect("127.0.0.1", port, "udp", timeout=3.0, retries=2)

        async def one(i: int) -> None:
            body = await client.call(100024, 1, Proc.SM_MON, mon(i))
            if proto.decode_sm_stat_res(Decoder(body)).res_stat == Res.STAT_SUCC:
                acked.add(i)

        tasks = [asyncio.create_task(one(i)) for i in range(400)]
        while len(acked) < 60:  # kill in the middle of the burst
            await asyncio.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        assert 60 <= len(acked) < 400, len(acked)

        store = StateDir(tmp_path).identity(ServerAddress(""))
        assert store.read_state() == 1  # odd: it never stopped cleanly
        proc2 = await spawn(tmp_path, port)
        try:
            loaded = {r.mon_name: r for r in store.load().records}
            for i in acked:
                r = loaded[f"client{i}.example"]
                assert r.priv == i.to_bytes(16, "big") and r.my_name == "198.18.0.10"
            async with await RpcClient.connect("127.0.0.1", port, "udp") as c:
                body = await c.call(100024, 1, Proc.SM_STAT, proto.encode_sm_name("x"))
            assert proto.decode_sm_stat_res(Decoder(body)).state == 3  # moved on, still odd
            assert store.read_state() == 3
            assert not [p for p in store.sm.iterdir() if p.name.startswith(".")]
        finally:
            proc2.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc2.wait(), 20) == 0
        assert store.read_state() == 4  # clean stop: even

    asyncio.run(main())
