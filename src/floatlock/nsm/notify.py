"""Sending SM_NOTIFY (XNFS NSM: "SM_NOTIFY ... sent by a status monitor to the status monitors
of the hosts it monitors, when its state changes"), for one identity at a time.

For each peer recorded under an identity, from that identity's address (the client socket is
bound to it; the node identity sends from the default address):

1. find the peer's statd: PMAP GETPORT(100024, 1, UDP) on the peer's portmapper;
2. call SM_NOTIFY(mon_name = the identity's name, state = its new state number).

Peers are notified in parallel (at most ``concurrency`` at once, so thousands of peers cost a
bounded number of sockets), each retried with :class:`~floatlock.nsm.monitor.Backoff` until it
answers or the schedule's total time is spent.  ``on_done(job, ok)`` reports each outcome; the
statd turns it into the ``sm.bak`` bookkeeping (:meth:`Monitor.notify_done`).

Host names are resolved with the loop's resolver (nfs-utils ``sm-notify`` also needs that);
addresses are used as they are.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from floatlock.net.client import rpc_call as _net_rpc_call
from floatlock.nsm.monitor import Backoff, Notify
from floatlock.nsm.proto import (
    SM_PROG,
    SM_VERS,
    Mon,
    MonId,
    MyId,
    Proc,
    Res,
    StatChge,
    decode_sm_mon2_res,
    decode_sm_stat_res,
    encode_mon,
    encode_stat_chge,
)
from floatlock.portmap.register import getport as _pmap_getport
from floatlock.rpc.message import AcceptStat, RpcError
from floatlock.xdr import Decoder

__all__ = ["MonitorResult", "Notifier", "NotifyJob", "getport", "monitor", "rpc_call"]

log = logging.getLogger("floatlock.nsm.notify")


async def rpc_call(
    host: str,
    port: int,
    prog: int,
    vers: int,
    proc: int,
    args: bytes,
    *,
    source: str | None = None,
    timeout: float = 5.0,
) -> bytes:
    """One UDP call (retransmitted by the client) from ``source``."""
    return await _net_rpc_call(
        host, port, "udp", prog, vers, proc, args, source=source, timeout=timeout
    )


async def getport(
    host: str,
    prog: int,
    vers: int,
    *,
    source: str | None = None,
    pmap_port: int = 111,
    timeout: float = 5.0,
) -> int:
    """The UDP port of ``prog``/``vers`` on ``host`` (PMAP GETPORT, RFC 1833); 0: none."""
    return await _pmap_getport(
        host, prog, vers, "udp", source=source, port=pmap_port, timeout=timeout
    )


@dataclass(frozen=True, slots=True)
class NotifyJob:
    notify: Notify
    source: str | None  # local address to send from; None for the node's default


class Notifier:
    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        concurrency: int = 256,
        timeout: float = 3.0,
        pmap_port: int = 111,
        statd_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff if backoff is not None else Backoff(first=1.0, cap=30.0, total=300)
        self.concurrency = concurrency
        self.timeout = timeout
        self.pmap_port = pmap_port
        self.statd_port = statd_port  # fixed peer statd port (tests, benches): no GETPORT
        self.clock = clock
        self.sent = 0
        self.failed = 0

    async def _resolve(self, name: str) -> str:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
            return name
        except OSError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {name}")
        return str(infos[0][4][0])

    async def _once(self, job: NotifyJob) -> None:
        n = job.notify
        host = await self._resolve(n.mon_name)
        port = self.statd_port
        if port is None:
            port = await getport(
                host, SM_PROG, SM_VERS, source=job.source, pmap_port=self.pmap_port,
                timeout=self.timeout,
            )  # fmt: skip
            if port == 0:
                raise ConnectionError(f"no statd registered on {host}")
        args = encode_stat_chge(StatChge(n.my_name, n.state))
        await rpc_call(
            host, port, SM_PROG, SM_VERS, Proc.SM_NOTIFY, args, source=job.source,
            timeout=self.timeout,
        )  # fmt: skip

    async def send(self, job: NotifyJob, sem: asyncio.Semaphore | None = None) -> bool:
        """Notify one peer, retried until it answers or the total time is spent."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                if sem is None:
                    await self._once(job)
                else:
                    async with sem:
                        await self._once(job)
            except Exception as e:
                nxt = self.backoff.next_time(attempt, started, self.clock())
                if nxt is None:
                    self.failed += 1
                    log.warning(
                        "SM_NOTIFY to %s (as %s, state %d) not answered after %d attempts: %s",
                        job.notify.mon_name, job.notify.my_name, job.notify.state, attempt, e,
                    )  # fmt: skip
                    return False
                log.debug(
                    "SM_NOTIFY to %s failed (attempt %d): %s", job.notify.mon_name, attempt, e
                )
                await asyncio.sleep(max(0.0, nxt - self.clock()))
                continue
            self.sent += 1
            log.info(
                "SM_NOTIFY to %s answered (mon_name %s, state %d, from %s)",
                job.notify.mon_name, job.notify.my_name, job.notify.state, job.source or "default",
            )  # fmt: skip
            return True

    async def send_all(
        self, jobs: Iterable[NotifyJob], on_done: Callable[[NotifyJob, bool], None] | None = None
    ) -> tuple[int, int]:
        """Notify every job's peer in parallel; (answered, given up)."""
        sem = asyncio.Semaphore(self.concurrency)

        async def one(job: NotifyJob) -> bool:
            ok = await self.send(job, sem)
            if on_done is not None:
                try:
                    on_done(job, ok)
                except Exception:
                    log.exception("notify bookkeeping failed for %s", job.notify.mon_name)
            return ok

        results = await asyncio.gather(*(one(j) for j in jobs))
        ok = sum(results)
        return ok, len(results) - ok


# -- lockd's side: SM_MON2 with fallback to SM_MON ---------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """Outcome of :func:`monitor`; ``grace_remaining`` None: the statd is a standard one."""

    ok: bool
    state: int
    grace_remaining: int | None


async def monitor(
    statd_addr: tuple[str, int],
    mon_name: str,
    my_name: str,
    callback: tuple[int, int, int],
    priv: bytes,
    *,
    timeout: float = 5.0,
) -> MonitorResult:
    """Ask statd to monitor ``mon_name`` for ``my_name`` (lockd's SM_MON).

    floatlock's statd answers SM_MON2 with the grace seconds left for ``my_name``; a standard
    statd (nfs-utils) answers PROC_UNAVAIL, and the same request is then sent as plain SM_MON
    (docs/protocol-extensions.md).
    """
    host, port = statd_addr
    args = encode_mon(Mon(MonId(mon_name, MyId(my_name, *callback)), priv))
    try:
        body = await rpc_call(host, port, SM_PROG, SM_VERS, Proc.SM_MON2, args, timeout=timeout)
    except RpcError as e:
        if e.accept_stat != AcceptStat.PROC_UNAVAIL:
            raise
    else:
        r2 = decode_sm_mon2_res(Decoder(body))
        ok = r2.res_stat == Res.STAT_SUCC
        return MonitorResult(ok, r2.state, r2.grace_remaining if ok else None)
    body = await rpc_call(host, port, SM_PROG, SM_VERS, Proc.SM_MON, args, timeout=timeout)
    r = decode_sm_stat_res(Decoder(body))
    return MonitorResult(r.res_stat == Res.STAT_SUCC, r.state, None)
