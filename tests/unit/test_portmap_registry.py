"""The sans-IO mapping table: RFC 1833 SET/UNSET/GETADDR semantics and the PMAP v2 view."""

from __future__ import annotations

from floatlock.portmap.proto import PmapMapping, Rpcb
from floatlock.portmap.registry import SUPERUSER, UNKNOWN_OWNER, PortmapRegistry


def test_set_refuses_an_existing_mapping() -> None:
    r = PortmapRegistry()
    assert r.set(100021, 4, "udp", "0.0.0.0.15.205")
    # RFC 1833 section 2.2.1: refused if a mapping exists for (prog, vers, netid), even the
    # very same one.
    assert not r.set(100021, 4, "udp", "0.0.0.0.15.206")
    assert not r.set(100021, 4, "udp", "0.0.0.0.15.205")
    assert r.set(100021, 4, "tcp", "0.0.0.0.15.205")
    assert r.set(100021, 3, "udp", "0.0.0.0.15.205")
    assert len(r) == 3


def test_set_validates_netid_and_address() -> None:
    r = PortmapRegistry()
    assert not r.set(1, 1, "", "0.0.0.0.0.1")
    assert not r.set(1, 1, "sctp", "0.0.0.0.0.1")
    assert not r.set(1, 1, "udp", "")
    assert not r.set(1, 1, "udp", "::.0.1")  # IPv6 address under an IPv4 netid
    assert not r.set(1, 1, "udp6", "0.0.0.0.0.1")
    assert r.set(1, 1, "udp6", "::.0.1")
    assert len(r) == 1


def test_capacity_bounds_the_table() -> None:
    r = PortmapRegistry(capacity=2)
    assert r.set(1, 1, "udp", "0.0.0.0.0.1")
    assert r.set(1, 1, "tcp", "0.0.0.0.0.1")
    assert not r.set(2, 1, "udp", "0.0.0.0.0.1")


def test_unset_one_netid_or_all() -> None:
    r = PortmapRegistry()
    for netid, addr in (("udp", "0.0.0.0.0.1"), ("tcp", "0.0.0.0.0.1"), ("udp6", "::.0.1")):
        assert r.set(7, 1, netid, addr)
    assert r.set(7, 2, "udp", "0.0.0.0.0.2")
    assert r.unset(7, 1, "tcp")
    assert not r.unset(7, 1, "tcp")
    assert [m.netid for m in r.dump()] == ["udp", "udp6", "udp"]
    assert r.unset(7, 1)  # empty netid: every transport of (prog, vers)
    assert r.dump() == [Rpcb(7, 2, "udp", "0.0.0.0.0.2", SUPERUSER)]
    assert not r.unset(7, 1)


def test_only_the_owner_or_superuser_may_unset() -> None:
    r = PortmapRegistry()
    assert r.set(7, 1, "udp", "0.0.0.0.0.1", "alice")
    assert r.set(7, 1, "tcp", "0.0.0.0.0.1", UNKNOWN_OWNER)
    # All or nothing: one of the two belongs to someone else, so neither goes.
    assert not r.unset(7, 1, "", UNKNOWN_OWNER)
    assert len(r) == 2
    assert r.unset(7, 1, "tcp", UNKNOWN_OWNER)
    assert not r.unset(7, 1, "udp", "mallory")
    assert not r.pmap_unset(7, 1, "mallory")
    assert r.unset(7, 1, "udp", SUPERUSER)
    assert len(r) == 0


def test_getaddr_falls_back_to_another_version_unless_exact() -> None:
    r = PortmapRegistry()
    assert r.set(100021, 4, "udp", "0.0.0.0.15.205")
    assert r.getaddr(100021, 4, "udp") == "0.0.0.0.15.205"
    # RFC 1833: GETADDR may answer with another version; GETVERSADDR may not.
    assert r.getaddr(100021, 1, "udp") == "0.0.0.0.15.205"
    assert r.getaddr(100021, 1, "udp", exact=True) is None
    assert r.getaddr(100021, 4, "tcp") is None
    assert r.getaddr(100024, 1, "udp") is None


def test_pmap_view_covers_ipv4_udp_and_tcp_only() -> None:
    r = PortmapRegistry()
    assert r.pmap_set(100024, 1, 17, 662)
    assert not r.pmap_set(100024, 1, 17, 663)
    assert not r.pmap_set(100024, 1, 132, 662)  # SCTP: no netid for it
    assert not r.pmap_set(100024, 1, 6, 0)
    assert r.pmap_set(100024, 1, 6, 662)
    assert r.set(100024, 1, "udp6", "::.2.150")
    assert r.getaddr(100024, 1, "udp") == "0.0.0.0.2.150"
    assert r.getport(100024, 1, 17) == 662
    assert r.getport(100024, 1, 6) == 662
    assert r.getport(100024, 1, 132) == 0
    assert r.getport(100024, 2, 17) == 0
    assert r.pmap_dump() == [PmapMapping(100024, 1, 17, 662), PmapMapping(100024, 1, 6, 662)]
    # PMAPPROC_UNSET ignores prot and port: both IPv4 mappings go, IPv6 stays (as rpcbind).
    assert r.pmap_unset(100024, 1)
    assert [m.netid for m in r.dump()] == ["udp6"]
    assert not r.pmap_unset(100024, 1)


def test_addrlist_by_family() -> None:
    r = PortmapRegistry()
    assert r.set(5, 1, "udp", "0.0.0.0.0.5")
    assert r.set(5, 1, "tcp6", "::.0.5")
    assert r.set(5, 2, "tcp", "0.0.0.0.0.6")
    assert [m.netid for m in r.addrlist(5, 1)] == ["udp", "tcp6"]
    assert [m.netid for m in r.addrlist(5, 1, ipv6=False)] == ["udp"]
    assert [m.netid for m in r.addrlist(5, 1, ipv6=True)] == ["tcp6"]
    assert [m.vers for m in r] == [1, 1, 2]
