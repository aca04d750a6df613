"""statd on loopback, served by the real UDP/TCP transports, with real RPC peers.

* SM_MON from a Python client (UDP and TCP), then SM_NOTIFY in: our registered callback
  program (a test RPC server) receives the SM_STATUS callback with mon_name, state and priv.
* takeover of a virtual address (127.0.0.10): SM_NOTIFY reaches a fake client statd, sent
  from 127.0.0.10 with mon_name 127.0.0.10, after a PMAP GETPORT on the client's portmapper.
* lockd's SM_MON2 helper against our statd (grace) and against a standard statd (fallback).
* ``-o PORT``: every SM_NOTIFY and its PMAP GETPORT leave from that port, in parallel, from the
  node's wildcard and from a virtual address at once (the receiver checks the sender's port).
* ``floatlock statd --listen 127.0.0.1 --listen ::1``: one port, UDP and TCP on both families.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from floatlock.address import ServerAddress
from floatlock.net.client import RpcClient, Transport
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.nsm import proto
from floatlock.nsm.effects import Callback, Record
from floatlock.nsm.monitor import Backoff
from floatlock.nsm.notify import monitor
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res, StatChge, Status
from floatlock.nsm.statd import Statd, StatdConfig, add_arguments
from floatlock.nsm.statd_cli import config_from_args, ipv6_available, listen_addresses
from floatlock.nsm.store import StateDir
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import builtin_portmapper
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.xdr import Decoder

PRIV = bytes(range(16, 32))
NLM_PROG, NLM_VERS, NLM_SM_NOTIFY = 100021, 4, 16


class CallbackServer:
    """A stand-in for lockd: program 100021 v4 procedure 16 takes ``struct status``."""

    def __init__(self) -> None:
        self.got: list[tuple[Status, str]] = []
        self.event = asyncio.Event()
        self.disp = Dispatcher()
        self.disp.register(
            NLM_PROG,
            NLM_VERS,
            {NLM_SM_NOTIFY: Procedure("SM_STATUS", self._status, proto.decode_status)},
        )
        self.udp = UdpServer(self.disp, "127.0.0.1", 0)

    def _status(self, st: Status, call: Call) -> None:
        self.got.append((st, str(call.client[0])))
        self.event.set()

    async def resolver(self, host: str, prog: int, vers: int) -> int:
        assert (host, prog, vers) == ("127.0.0.1", NLM_PROG, NLM_VERS)
        return self.udp.port


async def start_statd(
    tmp: Path, cb: CallbackServer, **kw: Any
) -> tuple[Statd, UdpServer, TcpServer]:
    disp = Dispatcher()
    cfg = StatdConfig(
        state_dir=tmp, grace=30.0, callback_resolver=cb.resolver, resolve_names=False, **kw
    )
    statd = Statd(cfg, disp)
    udp = UdpServer(disp, "127.0.0.1", 0)
    await udp.start()
    tcp = TcpServer(disp, "127.0.0.1", 0)
    await tcp.start()
    await statd.start()
    return statd, udp, tcp


def mon_args(mon_name: str, my_name: str) -> bytes:
    return proto.encode_mon(
        Mon(MonId(mon_name, MyId(my_name, NLM_PROG, NLM_VERS, NLM_SM_NOTIFY)), PRIV)
    )


def test_mon_then_notify_fires_callback(tmp_path: Path) -> None:
    async def main() -> None:
        cb = CallbackServer()
        await cb.udp.start()
        statd, udp, tcp = await start_statd(tmp_path, cb, notify=False)
        try:
            async with await RpcClient.connect("127.0.0.1", udp.port, "udp") as c:
                body = await c.call(100024, 1, Proc.SM_MON, mon_args("127.0.0.7", "127.0.0.1"))
                assert proto.decode_sm_stat_res(Decoder(body)).res_stat == Res.STAT_SUCC
            async with await RpcClient.connect("127.0.0.1", tcp.port, "tcp") as c:
                body = await c.call(100024, 1, Proc.SM_MON, mon_args("peer.example", "198.18.0.10"))
                assert proto.decode_sm_stat_res(Decoder(body)).res_stat == Res.STAT_SUCC
            node = StateDir(tmp_path).identity(ServerAddress(""))
            assert {r.mon_name for r in node.load().records} == {"127.0.0.7", "peer.example"}
            # The peer at 127.0.0.7 reboots and tells us, from its own address.
            async with await RpcClient.connect(
                "127.0.0.1", udp.port, "udp", source="127.0.0.7"
            ) as c:
                await c.call(
                    100024, 1, Proc.SM_NOTIFY, proto.encode_stat_chge(StatChge("127.0.0.7", 41))
                )
            await asyncio.wait_for(cb.event.wait(), 10)
            await statd.wait_idle()
            assert cb.got == [(Status("127.0.0.7", 41, PRIV), "127.0.0.1")]
        finally:
            await statd.stop()
            udp.close()
            await tcp.close()
            cb.udp.close()

    asyncio.run(main())


class FakeClientHost:
    """A client host at 127.0.0.7: a portmapper and a statd on one port, recording SM_NOTIFY."""

    def __init__(self) -> None:
        self.disp = Dispatcher()
        self.notifies: list[tuple[StatChge, str]] = []
        self.event = asyncio.Event()
        self.udp = UdpServer(self.disp, "127.0.0.7", 0)

    async def start(self) -> None:
        self.disp.register(
            100024,
            1,
            {Proc.SM_NOTIFY: Procedure("SM_NOTIFY", self._notify, proto.decode_stat_chge)},
        )
        await self.udp.start()
        builtin_portmapper(
            self.disp, [Endpoint(100024, 1, "udp", self.udp.port)], port=self.udp.port
        )

    def _notify(self, chge: StatChge, call: Call) -> None:
        self.notifies.append((chge, str(call.client[0])))
        self.event.set()


def test_takeover_notifies_from_the_virtual_address(tmp_path: Path) -> None:
    vs = "127.0.0.10"

    async def main() -> None:
        cb = CallbackServer()
        await cb.udp.start()
        client = FakeClientHost()
        await client.start()
        # First "node": monitors the client under the virtual address, then gives it up.
        statd, udp, tcp = await start_statd(tmp_path, cb, notify=False)
        await statd.takeover(vs)
        async with await RpcClient.connect("127.0.0.1", udp.port, "udp") as c:
            await c.call(100024, 1, Proc.SM_MON, mon_args("127.0.0.7", vs))
        assert await statd.release(vs) == 1  # lockd is told to drop that client's locks
        assert [(s.mon_name, s.priv) for s, _ in cb.got] == [("127.0.0.7", PRIV)]
        await statd.stop()
        udp.close()
        await tcp.close()
        # Second "node" takes the address over and notifies the client from it.
        statd2, udp2, tcp2 = await start_statd(
            tmp_path, cb, pmap_port=client.udp.port, notify_backoff=Backoff(0.1, 2, 1, 10)
        )
        try:
            state = await statd2.takeover(vs)
            assert state == 3
            await asyncio.wait_for(client.event.wait(), 10)
            await statd2.wait_idle()
            assert client.notifies == [(StatChge(vs, 3), vs)]
            store = StateDir(tmp_path).identity(ServerAddress(vs))
            assert store.load_backup().records == []  # answered: sm.bak record deleted
        finally:
            await statd2.stop()
            udp2.close()
            await tcp2.close()
            client.udp.close()
            cb.udp.close()

    asyncio.run(main())


def test_lockd_helper_uses_sm_mon2_and_falls_back(tmp_path: Path) -> None:
    async def main() -> None:
        cb = CallbackServer()
        statd, udp, tcp = await start_statd(tmp_path, cb, notify=False)
        # A "standard" statd: the same program without SM_MON2.
        std_disp = Dispatcher()
        procs = statd.service.procedures()
        del procs[Proc.SM_MON2]
        std_disp.register(100024, 1, procs)
        std = UdpServer(std_disp, "127.0.0.1", 0)
        await std.start()
        # A node identity that restarted with clients to notify is in grace.
        statd.monitor.identity_of("127.0.0.1").grace_until = statd.clock() + 30
        try:
            r = await monitor(("127.0.0.1", udp.port), "c1", "127.0.0.1", (100021, 4, 16), PRIV)
            assert r.ok and r.state == 1 and r.grace_remaining is not None
            assert 0 < r.grace_remaining <= 30
            r = await monitor(("127.0.0.1", std.port), "c2", "127.0.0.1", (100021, 4, 16), PRIV)
            assert r.ok and r.state == 1 and r.grace_remaining is None
            assert {x.mon_name for x in statd.monitor.records()} == {"c1", "c2"}
        finally:
            await statd.stop()
            udp.close()
            std.close()
            await tcp.close()

    asyncio.run(main())


class RecordingDispatcher(Dispatcher):
    """A dispatcher that notes who sent each call: (client ip, client port, prog, server)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, int, str]] = []

    def dispatch(self, data: bytes, client: Any, server: ServerAddress, transport: str) -> Any:
        prog = int.from_bytes(data[12:16], "big") if len(data) >= 16 else -1
        self.seen.append((str(client[0]), int(client[1]), prog, str(server)))
        return super().dispatch(data, client, server, transport)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_outgoing_port_notifications_leave_from_it(tmp_path: Path) -> None:
    """statd -o PORT: every SM_NOTIFY and the PMAP GETPORT before it come from PORT, for the
    node (wildcard source) and a virtual server (its own address) at once, in parallel."""
    vs = "127.0.0.10"
    peers = ["127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.1.1", "127.0.1.2"]
    node_peer = "127.0.0.11"

    async def main() -> None:
        notified: set[tuple[str, str]] = set()

        def on_notify(chge: StatChge, call: Call) -> None:
            notified.add((chge.mon_name, str(call.server)))

        recv = RecordingDispatcher()
        recv.register(
            100024, 1, {Proc.SM_NOTIFY: Procedure("SM_NOTIFY", on_notify, proto.decode_stat_chge)}
        )
        receiver = UdpServer(recv, "0.0.0.0", 0)
        await receiver.start()
        builtin_portmapper(recv, [Endpoint(100024, 1, "udp", receiver.port)], port=receiver.port)
        sd = StateDir(tmp_path)
        vstore = sd.identity(ServerAddress(vs))
        vstore.ensure()
        for p in peers:
            vstore.write_records(p, (Record(p, vs, Callback(100021, 4, 16), PRIV),))
        nstore = sd.identity(ServerAddress(""))
        nstore.ensure()
        nstore.write_records(
            node_peer, (Record(node_peer, "127.0.0.1", Callback(100021, 4, 16), PRIV),)
        )
        out_port = free_udp_port()
        cb = CallbackServer()
        statd, udp, tcp = await start_statd(
            tmp_path, cb, pmap_port=receiver.port, outgoing_port=out_port,
            notify_timeout=1.0, notify_backoff=Backoff(0.1, 2, 0.5, 10),
        )  # fmt: skip
        try:
            await statd.takeover(vs)
            await asyncio.wait_for(statd.wait_idle(), 20)
            # mon_name is the identity that speaks; call.server is the peer that was reached.
            assert notified == {(vs, p) for p in peers} | {("127.0.0.1", node_peer)}
            assert statd.notifier.sent == len(peers) + 1 and statd.notifier.failed == 0
            assert vstore.load_backup().records == [] and nstore.load_backup().records == []
            progs = {prog for _, _, prog, _ in recv.seen}
            assert progs == {100000, 100024}  # GETPORT and SM_NOTIFY
            assert {port for _, port, _, _ in recv.seen} == {out_port}
            by_peer = {(ip, server) for ip, _, _, server in recv.seen}
            assert by_peer == {(vs, p) for p in peers} | {("127.0.0.1", node_peer)}
        finally:
            await statd.stop()
            udp.close()
            await tcp.close()
            receiver.close()

    asyncio.run(main())


