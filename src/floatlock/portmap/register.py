"""Making floatlock's services findable: the system rpcbind, or the built-in portmapper.

Theory of operation
-------------------
Clients find NLM, NSM, MOUNT and NFS through program 100000 on port 111 (RFC 1833).  Only
one process can own port 111, so :func:`start_portmapper` decides at start-up:

* **A system rpcbind answers** (a PMAP v2 NULL call to 127.0.0.1:111 gets a reply within
  ``probe_timeout``): every :class:`~floatlock.portmap.proto.Endpoint` is registered with
  it and unregistered again by :meth:`PortmapHandle.close`.  Registration uses RPCBIND
  version 4 SET/UNSET with universal addresses (RFC 1833 section 2.2.2), which also covers
  IPv6; if the peer is a version-2-only portmapper (PROG_MISMATCH) it falls back to
  version 3 and then PMAP v2 SET/UNSET (RFC 1833 section 3.2; IPv4 UDP/TCP only).  One set
  of mappings serves every version in rpcbind, so ``rpcinfo -p`` (v2 DUMP) and ``rpcinfo``
  (v4 DUMP) both show what was registered once.
* **None answers**: the built-in :class:`~floatlock.portmap.service.PortmapService` is
  registered in the daemon's dispatcher (which the daemon serves on port 111 over UDP and
  TCP), and the endpoints plus the portmapper's own entries go straight into its registry.

What rpcbind requires of a registrar (checked against Debian 12's rpcbind 1.2.6, see
tests/interop/test_rpcinfo.py): SET and UNSET must come from the loopback interface
(127.0.0.1 or ::1; any other source is refused unless rpcbind runs with ``-i``).  The source
port decides the *owner*: from a reserved port (< 1024) the mapping is owned by
``superuser``, from any other port by ``unknown``; a ``superuser`` mapping can only be unset
from a reserved port again.  So we register from a reserved port when we may bind one
(root), so that no unprivileged local process can remove our mappings, and fall back to an
ordinary port otherwise.

Before registering, each (prog, vers) is unset for every netid: a previous floatlock that
died without unregistering must not make our SET fail (RFC 1833 section 2.2.1: SET "refuses
to establish a mapping if one already exists").  nfs-utils daemons do the same.

:func:`getport` is the client-side lookup lockd and statd use to find a peer's service.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from floatlock.net.client import RpcClient, RpcConnectionError, RpcTimeout
from floatlock.portmap.proto import (
    PMAP_PORT,
    PMAP_PROG,
    PMAP_VERS,
    RPCB_VERS3,
    RPCB_VERS4,
    Endpoint,
    PmapMapping,
    PmapProc,
    Rpcb,
    RpcbProc,
    UaddrError,
    parse_uaddr,
    prot_of_netid,
    uaddr,
)
from floatlock.portmap.registry import SUPERUSER, PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AcceptStat, RpcError
from floatlock.xdr import Decoder, XdrError

__all__ = [
    "PortmapError",
    "PortmapHandle",
    "getport",
    "register_with_rpcbind",
    "rpcbind_running",
    "start_portmapper",
]

log = logging.getLogger("floatlock.portmap")

LOOPBACK = "127.0.0.1"
OWNER = "floatlock"  # r_owner we put into requests (rpcbind ignores it and uses the caller's)


class PortmapError(Exception):
    """Registration with the system rpcbind failed."""


def _decode_bool(body: bytes) -> bool:
    dec = Decoder(body)
    v = dec.boolean()
    dec.done()
    return v


def _decode_u32(body: bytes) -> int:
    dec = Decoder(body)
    v = dec.u32()
    dec.done()
    return v


def _decode_string(body: bytes) -> str:
    dec = Decoder(body)
    v = dec.string(256)
    dec.done()
    return v


async def rpcbind_running(
    host: str = LOOPBACK, port: int = PMAP_PORT, *, timeout: float = 0.5
) -> bool:
    """True when a portmapper answers a PMAP v2 NULL call on ``host``:``port`` over UDP."""
    try:
        client = await RpcClient.connect(host, port, "udp", timeout=timeout, rto=timeout / 4)
    except OSError:
        return False
    try:
        await client.call(PMAP_PROG, PMAP_VERS, PmapProc.NULL)
    except (RpcTimeout, RpcConnectionError, OSError, XdrError):
        return False
    except RpcError:
        return True  # something answered RPC on port 111: it is a portmapper of some kind
    finally:
        await client.close()
    return True


async def _registrar(host: str, port: int, privileged: bool | None, timeout: float) -> RpcClient:
    """A UDP client to rpcbind, from a reserved port when allowed (see the module doc)."""
    if privileged is None:
        privileged = os.geteuid() == 0
    if privileged:
        try:
            return await RpcClient.connect(host, port, "udp", privileged=True, timeout=timeout)
        except PermissionError:
            log.info("cannot bind a reserved port; registering as an ordinary user")
    return await RpcClient.connect(host, port, "udp", timeout=timeout)


class _Rpcbind:
    """SET/UNSET through one client, at the highest version the peer speaks."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client
        self.vers = RPCB_VERS4

    async def _rpcb(self, proc: int, r: Rpcb) -> bool | None:
        """A v4 (then v3) SET/UNSET; None when the peer only speaks PMAP v2."""
        while self.vers >= RPCB_VERS3:
            try:
                body = await self.client.call(PMAP_PROG, self.vers, proc, r.to_bytes())
            except RpcError as e:
                if e.accept_stat in (AcceptStat.PROG_MISMATCH, AcceptStat.PROG_UNAVAIL):
                    self.vers -= 1
                    continue
                raise
            return _decode_bool(body)
        return None

    async def set(self, ep: Endpoint) -> bool:
        ok = await self._rpcb(RpcbProc.SET, ep.rpcb(OWNER))
        if ok is not None:
            return ok
        prot = prot_of_netid(ep.netid)
        if prot is None:
            raise PortmapError(f"portmapper speaks only version 2; cannot register {ep}")
        m = PmapMapping(ep.prog, ep.vers, prot, ep.port)
        return _decode_bool(
            await self.client.call(PMAP_PROG, PMAP_VERS, PmapProc.SET, m.to_bytes())
        )

    async def unset(self, prog: int, vers: int, netid: str = "") -> bool:
        ok = await self._rpcb(RpcbProc.UNSET, Rpcb(prog, vers, netid, "", OWNER))
        if ok is not None:
            return ok
        m = PmapMapping(prog, vers, 0, 0)  # RFC 1833 section 3.2: prot and port are ignored
        return _decode_bool(
            await self.client.call(PMAP_PROG, PMAP_VERS, PmapProc.UNSET, m.to_bytes())
        )


