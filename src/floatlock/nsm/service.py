"""statd's RPC handlers: program 100024 version 1, every XNFS NSM procedure plus SM_MON2.

Each handler decodes nothing itself (the dispatcher does, with :mod:`floatlock.nsm.proto`),
asks the sans-IO :class:`~floatlock.nsm.monitor.Monitor` and hands the effects to an
:class:`EffectSink` (the assembled statd).  Record writes are carried out *before* the reply
goes out, so an acknowledged SM_MON survives a crash; callbacks, notifications and the HA
callout run in the background.

Security (nfs-utils does the same for the first four): SM_MON, SM_UNMON, SM_UNMON_ALL and
SM_SIMU_CRASH (and SM_MON2) are only honoured from a loopback address; from anywhere else they
are answered ``stat_fail`` (or with the state and no change) and logged.  SM_NOTIFY is accepted
from anyone but the monitor rate-limits it per sender and only acts on peers it monitors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from floatlock.address import is_loopback
from floatlock.nsm import proto
from floatlock.nsm.effects import Effect, WriteRecords
from floatlock.nsm.monitor import Monitor
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, Res, SmMon2Res, SmStatRes, StatChge
from floatlock.rpc.dispatch import Call, Dispatcher, Procedure

__all__ = ["EffectSink", "NsmService"]

log = logging.getLogger("floatlock.nsm.service")


class EffectSink(Protocol):
    def persist(self, effects: list[Effect]) -> None:
        """Carry out the file effects now (raises OSError when they could not be written)."""

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

    def _apply(self, effects: list[Effect]) -> None:
        self.sink.persist(effects)
        self.sink.launch(effects)

    # -- procedures ------------------------------------------------------------------------

    def sm_stat(self, mon_name: str, call: Call) -> SmStatRes:
        # XNFS: SM_STAT returns the state number of the local status monitor.  "Local" is
        # the identity the request arrived on: a virtual server's state on its address.
        return SmStatRes(Res.STAT_SUCC, self.monitor.state_of(call.server))

    def _mon(self, mon: Mon, call: Call) -> SmStatRes:
        local = self._local(call, f"SM_MON of {mon.mon_id.mon_name!r}")
        return self.monitor_request(mon.mon_id, mon.priv, _peer(call), local)

    def monitor_request(self, mon_id: MonId, priv: bytes, caller: str, local: bool) -> SmStatRes:
        """SM_MON proper (also the in-process route): the record is on disk before success
        is answered; if it cannot be written the request fails and is forgotten."""
        res, state, effects = self.monitor.mon(mon_id, priv, caller, local, self.clock())
        if res != Res.STAT_SUCC:
            if local:
                log.warning("SM_MON of %r for %r refused", mon_id.mon_name, mon_id.my_id)
            return SmStatRes(res, state)
        try:
            self.sink.persist(effects)
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
        return SmStatRes(res, state)

    def sm_mon(self, mon: Mon, call: Call) -> SmStatRes:
        return self._mon(mon, call)

    def sm_mon2(self, mon: Mon, call: Call) -> SmMon2Res:
        r = self._mon(mon, call)
        grace = 0
        if r.res_stat == Res.STAT_SUCC:
            grace = self.monitor.grace_remaining(mon.mon_id.my_id.my_name, self.clock())
        return SmMon2Res(r.res_stat, r.state, grace)

    def sm_unmon(self, mon_id: MonId, call: Call) -> int:
        local = self._local(call, f"SM_UNMON of {mon_id.mon_name!r}")
        state, effects = self.monitor.unmon(mon_id, local)
        self._apply(effects)
        return state

    def sm_unmon_all(self, my_id: MyId, call: Call) -> int:
        local = self._local(call, f"SM_UNMON_ALL for {my_id.my_name!r}")
        state, effects = self.monitor.unmon_all(my_id, local)
        self._apply(effects)
        return state

    def sm_simu_crash(self, _args: None, call: Call) -> None:
        local = self._local(call, "SM_SIMU_CRASH")
        self._apply(self.monitor.simu_crash(local, self.clock()))

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
