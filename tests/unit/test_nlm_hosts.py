"""lockd's host table: keys, monitoring rule, statd callbacks, FREE_ALL, per-address drop, GC."""

from __future__ import annotations

import pytest

from floatlock.address import ServerAddress
from floatlock.nlm.hosts import (
    ANY_SERVER,
    HostKey,
    HostLimitError,
    HostTable,
    MonitorHost,
    MonitorState,
    UnmonitorHost,
    priv_for,
    server_from_priv,
)

VIP1 = ServerAddress("198.18.0.10")
VIP2 = ServerAddress("198.18.0.11")
V6 = ServerAddress("2001:db8::1")


def test_virtual_server_keys_by_client_and_server_address() -> None:
    t = HostTable()
    a = t.lookup("198.18.1.1", "clienta", VIP1, now=1.0)
    b = t.lookup("198.18.1.1", "clienta", VIP2, now=1.0)
    assert a is not b
    assert a.key == HostKey("198.18.1.1", VIP1)
    assert a.grace_key == VIP1 and b.grace_key == VIP2
    assert t.lookup("198.18.1.1", "other-name", VIP1, now=2.0) is a  # caller_name ignored
    assert a.last_seen == 2.0
    assert len(t) == 2


def test_virtual_server_off_keys_by_client_alone() -> None:
    t = HostTable(virtual_server=False, node_name="node1")
    a = t.lookup("198.18.1.1", "x", VIP1, now=0.0)
    assert t.lookup("198.18.1.1", "x", VIP2, now=0.0) is a
    assert a.key == HostKey("198.18.1.1", ANY_SERVER)
    mon = t.start_monitor(a)
    assert mon is not None and mon.my_name == "node1" and mon.priv == bytes(16)
    assert t.find_monitored("198.18.1.1", bytes(16)) is a


def test_caller_name_identity_only_when_configured() -> None:
    t = HostTable(use_caller_name=True)
    a = t.lookup("198.18.1.1", "clienta", VIP1, now=0.0)
    b = t.lookup("198.18.1.2", "clienta", VIP1, now=0.0)  # same name, new source address
    assert a is b and a.key.client == "clienta" and a.addr == "198.18.1.2"
    assert t.lookup("198.18.1.3", "", VIP1, now=0.0).key.client == "198.18.1.3"


def test_repeated_lookups_follow_the_latest_address_and_name() -> None:
    # Lookups are answered from a cache of recent requests: it must not pin stale values.
    t = HostTable(use_caller_name=True)
    a = t.lookup("198.18.1.1", "clienta", VIP1, now=0.0)
    t.lookup("198.18.1.2", "clienta", VIP1, now=1.0)
    assert t.lookup("198.18.1.1", "clienta", VIP1, now=2.0) is a
    assert a.addr == "198.18.1.1" and a.last_seen == 2.0
    u = HostTable()
    h = u.lookup("198.18.1.1", "one", VIP1, now=0.0)
    u.lookup("198.18.1.1", "two", VIP1, now=0.0)
    assert u.lookup("198.18.1.1", "one", VIP1, now=0.0) is h and h.caller_name == "one"
    # A removed host is not handed out again: the next lookup makes a new one.
    u.drop(h)
    fresh = u.lookup("198.18.1.1", "one", VIP1, now=3.0)
    assert fresh is not h and u.get(fresh.key) is fresh


def test_v4_mapped_source_is_folded() -> None:
    t = HostTable()
    h = t.lookup("::ffff:198.18.1.1", "", VIP1, now=0.0)
    assert h.key.client == "198.18.1.1" and h.addr == "198.18.1.1"
    assert t.lookup("198.18.1.1", "", VIP1, now=0.0) is h


def test_monitor_once_with_my_name_the_server_address() -> None:
    t = HostTable()
    h = t.lookup("198.18.1.1", "c", VIP1, now=0.0)
    mon = t.start_monitor(h)
    assert mon == MonitorHost(h.key, "198.18.1.1", "198.18.0.10", priv_for(VIP1))
    assert h.monitor is MonitorState.PENDING
    assert t.start_monitor(h) is None  # in flight: not twice
    t.monitor_done(h, ok=False)
    assert not h.monitored and h.monitor.name == "UNMONITORED"
    assert t.start_monitor(h) is not None  # retried after a failure
    t.monitor_done(h, ok=True)
    assert h.monitored
    assert t.start_monitor(h) is None


