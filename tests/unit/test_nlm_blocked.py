"""Unit tests for blocked requests: queueing, fair wake-ups, deadlock detection, expiry."""

from __future__ import annotations

from collections.abc import Hashable

from floatlock.nlm.blocked import reaches
from floatlock.nlm.effects import (
    Blocked,
    Cancelled,
    CancelReason,
    Effect,
    Granted,
    GrantedFromQueue,
    Released,
)
from floatlock.nlm.locks import LockManager
from floatlock.nlm.records import BlockedLock, Lock
from floatlock.nlm.results import (
    LimitExceeded,
    LockBlocked,
    LockDeadlock,
    LockDenied,
    LockGranted,
    LockResult,
)

F = "file-1"
G = "file-2"
HA, HB, HC, HD = "host-a", "host-b", "host-c", "host-d"
A, B, C, D = (HA, 1), (HB, 1), (HC, 1), (HD, 1)


def req(
    m: LockManager,
    owner: tuple[str, int],
    off: int,
    ln: int,
    excl: bool,
    *,
    file: str = F,
    block: bool = True,
    now: float = 0.0,
) -> LockResult:
    return m.lock(file, owner, owner[0], off, ln, excl, block=block, now=now)


def blocked(r: LockResult) -> BlockedLock:
    assert isinstance(r, LockBlocked), r
    assert r.effects == (Blocked(r.blocked),)
    return r.blocked


def woken(effects: tuple[Effect, ...]) -> list[object]:
    return [e.blocked.lock.owner for e in effects if isinstance(e, GrantedFromQueue)]


def test_blocking_lock_without_conflict_is_granted_at_once() -> None:
    m = LockManager()
    r = req(m, A, 0, 10, True)
    assert isinstance(r, LockGranted) and r.effects == (Granted(r.lock),)
    assert m.waiting() == []


def test_blocked_request_granted_from_queue_on_unlock() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    b = blocked(req(m, B, 5, 10, False, now=7.0))
    assert b.queued_at == 7.0 and b.lock == Lock(F, B, HB, 5, 15, False)
    assert m.waiting(file=F) == [b] and m.waiting(host=HB) == [b] and m.blocked_count(HB) == 1
    effects = m.unlock(F, A, 0, 10)
    assert effects == (Released(Lock(F, A, HA, 0, 10, True)), GrantedFromQueue(b))
    assert m.waiting() == []
    assert [(lk.owner, lk.start, lk.end) for lk in m.held()] == [(B, 5, 15)]


def test_unlock_that_does_not_free_the_conflict_wakes_nobody() -> None:
    m = LockManager()
    req(m, A, 0, 20, True)
    blocked(req(m, B, 15, 1, True))
    effects = m.unlock(F, A, 0, 10)
    assert woken(effects) == []
    assert len(m.waiting()) == 1


def test_waiters_are_woken_in_arrival_order() -> None:
    m = LockManager()
    req(m, A, 0, 0, True)
    blocked(req(m, B, 0, 10, True))
    blocked(req(m, C, 0, 10, True))
    blocked(req(m, D, 20, 10, True))
    effects = m.unlock(F, A, 0, 0)
    # B first; C conflicts with B and keeps waiting; D is disjoint and is granted too.
    assert woken(effects) == [B, D]
    assert [w.lock.owner for w in m.waiting()] == [C]
    assert woken(m.unlock(F, B, 0, 0)) == [C]


def test_readers_cannot_starve_a_queued_writer() -> None:
    m = LockManager()
    req(m, A, 0, 0, False)
    w = blocked(req(m, B, 0, 0, True))
    # A new blocking reader conflicts only with the queued writer: it queues behind it.
    later_reader = blocked(req(m, C, 0, 10, False))
    # A non-blocking reader is still granted (POSIX F_SETLK only looks at held locks).
    assert isinstance(req(m, D, 0, 10, False, block=False), LockGranted)
    m.unlock(F, D, 0, 0)
    effects = m.unlock(F, A, 0, 0)
    assert effects[-1] == GrantedFromQueue(w)
    assert m.waiting() == [later_reader]
    assert woken(m.unlock(F, B, 0, 0)) == [C]


def test_several_readers_woken_together() -> None:
    m = LockManager()
    req(m, A, 0, 0, True)
    for owner in (B, C, D):
        blocked(req(m, owner, 0, 0, False))
    assert woken(m.unlock(F, A, 0, 0)) == [B, C, D]


def test_downgrade_wakes_readers() -> None:
    m = LockManager()
    req(m, A, 0, 0, True)
    b = blocked(req(m, B, 0, 10, False))
    r = req(m, A, 0, 0, False, block=False)
    assert isinstance(r, LockGranted)
    assert r.effects == (Granted(r.lock), GrantedFromQueue(b))


