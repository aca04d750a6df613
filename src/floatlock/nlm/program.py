"""NLM program 100021, versions 1, 3 and 4, on the RPC dispatcher (asyncio adapter).

Theory of operation
-------------------
This module binds :class:`~floatlock.nlm.service.NlmService` to
:class:`~floatlock.rpc.dispatch.Dispatcher`: one procedure table per version (v1: procedures
0-16; v3 and v4 add SHARE, UNSHARE, NM_LOCK and FREE_ALL, XNFS NLM "NLM_VERSX" and "NLM
Version 4"), with the version's codecs from :mod:`floatlock.nlm.proto`.  It carries out the
service's effects:

* before a LOCK or SHARE of a host that statd does not watch yet, it awaits ``monitor`` (the
  daemon's SM_MON, through statd's SM_MON2 where available) -- once per host, concurrent
  requests of the same host wait for the same answer;
* :class:`~floatlock.nlm.service.SendGranted` becomes an NLM_GRANTED call in a task
  (:mod:`floatlock.nlm.callbacks`), whose answer goes back to the service;
* ``*_MSG`` procedures are answered with no reply and a ``*_RES`` call in a task; a LOCK_MSG
  that blocks is granted later with NLM_GRANTED_MSG, and the client's GRANTED_RES (procedure
  15) is its answer (XNFS NLM, "Asynchronous procedures").  The other ``*_RES`` procedures
  (11-14) are accepted and ignored: lockd sends no ``*_MSG`` requests of its own;
* while NLM requests wait for a lock held outside lockd (a local process), a timer runs
  :meth:`~floatlock.nlm.service.NlmService.poll_local` every ``local_poll_interval`` seconds
  (design in :mod:`floatlock.nlm.localwait`); it stops when no such request is left.

LOCK, CANCEL, UNLOCK, SHARE, UNSHARE, NM_LOCK and their ``_MSG`` forms change state and go
through the duplicate request cache (``idempotent=False``).  ``housekeeping(now)`` is for the
daemon's timer: host collection (SM_UNMON), queued requests not re-sent, grace clocks run out,
idle kernel descriptions closed.

LOCK is a plain handler: for a host already monitored (every request but a host's first) it
answers synchronously, on the transport's fast path with no task; only a first LOCK returns a
coroutine that waits for SM_MON (the dispatcher's "plain handler that returns a coroutine").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from floatlock.address import canonical_ip
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.codec import NlmCodec, codec_for
from floatlock.nlm.hosts import Host, HostKey, HostLimitError, MonitorHost, UnmonitorHost
from floatlock.nlm.localwait import DEFAULT_POLL_INTERVAL
from floatlock.nlm.proto import (
    NLM_PROG,
    CancArgs,
    LockArgs,
    Nlm4Stat,
    NlmProc,
    Notify,
    Res,
    ShareArgs,
    ShareRes,
    SmStatus,
    TestArgs,
    TestRes,
    UnlockArgs,
)
from floatlock.nlm.service import Effect, NlmService, Outcome, SendGranted, SendResult
from floatlock.rpc.dispatch import NO_REPLY, Call, Dispatcher, Procedure

__all__ = ["Monitor", "NlmProgram", "Unmonitor"]

log = logging.getLogger("floatlock.nlm")

#: Carry out SM_MON; True when statd now watches the host.
Monitor = Callable[[MonitorHost], Awaitable[bool]]
#: Carry out SM_UNMON.
Unmonitor = Callable[[UnmonitorHost], Awaitable[None]]


class NlmProgram:
    """The NLM procedures of every version, with their effects carried out."""

    def __init__(
        self,
        service: NlmService,
        callbacks: NlmCallbacks,
        monitor: Monitor,
        unmonitor: Unmonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
        blocked_max_age: float = 120.0,
        local_poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.service = service
        self.callbacks = callbacks
        self._monitor = monitor
        self._unmonitor = unmonitor
        self._clock = clock
        self.blocked_max_age = blocked_max_age
        self._monitoring: dict[HostKey, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.local_poll_interval = local_poll_interval
        self._local_timer: asyncio.TimerHandle | None = None

    # -- registration ---------------------------------------------------------------------

    def register(self, dispatcher: Dispatcher) -> None:
        for vers in (1, 3, 4):
            dispatcher.register(NLM_PROG, vers, self.procedures(vers), "nlockmgr")

    def procedures(self, vers: int) -> dict[int, Procedure[Any, Any]]:
        c = codec_for(vers)
        reply = c.encode_res_reply
        P = NlmProc
        # LOCK, CANCEL and UNLOCK redone on a retransmission answer as the state now says
        # (a lock the owner holds is granted again, an unlock of nothing succeeds): the reply
        # cache is kept for datagrams only (see Procedure.cache_on_streams).
        tcp_uncached = False
        procs: dict[int, Procedure[Any, Any]] = {
            P.TEST: Procedure("TEST", self._test, c.testargs, c.encode_testres),
            P.LOCK: Procedure(
                "LOCK",
                self._lock,
                c.lockargs,
                c.encode_res,
                False,
                c.lockargs_at,
                reply,
                cache_on_streams=tcp_uncached,
            ),
            P.CANCEL: Procedure(
                "CANCEL",
                self._cancel,
                c.cancargs,
                c.encode_res,
                False,
                encode_reply=reply,
                cache_on_streams=tcp_uncached,
            ),
            P.UNLOCK: Procedure(
                "UNLOCK",
                self._unlock,
                c.unlockargs,
                c.encode_res,
                False,
                c.unlockargs_at,
                reply,
                cache_on_streams=tcp_uncached,
            ),
            P.TEST_MSG: Procedure("TEST_MSG", self._test_msg, c.testargs),
            P.LOCK_MSG: Procedure(
                "LOCK_MSG", self._lock_msg, c.lockargs, None, False, c.lockargs_at
            ),
            P.CANCEL_MSG: Procedure("CANCEL_MSG", self._cancel_msg, c.cancargs, idempotent=False),
            P.UNLOCK_MSG: Procedure(
                "UNLOCK_MSG", self._unlock_msg, c.unlockargs, None, False, c.unlockargs_at
            ),
            P.TEST_RES: Procedure("TEST_RES", self._ignore_res, c.testres),
            P.LOCK_RES: Procedure("LOCK_RES", self._ignore_res, c.res),
            P.CANCEL_RES: Procedure("CANCEL_RES", self._ignore_res, c.res),
            P.UNLOCK_RES: Procedure("UNLOCK_RES", self._ignore_res, c.res),
            P.GRANTED_RES: Procedure("GRANTED_RES", self._granted_res, c.res),
            P.SM_NOTIFY: Procedure("SM_NOTIFY", self._sm_notify, NlmCodec.sm_status),
        }
        if vers >= 3:
            procs[P.SHARE] = Procedure(
                "SHARE", self._share, c.shareargs, c.encode_shareres, idempotent=False
            )
            procs[P.UNSHARE] = Procedure(
                "UNSHARE", self._unshare, c.shareargs, c.encode_shareres, idempotent=False
            )
            procs[P.NM_LOCK] = Procedure(
                "NM_LOCK", self._nm_lock, c.lockargs, c.encode_res, False, c.lockargs_at, reply
            )
            procs[P.FREE_ALL] = Procedure("FREE_ALL", self._free_all, NlmCodec.notify)
        return procs

    # -- effects --------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _carry_out(self, effects: list[Effect]) -> None:
        for e in effects:
            if type(e) is SendGranted:
                self._spawn(self._granted(e))
            elif type(e) is SendResult:
                self._spawn(self.callbacks.result(e))
        if self.service.local_waits and self._local_timer is None:
            loop = asyncio.get_running_loop()
            self._local_timer = loop.call_later(self.local_poll_interval, self._poll_local)

    def _poll_local(self) -> None:
        self._local_timer = None
        self._carry_out(self.service.poll_local(self._clock()))

    async def _granted(self, e: SendGranted) -> None:
        if e.msg:
            stat = await self.callbacks.granted_msg(e)
        else:
            stat = await self.callbacks.granted(e)
        self._carry_out(self.service.granted_answered(e.blocked, stat, self._clock()).effects)

    def _done(self, outcome: Outcome) -> Any:
        self._carry_out(outcome.effects)
        return outcome.reply

    async def _ensure_monitored(self, host: Host) -> bool:
        if host.monitored:
            return True
        fut = self._monitoring.get(host.key)
        if fut is not None:
            return await asyncio.shield(fut)
        mon = self.service.hosts.start_monitor(host)
        if mon is None:
            return host.monitored
        fut = asyncio.get_running_loop().create_future()
        self._monitoring[host.key] = fut
        ok = False
        try:
            ok = await self._monitor(mon)
        except Exception:
            log.exception("SM_MON of %s for %s failed", mon.mon_name, mon.my_name)
        finally:
            self.service.hosts.monitor_done(host, ok)
            del self._monitoring[host.key]
            fut.set_result(ok)
        return ok

    async def _host_ready(self, caller_name: str, call: Call) -> bool:
        try:
            host = self.service.host_for(caller_name, call, self._clock())
        except HostLimitError:
            return False
        return await self._ensure_monitored(host)

    # -- handlers -------------------------------------------------------------------------

    def _test(self, a: TestArgs, call: Call) -> TestRes:
        return self.service.test(a, call, self._clock())

    def _lock(self, a: LockArgs, call: Call, msg: bool = False) -> Res | Coroutine[Any, Any, Res]:
        """LOCK: synchronous for a host statd already watches (the common case); a coroutine
        (the dispatcher awaits it) only while the host's SM_MON is to be done first."""
        now = self._clock()
        try:
            host = self.service.host_for(a.lock.caller_name, call, now)
        except HostLimitError:
            return Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        if not host.monitored:
            return self._lock_after_monitor(a, call, host, msg)
        reply: Res = self._done(self.service.lock(a, call, now, msg=msg, host=host))
        return reply

    async def _lock_after_monitor(self, a: LockArgs, call: Call, host: Host, msg: bool) -> Res:
        if not await self._ensure_monitored(host):
            return Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        # Looked up again: the host may have been collected or dropped while statd answered.
        reply: Res = self._done(self.service.lock(a, call, self._clock(), msg=msg))
        return reply

    def _nm_lock(self, a: LockArgs, call: Call) -> Res:
        reply: Res = self._done(self.service.lock(a, call, self._clock(), monitored=False))
        return reply

    def _cancel(self, a: CancArgs, call: Call) -> Res:
        reply: Res = self._done(self.service.cancel(a, call, self._clock()))
        return reply

    def _unlock(self, a: UnlockArgs, call: Call) -> Res:
        reply: Res = self._done(self.service.unlock(a, call, self._clock()))
        return reply

    async def _share(self, a: ShareArgs, call: Call) -> ShareRes:
        if not await self._host_ready(a.share.caller_name, call):
            return ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        reply: ShareRes = self._done(self.service.share(a, call, self._clock()))
        return reply

    def _unshare(self, a: ShareArgs, call: Call) -> ShareRes:
        reply: ShareRes = self._done(self.service.unshare(a, call, self._clock()))
        return reply

    def _free_all(self, a: Notify, call: Call) -> None:
        self._done(self.service.free_all(a, call, self._clock()))

    def _sm_notify(self, a: SmStatus, call: Call) -> None:
        self._done(self.service.sm_notify(a, call, self._clock()))

    def peer_status(self, mon_name: str, state: int, priv: bytes) -> int:
        """statd's status callback delivered in-process (the daemon's route from its own
        statd): drop the host the callback names, as procedure 16 would.  Returns how many
        hosts were dropped (0 or 1)."""
        host = self.service.hosts.rebooted(mon_name, priv, state)
        if host is None:
            return 0
        self._carry_out(self.service.drop_host(host, self._clock()))
        return 1

    # -- message-passing forms: reply nothing, send *_RES ---------------------------------

    def _send_res(self, call: Call, caller_name: str, proc: NlmProc, r: Any) -> object:
        try:
            host = self.service.host_for(caller_name, call, self._clock())
        except HostLimitError:
            return NO_REPLY
        self._spawn(self.callbacks.result(SendResult(host, call.vers, proc, r)))
        return NO_REPLY

    def _test_msg(self, a: TestArgs, call: Call) -> object:
        r = self._test(a, call)
        return self._send_res(call, a.lock.caller_name, NlmProc.TEST_RES, r)

    def _lock_msg(self, a: LockArgs, call: Call) -> object:
        r = self._lock(a, call, msg=True)
        if isinstance(r, Res):
            return self._send_res(call, a.lock.caller_name, NlmProc.LOCK_RES, r)
        return self._lock_msg_after(a, call, r)

    async def _lock_msg_after(self, a: LockArgs, call: Call, pending: Awaitable[Res]) -> object:
        r = await pending
        return self._send_res(call, a.lock.caller_name, NlmProc.LOCK_RES, r)

    def _cancel_msg(self, a: CancArgs, call: Call) -> object:
        r = self._cancel(a, call)
        return self._send_res(call, a.lock.caller_name, NlmProc.CANCEL_RES, r)

    def _unlock_msg(self, a: UnlockArgs, call: Call) -> object:
        r = self._unlock(a, call)
        return self._send_res(call, a.lock.caller_name, NlmProc.UNLOCK_RES, r)

    def _ignore_res(self, r: object, call: Call) -> None:
        log.debug("%s from %s ignored: lockd sends no *_MSG requests", r, call.client_ip)

    def _granted_res(self, r: Res, call: Call) -> None:
        client = call.client_ip
        client = canonical_ip(client) if ":" in client else client
        if not self.callbacks.granted_res(client, r.cookie, r.stat):
            log.info("GRANTED_RES from %s answers no GRANTED_MSG of ours", client)

    # -- timers ---------------------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        """Collect idle hosts (SM_UNMON), expire queued requests and ended grace clocks, close
        kernel descriptions idle since the previous call."""
        svc = self.service
        self._carry_out(svc.expire(now, self.blocked_max_age))
        svc.sweep_idle()
        for ended in svc.grace.expire(now):
            log.info("grace period over for %s", ended)
        for unmon in svc.hosts.collect(now, svc.locks.host_busy):
            if self._unmonitor is not None:
                self._spawn(self._unmonitor(unmon))

    def close(self) -> None:
        """Stop the local-holder timer (shutdown)."""
        if self._local_timer is not None:
            self._local_timer.cancel()
            self._local_timer = None

    async def drain(self) -> None:
        """Wait for the callbacks in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
