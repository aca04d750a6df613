"""Portmapper and rpcbind wire types (RFC 1833): PMAP v2, RPCBIND v3 and v4.

Theory of operation
-------------------
Program 100000 is served on port 111 in three versions that share one table of mappings:

* version 2, the *portmapper* (RFC 1833 section 3), knows only IPv4 UDP and TCP and speaks
  of ``(prog, vers, prot, port)`` :class:`PmapMapping` records, ``prot`` being an IP protocol
  number (6 or 17);
* versions 3 and 4, *rpcbind* (RFC 1833 section 2), speak of :class:`Rpcb` records
  ``(prog, vers, netid, universal address, owner)``, which covers IPv6 and any transport.

A *netid* names a transport the way ``/etc/netconfig`` does: ``udp``, ``tcp`` (IPv4) and
``udp6``, ``tcp6`` (IPv6) are the only ones floatlock knows.  A *universal address*
(RFC 1833 section 2.1 and RFC 5665 section 5.2.3) is the text form of a transport address:
for IP it is the host's text followed by the port as two more decimal octets,
``h1.h2.h3.h4.p1.p2`` with ``port = p1 * 256 + p2``; IPv6 uses the usual colon form followed
by ``.p1.p2``.

This module only converts between those forms and bytes; the universal-address and sockaddr
helpers are in :mod:`floatlock.portmap.uaddr` (re-exported here).  Decoders go through
:class:`floatlock.xdr.Decoder`, so malformed input raises :class:`XdrError` (GARBAGE_ARGS) and
nothing else; strings are capped at lengths well above anything real.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

# Universal addresses and sockaddr conversion live in floatlock.portmap.uaddr; re-exported here.
from floatlock.portmap.uaddr import (
    UaddrError,
    merge_uaddr,
    parse_uaddr,
    sockaddr_to_uaddr,
    uaddr,
    uaddr_to_sockaddr,
)
from floatlock.xdr import Decoder, Encoder, XdrError

__all__ = [
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "NETIDS",
    "PMAP_PORT",
    "PMAP_PROG",
    "PMAP_VERS",
    "RPCBSTAT_HIGHPROC",
    "RPCB_VERS3",
    "RPCB_VERS4",
    "Endpoint",
    "Netbuf",
    "PmapMapping",
    "PmapProc",
    "Rpcb",
    "RpcbEntry",
    "RpcbProc",
    "RpcbStat",
    "UaddrError",
    "decode_pmaplist",
    "decode_rpcb_entry_list",
    "decode_rpcblist",
    "encode_pmaplist",
    "encode_rpcb_entry_list",
    "encode_rpcb_stat_byvers",
    "encode_rpcblist",
    "merge_uaddr",
    "netid_for",
    "netid_of_prot",
    "parse_uaddr",
    "prot_of_netid",
    "sockaddr_to_uaddr",
    "uaddr",
    "uaddr_to_sockaddr",
]

PMAP_PROG: Final = 100000
PMAP_PORT: Final = 111
PMAP_VERS: Final = 2  # RFC 1833 section 3
RPCB_VERS3: Final = 3  # RFC 1833 section 2.2.1
RPCB_VERS4: Final = 4  # RFC 1833 section 2.2.2

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17

# Caps on variable-length fields.  RFC 1833 leaves these strings unbounded; real netids are a
# few bytes, universal addresses at most ~50 (IPv6) or a unix path (108), owners a user name.
MAX_NETID: Final = 64
MAX_UADDR: Final = 256
MAX_OWNER: Final = 256
MAX_NETBUF: Final = 128
MAX_LIST: Final = 4096

# The netids floatlock understands, and what they mean: (transport, is IPv6).
NETIDS: Final[dict[str, tuple[str, bool]]] = {
    "udp": ("udp", False),
    "tcp": ("tcp", False),
    "udp6": ("udp", True),
    "tcp6": ("tcp", True),
}

# netconfig semantics (RFC 1833 section 2.1, rpcb_entry.r_nc_semantics).
NC_TPI_CLTS: Final = 1
NC_TPI_COTS_ORD: Final = 3


class PmapProc(IntEnum):
    """Portmapper version 2 procedures (RFC 1833 section 3.2)."""

    NULL = 0
    SET = 1
    UNSET = 2
    GETPORT = 3
    DUMP = 4
    CALLIT = 5


class RpcbProc(IntEnum):
    """rpcbind version 3 and 4 procedures (RFC 1833 sections 2.2.1 and 2.2.2)."""

    NULL = 0
    SET = 1
    UNSET = 2
    GETADDR = 3
    DUMP = 4
    CALLIT = 5  # version 4 calls it BCAST; same arguments
    GETTIME = 6
    UADDR2TADDR = 7
    TADDR2UADDR = 8
    GETVERSADDR = 9  # version 4 only from here on
    INDIRECT = 10
    GETADDRLIST = 11
    GETSTAT = 12


RPCBSTAT_HIGHPROC: Final = 13  # RFC 1833 section 2.1: procedures of v4, plus one


# -- netids ---------------------------------------------------------------------------------


def netid_for(transport: str, host: str) -> str:
    """The netid of ``transport`` ("udp"/"tcp") for an address of ``host``'s family."""
    if transport not in ("udp", "tcp"):
        raise ValueError(f"unknown transport {transport!r}")
    return transport + "6" if ":" in host else transport


