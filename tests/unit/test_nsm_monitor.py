"""The sans-IO monitor core: state numbers, identities, records, grace, notifications."""

from __future__ import annotations

from dataclasses import replace

import pytest

from floatlock.address import ServerAddress
from floatlock.nsm.monitor import (
    NODE,
    Backoff,
    Callback,
    Callout,
    DeleteBackup,
    FireCallback,
    Monitor,
    MoveToBackup,
    Notify,
    RateLimiter,
    Record,
    Resolve,
    WriteRecords,
    WriteState,
    down_state,
    up_state,
)
from floatlock.nsm.proto import MonId, MyId, Res, Status

PRIV = b"p" * 16
VS = ServerAddress("198.18.0.10")
NLM = (100021, 4, 16)


def mon_id(mon: str, my: str, cb: tuple[int, int, int] = NLM) -> MonId:
    return MonId(mon, MyId(my, *cb))


def started(grace: float = 50.0, vs: bool = True) -> Monitor:
    m = Monitor(grace=grace, notify_limiter=RateLimiter(rate=1.0, burst=3.0))
    m.start(NODE, 0, [], [], 0.0)
    if vs:
        m.start(VS, 4, [], [], 0.0)
    return m


def test_state_numbers_follow_nsm_rules() -> None:
    assert up_state(0) == 1  # first start ever
    assert up_state(2) == 3  # after a clean stop (even)
    assert up_state(3) == 5  # after a crash (still odd): still increases, still odd
    assert down_state(5) == 6
    assert down_state(6) == 6
    assert up_state(0x7FFFFFFE) == 0x7FFFFFFF and up_state(0x7FFFFFFF) == 1  # wraps, odd
    for s in range(0, 50):
        assert up_state(s) % 2 == 1 and up_state(s) > s
        assert down_state(up_state(s)) % 2 == 0


def test_start_stop_and_takeover_bump_per_identity() -> None:
    m = Monitor()
    eff = m.start(NODE, 6, [], [], 0.0)
    assert WriteState(NODE, 7) in eff
    eff = m.start(VS, 11, [], [], 0.0)  # the old owner crashed: odd state left behind
    assert WriteState(VS, 13) in eff
    assert m.state_of("127.0.0.1") == 7 and m.state_of(VS) == 13
    assert m.stop(VS) == [WriteState(VS, 14)]
    assert m.state_of(VS) == 7  # now the node answers for it
    with pytest.raises(ValueError):
        m.start(NODE, 0, [], [], 0.0)


def test_mon_goes_to_identity_of_my_name_and_keeps_my_name() -> None:
    m = started()
    res, state, eff = m.mon(mon_id("client1", "198.18.0.10"), PRIV, "127.0.0.1", True, 1.0)
    assert (res, state) == (Res.STAT_SUCC, 5)
    rec = Record("client1", "198.18.0.10", Callback(*NLM), PRIV, "127.0.0.1")
    assert eff == [
        WriteRecords(VS, "client1", (rec,)),
        Callout("add-client", "client1", VS),
        Resolve("client1"),  # a host name: its addresses are looked up for SM_NOTIFY matching
    ]
    res, state, eff = m.mon(mon_id("client1", "node-a"), PRIV, "127.0.0.1", True, 1.0)
    assert state == 1 and eff[0] == WriteRecords(
        NODE, "client1", (Record("client1", "node-a", Callback(*NLM), PRIV),)
    )
    assert [r.my_name for r in m.records(VS)] == ["198.18.0.10"]
    # Repeating the same SM_MON changes nothing and runs no callout.
    assert m.mon(mon_id("client1", "node-a"), PRIV, "127.0.0.1", True, 1.0)[2] == []


