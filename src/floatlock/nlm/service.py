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

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from floatlock.address import ServerAddress, is_loopback
from floatlock.nlm import effects as fx
from floatlock.nlm.files import FileResolver, LockFile, StaleHandle
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import Host, HostLimitError, HostTable, MonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.locks import LockManager
from floatlock.nlm.proto import (
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
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

__all__ = ["NlmService", "Outcome", "SendGranted", "SendResult"]


@dataclass(frozen=True, slots=True)
class SendGranted:
    """Call NLM_GRANTED (version ``vers``) on ``host`` from ``host.server``; retransmit until
    answered, then report with :meth:`NlmService.granted_answered`."""

    host: Host
    vers: int
    args: TestArgs
    blocked: BlockedLock


@dataclass(frozen=True, slots=True)
class SendResult:
    """Call ``proc`` (a ``*_RES`` procedure) on ``host``'s NLM with the encoded ``result``."""

    host: Host
    vers: int
    proc: NlmProc
    result: TestRes | Res | ShareRes


Effect = SendGranted | SendResult | MonitorHost | fx.Effect


@dataclass(slots=True)
class Outcome:
    """What a handler decided: the reply (None for void) and what to do outside."""

    reply: Any
    effects: list[Effect] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """What lockd needs to send NLM_GRANTED for a queued request."""

    host: Host
    vers: int
    cookie: bytes
    lock: NlmLock
    exclusive: bool


_STAT_FOR_LIMIT = Nlm4Stat.DENIED_NOLOCKS


class NlmService:
    """The NLM procedures over the host table, grace clocks, resolver, lock core and kernel."""

    def __init__(
        self,
        hosts: HostTable,
        grace: GraceClocks,
        files: FileResolver,
        kernel: KernelMirror | None = None,
        **lock_limits: int,
    ) -> None:
        self.hosts = hosts
        self.grace = grace
        self.files = files
        self.kernel = kernel
        self.locks = LockManager(admit=self._admit if kernel is not None else None, **lock_limits)
        self._open: dict[Hashable, LockFile] = {}  # file key -> LockFile, for the kernel
        self._waiting: dict[tuple[Hashable, Hashable, int, int, bool], _Waiting] = {}

    # -- plumbing -------------------------------------------------------------------------

    def host_for(self, caller_name: str, call: Call, now: float) -> Host:
        """The host of a request (raises HostLimitError when the table is full)."""
        return self.hosts.lookup(call.client_ip, caller_name, call.server, now)

    def needs_monitor(self, host: Host) -> bool:
        return not host.monitored

    def _admit(self, lock: Lock) -> bool:
        lf = self._open.get(lock.file)
        if lf is None or self.kernel is None:
            return lf is not None
        try:
            busy = self.kernel.try_lock(
                lock.host, lock.owner, lf, lock.start, lock.end, lock.exclusive
            )
        except OSError:
            return False
        return busy is None

    def _file(self, fh: bytes) -> LockFile:
        lf = self.files.resolve(fh)
        self._open.setdefault(lf.key, lf)
        return lf

    def _apply(self, effects: tuple[fx.Effect, ...], out: list[Effect]) -> None:
        """Carry core effects into the kernel and the GRANTED callbacks."""
        for e in effects:
            out.append(e)
            if isinstance(e, fx.Released) and self.kernel is not None:
                lk = e.lock
                self.kernel.unlock(lk.owner, lk.file, lk.start, lk.end)
            elif isinstance(e, fx.GrantedFromQueue):
                lk = e.blocked.lock
                w = self._waiting.pop(_wkey(lk), None)
                if w is not None:
                    out.append(
                        SendGranted(
                            w.host, w.vers, TestArgs(w.cookie, w.exclusive, w.lock), e.blocked
                        )
                    )
            elif isinstance(e, fx.Cancelled):
                self._waiting.pop(_wkey(e.blocked.lock), None)

    def _settle(self, host: Host, now: float) -> None:
        key = host.key
        holding = bool(
            self.locks.lock_count(key)
            or self.locks.blocked_count(key)
            or self.locks.shares(host=key)
        )
        self.hosts.set_holding(host, holding, now)

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
            lf = self._file(lk.fh)
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
        except StaleHandle:
            return TestRes(a.cookie, Nlm4Stat.STALE_FH)
        except LockRangeError:
            return TestRes(a.cookie, Nlm4Stat.FBIG)
        except OSError:
            return TestRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS)
        return TestRes(a.cookie, Nlm4Stat.GRANTED)

    # -- LOCK -----------------------------------------------------------------------------

    def lock(self, a: LockArgs, call: Call, now: float, *, monitored: bool = True) -> Outcome:
        """LOCK / NM_LOCK (``monitored=False``).  The adapter gets the host monitored first."""
        out: list[Effect] = []
        try:
            host = self.host_for(a.lock.caller_name, call, now)
        except HostLimitError:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        in_grace = self.grace.in_grace(host.grace_key, now)
        if in_grace != a.reclaim:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_GRACE_PERIOD))
        if monitored and not host.monitored:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        self.hosts.note_state(host, a.state)
        lk = a.lock
        block = a.block and monitored
        try:
            lf = self._file(lk.fh)
            owner = self._owner(host, lk)
            r = self.locks.lock(
                lf.key, owner, host.key, lk.offset, lk.length, a.exclusive, block=block, now=now
            )
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        except LockRangeError:
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        if isinstance(r, LockBlocked):
            self._waiting[_wkey(r.blocked.lock)] = _Waiting(
                host, call.vers, a.cookie, lk, a.exclusive
            )
        self._apply(r.effects, out)
        self._settle(host, now)
        if isinstance(r, LockGranted):
            stat = Nlm4Stat.GRANTED
        elif isinstance(r, LockBlocked):
            stat = Nlm4Stat.BLOCKED
        elif isinstance(r, LockDenied):
            stat = Nlm4Stat.DENIED
        elif isinstance(r, LockDeadlock):
            stat = Nlm4Stat.DEADLCK
        else:
            assert isinstance(r, LimitExceeded)
            stat = _STAT_FOR_LIMIT
        return Outcome(Res(a.cookie, stat), out)

    # -- CANCEL / UNLOCK ------------------------------------------------------------------

    def cancel(self, a: CancArgs, call: Call, now: float) -> Outcome:
        out: list[Effect] = []
        lk = a.lock
        try:
            host = self.host_for(lk.caller_name, call, now)
            lf = self._file(lk.fh)
            effects = self.locks.cancel(
                lf.key, self._owner(host, lk), lk.offset, lk.length, a.exclusive
            )
        except HostLimitError:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        except LockRangeError:
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        self._apply(effects, out)
        self._settle(host, now)
        return Outcome(Res(a.cookie, Nlm4Stat.GRANTED), out)

    def unlock(self, a: UnlockArgs, call: Call, now: float) -> Outcome:
        out: list[Effect] = []
        lk = a.lock
        try:
            host = self.host_for(lk.caller_name, call, now)
            lf = self._file(lk.fh)
            owner = self._owner(host, lk)
            if self.kernel is not None:
                # Release in the kernel first: the core's wake-ups run the kernel veto.
                start, end = byte_range(lk.offset, lk.length)
                self.kernel.unlock(owner, lf.key, start, end)
            effects = self.locks.unlock(lf.key, owner, lk.offset, lk.length)
        except HostLimitError:
            return Outcome(Res(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(Res(a.cookie, Nlm4Stat.STALE_FH))
        except LockRangeError:
            return Outcome(Res(a.cookie, Nlm4Stat.FBIG))
        self._apply(effects, out)
        if self.kernel is not None and not any(
            h.owner == owner for h in self.locks.held(file=lf.key)
        ):
            self.kernel.close(owner, lf.key)
        self._settle(host, now)
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
            lf = self._file(s.fh)
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        r = self.locks.share(
            lf.key, (host.key, s.oh), host.key, ShareAccess(s.access), ShareDeny(s.mode)
        )
        out: list[Effect] = []
        self._apply(r.effects, out)
        self._settle(host, now)
        if isinstance(r, ShareGranted):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)
        if isinstance(r, ShareDenied):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED), out)
        return Outcome(ShareRes(a.cookie, _STAT_FOR_LIMIT), out)

    def unshare(self, a: ShareArgs, call: Call, now: float) -> Outcome:
        s = a.share
        try:
            host = self.host_for(s.caller_name, call, now)
            lf = self._file(s.fh)
        except HostLimitError:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        out: list[Effect] = []
        self._apply(self.locks.unshare(lf.key, (host.key, s.oh)), out)
        self._settle(host, now)
        return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)

    def expire(self, now: float, max_age: float) -> list[Effect]:
        """Cancel queued requests the client stopped re-sending (see LockManager.expire)."""
        out: list[Effect] = []
        self._apply(self.locks.expire(now, max_age), out)
        return out

    # -- dropping state -------------------------------------------------------------------

    def drop_host(self, host: Host, now: float) -> list[Effect]:
        """Release everything ``host`` holds, in the core and the kernel."""
        out: list[Effect] = []
        if self.kernel is not None:
            self.kernel.drop_host(host.key)  # first: the core's wake-ups run the kernel veto
        self._apply(self.locks.drop_host(host.key), out)
        self._settle(host, now)
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