def test_statd_command_options() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["-P", "/tmp/x", "-o", "2049"])
    assert config_from_args(args).outgoing_port == 2049
    assert config_from_args(p.parse_args(["-P", "/tmp/x"])).outgoing_port == 0
    hosts, optional = listen_addresses(args.listen)
    assert hosts == (["0.0.0.0", "::"] if ipv6_available() else ["0.0.0.0"])
    assert optional == frozenset(h for h in hosts if ":" in h)
    args = p.parse_args(["--listen", "127.0.0.1", "--listen", "::1", "--listen", "127.0.0.1"])
    assert listen_addresses(args.listen) == (["127.0.0.1", "::1"], frozenset())


def test_statd_listens_on_ipv4_and_ipv6(tmp_path: Path) -> None:
    """``floatlock statd --listen 127.0.0.1 --listen ::1``: one port, UDP and TCP on both,
    SM_MON from ::1 accepted as local (the callback would go back to ::1)."""
    if not ipv6_available():
        pytest.skip("no IPv6 on this host")
    src = str(Path(__file__).resolve().parents[2] / "src")
    script = "import sys; from floatlock.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "statd", "-P", str(tmp_path), "-L", "--no-rpcbind",
         "--no-resolve", "--listen", "127.0.0.1", "--listen", "::1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1, ::1 port" in line, line
        port = int(line.split()[-1])

        async def main() -> None:
            for host in ("127.0.0.1", "::1"):
                transports: tuple[Transport, ...] = ("udp", "tcp")
                for transport in transports:
                    async with await RpcClient.connect(host, port, transport) as c:
                        body = await c.call(100024, 1, Proc.SM_STAT, proto.encode_sm_name("x"))
                        assert proto.decode_sm_stat_res(Decoder(body)).state % 2 == 1
            async with await RpcClient.connect("::1", port, "udp") as c:
                body = await c.call(100024, 1, Proc.SM_MON, mon_args("::1", "::1"))
                assert proto.decode_sm_stat_res(Decoder(body)).res_stat == Res.STAT_SUCC

        asyncio.run(main())
        rec = (tmp_path / "node" / "sm").iterdir()
        assert [p.read_text().split()[-1] for p in rec] == ["::1"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
