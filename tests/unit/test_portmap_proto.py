"""Portmapper / rpcbind codecs (RFC 1833): golden bytes, universal addresses, round trips."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floatlock.portmap.proto import (
    RPCBSTAT_HIGHPROC,
    Endpoint,
    Netbuf,
    PmapMapping,
    Rpcb,
    RpcbEntry,
    RpcbStat,
    UaddrError,
    decode_pmaplist,
    decode_rpcb_entry_list,
    decode_rpcblist,
    encode_pmaplist,
    encode_rpcb_entry_list,
    encode_rpcb_stat_byvers,
    encode_rpcblist,
    merge_uaddr,
    netid_for,
    netid_of_prot,
    parse_uaddr,
    prot_of_netid,
    sockaddr_to_uaddr,
    uaddr,
    uaddr_to_sockaddr,
)
from floatlock.xdr import Decoder, Encoder, XdrError


def xs(text: str) -> bytes:
    b = text.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) & 3)


def test_mapping_golden_bytes() -> None:
    m = PmapMapping(100021, 4, 17, 4045)
    assert m.to_bytes() == bytes.fromhex("000186b5 00000004 00000011 00000fcd")
    assert PmapMapping.decode(Decoder(m.to_bytes())) == m


def test_mapping_truncated_is_xdr_error() -> None:
    with pytest.raises(XdrError):
        PmapMapping.decode(Decoder(bytes(15)))


def test_rpcb_golden_bytes() -> None:
    r = Rpcb(100024, 1, "udp", "0.0.0.0.3.232", "superuser")
    want = struct.pack(">II", 100024, 1) + xs("udp") + xs("0.0.0.0.3.232") + xs("superuser")
    assert r.to_bytes() == want
    assert Rpcb.decode(Decoder(want)) == r


def test_rpcb_rejects_oversized_strings() -> None:
    data = struct.pack(">II", 1, 1) + struct.pack(">I", 100000) + bytes(8)
    with pytest.raises(XdrError):
        Rpcb.decode(Decoder(data))


def test_pmaplist_is_a_linked_list() -> None:
    ms = [PmapMapping(100000, 2, 6, 111), PmapMapping(100021, 4, 17, 4045)]
    data = encode_pmaplist(ms)
    # value-follows TRUE, mapping, TRUE, mapping, FALSE (RFC 1833 section 3.1 pmaplist)
    assert data == b"\0\0\0\1" + ms[0].to_bytes() + b"\0\0\0\1" + ms[1].to_bytes() + bytes(4)
    assert decode_pmaplist(Decoder(data)) == ms
    assert encode_pmaplist([]) == bytes(4)


def test_rpcblist_round_trip() -> None:
    rs = [Rpcb(100000, 4, "tcp6", "::.0.111", "superuser"), Rpcb(7, 1, "udp", "1.2.3.4.0.1")]
    dec = Decoder(encode_rpcblist(rs))
    assert decode_rpcblist(dec) == rs
    dec.done()


def test_rpcb_entry_list_matches_rpcbind_layout() -> None:
    # Bytes as Debian's rpcbind 1.2.6 sent them for GETADDRLIST of a udp+tcp service.
    want = bytes.fromhex(
        "00000001"
        "0000000d3132372e302e302e312e312e32000000"
        "0000000375647000"
        "00000001"
        "00000004696e6574"
        "0000000375647000"
        "00000001"
        "0000000d3132372e302e302e312e312e33000000"
        "0000000374637000"
        "00000003"
        "00000004696e6574"
        "0000000374637000"
        "00000000"
    )
    entries = [
        RpcbEntry.for_netid("127.0.0.1.1.2", "udp"),
        RpcbEntry.for_netid("127.0.0.1.1.3", "tcp"),
    ]
    assert encode_rpcb_entry_list(entries) == want
    assert decode_rpcb_entry_list(Decoder(want)) == entries
    assert RpcbEntry.for_netid("::1.0.1", "tcp6").protofmly == "inet6"


def test_rpcb_stat_byvers_layout() -> None:
    s = RpcbStat(tuple(range(RPCBSTAT_HIGHPROC)), 5, 6)
    data = encode_rpcb_stat_byvers([s, s, s])
    # 13 counters + setinfo + unsetinfo + two empty list pointers, three times.
    assert len(data) == 3 * 4 * (RPCBSTAT_HIGHPROC + 4)
    dec = Decoder(data)
    assert [RpcbStat.decode(dec) for _ in range(3)] == [s, s, s]
    dec.done()
    with pytest.raises(XdrError):
        encode_rpcb_stat_byvers([s])
    with pytest.raises(XdrError):
        RpcbStat((1, 2), 0, 0).encode(Encoder())


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 111, "127.0.0.1.0.111"),
        ("0.0.0.0", 4045, "0.0.0.0.15.205"),
        ("::1", 2049, "::1.8.1"),
        ("::", 65535, "::.255.255"),
        ("fe80::1", 1, "fe80::1.0.1"),
        ("::ffff:198.18.0.1", 20048, "::ffff:c612:1.78.80"),
    ],
)
def test_uaddr_forms(host: str, port: int, text: str) -> None:
    assert uaddr(host, port) == text
    h, p = parse_uaddr(text)
    assert ipaddress.ip_address(h) == ipaddress.ip_address(host)
    assert p == port


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1",
        "127.0.0.1.0",
        "127.0.0.1.0.256",
        "127.0.0.1.1.-1",
        "127.0.0.1. 1.2",
        "host.example.0.1",
        "1.2.3.0.1",
        "::1.+1.2",
        "/run/rpcbind.sock",
        "127.0.0.1.1.٣",  # non-ASCII digit
    ],
)
def test_uaddr_garbage_is_refused(text: str) -> None:
    with pytest.raises(UaddrError):
        parse_uaddr(text)


def test_uaddr_port_range() -> None:
    with pytest.raises(UaddrError):
        uaddr("1.2.3.4", 65536)
    with pytest.raises(UaddrError):
        uaddr("not-an-ip", 1)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_uaddr_round_trip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    h, p = parse_uaddr(uaddr(str(ip), port))
    assert (ipaddress.ip_address(h), p) == (ip, port)


def test_merge_uaddr_fills_in_the_local_address() -> None:
    assert merge_uaddr("0.0.0.0.15.205", "198.18.0.7") == "198.18.0.7.15.205"
    assert merge_uaddr("::.8.1", "::1") == "::1.8.1"
    # A specific address, another family, or garbage is left alone.
    assert merge_uaddr("10.0.0.1.0.1", "198.18.0.7") == "10.0.0.1.0.1"
    assert merge_uaddr("0.0.0.0.0.1", "::1") == "0.0.0.0.0.1"
    assert merge_uaddr("junk", "198.18.0.7") == "junk"


def test_sockaddr_matches_rpcbind_uaddr2taddr() -> None:
    # Debian rpcbind's UADDR2TADDR answer for "127.0.0.1.0.111": a struct sockaddr_in.
    raw = bytes.fromhex("0200006f7f0000010000000000000000")
    assert uaddr_to_sockaddr("127.0.0.1.0.111") == raw
    assert sockaddr_to_uaddr(raw) == "127.0.0.1.0.111"
    six = uaddr_to_sockaddr("::1.8.1")
    assert len(six) == 28
    assert sockaddr_to_uaddr(six) == "::1.8.1"
    with pytest.raises(UaddrError):
        sockaddr_to_uaddr(b"\x01\x00")
    with pytest.raises(UaddrError):
        sockaddr_to_uaddr(b"")


def test_netbuf_round_trip() -> None:
    enc = Encoder()
    Netbuf(16, b"\1" * 16).encode(enc)
    assert Netbuf.decode(Decoder(enc.getvalue())) == Netbuf(16, b"\1" * 16)


def test_netids() -> None:
    assert netid_for("udp", "127.0.0.1") == "udp"
    assert netid_for("tcp", "::1") == "tcp6"
    with pytest.raises(ValueError):
        netid_for("sctp", "::1")
    assert prot_of_netid("udp") == 17
    assert prot_of_netid("tcp6") is None
    assert netid_of_prot(6) == "tcp"
    assert netid_of_prot(132) is None


def test_endpoint() -> None:
    assert Endpoint(100021, 4, "udp", 4045).uaddr == "0.0.0.0.15.205"
    assert Endpoint(100021, 4, "tcp6", 4045).uaddr == "::.15.205"
    assert Endpoint(1, 1, "tcp", 1, host="198.18.0.1").rpcb("o") == Rpcb(
        1, 1, "tcp", "198.18.0.1.0.1", "o"
    )
    with pytest.raises(ValueError):
        Endpoint(1, 1, "sctp", 1)
    with pytest.raises(ValueError):
        Endpoint(1, 1, "udp", 0)