def prot_of_netid(netid: str) -> int | None:
    """The PMAP v2 ``prot`` of a netid, or None: version 2 only knows IPv4 UDP and TCP."""
    return {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP}.get(netid)


def netid_of_prot(prot: int) -> str | None:
    return {IPPROTO_UDP: "udp", IPPROTO_TCP: "tcp"}.get(prot)


# -- netbuf (RFC 1833 section 2.1): UADDR2TADDR / TADDR2UADDR ------------------------------


@dataclass(frozen=True, slots=True)
class Netbuf:
    """``struct netbuf { unsigned int maxlen; opaque buf<>; }`` (RFC 1833 section 2.1)."""

    maxlen: int
    buf: bytes

    def encode(self, enc: Encoder) -> None:
        enc.u32(self.maxlen)
        enc.opaque(self.buf, MAX_NETBUF)

    @classmethod
    def decode(cls, dec: Decoder) -> Netbuf:
        return cls(dec.u32(), dec.opaque(MAX_NETBUF))


# -- PMAP v2 (RFC 1833 section 3.1) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PmapMapping:
    """``struct mapping { prog, vers, prot, port }``: arguments of SET/UNSET/GETPORT."""

    prog: int
    vers: int
    prot: int
    port: int

    def encode(self, enc: Encoder) -> None:
        enc.pack(_MAPPING, self.prog, self.vers, self.prot, self.port)

    def to_bytes(self) -> bytes:
        return _MAPPING.pack(self.prog, self.vers, self.prot, self.port)

    @classmethod
    def decode(cls, dec: Decoder) -> PmapMapping:
        return cls(*dec.unpack(_MAPPING))


_MAPPING = struct.Struct(">IIII")


def _encode_pmapmapping(enc: Encoder, m: PmapMapping) -> None:
    m.encode(enc)


def encode_pmaplist(mappings: Iterable[PmapMapping]) -> bytes:
    """``pmaplist *``: the result of PMAPPROC_DUMP, a linked list (RFC 1833 section 3.1)."""
    enc = Encoder()
    enc.linked_list(mappings, _encode_pmapmapping)
    return enc.getvalue()


def decode_pmaplist(dec: Decoder) -> list[PmapMapping]:
    return dec.linked_list(PmapMapping.decode, MAX_LIST)


# -- RPCBIND v3/v4 (RFC 1833 section 2.1) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rpcb:
    """``struct rpcb``: one mapping of (prog, vers, netid) to a universal address."""

    prog: int
    vers: int
    netid: str
    addr: str
    owner: str = ""

    def encode(self, enc: Encoder) -> None:
        enc.u32(self.prog)
        enc.u32(self.vers)
        enc.string(self.netid, MAX_NETID)
        enc.string(self.addr, MAX_UADDR)
        enc.string(self.owner, MAX_OWNER)

    def to_bytes(self) -> bytes:
        enc = Encoder()
        self.encode(enc)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> Rpcb:
        prog = dec.u32()
        vers = dec.u32()
        netid = dec.string(MAX_NETID)
        addr = dec.string(MAX_UADDR)
        owner = dec.string(MAX_OWNER)
        return cls(prog, vers, netid, addr, owner)


def _encode_rpcb(enc: Encoder, m: Rpcb) -> None:
    m.encode(enc)


def encode_rpcblist(entries: Iterable[Rpcb]) -> bytes:
    """``rpcblist_ptr``: the result of RPCBPROC_DUMP, a linked list of ``rp__list``."""
    enc = Encoder()
    enc.linked_list(entries, _encode_rpcb)
    return enc.getvalue()


def decode_rpcblist(dec: Decoder) -> list[Rpcb]:
    return dec.linked_list(Rpcb.decode, MAX_LIST)