def test_mon_refusals() -> None:
    m = started()
    assert m.mon(mon_id("c", "n"), PRIV, "198.18.0.5", False, 0)[0] == Res.STAT_FAIL
    assert m.mon(mon_id("", "n"), PRIV, "127.0.0.1", True, 0)[0] == Res.STAT_FAIL
    assert m.mon(mon_id("c", ""), PRIV, "127.0.0.1", True, 0)[0] == Res.STAT_FAIL
    assert m.mon(mon_id("c", "n"), b"short", "127.0.0.1", True, 0)[0] == Res.STAT_FAIL
    assert m.records() == []
    small = Monitor(max_records=1)
    small.start(NODE, 0, [], [], 0)
    assert small.mon(mon_id("a", "n"), PRIV, "127.0.0.1", True, 0)[0] == Res.STAT_SUCC
    assert small.mon(mon_id("b", "n"), PRIV, "127.0.0.1", True, 0)[0] == Res.STAT_FAIL


def test_unmon_matches_name_and_callback_and_refuses_remote() -> None:
    m = started()
    m.mon(mon_id("c", "n"), PRIV, "127.0.0.1", True, 0)
    assert m.unmon(mon_id("c", "n"), False) == (1, [])
    assert m.unmon(mon_id("c", "n", (100021, 4, 99)), True) == (1, [])  # other callback
    state, eff = m.unmon(mon_id("c", "n"), True)
    assert state == 1
    assert eff == [WriteRecords(NODE, "c", ()), Callout("del-client", "c", "n")]
    assert m.records() == []


def test_unmon_all_only_that_requester() -> None:
    m = started()
    for c in ("a", "b"):
        m.mon(mon_id(c, "n"), PRIV, "127.0.0.1", True, 0)
        m.mon(mon_id(c, str(VS)), PRIV, "127.0.0.1", True, 0)
    assert m.unmon_all(MyId("n", *NLM), False)[1] == []
    state, eff = m.unmon_all(MyId("n", *NLM), True)
    assert state == 1
    assert {e.mon_name for e in eff if isinstance(e, WriteRecords)} == {"a", "b"}
    assert sorted((r.mon_name, r.my_name) for r in m.records()) == [
        ("a", str(VS)),
        ("b", str(VS)),
    ]


def test_start_moves_records_to_backup_and_notifies_from_identity() -> None:
    m = Monitor(grace=30)
    cur = [Record("c1", str(VS), Callback(*NLM), PRIV), Record("c2", str(VS), Callback(*NLM), PRIV)]
    bak = [Record("c0", str(VS), Callback(*NLM), PRIV)]
    eff = m.start(VS, 2, cur, bak, 100.0)
    assert eff[:2] == [WriteState(VS, 3), MoveToBackup(VS)]
    assert [e for e in eff if isinstance(e, Notify)] == [
        Notify(VS, c, VS, 3) for c in ("c0", "c1", "c2")
    ]
    assert m.records(VS) == []  # lockd monitors again when clients reclaim
    assert m.notify_done(VS, "c1", True) == [DeleteBackup(VS, "c1")]
    assert m.notify_done(VS, "c2", False) == []  # kept in sm.bak for the next start


def test_start_without_notify_keeps_records() -> None:
    m = Monitor()
    cur = [Record("c1", "n", Callback(*NLM), PRIV)]
    eff = m.start(NODE, 2, cur, [], 0.0, notify=False)
    assert eff == [WriteState(NODE, 3), Resolve("c1")]
    assert m.records() == cur


def test_grace_per_identity() -> None:
    m = Monitor(grace=50)
    old = Record("c9", "node-a", Callback(100021, 4, 16), PRIV)
    m.start(NODE, 0, [old], [], 0.0)
    m.start(VS, 0, [], [replace(old, my_name=str(VS))], 30.0)
    assert m.grace_remaining("node-a", 10.0) == 40
    assert m.grace_remaining(str(VS), 10.0) == 70
    assert m.grace_remaining(str(VS), 79.5) == 1  # rounded up: never end grace early
    assert m.grace_remaining("node-a", 60.0) == 0
    m.end_grace(VS)
    assert m.grace_remaining(str(VS), 31.0) == 0