def test_deadlock_between_two_owners() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    req(m, B, 100, 10, True)
    blocked(req(m, A, 100, 10, True))
    r = req(m, B, 0, 10, True)
    assert isinstance(r, LockDeadlock)
    assert [h.owner for h in r.holders] == [A]
    assert [w.lock.owner for w in m.waiting()] == [A]


def test_deadlock_among_three_owners_across_files() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    req(m, B, 0, 10, True, file=G)
    req(m, C, 50, 10, True)
    blocked(req(m, A, 0, 10, True, file=G))  # A waits for B
    blocked(req(m, B, 50, 10, False))  # B waits for C
    assert isinstance(req(m, C, 5, 1, False), LockDeadlock)  # C would wait for A
    # Without the cycle, the same kind of request simply queues.
    blocked(req(m, D, 5, 1, False))


def test_no_deadlock_when_waiting_on_an_unrelated_owner() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    req(m, B, 100, 10, True)
    blocked(req(m, A, 100, 10, True))
    blocked(req(m, C, 0, 10, True))  # C waits for A, A waits for B: a chain, not a cycle


def test_fairness_never_invents_a_deadlock() -> None:
    m = LockManager()
    req(m, A, 0, 10, False)
    w = blocked(req(m, B, 0, 20, True))  # writer waits for A's read lock
    # A's new read lock conflicts only with B's queued request, which waits for A: grant it.
    r = req(m, A, 10, 10, False)
    assert isinstance(r, LockGranted)
    assert m.waiting() == [w]


def test_resent_blocking_lock_keeps_its_place_and_refreshes() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    b = blocked(req(m, B, 0, 10, True, now=1.0))
    c = blocked(req(m, C, 0, 10, True, now=2.0))
    again = req(m, B, 0, 10, True, now=50.0)
    assert again == LockBlocked(b, ())
    assert m.waiting() == [b, c]
    # Only C is stale at now=60 with max_age=20.
    effects = m.expire(60.0, 20.0)
    assert effects == (Cancelled(c, CancelReason.EXPIRED),)
    assert m.waiting() == [b]


def test_resent_blocking_lock_granted_by_the_retry_is_a_plain_grant() -> None:
    busy = {True}
    m = LockManager(admit=lambda lk: not busy)
    b = blocked(req(m, A, 0, 10, True))  # kernel says busy: queued with no core conflict
    busy.clear()
    r = req(m, A, 0, 10, True, now=3.0)
    assert r == LockGranted(b.lock, (Granted(b.lock),))
    assert m.waiting() == []


def test_cancel_matches_owner_file_range_and_type() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    b = blocked(req(m, B, 0, 10, True))
    assert m.cancel(F, B, 0, 10, False) == ()
    assert m.cancel(F, B, 0, 11, True) == ()
    assert m.cancel(G, B, 0, 10, True) == ()
    assert m.cancel(F, C, 0, 10, True) == ()
    assert m.cancel(F, B, 0, 10, True) == (Cancelled(b, CancelReason.CANCELLED),)
    assert m.waiting() == []
    assert m.cancel(F, B, 0, 10, True) == ()


def test_cancel_of_a_queued_writer_lets_readers_behind_it_in() -> None:
    m = LockManager()
    req(m, A, 0, 0, False)
    w = blocked(req(m, B, 0, 0, True))
    r = blocked(req(m, C, 0, 10, False))
    assert m.cancel(F, B, 0, 0, True) == (
        Cancelled(w, CancelReason.CANCELLED),
        GrantedFromQueue(r),
    )


def test_undo_grant_releases_it_and_wakes_the_next() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    b = blocked(req(m, B, 0, 10, True))
    c = blocked(req(m, C, 0, 10, True))
    assert woken(m.unlock(F, A, 0, 10)) == [B]
    effects = m.undo_grant(b)
    assert effects == (Released(b.lock), GrantedFromQueue(c))
    assert [lk.owner for lk in m.held()] == [C]


def test_retry_file_after_kernel_veto_and_veto_keeps_place() -> None:
    busy: set[object] = {B}
    m = LockManager(admit=lambda lk: lk.owner not in busy)
    req(m, A, 0, 0, True)
    b = blocked(req(m, B, 0, 10, True))
    c = blocked(req(m, C, 5, 10, True))
    d = blocked(req(m, D, 50, 10, True))
    effects = m.unlock(F, A, 0, 0)
    # B is vetoed and stays first; C conflicts with B and waits; D is granted.
    assert woken(effects) == [D]
    assert m.waiting() == [b, c]
    assert m.retry_file(F) == ()
    busy.clear()
    assert m.retry_file(F) == (GrantedFromQueue(b),)
    assert m.waiting() == [c]
    assert m.retry_file(G) == ()
    del d


