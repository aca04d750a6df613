"""statd's RPC handlers: program 100024 version 1, every XNFS NSM procedure plus SM_MON2.

Each handler decodes nothing itself (the dispatcher does, with :mod:`floatlock.nsm.proto`),
asks the sans-IO :class:`~floatlock.nsm.monitor.Monitor` and hands the effects to an
:class:`EffectSink` (the assembled statd), whose writer thread makes the file effects durable
(group commit, :mod:`floatlock.nsm.writer`).  A handler with file effects returns a coroutine
(the dispatcher sends the reply when it completes) that waits for them, so an acknowledged
SM_MON survives a crash, while the event loop goes on serving everyone else; callbacks,
notifications and the HA callout are started once the files are durable.  A request with no
file effect is answered at once, on the synchronous path.

What each procedure waits for:

* SM_MON / SM_MON2: the record file is durable.  An SM_MON that changes nothing (its record is
  in memory already, e.g. a retransmission) still waits for a pending write of that file.
* SM_UNMON / SM_UNMON_ALL: the removal is durable, as nfs-utils (which unlinks the record
  before replying) does.  The caller then knows that a crash cannot bring the record back:
  no SM_NOTIFY or status callback will be sent for a host it has finished with, and the
  order against its next SM_MON of the same host is the order on disk.  It costs one group
  commit, shared with every other request in the batch.  SM_UNMON of a record not monitored
  still waits for a pending write of that file (a retransmission of the first SM_UNMON);
  SM_UNMON_ALL with nothing to remove waits for every write queued before it.
* SM_SIMU_CRASH: the new state numbers and the move of the records to ``sm.bak`` are durable
  before any SM_NOTIFY (carrying the new state) goes out.

Security (nfs-utils does the same for the first four): SM_MON, SM_UNMON, SM_UNMON_ALL and
SM_SIMU_CRASH (and SM_MON2) are only honoured from a loopback address; from anywhere else they
are answered ``stat_fail`` (or with the state and no change) and logged.  SM_NOTIFY is accepted
from anyone but the monitor rate-limits it per sender and only acts on peers it monitors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeAlias, TypeVar

from floatlock.address import ServerAddress, is_loopback
from floatlock.nsm import proto
from floatlock.nsm.effects import Effect, WriteRecords
from floatlock.nsm.monitor import Monitor
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res, SmMon2Res, SmStatRes, StatChge
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure

__all__ = ["EffectSink", "NsmService"]

log = logging.getLogger("floatlock.nsm.service")

T = TypeVar("T")
Deferred: TypeAlias = T | Coroutine[Any, Any, T]  # a result now, or a coroutine when it must wait


class EffectSink(Protocol):
    def persist(
        self, effects: list[Effect], records_of: tuple[ServerAddress, str] | None = None
    ) -> Awaitable[None] | None:
        """Start making the file effects durable: an awaitable done when they are (raising
        OSError when they could not be written), None when there is nothing to wait for.
        ``records_of`` (identity, mon_name): with no file effect, still wait for a pending
        write of that record file."""

    def last_write(self) -> Awaitable[None] | None:
        """The pending write queued last (all before it are durable when it is), if any."""

    def launch(self, effects: list[Effect]) -> None:
        """Start the asynchronous effects (callbacks, notifications, callout)."""


def _peer(call: Call) -> str:
    try:
        return str(call.client[0])
    except (TypeError, IndexError):
        return "?"


class NsmService:
    def __init__(
        self, monitor: Monitor, sink: EffectSink, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.monitor = monitor
        self.sink = sink
        self.clock = clock
        self.refused = 0

    def _local(self, call: Call, what: str) -> bool:
        if is_loopback(_peer(call)):
            return True
        self.refused += 1
        log.warning("refused %s from non-local %s", what, _peer(call))
        return False

    def _apply(
        self,
        effects: list[Effect],
        result: T,
        records_of: tuple[ServerAddress, str] | None = None,
        barrier: bool = False,
    ) -> Deferred[T]:
        """``result`` once ``effects`` are durable (then launched): at once when there is
        nothing to wait for, else a coroutine."""
        pending = self.sink.persist(effects, records_of)
        if pending is None and barrier:
            pending = self.sink.last_write()
        if pending is None:
            self.sink.launch(effects)
            return result
        return self._apply_later(effects, result, pending)

    async def _apply_later(self, effects: list[Effect], result: T, pending: Awaitable[None]) -> T:
        await _shielded(pending)
        self.sink.launch(effects)
        return result

    # -- procedures ------------------------------------------------------------------------

    def sm_stat(self, mon_name: str, call: Call) -> SmStatRes:
        # XNFS: SM_STAT returns the state number of the local status monitor.  "Local" is
        # the identity the request arrived on: a virtual server's state on its address.
        return SmStatRes(Res.STAT_SUCC, self.monitor.state_of(call.server))

    def _mon(self, mon: Mon, call: Call) -> Deferred[SmStatRes]:
        local = self._local(call, f"SM_MON of {mon.mon_id.mon_name!r}")
        return self.monitor_request(mon.mon_id, mon.priv, _peer(call), local)

    def _records_of(self, mon_id: MonId) -> tuple[ServerAddress, str]:
        return self.monitor.identity_of(mon_id.my_id.my_name).name, mon_id.mon_name

    def monitor_request(
        self, mon_id: MonId, priv: bytes, caller: str, local: bool
    ) -> Deferred[SmStatRes]:
        """SM_MON proper (also the in-process route): success is answered once the record is
        durable; if it cannot be written the request fails and is forgotten.  A coroutine
        when there is a write to wait for."""
        res, state, effects = self.monitor.mon(mon_id, priv, caller, local, self.clock())
        if res != Res.STAT_SUCC:
            if local:
                log.warning("SM_MON of %r for %r refused", mon_id.mon_name, mon_id.my_id)
            return SmStatRes(res, state)
        pending = self.sink.persist(effects, self._records_of(mon_id))
        if pending is None:
            self.sink.launch(effects)
            return SmStatRes(res, state)
        return self._monitor_durable(mon_id, effects, state, pending)

    async def _monitor_durable(
        self, mon_id: MonId, effects: list[Effect], state: int, pending: Awaitable[None]
    ) -> SmStatRes:
        try:
            await _shielded(pending)
        except OSError as e:
            log.error("SM_MON of %r: cannot write record: %s", mon_id.mon_name, e)
            for eff in effects:
                if isinstance(eff, WriteRecords):
                    for r in eff.records:
                        if (r.mon_name, r.my_name) == (mon_id.mon_name, mon_id.my_id.my_name):
                            self.monitor.forget(r)
            return SmStatRes(Res.STAT_FAIL, state)
        self.sink.launch(effects)
        log.info("monitoring %s for %s", mon_id.mon_name, mon_id.my_id.my_name)
        return SmStatRes(Res.STAT_SUCC, state)

    def sm_mon(self, mon: Mon, call: Call) -> Deferred[SmStatRes]:
        return self._mon(mon, call)

    def sm_mon2(self, mon: Mon, call: Call) -> Deferred[SmMon2Res]:
        r = self._mon(mon, call)
        if isinstance(r, SmStatRes):
            return self._mon2_res(mon, r)
        return self._mon2_later(mon, r)

    async def _mon2_later(self, mon: Mon, r: Awaitable[SmStatRes]) -> SmMon2Res:
        return self._mon2_res(mon, await r)

    def _mon2_res(self, mon: Mon, r: SmStatRes) -> SmMon2Res:
        grace = 0
        if r.res_stat == Res.STAT_SUCC:
            grace = self.monitor.grace_remaining(mon.mon_id.my_id.my_name, self.clock())
        return SmMon2Res(r.res_stat, r.state, grace)

    def unmonitor_request(self, mon_id: MonId, local: bool) -> Deferred[int]:
        """SM_UNMON proper (also the in-process route): the identity's state, once the
        removal of the record is durable."""
        state, effects = self.monitor.unmon(mon_id, local)
        if not local:
            return state
        return self._apply(effects, state, self._records_of(mon_id))

    def sm_unmon(self, mon_id: MonId, call: Call) -> Deferred[int]:
        local = self._local(call, f"SM_UNMON of {mon_id.mon_name!r}")
        return self.unmonitor_request(mon_id, local)

    def sm_unmon_all(self, my_id: MyId, call: Call) -> Deferred[int]:
        local = self._local(call, f"SM_UNMON_ALL for {my_id.my_name!r}")
        state, effects = self.monitor.unmon_all(my_id, local)
        return self._apply(effects, state, barrier=local)

    def sm_simu_crash(self, _args: None, call: Call) -> Deferred[None]:
        local = self._local(call, "SM_SIMU_CRASH")
        return self._apply(self.monitor.simu_crash(local, self.clock()), None)

    def sm_notify(self, chge: StatChge, call: Call) -> None:
        effects = self.monitor.notified(chge.mon_name, chge.state, _peer(call), self.clock())
        if not effects:
            log.debug(
                "SM_NOTIFY %r state %d from %s: nothing to do",
                chge.mon_name,
                chge.state,
                _peer(call),
            )
        self.sink.launch(effects)

    # -- registration ----------------------------------------------------------------------

    def procedures(self) -> dict[int, Procedure[Any, Any]]:
        P = Procedure
        return {
            Proc.SM_STAT: P(
                "SM_STAT", self.sm_stat, proto.decode_sm_name, proto.encode_sm_stat_res
            ),
            Proc.SM_MON: P("SM_MON", self.sm_mon, proto.decode_mon, proto.encode_sm_stat_res),
            Proc.SM_UNMON: P("SM_UNMON", self.sm_unmon, proto.decode_mon_id, proto.encode_sm_stat),
            Proc.SM_UNMON_ALL: P(
                "SM_UNMON_ALL", self.sm_unmon_all, proto.decode_my_id, proto.encode_sm_stat
            ),
            Proc.SM_SIMU_CRASH: P("SM_SIMU_CRASH", self.sm_simu_crash, idempotent=False),
            Proc.SM_NOTIFY: P("SM_NOTIFY", self.sm_notify, proto.decode_stat_chge),
            Proc.SM_MON2: P("SM_MON2", self.sm_mon2, proto.decode_mon, proto.encode_sm_mon2_res),
        }

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register(proto.SM_PROG, proto.SM_VERS, self.procedures(), "status")


async def _shielded(pending: Awaitable[None]) -> None:
    """Wait for ``pending`` without cancelling it if we are cancelled (others may share it)."""
    await asyncio.shield(pending)