def test_release_fires_exactly_that_identitys_callbacks() -> None:
    m = started()
    m.mon(mon_id("c1", str(VS)), PRIV, "127.0.0.1", True, 0)
    m.mon(mon_id("c2", str(VS)), b"q" * 16, "127.0.0.1", True, 0)
    m.mon(mon_id("c1", "node-a"), PRIV, "127.0.0.1", True, 0)
    eff = m.release(VS, 1.0)
    fired = [e for e in eff if isinstance(e, FireCallback)]
    assert sorted((e.record.mon_name, e.status.priv) for e in fired) == [
        ("c1", PRIV),
        ("c2", b"q" * 16),
    ]
    assert all(e.record.my_name == str(VS) for e in fired)
    assert WriteState(VS, 6) in eff
    assert VS not in m.identities and [r.my_name for r in m.records()] == ["node-a"]
    # A reactive SM_UNMON for the released address cannot touch its (now foreign) files.
    assert m.unmon(mon_id("c1", str(VS)), True)[1] == []
    with pytest.raises(ValueError):
        m.release(NODE, 0)


def test_notify_matches_by_name_or_sender_and_dedupes() -> None:
    m = started()
    m.mon(mon_id("198.18.0.7", str(VS)), PRIV, "127.0.0.1", True, 0)
    m.mon(mon_id("client.example", "node-a"), PRIV, "127.0.0.1", True, 0)
    m.set_aliases("client.example", ["198.18.0.8"])
    m.mon(mon_id("other", "node-a"), PRIV, "127.0.0.1", True, 0)
    # by sender address (the client's sm-notify sent its host name)
    eff = m.notified("host-name-only", 3, "198.18.0.7", 1.0)
    assert [(e.record.mon_name, e.status) for e in eff if isinstance(e, FireCallback)] == [
        ("198.18.0.7", Status("198.18.0.7", 3, PRIV))
    ]
    assert m.notified("host-name-only", 3, "198.18.0.7", 2.0) == []  # retransmission
    assert len(m.notified("198.18.0.7", 5, "198.18.0.99", 3.0)) == 1  # by name, new state
    # by resolved alias of a host name
    eff = m.notified("client", 9, "198.18.0.8", 4.0)
    assert [e.record.mon_name for e in eff if isinstance(e, FireCallback)] == ["client.example"]
    # a peer we do not monitor: nothing
    assert m.notified("stranger", 1, "198.18.0.50", 5.0) == []


def test_notify_rate_limited_per_sender() -> None:
    m = started()
    m.mon(mon_id("198.18.0.7", "n"), PRIV, "127.0.0.1", True, 0)
    got = [bool(m.notified("198.18.0.7", s, "198.18.0.7", 10.0)) for s in range(1, 8)]
    assert got == [True, True, True, False, False, False, False]  # burst 3
    assert m.notified("198.18.0.7", 20, "198.18.0.7", 12.0)  # refilled after 2 s
    other = m.limiter.allow("198.18.0.9", 10.0)
    assert other  # another sender has its own bucket


def test_simu_crash_restarts_every_identity_and_refuses_remote() -> None:
    m = started()
    m.mon(mon_id("c1", str(VS)), PRIV, "127.0.0.1", True, 0)
    assert m.simu_crash(False, 1.0) == []
    eff = m.simu_crash(True, 1.0)
    assert WriteState(NODE, 3) in eff and WriteState(VS, 7) in eff
    assert Notify(VS, "c1", VS, 7) in eff
    assert m.records() == []


def test_backoff_schedule_is_bounded() -> None:
    b = Backoff(first=1.0, factor=2.0, cap=5.0, total=20.0)
    assert [b.delay(i) for i in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.next_time(1, 0.0, 0.0) == 1.0
    assert b.next_time(4, 0.0, 16.0) is None  # 16 + 5 > 20


def test_rate_limiter_table_is_bounded() -> None:
    r = RateLimiter(max_senders=10)
    for i in range(100):
        r.allow(f"198.18.1.{i}", 0.0)
    assert len(r._buckets) == 10


def test_identity_without_records_needs_no_grace() -> None:
    """No client was recorded, so none can hold a lock to reclaim: no grace to wait out."""
    m = Monitor(grace=50)
    m.start(NODE, 0, [], [], 0.0)
    m.start(VS, 0, [], [], 0.0)
    assert m.grace_remaining("node-a", 0.0) == 0
    assert m.grace_remaining(str(VS), 0.0) == 0