def test_blocking_lock_vetoed_by_admit_is_queued() -> None:
    m = LockManager(admit=lambda lk: False)
    b = blocked(req(m, A, 0, 10, True))
    assert b.lock.owner == A


def test_drop_host_cancels_its_waiters_and_wakes_others() -> None:
    m = LockManager()
    req(m, A, 0, 0, True)
    b = blocked(req(m, B, 0, 10, True))
    c = blocked(req(m, C, 0, 10, True))
    effects = m.drop_host(HA)
    assert effects[-1] == GrantedFromQueue(b)
    effects = m.drop_host(HB)
    assert effects[0] == Released(b.lock)
    assert effects[-1] == GrantedFromQueue(c)
    req(m, D, 100, 10, True)
    e = blocked(req(m, D, 0, 10, True))
    effects = m.drop_host(HD)
    assert Cancelled(e, CancelReason.DROPPED) in effects
    assert m.waiting() == [] and m.blocked_count() == 0


def test_blocked_limits_per_host_and_total() -> None:
    m = LockManager(max_blocked_per_host=2, max_blocked_total=3)
    req(m, A, 0, 0, True)
    blocked(req(m, B, 0, 1, True))
    blocked(req(m, B, 1, 1, True))
    assert req(m, B, 2, 1, True) == LimitExceeded(HB, "blocked_per_host", 2)
    blocked(req(m, C, 0, 1, True))
    assert req(m, D, 0, 1, True) == LimitExceeded(HD, "blocked_total", 3)
    assert m.blocked_count() == 3


def test_lock_limit_holds_back_a_waiter_until_room() -> None:
    m = LockManager(max_locks_per_host=1)
    req(m, A, 0, 10, True)
    req(m, B, 100, 10, True)
    b = blocked(req(m, B, 0, 10, False))  # would need a second record for host B
    assert woken(m.unlock(F, A, 0, 0)) == []
    assert m.waiting() == [b]
    assert woken(m.unlock(F, B, 100, 10)) == [B]


def test_non_blocking_lock_ignores_the_queue_and_is_denied_on_held_conflict() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    r = req(m, B, 0, 10, True, block=False)
    assert isinstance(r, LockDenied) and r.holder is not None and r.holder.owner == A
    assert m.waiting() == []


def test_reaches_follows_edges_and_terminates_on_cycles() -> None:
    graph: dict[Hashable, list[Hashable]] = {1: [2], 2: [3], 3: [1], 4: []}
    assert reaches([1], 3, lambda o: graph[o])
    assert not reaches([4], 1, lambda o: graph[o])
    assert not reaches([1], 9, lambda o: graph[o])
    assert reaches([9], 9, lambda o: graph.get(o, []))


def test_queued_downgrade_granted_from_queue_frees_earlier_waiters() -> None:
    m = LockManager()
    req(m, A, 0, 10, True)
    req(m, B, 10, 10, True)
    c = blocked(req(m, C, 0, 5, False))  # waits for A's exclusive lock
    a = blocked(req(m, A, 0, 20, False))  # A's downgrade-and-extend waits for B
    effects = m.unlock(F, B, 0, 0)
    # Granting A's request downgrades [0, 10): C, queued before it, must be retried too.
    assert woken(effects) == [A, C]
    assert effects[-2:] == (GrantedFromQueue(a), GrantedFromQueue(c))
    assert m.waiting() == []


def test_request_yields_to_earlier_waiter_not_blocked_by_its_shared_lock() -> None:
    m = LockManager()
    req(m, A, 0, 10, False)
    req(m, C, 10, 10, True)
    w = blocked(req(m, B, 0, 20, False))  # waits for C only; A's shared lock is no obstacle
    mine = blocked(req(m, A, 0, 5, True))  # no held conflict, but B asked first
    assert m.waiting() == [w, mine]
    assert woken(m.unlock(F, C, 0, 0)) == [B]


def test_expiry_of_a_queued_writer_lets_readers_behind_it_in() -> None:
    m = LockManager()
    req(m, A, 0, 0, False)
    w = blocked(req(m, B, 0, 0, True, now=0.0))
    r = blocked(req(m, C, 0, 10, False, now=10.0))
    assert m.expire(15.0, 10.0) == (
        Cancelled(w, CancelReason.EXPIRED),
        GrantedFromQueue(r),
    )