def test_priv_round_trip() -> None:
    assert len(priv_for(VIP1)) == 16
    assert server_from_priv(priv_for(VIP1)) == VIP1
    assert server_from_priv(priv_for(V6)) == V6
    assert server_from_priv(bytes(16)) is None
    assert server_from_priv(b"short") is None
    assert priv_for(ANY_SERVER) == bytes(16)


def test_statd_callback_finds_exactly_one_address() -> None:
    t = HostTable()
    a = t.lookup("198.18.1.1", "", VIP1, now=0.0)
    b = t.lookup("198.18.1.1", "", VIP2, now=0.0)
    assert t.rebooted("198.18.1.1", priv_for(VIP2), state=9) is b
    assert b.nsm_state == 9 and a.nsm_state is None
    assert t.rebooted("198.18.1.1", bytes(16), state=9) is None
    assert t.rebooted("198.18.9.9", priv_for(VIP1), state=9) is None


def test_free_all_lookup_by_client() -> None:
    t = HostTable()
    a = t.lookup("198.18.1.1", "", VIP1, now=0.0)
    b = t.lookup("198.18.1.1", "", VIP2, now=0.0)
    t.lookup("198.18.1.2", "", VIP1, now=0.0)
    assert {h.key for h in t.hosts_of_client("198.18.1.1")} == {a.key, b.key}
    assert t.hosts_of_client("198.18.1.1", VIP2) == [b]
    assert t.hosts_of_client("nobody") == []


def test_collect_unmonitors_idle_hosts_only() -> None:
    t = HostTable(idle_timeout=100.0)
    busy = t.lookup("198.18.1.1", "", VIP1, now=0.0)
    idle = t.lookup("198.18.1.2", "", VIP1, now=0.0)
    never = t.lookup("198.18.1.3", "", VIP1, now=0.0)
    pending = t.lookup("198.18.1.4", "", VIP1, now=0.0)
    for h in (busy, idle):
        t.start_monitor(h)
        t.monitor_done(h, True)
    t.start_monitor(pending)
    holding = {busy.key}
    t.lookup("198.18.1.2", "", VIP1, now=10.0)  # idle was seen again at 10

    def is_busy(key: HostKey) -> bool:
        return key in holding

    assert t.collect(now=50.0, busy=is_busy) == []
    assert len(t) == 4
    assert t.collect(now=100.0, busy=is_busy) == []  # only `never` (unmonitored) is idle
    assert t.get(never.key) is None
    assert t.collect(now=110.0, busy=is_busy) == [
        UnmonitorHost(idle.key, "198.18.1.2", "198.18.0.10")
    ]
    assert t.get(idle.key) is None
    assert t.get(busy.key) is busy and t.get(pending.key) is pending


def test_drop_server_lists_and_forgets_one_address() -> None:
    t = HostTable()
    a = t.lookup("198.18.1.1", "", VIP1, now=0.0)
    b = t.lookup("198.18.1.1", "", VIP2, now=0.0)
    c = t.lookup("198.18.1.2", "", VIP1, now=0.0)
    assert set(t.servers()) == {VIP1, VIP2}
    assert {h.key for h in t.hosts_of_server(VIP1)} == {a.key, c.key}
    dropped = t.drop_server(VIP1)
    assert {h.key for h in dropped} == {a.key, c.key}
    assert t.hosts_of_server(VIP1) == [] and t.servers() == [VIP2]
    assert t.hosts_of_client("198.18.1.1") == [b]
    t.drop(b)
    assert len(t) == 0 and t.servers() == []


def test_host_limit() -> None:
    t = HostTable(max_hosts=2)
    t.lookup("198.18.1.1", "", VIP1, now=0.0)
    t.lookup("198.18.1.2", "", VIP1, now=0.0)
    t.lookup("198.18.1.1", "", VIP1, now=0.0)  # existing: fine
    with pytest.raises(HostLimitError):
        t.lookup("198.18.1.3", "", VIP1, now=0.0)