@dataclass(slots=True)
class PortmapHandle:
    """What :func:`start_portmapper` set up; :meth:`close` takes our mappings away again.

    ``mode`` is ``"rpcbind"`` (registered with the system rpcbind) or ``"builtin"`` (our own
    portmapper in the dispatcher; ``registry`` and ``service`` are then set).
    """

    mode: Literal["rpcbind", "builtin"]
    endpoints: tuple[Endpoint, ...]
    registry: PortmapRegistry | None = None
    service: PortmapService | None = None
    _rpcbind: tuple[str, int, bool | None, float] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        """Unregister every endpoint (idempotent; rpcbind errors are logged, not raised)."""
        if self._closed:
            return
        self._closed = True
        if self.registry is not None:
            for ep in self.endpoints:
                self.registry.unset(ep.prog, ep.vers, ep.netid, SUPERUSER)
            return
        if self._rpcbind is not None:
            try:
                await _unregister(self.endpoints, *self._rpcbind)
            except (OSError, RpcError, XdrError, PortmapError) as e:
                log.warning("could not unregister from rpcbind: %s", e)


async def _unregister(
    endpoints: Sequence[Endpoint], host: str, port: int, privileged: bool | None, timeout: float
) -> None:
    client = await _registrar(host, port, privileged, timeout)
    try:
        rpcb = _Rpcbind(client)
        for prog, vers, netid in dict.fromkeys((e.prog, e.vers, e.netid) for e in endpoints):
            await rpcb.unset(prog, vers, netid)
    finally:
        await client.close()


async def register_with_rpcbind(
    endpoints: Iterable[Endpoint],
    *,
    host: str = LOOPBACK,
    port: int = PMAP_PORT,
    privileged: bool | None = None,
    timeout: float = 5.0,
) -> PortmapHandle:
    """Register ``endpoints`` with the rpcbind on ``host``:``port``; raise PortmapError.

    ``privileged`` None: use a reserved source port when running as root.
    """
    eps = tuple(endpoints)
    client = await _registrar(host, port, privileged, timeout)
    try:
        rpcb = _Rpcbind(client)
        for prog, vers in dict.fromkeys((e.prog, e.vers) for e in eps):
            await rpcb.unset(prog, vers)  # stale entries of an earlier run; False is fine
        for ep in eps:
            if not await rpcb.set(ep):
                raise PortmapError(f"rpcbind refused {ep} (taken by another owner?)")
            log.info(
                "registered %d/%d %s port %d with rpcbind", ep.prog, ep.vers, ep.netid, ep.port
            )
    except (RpcError, RpcTimeout, RpcConnectionError, XdrError) as e:
        raise PortmapError(f"registration with rpcbind at {host}:{port} failed: {e}") from e
    finally:
        await client.close()
    return PortmapHandle("rpcbind", eps, _rpcbind=(host, port, privileged, timeout))


