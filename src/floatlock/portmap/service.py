"""The built-in portmapper: program 100000 versions 2, 3 and 4 over a registry (RFC 1833).

Theory of operation
-------------------
When no system rpcbind runs, floatlock answers port 111 itself.  This module turns a
:class:`~floatlock.portmap.registry.PortmapRegistry` into procedures for the
:class:`~floatlock.rpc.dispatch.Dispatcher`; the daemon's UDP and TCP servers on port 111
carry them.  Handlers are synchronous and pure apart from the registry and two counters.

What each procedure does (RFC 1833 section 3.2 for version 2, 2.2.1 and 2.2.2 for 3 and 4):

* ``SET``/``UNSET`` change the table, and only for callers on the loopback interface
  (RFC 1833 gives the portmapper no authentication; rpcbind also takes registrations from
  local callers only).  A remote caller gets FALSE and a log line.  The owner of a new
  mapping is derived from the caller, never taken from the request: ``superuser`` when it
  calls from a privileged port (< 1024, which only root can bind), ``unknown`` otherwise.
  Both are non-idempotent (a retransmitted SET must not turn TRUE into FALSE), so they go
  through the duplicate request cache.
* ``GETPORT``/``GETADDR`` look a mapping up.  In versions 3 and 4 the netid is "inferred
  from the netid of the transport on which the request came in" (RFC 1833 section 2.2.1),
  and a wildcard address is merged with the local address the query arrived on, so a client
  of a floating IP is sent back to that IP.  ``GETVERSADDR`` is GETADDR without falling back
  to another version; ``GETADDRLIST`` lists the family's mappings of (prog, vers), merged.
* ``DUMP`` lists the table (version 2: the IPv4 UDP/TCP part it can express).
* ``GETTIME`` is the local time; ``UADDR2TADDR``/``TADDR2UADDR`` translate to and from a Linux
  ``struct sockaddr`` (an empty netbuf or string when the input is not an IP address);
  ``GETSTAT`` returns per-procedure call counts and SET/UNSET counts per version, with empty
  per-address lists.
* ``CALLIT`` (v2, v3), ``BCAST`` (v4) and ``INDIRECT`` (v4) are deliberately not offered
  and so answered PROC_UNAVAIL by the dispatcher: they make the portmapper forward a
  datagram to another service on behalf of an unauthenticated, possibly spoofed, sender,
  the classic amplification and reflection vector (CVE-2017-8779 class; US-CERT TA14-017A
  lists portmap among UDP amplification protocols).  Nothing in NFSv3/NLM/NSM uses them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from floatlock.address import is_loopback
from floatlock.portmap.proto import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    NETIDS,
    PMAP_PROG,
    PMAP_VERS,
    RPCB_VERS3,
    RPCB_VERS4,
    RPCBSTAT_HIGHPROC,
    Netbuf,
    PmapMapping,
    PmapProc,
    Rpcb,
    RpcbEntry,
    RpcbProc,
    RpcbStat,
    UaddrError,
    encode_pmaplist,
    encode_rpcb_entry_list,
    encode_rpcb_stat_byvers,
    encode_rpcblist,
    merge_uaddr,
    netid_for,
    sockaddr_to_uaddr,
    uaddr_to_sockaddr,
)
from floatlock.portmap.registry import SUPERUSER, UNKNOWN_OWNER, PortmapRegistry
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure
from floatlock.xdr import Decoder, Encoder

__all__ = ["PRIVILEGED_PORT_LIMIT", "REFUSED_PROCEDURES", "PortmapService", "caller_owner"]

log = logging.getLogger("floatlock.portmap")

PRIVILEGED_PORT_LIMIT = 1024  # IPPORT_RESERVED: only root binds below it

# Procedures left out on purpose (see the module docstring): version -> procedure numbers.
REFUSED_PROCEDURES: dict[int, frozenset[int]] = {
    PMAP_VERS: frozenset({PmapProc.CALLIT}),
    RPCB_VERS3: frozenset({RpcbProc.CALLIT}),
    RPCB_VERS4: frozenset({RpcbProc.CALLIT, RpcbProc.INDIRECT}),
}


def caller_owner(call: Call) -> str | None:
    """The owner a caller may register as, or None when it may not register at all."""
    if not is_loopback(call.client_ip):
        return None
    try:
        port = int(call.client[1])
    except (IndexError, TypeError, ValueError):
        return UNKNOWN_OWNER
    return SUPERUSER if 0 < port < PRIVILEGED_PORT_LIMIT else UNKNOWN_OWNER


def _call_netid(call: Call) -> str:
    """The netid of the transport a call came in on (udp/tcp, with 6 for IPv6)."""
    return netid_for(call.transport, str(call.server))


def _bool(v: bool) -> bytes:
    return b"\0\0\0\1" if v else b"\0\0\0\0"


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _string(s: str) -> bytes:
    enc = Encoder()
    enc.string(s)
    return enc.getvalue()


def _netbuf(nb: Netbuf) -> bytes:
    enc = Encoder()
    nb.encode(enc)
    return enc.getvalue()


def _decode_string(dec: Decoder) -> str:
    return dec.string(256)


class PortmapService:
    """Program 100000 v2/v3/v4 handlers over one :class:`PortmapRegistry`."""

    def __init__(self, registry: PortmapRegistry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock
        # Successful SET / UNSET calls per version, for GETSTAT (RFC 1833 rpcb_stat).
        self.setinfo = {PMAP_VERS: 0, RPCB_VERS3: 0, RPCB_VERS4: 0}
        self.unsetinfo = {PMAP_VERS: 0, RPCB_VERS3: 0, RPCB_VERS4: 0}
        self.refused = 0  # SET/UNSET attempts from non-local callers
        self._tables: dict[int, dict[int, Procedure[Any, Any]]] = {
            PMAP_VERS: self._v2(),
            RPCB_VERS3: self._rpcb(RPCB_VERS3),
            RPCB_VERS4: self._rpcb(RPCB_VERS4),
        }

    def register(self, dispatcher: Dispatcher) -> None:
        """Serve program 100000 versions 2, 3 and 4 from ``dispatcher``."""
        for vers, table in self._tables.items():
            dispatcher.register(PMAP_PROG, vers, table, name="portmapper")

    def procedures(self, vers: int) -> dict[int, Procedure[Any, Any]]:
        return dict(self._tables[vers])

    # -- tables ---------------------------------------------------------------------------

    def _v2(self) -> dict[int, Procedure[Any, Any]]:
        return {
            PmapProc.NULL: Procedure("PMAPPROC_NULL", _null),
            PmapProc.SET: Procedure(
                "PMAPPROC_SET", self._pmap_set, PmapMapping.decode, _bool, idempotent=False
            ),
            PmapProc.UNSET: Procedure(
                "PMAPPROC_UNSET", self._pmap_unset, PmapMapping.decode, _bool, idempotent=False
            ),
            PmapProc.GETPORT: Procedure(
                "PMAPPROC_GETPORT", self._pmap_getport, PmapMapping.decode, _u32
            ),
            PmapProc.DUMP: Procedure("PMAPPROC_DUMP", self._pmap_dump, None, encode_pmaplist),
        }

    def _rpcb(self, vers: int) -> dict[int, Procedure[Any, Any]]:
        def set_(args: Rpcb, call: Call) -> bool:
            return self._rpcb_set(vers, args, call)

        def unset(args: Rpcb, call: Call) -> bool:
            return self._rpcb_unset(vers, args, call)

        table: dict[int, Procedure[Any, Any]] = {
            RpcbProc.NULL: Procedure("RPCBPROC_NULL", _null),
            RpcbProc.SET: Procedure("RPCBPROC_SET", set_, Rpcb.decode, _bool, idempotent=False),
            RpcbProc.UNSET: Procedure(
                "RPCBPROC_UNSET", unset, Rpcb.decode, _bool, idempotent=False
            ),
            RpcbProc.GETADDR: Procedure("RPCBPROC_GETADDR", self._getaddr, Rpcb.decode, _string),
            RpcbProc.DUMP: Procedure("RPCBPROC_DUMP", self._dump, None, encode_rpcblist),
            RpcbProc.GETTIME: Procedure("RPCBPROC_GETTIME", self._gettime, None, _u32),
            RpcbProc.UADDR2TADDR: Procedure(
                "RPCBPROC_UADDR2TADDR", _uaddr2taddr, _decode_string, _netbuf
            ),
            RpcbProc.TADDR2UADDR: Procedure(
                "RPCBPROC_TADDR2UADDR", _taddr2uaddr, Netbuf.decode, _string
            ),
        }
        if vers == RPCB_VERS4:
            table[RpcbProc.GETVERSADDR] = Procedure(
                "RPCBPROC_GETVERSADDR", self._getversaddr, Rpcb.decode, _string
            )
            table[RpcbProc.GETADDRLIST] = Procedure(
                "RPCBPROC_GETADDRLIST", self._getaddrlist, Rpcb.decode, encode_rpcb_entry_list
            )
            table[RpcbProc.GETSTAT] = Procedure(
                "RPCBPROC_GETSTAT", self._getstat, None, encode_rpcb_stat_byvers
            )
        return table

    # -- version 2 (RFC 1833 section 3.2) -------------------------------------------------

    def _owner_or_refuse(self, what: str, call: Call) -> str | None:
        owner = caller_owner(call)
        if owner is None:
            self.refused += 1
            log.warning("refused %s from non-local caller %s", what, call.client)
        return owner

    def _pmap_set(self, m: PmapMapping, call: Call) -> bool:
        owner = self._owner_or_refuse("PMAPPROC_SET", call)
        if owner is None:
            return False
        ok = self.registry.pmap_set(m.prog, m.vers, m.prot, m.port, owner)
        self.setinfo[PMAP_VERS] += ok
        log.info("PMAPPROC_SET %s by %s: %s", m, owner, ok)
        return ok

    def _pmap_unset(self, m: PmapMapping, call: Call) -> bool:
        owner = self._owner_or_refuse("PMAPPROC_UNSET", call)
        if owner is None:
            return False
        ok = self.registry.pmap_unset(m.prog, m.vers, owner)
        self.unsetinfo[PMAP_VERS] += ok
        log.info("PMAPPROC_UNSET %d/%d by %s: %s", m.prog, m.vers, owner, ok)
        return ok

    def _pmap_getport(self, m: PmapMapping, _call: Call) -> int:
        if m.prot not in (IPPROTO_UDP, IPPROTO_TCP):
            return 0
        return self.registry.getport(m.prog, m.vers, m.prot)

    def _pmap_dump(self, _args: None, _call: Call) -> list[PmapMapping]:
        return self.registry.pmap_dump()

    # -- versions 3 and 4 (RFC 1833 sections 2.2.1, 2.2.2) --------------------------------

    def _rpcb_set(self, vers: int, r: Rpcb, call: Call) -> bool:
        owner = self._owner_or_refuse("RPCBPROC_SET", call)
        if owner is None:
            return False
        ok = self.registry.set(r.prog, r.vers, r.netid, r.addr, owner)
        self.setinfo[vers] += ok
        log.info(
            "RPCBPROC_SET v%d %d/%d %s %s by %s: %s",
            vers,
            r.prog,
            r.vers,
            r.netid,
            r.addr,
            owner,
            ok,
        )
        return ok

    def _rpcb_unset(self, vers: int, r: Rpcb, call: Call) -> bool:
        owner = self._owner_or_refuse("RPCBPROC_UNSET", call)
        if owner is None:
            return False
        ok = self.registry.unset(r.prog, r.vers, r.netid, owner)
        self.unsetinfo[vers] += ok
        log.info("RPCBPROC_UNSET v%d %d/%d %r by %s: %s", vers, r.prog, r.vers, r.netid, owner, ok)
        return ok

    def _lookup(self, r: Rpcb, call: Call, exact: bool) -> str:
        addr = self.registry.getaddr(r.prog, r.vers, _call_netid(call), exact=exact)
        return "" if addr is None else merge_uaddr(addr, str(call.server))

    def _getaddr(self, r: Rpcb, call: Call) -> str:
        return self._lookup(r, call, exact=False)

    def _getversaddr(self, r: Rpcb, call: Call) -> str:
        return self._lookup(r, call, exact=True)

    def _getaddrlist(self, r: Rpcb, call: Call) -> list[RpcbEntry]:
        ipv6 = NETIDS[_call_netid(call)][1]
        return [
            RpcbEntry.for_netid(merge_uaddr(m.addr, str(call.server)), m.netid)
            for m in self.registry.addrlist(r.prog, r.vers, ipv6=ipv6)
        ]

    def _dump(self, _args: None, _call: Call) -> list[Rpcb]:
        return self.registry.dump()

    def _gettime(self, _args: None, _call: Call) -> int:
        return int(self._clock()) & 0xFFFFFFFF

    def _getstat(self, _args: None, _call: Call) -> list[RpcbStat]:
        out = []
        for vers in (PMAP_VERS, RPCB_VERS3, RPCB_VERS4):
            info = [0] * RPCBSTAT_HIGHPROC
            for proc, p in self._tables[vers].items():
                info[proc] = p.calls[0]
            out.append(RpcbStat(tuple(info), self.setinfo[vers], self.unsetinfo[vers]))
        return out


def _null(_args: None, _call: Call) -> None:
    return None


def _uaddr2taddr(text: str, _call: Call) -> Netbuf:
    try:
        raw = uaddr_to_sockaddr(text)
    except UaddrError:
        return Netbuf(0, b"")
    return Netbuf(len(raw), raw)


def _taddr2uaddr(nb: Netbuf, _call: Call) -> str:
    try:
        return sockaddr_to_uaddr(nb.buf)
    except UaddrError:
        return ""