@dataclass(frozen=True, slots=True)
class RpcbEntry:
    """``struct rpcb_entry``: a merged address plus netconfig facts (RFC 1833 section 2.1)."""

    maddr: str
    netid: str
    semantics: int
    protofmly: str
    proto: str

    @classmethod
    def for_netid(cls, maddr: str, netid: str) -> RpcbEntry:
        transport, v6 = NETIDS[netid]
        semantics = NC_TPI_CLTS if transport == "udp" else NC_TPI_COTS_ORD
        return cls(maddr, netid, semantics, "inet6" if v6 else "inet", transport)

    def encode(self, enc: Encoder) -> None:
        enc.string(self.maddr, MAX_UADDR)
        enc.string(self.netid, MAX_NETID)
        enc.u32(self.semantics)
        enc.string(self.protofmly, MAX_NETID)
        enc.string(self.proto, MAX_NETID)

    @classmethod
    def decode(cls, dec: Decoder) -> RpcbEntry:
        maddr = dec.string(MAX_UADDR)
        netid = dec.string(MAX_NETID)
        semantics = dec.u32()
        protofmly = dec.string(MAX_NETID)
        proto = dec.string(MAX_NETID)
        return cls(maddr, netid, semantics, protofmly, proto)


def _encode_rpcbentry(enc: Encoder, m: RpcbEntry) -> None:
    m.encode(enc)


def encode_rpcb_entry_list(entries: Iterable[RpcbEntry]) -> bytes:
    """``rpcb_entry_list_ptr``: the result of RPCBPROC_GETADDRLIST."""
    enc = Encoder()
    enc.linked_list(entries, _encode_rpcbentry)
    return enc.getvalue()


def decode_rpcb_entry_list(dec: Decoder) -> list[RpcbEntry]:
    return dec.linked_list(RpcbEntry.decode, MAX_LIST)


@dataclass(frozen=True, slots=True)
class RpcbStat:
    """``struct rpcb_stat`` for one version (RFC 1833 section 2.1), without per-address lists.

    ``addrinfo`` and ``rmtinfo`` are sent as empty lists: they describe per-program lookup
    and CALLIT statistics, which floatlock does not keep (and does not serve CALLIT).
    """

    info: tuple[int, ...]  # calls per procedure, RPCBSTAT_HIGHPROC entries
    setinfo: int
    unsetinfo: int

    def encode(self, enc: Encoder) -> None:
        if len(self.info) != RPCBSTAT_HIGHPROC:
            raise XdrError(f"rpcbs_proc needs {RPCBSTAT_HIGHPROC} counters")
        for n in self.info:
            enc.i32(min(n, 0x7FFFFFFF))
        enc.i32(min(self.setinfo, 0x7FFFFFFF))
        enc.i32(min(self.unsetinfo, 0x7FFFFFFF))
        enc.optional(None, _no_item)  # addrinfo: empty rpcbs_addrlist
        enc.optional(None, _no_item)  # rmtinfo: empty rpcbs_rmtcalllist

    @classmethod
    def decode(cls, dec: Decoder) -> RpcbStat:
        info = tuple(dec.i32() for _ in range(RPCBSTAT_HIGHPROC))
        setinfo, unsetinfo = dec.i32(), dec.i32()
        if dec.boolean() or dec.boolean():
            raise XdrError("rpcb_stat address/remote-call lists are not supported")
        return cls(info, setinfo, unsetinfo)


def _no_item(_enc: Encoder, _v: object) -> None:  # pragma: no cover - never called
    raise XdrError("unreachable")


def encode_rpcb_stat_byvers(stats: Sequence[RpcbStat]) -> bytes:
    """``rpcb_stat_byvers``: a fixed array of three, for versions 2, 3 and 4."""
    if len(stats) != 3:
        raise XdrError("rpcb_stat_byvers has exactly 3 elements")
    enc = Encoder()
    for s in stats:
        s.encode(enc)
    return enc.getvalue()


# -- what the daemon hands to the portmapper -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One (program, version, transport, port) the daemon serves.

    ``transport`` is ``udp``/``tcp`` (IPv4) or ``udp6``/``tcp6`` (IPv6), i.e. a netid.
    ``host`` is the address the socket is bound to; the wildcard by default, which lookups
    merge with the address the query arrived on (see :func:`merge_uaddr`).
    """

    prog: int
    vers: int
    transport: str
    port: int
    host: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in NETIDS:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")

    @property
    def netid(self) -> str:
        return self.transport

    @property
    def uaddr(self) -> str:
        if self.host is not None:
            return uaddr(self.host, self.port)
        return uaddr("::" if NETIDS[self.transport][1] else "0.0.0.0", self.port)

    def rpcb(self, owner: str = "") -> Rpcb:
        return Rpcb(self.prog, self.vers, self.netid, self.uaddr, owner)
