"""The table of RPC mappings a portmapper serves: a pure object, no I/O (RFC 1833).

Theory of operation
-------------------
One table holds :class:`~floatlock.portmap.proto.Rpcb` records keyed by
``(prog, vers, netid)``; every version of program 100000 is a view of it, as in rpcbind:

* RPCBIND v3/v4 (RFC 1833 section 2.2) see every record.  ``SET`` refuses to establish a
  mapping when one already exists for ``(prog, vers, netid)``; ``UNSET`` deletes the mapping
  of ``(prog, vers, netid)``, or of every netid when ``netid`` is empty.
* PMAP v2 (RFC 1833 section 3.2) sees only the ``udp`` and ``tcp`` netids, translating
  ``prot`` 17/6 to them and the port to a wildcard universal address ``0.0.0.0.p1.p2``.
  Its ``UNSET`` "ignores prot and port" and so removes both of them, but leaves IPv6
  mappings alone, since version 2 cannot see those (rpcbind behaves the same way).

Owners.  Every mapping records who made it (``r_owner``).  The portmapper fills it from the
caller's identity, never from the request (a caller could claim anything): ``superuser``
for privileged callers, ``unknown`` otherwise, as rpcbind does.  Only the owner or the
superuser may remove a mapping.  :meth:`PortmapRegistry.unset` is all-or-nothing: when any
matching mapping belongs to somebody else nothing is removed and it returns False, so a
caller never half-unregisters a service.

Lookups.  :meth:`getaddr` answers with a mapping of the same version when there is one and
otherwise, like RFC 1833's RPCBPROC_GETADDR, with any version of the program (the caller's
call then earns a PROG_MISMATCH from the server that tells it which versions exist);
``exact=True`` gives RPCBPROC_GETVERSADDR's "no address if that version is not registered".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from floatlock.portmap.proto import (
    NETIDS,
    PmapMapping,
    Rpcb,
    UaddrError,
    netid_of_prot,
    parse_uaddr,
    prot_of_netid,
    uaddr,
)

__all__ = ["SUPERUSER", "UNKNOWN_OWNER", "PortmapRegistry"]

SUPERUSER: Final = "superuser"
UNKNOWN_OWNER: Final = "unknown"

# The most mappings the table holds: a local caller filling it must not exhaust memory.
DEFAULT_CAPACITY: Final = 4096


class PortmapRegistry:
    """Mappings keyed by (prog, vers, netid), in registration order."""

    __slots__ = ("_capacity", "_map")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._map: dict[tuple[int, int, str], Rpcb] = {}
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[Rpcb]:
        return iter(list(self._map.values()))

    # -- RPCBIND v3/v4 view -------------------------------------------------------------

    def set(self, prog: int, vers: int, netid: str, addr: str, owner: str = SUPERUSER) -> bool:
        """RPCBPROC_SET: establish a mapping; False if (prog, vers, netid) is taken.

        Also False for a netid floatlock does not know or an address that is not a
        universal address of that netid's family (RFC 1833 section 2.2.1: "neither netid
        nor uaddr can be NULL, and netid should be a valid network identifier").
        """
        key = (prog, vers, netid)
        if key in self._map or len(self._map) >= self._capacity:
            return False
        family = NETIDS.get(netid)
        if family is None:
            return False
        try:
            host, _port = parse_uaddr(addr)
        except UaddrError:
            return False
        if (":" in host) != family[1]:
            return False
        self._map[key] = Rpcb(prog, vers, netid, addr, owner)
        return True

    def unset(self, prog: int, vers: int, netid: str = "", owner: str = SUPERUSER) -> bool:
        """RPCBPROC_UNSET: remove the mapping(s); empty ``netid`` means every netid.

        True when something was removed.  Nothing is removed (False) if a matching mapping
        belongs to another owner and ``owner`` is not the superuser.
        """
        keys = [
            k for k in self._map if k[0] == prog and k[1] == vers and (not netid or k[2] == netid)
        ]
        return self._remove(keys, owner)

    def getaddr(self, prog: int, vers: int, netid: str, *, exact: bool = False) -> str | None:
        """The universal address of (prog, vers, netid); see the module doc for ``exact``."""
        found = self._map.get((prog, vers, netid))
        if found is not None:
            return found.addr
        if exact:
            return None
        for (p, _v, n), m in self._map.items():
            if p == prog and n == netid:
                return m.addr
        return None

    def addrlist(self, prog: int, vers: int, *, ipv6: bool | None = None) -> list[Rpcb]:
        """Every mapping of (prog, vers), optionally only one address family."""
        return [
            m
            for (p, v, n), m in self._map.items()
            if p == prog and v == vers and (ipv6 is None or NETIDS[n][1] == ipv6)
        ]

    def dump(self) -> list[Rpcb]:
        """RPCBPROC_DUMP: every mapping."""
        return list(self._map.values())

    # -- PMAP v2 view (RFC 1833 section 3.2) ----------------------------------------------

    def pmap_set(self, prog: int, vers: int, prot: int, port: int, owner: str = SUPERUSER) -> bool:
        netid = netid_of_prot(prot)
        if netid is None or not 0 < port <= 0xFFFF:
            return False
        return self.set(prog, vers, netid, uaddr("0.0.0.0", port), owner)

    def pmap_unset(self, prog: int, vers: int, owner: str = SUPERUSER) -> bool:
        """PMAPPROC_UNSET: remove the udp and tcp mappings of (prog, vers)."""
        keys = [k for k in ((prog, vers, "udp"), (prog, vers, "tcp")) if k in self._map]
        return self._remove(keys, owner)

    def getport(self, prog: int, vers: int, prot: int) -> int:
        """PMAPPROC_GETPORT: the port, 0 when not registered (RFC 1833 section 3.2)."""
        netid = netid_of_prot(prot)
        if netid is None:
            return 0
        m = self._map.get((prog, vers, netid))
        if m is None:
            return 0
        try:
            return parse_uaddr(m.addr)[1]
        except UaddrError:
            return 0

    def pmap_dump(self) -> list[PmapMapping]:
        """PMAPPROC_DUMP: the mappings version 2 can express (IPv4 UDP and TCP)."""
        out = []
        for m in self._map.values():
            prot = prot_of_netid(m.netid)
            if prot is None:
                continue
            try:
                port = parse_uaddr(m.addr)[1]
            except UaddrError:
                continue
            out.append(PmapMapping(m.prog, m.vers, prot, port))
        return out

    # -- helpers ------------------------------------------------------------------------

    def _remove(self, keys: list[tuple[int, int, str]], owner: str) -> bool:
        if not keys:
            return False
        if owner != SUPERUSER and any(self._map[k].owner != owner for k in keys):
            return False
        for k in keys:
            del self._map[k]
        return True
