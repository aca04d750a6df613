"""statd's RPC procedures through the real dispatcher, with the real store in a temp dir."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from floatlock.address import ServerAddress
from floatlock.nsm import proto
from floatlock.nsm.monitor import Record
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res, SmStatRes, StatChge, Status
from floatlock.nsm.statd import Statd, StatdConfig
from floatlock.nsm.store import StateDir
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AcceptStat, RpcError, encode_call, parse_reply
from floatlock.xdr import Decoder

PRIV = bytes(range(16))
LOCAL = ("127.0.0.1", 700)
REMOTE = ("198.18.0.5", 700)
VS = "127.0.0.10"


class Harness:
    def __init__(self, tmp: Path, grace: float = 60.0) -> None:
        self.now = 1000.0
        self.disp = Dispatcher()
        cfg = StatdConfig(state_dir=tmp, grace=grace, notify=False, name_resolver=self.resolve)
        self.statd = Statd(cfg, self.disp, clock=lambda: self.now)
        self.fired: list[tuple[Status, Record]] = []
        self.statd.add_local_callback(100021, 4, lambda s, r: self.fired.append((s, r)))

    def in_grace(self, identity: str, seconds: float) -> None:
        """As if ``identity`` had started with clients to notify: an identity with no
        records starts with no grace (see Monitor.start)."""
        self.statd.monitor.identities[ServerAddress(identity)].grace_until = self.now + seconds

    async def resolve(self, name: str) -> list[str]:
        # No DNS in tests: names resolve from this table only.
        if name == "peer.example":
            return ["127.0.0.20"]
        raise OSError(f"unknown host {name}")

    async def call(
        self, proc: int, args: bytes, client: Any = LOCAL, server: str = "127.0.0.1"
    ) -> bytes:
        reply = self.disp.dispatch(
            encode_call(7, proto.SM_PROG, 1, proc, args), client, ServerAddress(server), "udp"
        )
        if not isinstance(reply, bytes | None):
            reply = await reply  # a write to wait for: answered once it is durable
        assert isinstance(reply, bytes)
        return parse_reply(reply).body

    async def mon(
        self, mon_name: str, my_name: str, client: Any = LOCAL, proc: int = Proc.SM_MON
    ) -> Any:
        args = proto.encode_mon(Mon(MonId(mon_name, MyId(my_name, 100021, 4, 16)), PRIV))
        body = await self.call(proc, args, client)
        if proc == Proc.SM_MON2:
            return proto.decode_sm_mon2_res(Decoder(body))
        return proto.decode_sm_stat_res(Decoder(body))


def test_every_procedure(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        h.in_grace("", 60)
        h.now += 30  # the node's grace started 30 s before the virtual server's
        await h.statd.takeover(VS)
        h.in_grace(VS, 60)
        # SM_STAT: the state of the identity the request arrived on
        body = await h.call(Proc.SM_STAT, proto.encode_sm_name("whoever"))
        assert proto.decode_sm_stat_res(Decoder(body)) == SmStatRes(Res.STAT_SUCC, 1)
        body = await h.call(Proc.SM_STAT, proto.encode_sm_name("x"), REMOTE, server=VS)
        assert proto.decode_sm_stat_res(Decoder(body)) == SmStatRes(Res.STAT_SUCC, 1)
        # SM_MON / SM_MON2 (grace of the virtual server)
        assert await h.mon("127.0.0.7", VS) == SmStatRes(Res.STAT_SUCC, 1)
        h.now += 10
        r2 = await h.mon("127.0.0.8", VS, proc=Proc.SM_MON2)
        assert (r2.res_stat, r2.grace_remaining) == (Res.STAT_SUCC, 50)
        assert (await h.mon("127.0.0.8", "node-a", proc=Proc.SM_MON2)).grace_remaining == 20
        store = StateDir(tmp_path).identity(ServerAddress(VS))
        assert sorted(r.mon_name for r in store.load().records) == ["127.0.0.7", "127.0.0.8"]
        # SM_NOTIFY from a monitored peer fires the callbacks (by sender address here)
        await h.call(
            Proc.SM_NOTIFY, proto.encode_stat_chge(StatChge("its-name", 9)), ("127.0.0.8", 1)
        )
        await h.statd.wait_idle()
        assert sorted((s.mon_name, s.state, r.my_name) for s, r in h.fired) == [
            ("127.0.0.8", 9, VS),
            ("127.0.0.8", 9, "node-a"),
        ]
        assert h.fired[0][0].priv == PRIV
        # SM_UNMON
        mid = MonId("127.0.0.7", MyId(VS, 100021, 4, 16))
        body = await h.call(Proc.SM_UNMON, proto.encode_mon_id(mid))
        assert proto.decode_sm_stat(Decoder(body)) == 1
        assert [r.mon_name for r in store.load().records] == ["127.0.0.8"]
        # SM_UNMON_ALL
        body = await h.call(Proc.SM_UNMON_ALL, proto.encode_my_id(MyId(VS, 100021, 4, 16)))
        assert store.load().records == []
        # SM_SIMU_CRASH: every identity moves on
        await h.call(Proc.SM_SIMU_CRASH, b"")
        assert await h.call(Proc.SM_STAT, proto.encode_sm_name("x")) == b"\0\0\0\0\0\0\0\3"
        await h.statd.stop()
        assert StateDir(tmp_path).identity(ServerAddress(VS)).read_state() == 4

    asyncio.run(main())


def test_remote_callers_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        assert (await h.mon("c", "n", REMOTE)).res_stat == Res.STAT_FAIL
        assert (await h.mon("c", "n", REMOTE, Proc.SM_MON2)).res_stat == Res.STAT_FAIL
        await h.mon("c", "n")
        mid = MonId("c", MyId("n", 100021, 4, 16))
        await h.call(Proc.SM_UNMON, proto.encode_mon_id(mid), REMOTE)
        await h.call(Proc.SM_UNMON_ALL, proto.encode_my_id(mid.my_id), REMOTE)
        await h.call(Proc.SM_SIMU_CRASH, b"", REMOTE)
        assert [r.mon_name for r in h.statd.monitor.records()] == ["c"]
        assert h.statd.monitor.state_of("127.0.0.1") == 1
        assert h.statd.service.refused == 5
        # SM_NOTIFY about a peer we do not monitor does nothing
        await h.call(Proc.SM_NOTIFY, proto.encode_stat_chge(StatChge("z", 3)), REMOTE)
        await h.statd.wait_idle()
        assert h.fired == []
        await h.statd.stop()

    asyncio.run(main())


def test_malformed_and_oversized_arguments_are_garbage(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        with pytest.raises(RpcError) as ei:
            await h.call(Proc.SM_MON, b"\0\0\0\5ab")
        assert ei.value.accept_stat == AcceptStat.GARBAGE_ARGS
        long_name = (1025).to_bytes(4, "big") + b"a" * 1028
        with pytest.raises(RpcError) as ei:
            await h.call(Proc.SM_STAT, long_name)
        assert ei.value.accept_stat == AcceptStat.GARBAGE_ARGS
        with pytest.raises(RpcError) as ei:
            await h.call(77, b"")
        assert ei.value.accept_stat == AcceptStat.PROC_UNAVAIL
        await h.statd.stop()

    asyncio.run(main())


def test_mon_that_cannot_be_written_fails_and_is_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()

        def broken(*_a: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr("floatlock.nsm.store.IdentityStore.write_records", broken)
        assert (await h.mon("c", "n")).res_stat == Res.STAT_FAIL
        assert h.statd.monitor.records() == []
        await h.statd.stop()

    asyncio.run(main())


def test_release_fires_only_that_address(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        await h.statd.takeover(VS)
        await h.mon("c1", VS)
        await h.mon("c2", VS)
        await h.mon("c1", "node-a")
        assert await h.statd.release(VS) == 2
        assert sorted((s.mon_name, r.my_name) for s, r in h.fired) == [("c1", VS), ("c2", VS)]
        # The records stay on disk for the node that takes the address over.
        store = StateDir(tmp_path).identity(ServerAddress(VS))
        assert len(store.load().records) == 2 and store.read_state() == 2
        await h.statd.stop()

    asyncio.run(main())


def test_restart_and_takeover_bump_state_and_notify_moves_to_backup(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        await h.statd.takeover(VS)
        await h.mon("127.0.0.7", VS)
        await h.statd.stop()  # VS: 2 on disk, 1 record
        # Another node takes the address over (notify on; nobody answers at port 9: given up)
        from floatlock.nsm.monitor import Backoff

        cfg = StatdConfig(
            state_dir=tmp_path, peer_statd_port=9, notify_timeout=0.2, resolve_names=False
        )
        cfg.notify_backoff = Backoff(first=0.0, total=0.0)
        h2 = Statd(cfg, Dispatcher())
        await h2.start()
        assert await h2.takeover(VS) == 3
        store = StateDir(tmp_path).identity(ServerAddress(VS))
        assert store.load().records == []
        assert [r.mon_name for r in store.load_backup().records] == ["127.0.0.7"]
        await h2.wait_idle()
        assert h2.notifier.failed == 1  # kept in sm.bak for the next start
        assert len(store.load_backup().records) == 1
        await h2.stop()

    asyncio.run(main())


def test_host_named_peer_matched_by_resolved_sender(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        await h.statd.start()
        await h.mon("peer.example", "node-a")
        await h.statd.wait_idle()  # the lookup (a table here, no DNS) has filled the aliases
        await h.call(Proc.SM_NOTIFY, proto.encode_stat_chge(StatChge("peer", 5)), ("127.0.0.20", 1))
        await h.statd.wait_idle()
        assert [(s.mon_name, s.state) for s, _ in h.fired] == [("peer.example", 5)]
        await h.statd.stop()

    asyncio.run(main())


def test_in_process_monitor_route(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, grace=40)
        await h.statd.start()
        await h.statd.takeover(VS)
        h.in_grace(VS, 40)
        r = await h.statd.monitor_local("127.0.0.7", VS, (100021, 4, 16), PRIV)
        assert (r.ok, r.state, r.grace_remaining) == (True, 1, 40)
        store = StateDir(tmp_path).identity(ServerAddress(VS))
        assert [x.mon_name for x in store.load().records] == ["127.0.0.7"]
        assert not (await h.statd.monitor_local("", VS, (100021, 4, 16), PRIV)).ok
        assert await h.statd.unmonitor_local("127.0.0.7", VS, (100021, 4, 16)) == 1
        assert store.load().records == []
        await h.statd.stop()

    asyncio.run(main())
