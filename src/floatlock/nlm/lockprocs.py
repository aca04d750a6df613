"""The lock procedures TEST, LOCK, CANCEL and UNLOCK, and the plumbing every procedure shares.

:class:`LockProcedures` is the part of lockd's request handling that the NLM lock path runs
through (see :mod:`floatlock.nlm.service` for the theory of operation: host first, then grace,
file, lock core, kernel, effects): the tables it works on (host table, grace clocks, resolved
files, the lock core :mod:`floatlock.nlm.locks` and the kernel OFD mirror), the ``admit`` veto,
pruning of files nothing refers to any more, and :meth:`LockProcedures._apply`, which carries the
lock core's effects into the kernel and into NLM_GRANTED callbacks (XNFS NLM, "NLM_GRANTED").
The byte-range procedures follow XNFS "NLM_TEST", "NLM_LOCK" (with NM_LOCK and the ``*_MSG``
forms, XNFS NLM, "Asynchronous procedures"), "NLM_CANCEL" and "NLM_UNLOCK".

Separate from :mod:`floatlock.nlm.service`, whose :class:`~floatlock.nlm.service.NlmService`
derives from this class and adds the procedures off the lock path (GRANTED answers, polling of
local waits, SHARE / UNSHARE, expiry, dropping a client's state): this module is the hot path
of every NLM LOCK and UNLOCK, kept in one place and free of the cold procedures.  Sans-IO like
the rest of the service: no asyncio, no sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from floatlock.nlm import effects as fx
from floatlock.nlm.files import FileResolver, StaleHandle
from floatlock.nlm.filetable import DEFAULT_HANDLE_TTL, DEFAULT_MAX_HANDLES, FileTable
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import Host, HostLimitError, HostTable
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.localwait import LocalWaits
from floatlock.nlm.locks import LockManager
from floatlock.nlm.outcomes import Effect, Outcome, SendGranted, Waiting
from floatlock.nlm.proto import (
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    Res,
    TestArgs,
    TestRes,
    UnlockArgs,
)
from floatlock.nlm.ranges import LockRangeError, byte_range
from floatlock.nlm.records import Lock
from floatlock.nlm.results import LimitExceeded, LockBlocked, LockDeadlock, LockDenied, LockGranted
from floatlock.rpc.dispatch import Call

__all__ = ["STAT_FOR_LIMIT", "LockProcedures"]

STAT_FOR_LIMIT = Nlm4Stat.DENIED_NOLOCKS
#: The reply status of each lock core result (one dict lookup, no isinstance chain).
_LOCK_STAT: dict[type, Nlm4Stat] = {
    LockGranted: Nlm4Stat.GRANTED,
    LockBlocked: Nlm4Stat.BLOCKED,
    LockDenied: Nlm4Stat.DENIED,
    LockDeadlock: Nlm4Stat.DEADLCK,
    LimitExceeded: STAT_FOR_LIMIT,
}


class LockProcedures:
    """The NLM lock procedures over the host table, grace clocks, resolver, lock core and kernel."""

    def __init__(
        self,
        hosts: HostTable,
        grace: GraceClocks,
        files: FileResolver,
        kernel: KernelMirror | None = None,
        *,
        handle_ttl: float = DEFAULT_HANDLE_TTL,
        max_handles: int = DEFAULT_MAX_HANDLES,
        **lock_limits: int,
    ) -> None:
        self.hosts = hosts
        self.grace = grace
        self.kernel = kernel
        self.locks = LockManager(admit=self._admit if kernel is not None else None, **lock_limits)
        self.open = FileTable(
            files, self.locks.file_in_use, ttl=handle_ttl, max_handles=max_handles
        )
        self._waiting: dict[tuple[Hashable, Hashable, int, int, bool], Waiting] = {}
        #: Queued requests the kernel refused because of a local holder (see localwait).
        self.local_waits = LocalWaits()
        self._cookies = itertools.count(1)

    # -- plumbing -------------------------------------------------------------------------

    def host_for(self, caller_name: str, call: Call, now: float) -> Host:
        """The host of a request (raises HostLimitError when the table is full)."""
        return self.hosts.lookup(call.client_ip, caller_name, call.server, now)

    def needs_monitor(self, host: Host) -> bool:
        return not host.monitored

    def open_files(self) -> int:
        """Files lockd keeps resolved (those with locks, queued requests or shares)."""
        return len(self.open)

    def _admit(self, lock: Lock) -> bool:
        lf = self.open.get(lock.file)
        if lf is None or self.kernel is None:
            return lf is not None
        try:
            busy = self.kernel.try_lock(
                lock.host, lock.owner, lf, lock.start, lock.end, lock.exclusive
            )
        except OSError:
            return False
        if busy is not None:
            self.local_waits.note(lock)
            return False
        return True

    def forget_handles(self) -> None:
        """Drop the resolved-handle cache (every handle is resolved again on next use)."""
        self.open.forget_handles()

    def sweep_idle(self) -> int:
        """Housekeeping: close kernel descriptions idle for a whole interval; how many."""
        return self.kernel.sweep_idle() if self.kernel is not None else 0

    def _prune(self, file: Hashable) -> None:
        """Forget ``file`` once nothing (lock, queued request, share) refers to it."""
        if self.open.prune(file):
            self.local_waits.discard(file)

    def _prune_resolved(self, fh: bytes) -> None:
        key = self.open.prune_handle(fh)
        if key is not None:
            self.local_waits.discard(key)

    def _close_if_idle(self, owner: Hashable, file: Hashable) -> None:
        """Close ``owner``'s kernel description of ``file`` once it holds nothing there."""
        if self.kernel is not None and not self.locks.owner_holds(file, owner):
            self.kernel.release(owner, file)  # kept idle for the owner's next lock

    def _apply(
        self,
        effects: tuple[fx.Effect, ...],
        out: list[Effect],
        unlocked: tuple[Hashable, int, int] | None = None,
    ) -> None:
        """Carry core effects into the kernel and the GRANTED callbacks.

        ``unlocked``: (owner, start, end) the kernel has already released (UNLOCK releases
        in the kernel first): Released pieces of that owner inside it need no second call.
        """
        for e in effects:
            out.append(e)
            if type(e) is fx.Granted:
                continue  # the kernel took it already (the admit veto)
            if type(e) is fx.Released and self.kernel is not None:
                lk = e.lock
                if (
                    unlocked is None
                    or lk.owner != unlocked[0]
                    or lk.start < unlocked[1]
                    or lk.end > unlocked[2]
                ):
                    self.kernel.unlock(lk.owner, lk.file, lk.start, lk.end)
                self._close_if_idle(lk.owner, lk.file)
            elif type(e) is fx.GrantedFromQueue:
                lk = e.blocked.lock
                w = self._waiting.pop(_wkey(lk), None)
                if w is not None:
                    # GRANTED_MSG answers come back as GRANTED_RES, matched by our own cookie.
                    cookie = next(self._cookies).to_bytes(8, "big") if w.msg else w.cookie
                    args = TestArgs(cookie, w.exclusive, w.lock)
                    out.append(SendGranted(w.host, w.vers, args, e.blocked, w.msg))
            elif type(e) is fx.Cancelled:
                self._waiting.pop(_wkey(e.blocked.lock), None)

    @staticmethod
    def _owner(host: Host, lk: NlmLock) -> tuple[Hashable, int, bytes]:
        return (host.key, lk.svid, lk.oh)

    # -- TEST -----------------------------------------------------------------------------

    def test(self, a: TestArgs, call: Call, now: float) -> TestRes:
        try:
            host = self.host_for(a.lock.caller_name, call, now)
        except HostLimitError:
            return TestRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        if self.grace.in_grace(host.grace_key, now):
            return TestRes(a.cookie, Nlm4Stat.DENIED_GRACE_PERIOD)
        lk = a.lock
        try:
            return self._test(a, host, lk, now)
        except StaleHandle:
            return TestRes(a.cookie, Nlm4Stat.STALE_FH)

    def _test(self, a: TestArgs, host: Host, lk: NlmLock, now: float) -> TestRes:
        lf = self.open.file(lk.fh, now)
        try:
            owner = self._owner(host, lk)
            held = self.locks.test(lf.key, owner, lk.offset, lk.length, a.exclusive)
            if held is not None:
                svid, oh = _svid_oh(held.owner)
                h = Holder(held.exclusive, svid, oh, held.start, held.length)
                return TestRes(a.cookie, Nlm4Stat.DENIED, h)
            if self.kernel is not None:
                start, end = byte_range(lk.offset, lk.length)
                kh = self.kernel.test(owner, lf, start, end, a.exclusive)
                if kh is not None:
                    length = 0 if kh.end >= 1 << 64 else kh.end - kh.start
                    h = Holder(kh.exclusive, kh.pid, b"", kh.start, length)
                    return TestRes(a.cookie, Nlm4Stat.DENIED, h)
        except LockRangeError:
            return TestRes(a.cookie, Nlm4Stat.FBIG)
        except OSError:
            return TestRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        finally:
            self._prune(lf.key)
        return TestRes(a.cookie, Nlm4Stat.GRANTED)

    # -- LOCK -----------------------------------------------------------------------------

    def lock(
        self,
        a: LockArgs,
        call: Call,
        now: float,
        *,
        monitored: bool = True,
        msg: bool = False,
        host: Host | None = None,
    ) -> Outcome:
        """LOCK / NM_LOCK (``monitored=False``).  The adapter gets the host monitored first.

        ``msg``: the request came as LOCK_MSG, so a later grant is sent as GRANTED_MSG (XNFS
        NLM, "Asynchronous procedures").  ``host``: the request's host when the caller has
        just looked it up (``host_for``), to save a second lookup.
        """
        out: list[Effect] = []
        if host is None:
            try:
                host = self.host_for(a.lock.caller_name, call, now)
            except HostLimitError:
                return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        in_grace = self.grace.in_grace(host.grace_key, now)
        if in_grace != a.reclaim:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_GRACE_PERIOD))
        if monitored and not host.monitored:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        host.nsm_state = a.state  # the client's NSM state number (hosts.note_state)
        lk = a.lock
        block = a.block and monitored
        try:
            lf = self.open.file(lk.fh, now)
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        fkey = lf.key
        try:
            r = self.locks.lock(
                fkey,
                (host.key, lk.svid, lk.oh),
                host.key,
                lk.offset,
                lk.length,
                a.exclusive,
                block=block,
                now=now,
            )
        except LockRangeError:
            self._prune(fkey)
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        kind = type(r)
        if type(r) is LockBlocked:
            self._waiting[_wkey(r.blocked.lock)] = Waiting(
                host, call.vers, a.cookie, lk, a.exclusive, msg
            )
        self._apply(r.effects, out)
        if kind is not LockGranted:
            self._prune(fkey)  # (a granted lock keeps its file in use: nothing to prune)
        return Outcome(Res(a.cookie, _LOCK_STAT[kind]), out)

    # -- CANCEL / UNLOCK ------------------------------------------------------------------

    def cancel(self, a: CancArgs, call: Call, now: float) -> Outcome:
        out: list[Effect] = []
        lk = a.lock
        try:
            host = self.host_for(lk.caller_name, call, now)
            lf = self.open.file(lk.fh, now)
            effects = self.locks.cancel(
                lf.key, self._owner(host, lk), lk.offset, lk.length, a.exclusive
            )
        except (HostLimitError, StaleHandle, LockRangeError) as e:
            return self._release_refused(e, a.cookie, lk.fh)
        self._apply(effects, out)
        self._prune(lf.key)
        return Outcome(Res(a.cookie, Nlm4Stat.GRANTED), out)

    def _release_refused(self, err: Exception, cookie: bytes, fh: bytes) -> Outcome:
        """CANCEL's or UNLOCK's answer when its host, file or range could not be had: the host
        table is full (DENIED_NOLOCKS), the handle is stale (STALE_FH), or the range does not
        fit (FBIG; the file resolved for nothing is pruned again)."""
        if isinstance(err, HostLimitError):
            return Outcome(Res(cookie, Nlm4Stat.DENIED_NOLOCKS))
        if isinstance(err, StaleHandle):
            return Outcome(Res(cookie, Nlm4Stat.STALE_FH))
        self._prune_resolved(fh)
        return Outcome(Res(cookie, Nlm4Stat.FBIG))

    def unlock(self, a: UnlockArgs, call: Call, now: float) -> Outcome:
        out: list[Effect] = []
        lk = a.lock
        try:
            host = self.host_for(lk.caller_name, call, now)
            fkey = self.open.file(lk.fh, now).key
            owner = self._owner(host, lk)
            start, end = byte_range(lk.offset, lk.length)
            if self.kernel is not None:
                # Release in the kernel first: the core's wake-ups run the kernel veto.
                self.kernel.unlock(owner, fkey, start, end)
            effects = self.locks.unlock(fkey, owner, lk.offset, lk.length)
        except (HostLimitError, StaleHandle, LockRangeError) as e:
            return self._release_refused(e, a.cookie, lk.fh)
        if effects:
            # The owner's Released pieces come first: _apply closes its idle description.
            self._apply(effects, out, (owner, start, end))
        else:
            self._close_if_idle(owner, fkey)
        self._prune(fkey)
        return Outcome(Res(a.cookie, Nlm4Stat.GRANTED), out)


def _svid_oh(owner: Hashable) -> tuple[int, bytes]:
    """svid and oh of an owner key made by :meth:`LockProcedures._owner`."""
    assert isinstance(owner, tuple)
    return int(owner[1]), bytes(owner[2])


def _wkey(lk: Lock) -> tuple[Hashable, Hashable, int, int, bool]:
    return (lk.owner, lk.file, lk.start, lk.end, lk.exclusive)
