"""Sending SM_NOTIFY (XNFS NSM: "SM_NOTIFY ... sent by a status monitor to the status monitors
of the hosts it monitors, when its state changes"), for one identity at a time.

For each peer recorded under an identity, from that identity's address (the client socket is
bound to it; the node identity sends from the default address):

1. find the peer's statd: PMAP GETPORT(100024, 1, UDP) on the peer's portmapper;
2. call SM_NOTIFY(mon_name = the identity's name, state = its new state number).

Peers are notified in parallel (at most ``concurrency`` at once, so thousands of peers cost a
bounded number of sockets), each retried with :class:`~floatlock.nsm.retry.Backoff` until it
answers or the schedule's total time is spent.  ``on_done(job, ok)`` reports each outcome; the
statd turns it into the ``sm.bak`` bookkeeping (:meth:`Monitor.notify_done`).

Host names are resolved with the loop's resolver (nfs-utils ``sm-notify`` also needs that);
addresses are used as they are.

With a fixed ``source_port`` (``floatlock statd -o PORT``, like ``rpc.statd -o``) both calls
of every notification leave from that port, so a firewall can let the answers in.  Parallel
notifications share the port: each call's socket is connected to its own peer and bound with
SO_REUSEADDR (:mod:`floatlock.net.bind`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from floatlock.net.client import rpc_call as _net_rpc_call

# lockd's SM_MON2/SM_MON client moved to floatlock.nsm.client; re-exported here.
from floatlock.nsm.client import MonitorResult, monitor
from floatlock.nsm.effects import Notify
from floatlock.nsm.proto import SM_PROG, SM_VERS, Proc, StatChge, encode_stat_chge
from floatlock.nsm.retry import Backoff
from floatlock.portmap.register import getport as _pmap_getport

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
    source_port: int = 0,
) -> bytes:
    """One UDP call (retransmitted by the client) from ``source`` and ``source_port`` (0: any;
    a fixed port is shared with the other calls in flight, each to its own peer)."""
    return await _net_rpc_call(
        host, port, "udp", prog, vers, proc, args, source=source, timeout=timeout,
        source_port=source_port, share_port=source_port != 0,
    )  # fmt: skip


async def getport(
    host: str,
    prog: int,
    vers: int,
    *,
    source: str | None = None,
    pmap_port: int = 111,
    timeout: float = 5.0,
    source_port: int = 0,
) -> int:
    """The UDP port of ``prog``/``vers`` on ``host`` (PMAP GETPORT, RFC 1833); 0: none.
    ``source_port`` as for :func:`rpc_call`."""
    return await _pmap_getport(
        host, prog, vers, "udp", source=source, port=pmap_port, timeout=timeout,
        source_port=source_port, share_port=source_port != 0,
    )  # fmt: skip


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
        source_port: int = 0,
    ) -> None:
        self.backoff = backoff if backoff is not None else Backoff(first=1.0, cap=30.0, total=300)
        self.concurrency = concurrency
        self.timeout = timeout
        self.pmap_port = pmap_port
        self.statd_port = statd_port  # fixed peer statd port (tests, benches): no GETPORT
        self.clock = clock
        self.source_port = source_port  # rpc.statd -o: every notification leaves from it
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
                timeout=self.timeout, source_port=self.source_port,
            )  # fmt: skip
            if port == 0:
                raise ConnectionError(f"no statd registered on {host}")
        args = encode_stat_chge(StatChge(n.my_name, n.state))
        await rpc_call(
            host, port, SM_PROG, SM_VERS, Proc.SM_NOTIFY, args, source=job.source,
            timeout=self.timeout, source_port=self.source_port,
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