def builtin_portmapper(
    dispatcher: Dispatcher,
    endpoints: Iterable[Endpoint],
    *,
    port: int = PMAP_PORT,
    netids: Sequence[str] = ("udp", "tcp"),
    registry: PortmapRegistry | None = None,
) -> PortmapHandle:
    """Serve program 100000 from ``dispatcher`` with ``endpoints`` and its own entries.

    The portmapper's own mappings (100000 v2-4 on ``port`` for each of ``netids``) come
    first, as rpcbind lists itself; version 2 is only entered for the IPv4 netids.
    """
    reg = registry if registry is not None else PortmapRegistry()
    service = PortmapService(reg)
    service.register(dispatcher)
    for netid in netids:
        wildcard = "::" if netid.endswith("6") else "0.0.0.0"
        for vers in (RPCB_VERS4, RPCB_VERS3, PMAP_VERS):
            if vers == PMAP_VERS and prot_of_netid(netid) is None:
                continue
            reg.set(PMAP_PROG, vers, netid, uaddr(wildcard, port), SUPERUSER)
    eps = tuple(endpoints)
    for ep in eps:
        reg.unset(ep.prog, ep.vers, ep.netid, SUPERUSER)
        reg.set(ep.prog, ep.vers, ep.netid, ep.uaddr, SUPERUSER)
    return PortmapHandle("builtin", eps, registry=reg, service=service)


async def start_portmapper(
    dispatcher: Dispatcher,
    endpoints: Iterable[Endpoint],
    *,
    rpcbind_host: str = LOOPBACK,
    rpcbind_port: int = PMAP_PORT,
    probe_timeout: float = 0.5,
    builtin_port: int = PMAP_PORT,
    builtin_netids: Sequence[str] = ("udp", "tcp"),
) -> PortmapHandle:
    """Register with the system rpcbind if one runs, else set up the built-in portmapper.

    In built-in mode the caller must serve ``dispatcher`` on ``builtin_port`` over UDP and
    TCP (the entries for it are already in the registry).
    """
    eps = tuple(endpoints)
    if await rpcbind_running(rpcbind_host, rpcbind_port, timeout=probe_timeout):
        log.info("system rpcbind found on %s:%d; registering with it", rpcbind_host, rpcbind_port)
        return await register_with_rpcbind(eps, host=rpcbind_host, port=rpcbind_port)
    log.info("no rpcbind on %s:%d; serving the built-in portmapper", rpcbind_host, rpcbind_port)
    return builtin_portmapper(dispatcher, eps, port=builtin_port, netids=builtin_netids)


async def getport(
    host: str,
    prog: int,
    vers: int,
    transport: Literal["udp", "tcp"],
    *,
    source: str | None = None,
    port: int = PMAP_PORT,
    timeout: float = 5.0,
    source_port: int = 0,
    share_port: bool = False,
) -> int:
    """The port of ``prog``/``vers``/``transport`` on ``host``, 0 when not registered.

    IPv4: PMAP v2 GETPORT over UDP (every portmapper speaks it).  IPv6: RPCBIND v4
    GETVERSADDR (v3 GETADDR if v4 is refused), asked *over* ``transport`` because rpcbind
    answers for the netid of the transport the query came in on (RFC 1833 section 2.2.1).
    ``source`` is the local address to ask from (a virtual server's), ``source_port`` the local
    port (0: any; ``share_port`` as for :meth:`RpcClient.connect`).  Raises RpcTimeout,
    RpcError, OSError.
    """
    try:
        ipv6 = ipaddress.ip_address(host.split("%", 1)[0]).version == 6
    except ValueError:
        ipv6 = False  # a name: PMAP v2 over IPv4, as most portmap clients do
    if not ipv6:
        prot = prot_of_netid(transport)
        assert prot is not None
        async with await RpcClient.connect(
            host, port, "udp", source=source, source_port=source_port, share_port=share_port,
            timeout=timeout,
        ) as client:  # fmt: skip
            args = PmapMapping(prog, vers, prot, 0).to_bytes()
            return _decode_u32(await client.call(PMAP_PROG, PMAP_VERS, PmapProc.GETPORT, args))
    async with await RpcClient.connect(
        host, port, transport, source=source, source_port=source_port, share_port=share_port,
        timeout=timeout,
    ) as client:  # fmt: skip
        args = Rpcb(prog, vers, transport + "6", "", "").to_bytes()
        # v4 GETVERSADDR is exact like PMAP GETPORT; v3 GETADDR may name another version.
        for rvers, proc in ((RPCB_VERS4, RpcbProc.GETVERSADDR), (RPCB_VERS3, RpcbProc.GETADDR)):
            try:
                body = await client.call(PMAP_PROG, rvers, proc, args)
            except RpcError as e:
                if e.accept_stat == AcceptStat.PROG_MISMATCH and rvers == RPCB_VERS4:
                    continue
                raise
            text = _decode_string(body)
            if not text:
                return 0
            try:
                return parse_uaddr(text)[1]
            except UaddrError as e:
                raise XdrError(f"bad universal address from {host}: {text!r}") from e
    return 0
