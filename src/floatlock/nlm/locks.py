"""The NLM lock core: POSIX byte-range locks, share reservations and blocked requests (sans-IO).

Theory of operation
-------------------
:class:`LockManager` is the single state machine lockd's service layer calls after it has
decoded a request, resolved the client host and the file.  It does no I/O and reads no clock:
calls that care about time take ``now``; every call that changes state returns effects
(:mod:`floatlock.nlm.effects`) which the caller carries out -- reply, NLM_GRANTED callback,
kernel OFD mirror, journal, metrics.  Held locks live per file in
:class:`~floatlock.nlm.filelocks.FileLocks` (POSIX replace / merge / split semantics), blocked
requests in a :class:`~floatlock.nlm.blocked.BlockedQueue`, reservations (SHARE / UNSHARE)
in the :class:`~floatlock.nlm.sharing.ShareManager` base class; the tables and the read-only
queries over them (listings, counts, "is this file in use") are the
:class:`~floatlock.nlm.lockqueries.LockQueries` base class, this module the transitions.
Every record carries its host so that :meth:`LockManager.drop_host` releases exactly one
client's state (the seed's failover drops the locks of the clients of one server address,
keyed by host).

LOCK.  A non-blocking request is granted unless a lock of another owner conflicts (the reply
names that holder, like TEST).  A blocking request is granted when nothing conflicts *and* no
earlier queued request that it conflicts with is waiting, so a stream of readers cannot starve
a queued writer; otherwise it is queued, unless queueing would close a cycle in the wait-for
graph (:func:`~floatlock.nlm.blocked.reaches`), which answers ``LockDeadlock``.  One exception
keeps fairness from inventing deadlocks: a request never waits behind an earlier request that
is itself blocked by a lock of the new request's owner.  Before granting, the optional
``admit(lock)`` veto runs: lockd passes a function that takes the kernel OFD lock and returns
False when a local process holds a conflicting lock; a vetoed request is denied (holder None)
or queued.  ``test`` + ``apply_lock`` is the same split for callers that want to do the kernel
step themselves.

Wake-ups.  After anything that can free a range (unlock, downgrade, drop, cancel, expiry,
``undo_grant``) the file's queue is retried in arrival order: a waiter is granted when it
conflicts neither with held locks nor with an earlier waiter still queued (same exception as
above), fits its host's cap and is admitted; each grant is a :class:`GrantedFromQueue` effect
to turn into an NLM_GRANTED callback.  If the client refuses or is gone, ``undo_grant`` unlocks
exactly that grant.  ``retry_file`` reruns the queue when the caller learns that a local
(kernel) holder went away.  Wait-for cycles made only of fairness edges through three or more
owners are not detected at wake-up time; such waiters are reclaimed by ``expire``.

Limits.  Per-host caps on held lock records, blocked requests and share reservations, and a
global cap on blocked requests, answer :class:`~floatlock.nlm.results.LimitExceeded` naming
the host and the cap (lockd: ``NLM4_DENIED_NOLOCKS``).  Out-of-range (offset, length) pairs
raise :class:`~floatlock.nlm.ranges.LockRangeError` before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from floatlock.nlm.blocked import Waiter, reaches
from floatlock.nlm.effects import (
    Blocked,
    Cancelled,
    CancelReason,
    Effect,
    Granted,
    GrantedFromQueue,
    Released,
    ShareRemoved,
)
from floatlock.nlm.filelocks import FileLocks, Plan
from floatlock.nlm.lockqueries import LockQueries
from floatlock.nlm.ranges import RANGE_END, byte_range
from floatlock.nlm.records import BlockedLock, FileKey, HostKey, Lock, OwnerKey
from floatlock.nlm.results import (
    LimitExceeded,
    LockBlocked,
    LockDeadlock,
    LockDenied,
    LockGranted,
    LockResult,
)
from floatlock.nlm.shares import ShareReservation

__all__ = ["Admit", "LockConflictError", "LockManager"]

#: Last word before a grant; lockd takes the kernel OFD lock here.  False = "busy elsewhere".
Admit = Callable[[Lock], bool]


class LockConflictError(RuntimeError):
    """``apply_lock`` was called although a conflicting lock is held (a caller bug)."""

    def __init__(self, holder: Lock) -> None:
        super().__init__(f"conflicts with {holder!r}")
        self.holder = holder


def _always(_: Lock) -> bool:
    return True


class LockManager(LockQueries):
    """Held locks, share reservations and blocked requests of every file: the transitions
    (the tables and what reads them are :class:`~floatlock.nlm.lockqueries.LockQueries`')."""

    def __init__(
        self,
        *,
        max_locks_per_host: int = 100_000,
        max_blocked_per_host: int = 1_000,
        max_blocked_total: int = 10_000,
        max_shares_per_host: int = 10_000,
        admit: Admit | None = None,
    ) -> None:
        self.max_locks_per_host = max_locks_per_host
        self.max_blocked_per_host = max_blocked_per_host
        self.max_blocked_total = max_blocked_total
        super().__init__(max_shares_per_host=max_shares_per_host)
        self._admit: Admit = admit if admit is not None else _always

    # -- byte-range locks --------------------------------------------------------------------

    def test(
        self, file: FileKey, owner: OwnerKey, offset: int, length: int, exclusive: bool
    ) -> Lock | None:
        """NLM TEST: a held lock of another owner that conflicts, or None (find_conflict)."""
        start, end = byte_range(offset, length)
        fl = self._table.file(file)
        return None if fl is None else fl.first_conflict(owner, start, end, exclusive)

    def lock(
        self,
        file: FileKey,
        owner: OwnerKey,
        host: HostKey,
        offset: int,
        length: int,
        exclusive: bool,
        *,
        block: bool,
        now: float,
    ) -> LockResult:
        """NLM LOCK (see the module docstring for the rules)."""
        start, end = byte_range(offset, length)
        req = Lock(file, owner, host, start, end, exclusive)
        table = self._table
        fl = table.file(file)
        if fl is None and not block:
            # Fast path: a non-blocking request on a file with no held locks cannot conflict,
            # and granting it adds exactly one record (what _grant_new's plan would say).
            if table.count(host) + 1 > self.max_locks_per_host:
                return LimitExceeded(host, "locks_per_host", self.max_locks_per_host)
            if not self._admit(req):
                return LockDenied(None)
            table.insert_first(req)
            return LockGranted(req, (Granted(req),))
        if block:
            waiter = self._queue.find(file, owner, start, end, exclusive)
            if waiter is not None:
                return self._resent(waiter, now)
        if not block:
            holder = None if fl is None else fl.first_conflict(owner, start, end, exclusive)
            if holder is not None:
                return LockDenied(holder)
            return self._grant_new(req, now, block=False)
        holders = () if fl is None else tuple(fl.conflicts(owner, start, end, exclusive))
        ahead = [w.blocked.lock for w in self._queue.of_file(file) if self._yields(req, w, fl)]
        if not holders and not ahead:
            return self._grant_new(req, now, block=True)
        waits_for = {h.owner for h in holders} | {a.owner for a in ahead}
        if reaches(waits_for, owner, self._waits_for):
            return LockDeadlock(holders + tuple(ahead))
        return self._enqueue(req, now)

    def apply_lock(
        self,
        file: FileKey,
        owner: OwnerKey,
        host: HostKey,
        offset: int,
        length: int,
        exclusive: bool,
    ) -> LockGranted | LimitExceeded:
        """Grant without the queue or ``admit``, after the caller's own ``test``.

        Raises :class:`LockConflictError` if a conflicting lock is held.
        """
        start, end = byte_range(offset, length)
        req = Lock(file, owner, host, start, end, exclusive)
        fl = self._table.file(file)
        holder = None if fl is None else fl.first_conflict(owner, start, end, exclusive)
        if holder is not None:
            raise LockConflictError(holder)
        plan = self._plan_lock(req)
        if isinstance(plan, LimitExceeded):
            return plan
        return LockGranted(req, self._commit_lock(req, plan))

    def unlock(
        self, file: FileKey, owner: OwnerKey, offset: int, length: int
    ) -> tuple[Effect, ...]:
        """NLM UNLOCK: release ``owner``'s locks in the range; releasing nothing is fine."""
        start, end = byte_range(offset, length)
        effects = self._release(file, owner, start, end)
        if effects:
            effects.extend(self._scan(file))
        return tuple(effects)

    def cancel(
        self, file: FileKey, owner: OwnerKey, offset: int, length: int, exclusive: bool
    ) -> tuple[Effect, ...]:
        """NLM CANCEL: drop the matching queued request (nothing if there is none)."""
        start, end = byte_range(offset, length)
        waiter = self._queue.find(file, owner, start, end, exclusive)
        if waiter is None:
            return ()
        self._queue.remove(waiter)
        return (Cancelled(waiter.blocked, CancelReason.CANCELLED), *self._scan(file))

    def undo_grant(self, blocked: BlockedLock) -> tuple[Effect, ...]:
        """Take back a :class:`GrantedFromQueue` the client refused or never acknowledged.

        Unlocks exactly the granted range (as Linux lockd does when a GRANTED is refused),
        including whatever the owner already held inside it, and retries the file's queue.
        """
        lk = blocked.lock
        effects = self._release(lk.file, lk.owner, lk.start, lk.end)
        effects.extend(self._scan(lk.file))
        return tuple(effects)

    def retry_file(self, file: FileKey) -> tuple[Effect, ...]:
        """Retry ``file``'s queue (e.g. a local process released its kernel lock)."""
        return tuple(self._scan(file))

    def expire(self, now: float, max_age: float) -> tuple[Effect, ...]:
        """Cancel queued requests not (re-)sent since ``now - max_age``."""
        effects: list[Effect] = []
        files: dict[FileKey, None] = {}
        for waiter in self._queue.seen_before(now - max_age):
            self._queue.remove(waiter)
            effects.append(Cancelled(waiter.blocked, CancelReason.EXPIRED))
            files[waiter.blocked.lock.file] = None
        for file in files:
            effects.extend(self._scan(file))
        return tuple(effects)

    # -- dropping ----------------------------------------------------------------------------

    def drop_host(self, host: HostKey) -> tuple[Effect, ...]:
        """Release every lock, reservation and queued request of ``host`` (and nothing else)."""
        owners = self._table.owners_of(host)
        waiters = self._queue.of_host(host)
        shares = self._shares.of_host(host)
        return self._drop(owners, waiters, shares)

    def drop_owner(self, owner: OwnerKey) -> tuple[Effect, ...]:
        """Release every lock, reservation and queued request of one owner."""
        return self._drop([owner], self._queue.of_owner(owner), self._shares.of_owner(owner))

    # -- internals ---------------------------------------------------------------------------

    def _yields(self, req: Lock, earlier: Waiter, fl: FileLocks | None) -> bool:
        """Must ``req`` wait behind the queued ``earlier`` (fairness)?"""
        other = earlier.blocked.lock
        if not req.conflicts_with(other):
            return False
        # Never wait behind a request that itself waits for one of our locks.
        return fl is None or not fl.owner_blocks(req.owner, other)

    def _waits_for(self, owner: OwnerKey) -> Iterator[OwnerKey]:
        """Edges of the wait-for graph out of ``owner``."""
        for waiter in self._queue.of_owner(owner):
            req = waiter.blocked.lock
            fl = self._table.file(req.file)
            if fl is not None:
                for holder in fl.conflicts(owner, req.start, req.end, req.exclusive):
                    yield holder.owner
            for earlier in self._queue.of_file(req.file):
                if earlier is waiter:
                    break
                if self._yields(req, earlier, fl):
                    yield earlier.blocked.lock.owner

    def _resent(self, waiter: Waiter, now: float) -> LockResult:
        """A blocking LOCK the client re-sent while it waits: refresh it and retry the file."""
        waiter.last_seen = max(waiter.last_seen, now)
        lk = waiter.blocked.lock
        effects = self._scan(lk.file)
        if waiter in self._queue:
            return LockBlocked(waiter.blocked, tuple(effects))
        # Granted by the retry: the reply says so, no callback needed.
        effects = [
            Granted(lk) if isinstance(e, GrantedFromQueue) and e.blocked is waiter.blocked else e
            for e in effects
        ]
        return LockGranted(lk, tuple(effects))

    def _grant_new(self, req: Lock, now: float, *, block: bool) -> LockResult:
        plan = self._plan_lock(req)
        if isinstance(plan, LimitExceeded):
            return plan
        if not self._admit(req):
            return self._enqueue(req, now) if block else LockDenied(None)
        return LockGranted(req, self._commit_lock(req, plan))

    def _enqueue(self, req: Lock, now: float) -> LockBlocked | LimitExceeded:
        if self._queue.count(req.host) >= self.max_blocked_per_host:
            return LimitExceeded(req.host, "blocked_per_host", self.max_blocked_per_host)
        if len(self._queue) >= self.max_blocked_total:
            return LimitExceeded(req.host, "blocked_total", self.max_blocked_total)
        blocked = BlockedLock(req, now)
        self._queue.add(blocked)
        return LockBlocked(blocked, (Blocked(blocked),))

    def _plan_lock(self, req: Lock) -> Plan | LimitExceeded:
        plan = self._table.plan_lock(req)
        delta = plan.delta
        if delta > 0 and self._table.count(req.host) + delta > self.max_locks_per_host:
            return LimitExceeded(req.host, "locks_per_host", self.max_locks_per_host)
        return plan

    def _commit_lock(self, req: Lock, plan: Plan) -> tuple[Effect, ...]:
        self._table.commit(req.file, req.host, plan)
        effects: list[Effect] = [Granted(req)]
        if not req.exclusive and any(lk.exclusive for lk in plan.removed):
            effects.extend(self._scan(req.file))  # a downgrade may let waiters in
        return tuple(effects)

    def _release(self, file: FileKey, owner: OwnerKey, start: int, end: int) -> list[Effect]:
        return [Released(lk) for lk in self._table.release(file, owner, start, end)]

    def _drop(
        self, owners: list[OwnerKey], waiters: list[Waiter], shares: list[ShareReservation]
    ) -> tuple[Effect, ...]:
        effects: list[Effect] = []
        touched: dict[FileKey, None] = {}
        for waiter in waiters:
            self._queue.remove(waiter)
            effects.append(Cancelled(waiter.blocked, CancelReason.DROPPED))
            touched[waiter.blocked.lock.file] = None
        for owner in owners:
            for file in self._table.files_of(owner):
                effects.extend(self._release(file, owner, 0, RANGE_END))
                touched[file] = None
        for share in shares:
            self._shares.remove(share.file, share.owner)
            effects.append(ShareRemoved(share))
        for file in touched:
            effects.extend(self._scan(file))
        return tuple(effects)

    def _scan(self, file: FileKey) -> list[Effect]:
        """Retry ``file``'s queue in arrival order (see "Wake-ups" above)."""
        effects: list[Effect] = []
        if not self._queue.has_file(file):
            return effects  # nothing queued (the common case): no list of waiters to make
        rescan = True
        while rescan:
            rescan = False
            still: list[Waiter] = []
            for waiter in self._queue.of_file(file):
                req = waiter.blocked.lock
                fl = self._table.file(file)
                if (
                    fl is not None
                    and fl.first_conflict(req.owner, req.start, req.end, req.exclusive) is not None
                ) or any(self._yields(req, earlier, fl) for earlier in still):
                    still.append(waiter)
                    continue
                plan = self._plan_lock(req)
                if isinstance(plan, LimitExceeded) or not self._admit(req):
                    still.append(waiter)
                    continue
                self._queue.remove(waiter)
                self._table.commit(file, req.host, plan)
                effects.append(GrantedFromQueue(waiter.blocked))
                if not req.exclusive and any(lk.exclusive for lk in plan.removed):
                    rescan = True  # a queued downgrade may free earlier waiters
                    break
        return effects
