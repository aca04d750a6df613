"""lockd's request handling: decode -> host -> grace -> file -> lock core -> kernel -> effects.

Theory of operation
-------------------
:class:`NlmService` answers every NLM procedure (XNFS NLM v1/v3 and "NLM Version 4") for one
decoded request and the :class:`~floatlock.rpc.dispatch.Call` it came in, at time ``now``.  It
is synchronous and never waits on the network: what must happen outside (a reply, an
NLM_GRANTED callback, a ``*_RES`` call, SM_MON) comes back as an :class:`Outcome`, whose
``reply`` the RPC adapter sends and whose ``effects`` it carries out.  The kernel OFD mirror
(:mod:`floatlock.nlm.kernel`) is the one real side effect done here, as the lock core's
``admit`` veto, so a lock is only granted once the kernel holds it too.

The order inside every handler follows the seed: the *host* is resolved first (keyed by the
server address the request arrived on), and only then is grace checked, against that host's
address (``host.grace_key``), so a grace period on one virtual address never holds requests
that arrive on another.  During grace (XNFS NLM, "Crash Recovery"): LOCK and SHARE without
``reclaim`` and TEST get ``DENIED_GRACE_PERIOD``; reclaims are processed; UNLOCK, CANCEL and
UNSHARE proceed (they can only release).  A reclaim *outside* grace is refused with
``DENIED_GRACE_PERIOD`` too (what Linux lockd does): the lock may have been given away.

Monitoring: a host must be monitored by statd before it may hold anything (see
:mod:`floatlock.nlm.hosts`).  ``needs_monitor(host)`` tells the adapter to get SM_MON done
first (``hosts.start_monitor`` / ``monitor_done``); a LOCK or SHARE for an unmonitored host is
answered ``DENIED_NOLOCKS``.  NM_LOCK (clients without statd) skips monitoring and never blocks.

An NLM owner is ``(host key, svid, oh)`` (XNFS "nlm4_lock"); a share owner ``(host key, oh)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from floatlock.address import ServerAddress, is_loopback
from floatlock.nlm import effects as fx
from floatlock.nlm.files import FileResolver, LockFile, StaleHandle
from floatlock.nlm.filetable import DEFAULT_HANDLE_TTL, DEFAULT_MAX_HANDLES, FileTable
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import Host, HostLimitError, HostTable
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.localwait import LocalWaits
from floatlock.nlm.locks import LockManager
from floatlock.nlm.outcomes import Effect, Outcome, SendGranted, SendResult, Waiting
from floatlock.nlm.proto import (
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    Notify,
    Res,
    ShareArgs,
    ShareRes,
    SmStatus,
    TestArgs,
    TestRes,
    UnlockArgs,
)
from floatlock.nlm.ranges import LockRangeError, byte_range
from floatlock.nlm.records import BlockedLock, Lock
from floatlock.nlm.results import (
    LimitExceeded,
    LockBlocked,
    LockDeadlock,
    LockDenied,
    LockGranted,
    ShareDenied,
    ShareGranted,
)
from floatlock.nlm.shares import ShareAccess, ShareDeny
from floatlock.rpc.dispatch import Call

__all__ = ["Effect", "NlmService", "Outcome", "SendGranted", "SendResult"]


_STAT_FOR_LIMIT = Nlm4Stat.DENIED_NOLOCKS
#: The reply status of each lock core result (one dict lookup, no isinstance chain).
_LOCK_STAT: dict[type, Nlm4Stat] = {
    LockGranted: Nlm4Stat.GRANTED,
    LockBlocked: Nlm4Stat.BLOCKED,
    LockDenied: Nlm4Stat.DENIED,
    LockDeadlock: Nlm4Stat.DEADLCK,
    LimitExceeded: _STAT_FOR_LIMIT,
}


class NlmService:
    """The NLM procedures over the host table, grace clocks, resolver, lock core and kernel."""

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

    def _prune_touched(self, out: list[Effect]) -> None:
        """Prune every file the effects in ``out`` released something on."""
        files: dict[Hashable, None] = {}
        for e in out:
            if isinstance(e, fx.Released):
                files[e.lock.file] = None
            elif isinstance(e, fx.Cancelled):
                files[e.blocked.lock.file] = None
            elif isinstance(e, fx.ShareRemoved):
                files[e.share.file] = None
        for file in files:
            self._prune(file)

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

    def poll_local(self, now: float) -> list[Effect]:
        """Retry the queues of files whose waiters a local holder may have let go of.

        One F_OFD_GETLK per noted request (see :mod:`floatlock.nlm.localwait`); a file's queue
        is rerun only when one of them is free now.
        """
        out: list[Effect] = []
        for file in self.local_waits.files():
            noted = self.local_waits.take(file)
            queued = {w.lock for w in self.locks.waiting(file=file)}
            live = [lk for lk in noted if lk in queued]
            lf = self.open.get(file)
            if not live or lf is None or self.kernel is None:
                continue
            if any(self._kernel_free(lf, lk) for lk in live):
                self._apply(self.locks.retry_file(file), out)  # re-notes what is still busy
            else:
                for lk in live:
                    self.local_waits.note(lk)
        self._prune_touched(out)
        return out

    def _kernel_free(self, lf: LockFile, lk: Lock) -> bool:
        assert self.kernel is not None
        try:
            return self.kernel.test(lk.owner, lf, lk.start, lk.end, lk.exclusive) is None
        except OSError:
            return True  # let the retry's own veto decide

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
        except HostLimitError:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        except LockRangeError:
            self._prune_resolved(lk.fh)
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        self._apply(effects, out)
        self._prune(lf.key)
        return Outcome(Res(a.cookie, Nlm4Stat.GRANTED), out)

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
        except HostLimitError:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        except LockRangeError:
            self._prune_resolved(lk.fh)
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        if effects:
            # The owner's Released pieces come first: _apply closes its idle description.
            self._apply(effects, out, (owner, start, end))
        else:
            self._close_if_idle(owner, fkey)
        self._prune(fkey)
        return Outcome(Res(a.cookie, Nlm4Stat.GRANTED), out)

    # -- GRANTED answers ------------------------------------------------------------------

    def granted_answered(self, blocked: BlockedLock, stat: int | None, now: float) -> Outcome:
        """The client answered NLM_GRANTED with ``stat`` (None: never answered): anything but
        GRANTED takes the grant back (XNFS NLM, "NLM_GRANTED")."""
        out: list[Effect] = []
        if stat != Nlm4Stat.GRANTED:
            lk = blocked.lock
            if self.kernel is not None:
                self.kernel.unlock(lk.owner, lk.file, lk.start, lk.end)
            self._apply(self.locks.undo_grant(blocked), out)
            self._prune(lk.file)
        return Outcome(None, out)

    # -- SHARE / UNSHARE ------------------------------------------------------------------

    def share(self, a: ShareArgs, call: Call, now: float) -> Outcome:
        s = a.share
        try:
            host = self.host_for(s.caller_name, call, now)
        except HostLimitError:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        if self.grace.in_grace(host.grace_key, now) != a.reclaim:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_GRACE_PERIOD))
        if not host.monitored:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        try:
            lf = self.open.file(s.fh, now)
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        r = self.locks.share(
            lf.key, (host.key, s.oh), host.key, ShareAccess(s.access), ShareDeny(s.mode)
        )
        out: list[Effect] = []
        self._apply(r.effects, out)
        self._prune(lf.key)
        if isinstance(r, ShareGranted):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)
        if isinstance(r, ShareDenied):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED), out)
        return Outcome(ShareRes(a.cookie, _STAT_FOR_LIMIT), out)

    def unshare(self, a: ShareArgs, call: Call, now: float) -> Outcome:
        s = a.share
        try:
            host = self.host_for(s.caller_name, call, now)
            lf = self.open.file(s.fh, now)
        except HostLimitError:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        out: list[Effect] = []
        self._apply(self.locks.unshare(lf.key, (host.key, s.oh)), out)
        self._prune(lf.key)
        return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)

    def expire(self, now: float, max_age: float) -> list[Effect]:
        """Cancel queued requests the client stopped re-sending (see LockManager.expire)."""
        out: list[Effect] = []
        self._apply(self.locks.expire(now, max_age), out)
        self._prune_touched(out)
        return out

    # -- dropping state -------------------------------------------------------------------

    def drop_host(self, host: Host, now: float) -> list[Effect]:
        """Release everything ``host`` holds, in the core and the kernel."""
        out: list[Effect] = []
        if self.kernel is not None:
            self.kernel.drop_host(host.key)  # first: the core's wake-ups run the kernel veto
        self._apply(self.locks.drop_host(host.key), out)
        self._prune_touched(out)
        return out

    def free_all(self, a: Notify, call: Call, now: float) -> Outcome:
        """FREE_ALL: the client ``a.name`` restarted without statd; drop its state here."""
        client = self.hosts.client_id(call.client_ip, a.name)
        out: list[Effect] = []
        for host in self.hosts.hosts_of_client(client, call.server):
            self.hosts.note_state(host, a.state)
            out.extend(self.drop_host(host, now))
        return Outcome(None, out)

    def sm_notify(self, a: SmStatus, call: Call, now: float) -> Outcome:
        """statd's callback (private procedure 16): accepted from loopback only."""
        if not is_loopback(call.client_ip):
            return Outcome(None)
        host = self.hosts.rebooted(a.mon_name, a.priv, a.state)
        if host is None:
            return Outcome(None)
        return Outcome(None, self.drop_host(host, now))

    def drop_server(self, server: ServerAddress, now: float) -> list[Effect]:
        """Release every host of one server address (``floatlock release ADDR``)."""
        out: list[Effect] = []
        for host in self.hosts.hosts_of_server(server):
            out.extend(self.drop_host(host, now))
        self.hosts.drop_server(server)
        return out


def _svid_oh(owner: Hashable) -> tuple[int, bytes]:
    """svid and oh of an owner key made by :meth:`NlmService._owner`."""
    assert isinstance(owner, tuple)
    return int(owner[1]), bytes(owner[2])


def _wkey(lk: Lock) -> tuple[Hashable, Hashable, int, int, bool]:
    return (lk.owner, lk.file, lk.start, lk.end, lk.exclusive)
