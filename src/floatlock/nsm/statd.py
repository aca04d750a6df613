"""The assembled statd: monitor core + store + notifier + callbacks + HA callout + RPC service.

:class:`Statd` is what the daemon (``floatlock serve``) creates on the :class:`Dispatcher` it
serves, beside lockd; :func:`add_arguments` / :func:`run` make ``floatlock statd``, a drop-in
for nfs-utils ``rpc.statd`` (same short options where they exist); they live in
:mod:`floatlock.nsm.statd_cli` and are re-exported here.

Identities (see :mod:`floatlock.nsm.monitor`): the node is started by :meth:`Statd.start`;
each virtual server address by :meth:`Statd.takeover` and given up by :meth:`Statd.release`.
These two are the operations the future control socket (roadmap: ``floatlock takeover ADDR``,
``floatlock release ADDR``) will call.

Durability: file effects go to the :class:`~floatlock.nsm.writer.StoreWriter` thread (group
commit; the event loop never fsyncs).  :meth:`Statd.persist` returns the future of their
durability; what is sent because of them (SM_MON replies, SM_NOTIFY carrying a new state,
callbacks after a release) waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from floatlock.address import ServerAddress, server_address
from floatlock.nsm.callbacks import CallbackFirer, LocalCallback, PortResolver
from floatlock.nsm.callout import HaCallout
from floatlock.nsm.client import MonitorResult
from floatlock.nsm.effects import Callout, Effect, FireCallback, Notify, Resolve
from floatlock.nsm.monitor import NODE, Monitor
from floatlock.nsm.notify import Notifier, NotifyJob
from floatlock.nsm.proto import MonId, MyId, Res, SmStatRes
from floatlock.nsm.retry import Backoff
from floatlock.nsm.service import NsmService
from floatlock.nsm.statd_cli import add_arguments, run
from floatlock.nsm.store import StateDir
from floatlock.nsm.writer import StoreWriter, file_effects
from floatlock.rpc.dispatch import Dispatcher

__all__ = ["Statd", "StatdConfig", "add_arguments", "run"]

log = logging.getLogger("floatlock.nsm.statd")


NameResolver = Callable[[str], Awaitable[list[str]]]


async def _system_resolve(name: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    return [str(i[4][0]) for i in infos]


@dataclass(slots=True)
class StatdConfig:
    state_dir: Path
    grace: float = 90.0  # seconds of grace an identity gets on start / takeover
    notify: bool = True  # False: rpc.statd -L (keep records, send nothing at start)
    node_name: str | None = None  # mon_name the node sends in SM_NOTIFY (-n); default: my_name
    ha_callout: str | None = None
    callout_timeout: float = 10.0
    notify_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 2.0, 30.0, 300.0))
    callback_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 2.0, 10.0, 60.0))
    notify_concurrency: int = 256
    notify_timeout: float = 3.0
    pmap_port: int = 111  # peers' portmapper port (tests use another)
    peer_statd_port: int | None = None  # skip GETPORT and use this port (tests, benches)
    outgoing_port: int = 0  # -o: SM_NOTIFY (and its GETPORT) leave from this port; 0: any
    callback_resolver: PortResolver | None = None  # default: portmapper of the SM_MON caller
    resolve_timeout: float = 5.0  # DNS lookup of host-named peers
    # host name -> addresses, for matching SM_NOTIFY senders; None: the system resolver.
    name_resolver: NameResolver | None = None
    resolve_names: bool = True  # False: match host-named peers by mon_name only


class Statd:
    """statd for the node and the virtual servers it holds.  Construct, then ``await
    start()``; ``await stop()`` writes the even state numbers of a clean shutdown."""

    def __init__(
        self,
        config: StatdConfig,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        writer: StoreWriter | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monitor = Monitor(grace=config.grace)
        self.state_dir = StateDir(config.state_dir)
        self.writer = writer if writer is not None else StoreWriter(self.state_dir)
        self.notifier = Notifier(
            config.notify_backoff,
            concurrency=config.notify_concurrency,
            timeout=config.notify_timeout,
            pmap_port=config.pmap_port,
            statd_port=config.peer_statd_port,
            clock=clock,
            source_port=config.outgoing_port,
        )
        self.callbacks = CallbackFirer(
            config.callback_backoff, config.callback_resolver, clock=clock
        )
        self.callout = (
            HaCallout(config.ha_callout, config.callout_timeout) if config.ha_callout else None
        )
        self.service = NsmService(self.monitor, self, clock)
        if dispatcher is not None:
            self.service.register(dispatcher)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- identities ------------------------------------------------------------------------

    async def start(self, virtual_servers: Sequence[str] = ()) -> None:
        """Start the node identity, then take over ``virtual_servers``."""
        await self._start_identity(NODE, notify=self.config.notify)
        for vs in virtual_servers:
            await self.takeover(vs)

    async def _start_identity(self, name: ServerAddress, notify: bool) -> int:
        store = self.state_dir.identity(name)
        store.ensure()
        current = store.load().records
        backup = store.load_backup().records if notify else []
        effects = self.monitor.start(
            name, store.read_state(), current, backup, self.clock(), notify=notify
        )
        await self.durable(effects)  # the new state is on disk before SM_NOTIFY carries it
        self.launch(effects)
        state = self.monitor.identities[name].state
        log.info(
            "%s: state %d, %d records, %d peers to notify",
            name or "node", state, len(current), sum(isinstance(e, Notify) for e in effects),
        )  # fmt: skip
        return state

    async def takeover(self, address: str) -> int:
        """Serve the identity of a virtual server address: load its records, bump its state
        number, start its grace and notify its clients from it.  Returns the new state."""
        return await self._start_identity(server_address(address), notify=True)

    async def release(self, address: str, wait: bool = True) -> int:
        """Give a virtual server up: fire the callbacks of all its clients (lockd drops those
        locks and no others), write its even state.  Returns the number of callbacks."""
        effects = self.monitor.release(server_address(address), self.clock())
        await self.durable(effects)
        tasks = self._fire([e for e in effects if isinstance(e, FireCallback)])
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def identities(self) -> list[ServerAddress]:
        return list(self.monitor.identities)

    def grace_remaining(self, my_name: str) -> int:
        return self.monitor.grace_remaining(my_name, self.clock())

    async def monitor_local(
        self, mon_name: str, my_name: str, callback: tuple[int, int, int], priv: bytes
    ) -> MonitorResult:
        """SM_MON2 for an in-process lockd (no RPC): the same checks, record and effects;
        done when the record is durable, as an SM_MON reply would be."""
        mid = MonId(mon_name, MyId(my_name, *callback))
        r = self.service.monitor_request(mid, priv, "127.0.0.1", True)
        if not isinstance(r, SmStatRes):
            r = await r
        if r.res_stat != Res.STAT_SUCC:
            return MonitorResult(False, r.state, None)
        return MonitorResult(True, r.state, self.monitor.grace_remaining(my_name, self.clock()))

    async def unmonitor_local(
        self, mon_name: str, my_name: str, callback: tuple[int, int, int]
    ) -> int:
        """SM_UNMON for an in-process lockd; returns the identity's state once the record's
        removal is durable (as an SM_UNMON reply)."""
        r = self.service.unmonitor_request(MonId(mon_name, MyId(my_name, *callback)), True)
        return r if isinstance(r, int) else await r

    def add_local_callback(self, prog: int, vers: int, handler: LocalCallback) -> None:
        """In-process route for status callbacks to (prog, vers): floatlock's own lockd."""
        self.callbacks.add_local(prog, vers, handler)

    async def stop(self) -> None:
        """Clean shutdown: even state numbers for every identity; background work cancelled."""
        stopping = [self.persist(self.monitor.stop(n)) for n in list(self.monitor.identities)]
        waits = [f for f in stopping if f is not None]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.error("cannot write the state of a clean stop: %s", r)
        await self.writer.close()
        for t in list(self._tasks):
            t.cancel()
        self.callbacks.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until notifications, callbacks, callouts and the file writes they caused
        are done (tests)."""
        while True:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.callbacks.drain()
            last = self.writer.last()
            if last is None:
                if not self._tasks:
                    return
                continue
            await asyncio.gather(asyncio.shield(last), return_exceptions=True)

    # -- effects (service.EffectSink) -----------------------------------------------------

    def persist(
        self, effects: list[Effect], records_of: tuple[ServerAddress, str] | None = None
    ) -> asyncio.Future[None] | None:
        """Hand the file effects to the writer: the future of their durability (it fails
        with the OSError that prevented it), or None when there is nothing to wait for.

        With no file effect, ``records_of`` (identity, mon_name) names a record file whose
        pending write must still be waited for: an SM_MON that repeats a record already in
        memory (a retransmission) is not acknowledged before the first copy's write is
        durable.  Should the caller be cancelled, it must not cancel the future (shared):
        :meth:`durable` shields it.
        """
        if file_effects(effects):
            return self.writer.submit(effects)
        if records_of is not None:
            return self.writer.pending_records(*records_of)
        return None

    def last_write(self) -> asyncio.Future[None] | None:
        return self.writer.last()

    async def durable(self, effects: list[Effect]) -> None:
        """Persist ``effects`` and wait until they are durable (raises OSError)."""
        fut = self.persist(effects)
        if fut is not None:
            await asyncio.shield(fut)

    def persist_background(self, effects: list[Effect]) -> None:
        """Persist ``effects`` with nobody waiting (a failure is logged)."""
        fut = self.persist(effects)
        if fut is not None:
            fut.add_done_callback(_log_failure)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _fire(self, effects: list[FireCallback]) -> list[asyncio.Task[bool]]:
        return [self.callbacks.fire(e.record, e.status, e.reason) for e in effects]

    def launch(self, effects: list[Effect]) -> None:
        self._fire([e for e in effects if isinstance(e, FireCallback)])
        jobs: list[NotifyJob] = []
        for e in effects:
            if isinstance(e, Notify):
                if e.identity != NODE:
                    jobs.append(NotifyJob(e, e.identity))  # from the virtual address itself
                elif self.config.node_name:
                    jobs.append(NotifyJob(replace(e, my_name=self.config.node_name), None))
                else:
                    jobs.append(NotifyJob(e, None))
        if jobs:
            self._spawn(self.notifier.send_all(jobs, self._notify_done))
        for e in effects:
            if isinstance(e, Resolve) and self.config.resolve_names:
                self._spawn(self._resolve(e.mon_name))
        if self.callout is not None:
            for e in effects:
                if isinstance(e, Callout):
                    self._spawn(self.callout.run(e.action, e.mon_name, e.my_name))

    async def _resolve(self, mon_name: str) -> None:
        resolver = self.config.name_resolver or _system_resolve
        try:
            addrs = await asyncio.wait_for(resolver(mon_name), self.config.resolve_timeout)
        except (OSError, TimeoutError) as e:
            log.info("cannot resolve %s (SM_NOTIFY will match it by name only): %s", mon_name, e)
            return
        self.monitor.set_aliases(mon_name, addrs)

    def _notify_done(self, job: NotifyJob, ok: bool) -> None:
        n = job.notify
        ident = self.monitor.identities.get(n.identity)
        if ident is None or ident.state != n.state:
            return  # released or restarted since: the sm.bak record is no longer ours
        self.persist_background(self.monitor.notify_done(n.identity, n.mon_name, ok))


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and (e := fut.exception()) is not None:
        log.error("statd: cannot update the state directory: %s", e)
