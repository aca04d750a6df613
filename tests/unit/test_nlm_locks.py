"""Unit tests for the sans-IO NLM byte-range lock core (floatlock.nlm.locks)."""

from __future__ import annotations

import pytest

from floatlock.nlm.effects import Effect, Granted, Released
from floatlock.nlm.locks import LockConflictError, LockManager
from floatlock.nlm.ranges import RANGE_END, LockRangeError, byte_range, range_length
from floatlock.nlm.records import Lock
from floatlock.nlm.results import LimitExceeded, LockBlocked, LockDenied, LockGranted
from floatlock.nlm.shares import ShareAccess, ShareDeny

F = "file-1"
G = "file-2"
HA, HB, HC = "host-a", "host-b", "host-c"
A = (HA, 1)
A2 = (HA, 2)
B = (HB, 1)
C = (HC, 1)
MAX = RANGE_END - 1  # largest byte offset


def host_of(owner: tuple[str, int]) -> str:
    return owner[0]


def take(
    m: LockManager, owner: tuple[str, int], off: int, ln: int, excl: bool, file: str = F
) -> LockGranted:
    r = m.lock(file, owner, host_of(owner), off, ln, excl, block=False, now=0.0)
    assert isinstance(r, LockGranted), r
    return r


def ranges(m: LockManager, owner: tuple[str, int], file: str = F) -> list[tuple[int, int, bool]]:
    return sorted((lk.start, lk.end, lk.exclusive) for lk in m.held(file=file) if lk.owner == owner)


# -- ranges ------------------------------------------------------------------------------------


def test_byte_range_zero_length_runs_to_end() -> None:
    assert byte_range(0, 0) == (0, RANGE_END)
    assert byte_range(MAX, 0) == (MAX, RANGE_END)
    assert range_length(5, RANGE_END) == 0
    assert range_length(5, 9) == 4


def test_byte_range_ending_exactly_at_2_64_is_to_end() -> None:
    assert byte_range(MAX, 1) == (MAX, RANGE_END)
    assert byte_range(0, MAX) == (0, MAX)
    assert byte_range(1, MAX) == (1, RANGE_END)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(2, MAX), (MAX, 2), (RANGE_END, 0), (-1, 1), (0, -1), (0, RANGE_END)],
)
def test_byte_range_rejects_overflow_and_out_of_range(offset: int, length: int) -> None:
    with pytest.raises(LockRangeError):
        byte_range(offset, length)


def test_wrapping_lock_raises_before_changing_state() -> None:
    m = LockManager()
    with pytest.raises(LockRangeError):
        m.lock(F, A, HA, MAX, 2, True, block=False, now=0.0)
    with pytest.raises(LockRangeError):
        m.unlock(F, A, MAX, 2)
    with pytest.raises(LockRangeError):
        m.test(F, A, MAX, 2, True)
    assert m.held() == []


# -- conflicts and TEST ------------------------------------------------------------------------


def test_shared_locks_of_different_owners_coexist() -> None:
    m = LockManager()
    take(m, A, 0, 10, False)
    take(m, B, 5, 10, False)
    assert m.test(F, C, 0, 0, False) is None


def test_exclusive_conflicts_with_other_owner_and_test_reports_holder() -> None:
    m = LockManager()
    take(m, A, 10, 10, True)
    holder = m.test(F, B, 15, 1, False)
    assert holder is not None
    assert (holder.owner, holder.exclusive, holder.offset, holder.length) == (A, True, 10, 10)
    denied = m.lock(F, B, HB, 0, 11, False, block=False, now=0.0)
    assert isinstance(denied, LockDenied) and denied.holder == holder
    # Touching but not overlapping ranges do not conflict.
    assert m.test(F, B, 0, 10, True) is None
    assert m.test(F, B, 20, 0, True) is None
    # Another file is independent.
    assert m.test(G, B, 0, 0, True) is None


def test_exclusive_request_conflicts_with_shared_holder() -> None:
    m = LockManager()
    take(m, A, 100, 0, False)  # shared to end of file
    holder = m.test(F, B, MAX, 1, True)
    assert holder is not None and holder.owner == A and holder.length == 0
    take(m, C, 0, 100, True)  # just below the to-end lock


def test_owner_never_conflicts_with_itself() -> None:
    m = LockManager()
    take(m, A, 0, 0, True)
    assert m.test(F, A, 0, 0, True) is None
    take(m, A, 5, 5, True)
    assert ranges(m, A) == [(0, RANGE_END, True)]


def test_lock_at_maximum_offsets() -> None:
    m = LockManager()
    take(m, A, MAX, 1, True)
    assert m.test(F, B, MAX, 0, False) is not None
    assert m.test(F, B, MAX - 1, 1, True) is None
    take(m, B, 0, MAX, True)  # every byte but the last
    assert ranges(m, A) == [(MAX, RANGE_END, True)]


def test_long_shared_lock_found_among_many_short_ones() -> None:
    m = LockManager()
    take(m, A, 0, 1 << 40, False)
    for i in range(50):
        take(m, B, (1 << 41) + 2 * i, 1, False)
    holder = m.test(F, C, 1 << 39, 1, True)
    assert holder is not None and holder.owner == A


# -- same owner: replace, merge, split ----------------------------------------------------------


def test_adjacent_and_overlapping_same_type_ranges_merge() -> None:
    m = LockManager()
    take(m, A, 0, 10, False)
    take(m, A, 10, 10, False)  # adjacent
    assert ranges(m, A) == [(0, 20, False)]
    take(m, A, 15, 10, False)  # overlapping
    take(m, A, 30, 5, False)  # separate
    assert ranges(m, A) == [(0, 25, False), (30, 35, False)]
    take(m, A, 25, 5, False)  # fills the gap
    assert ranges(m, A) == [(0, 35, False)]
    assert m.lock_count(HA) == 1


def test_adjacent_different_type_ranges_do_not_merge() -> None:
    m = LockManager()
    take(m, A, 0, 10, False)
    take(m, A, 10, 10, True)
    assert ranges(m, A) == [(0, 10, False), (10, 20, True)]


def test_upgrade_in_the_middle_splits_into_three() -> None:
    m = LockManager()
    take(m, A, 0, 30, False)
    take(m, A, 10, 10, True)
    assert ranges(m, A) == [(0, 10, False), (10, 20, True), (20, 30, False)]
    assert m.lock_count(HA) == 3
    take(m, A, 5, 20, False)  # downgrade back, merging everything
    assert ranges(m, A) == [(0, 30, False)]


def test_downgrade_part_of_exclusive_lets_other_readers_in() -> None:
    m = LockManager()
    take(m, A, 0, 0, True)
    take(m, A, 0, 100, False)
    assert ranges(m, A) == [(0, 100, False), (100, RANGE_END, True)]
    take(m, B, 50, 10, False)
    assert m.test(F, B, 100, 1, False) is not None


def test_upgrade_denied_by_conflict_leaves_original_intact() -> None:
    m = LockManager()
    take(m, A, 0, 100, False)
    take(m, B, 50, 10, False)
    r = m.lock(F, A, HA, 0, 100, True, block=False, now=0.0)
    assert isinstance(r, LockDenied) and r.holder is not None and r.holder.owner == B
    assert ranges(m, A) == [(0, 100, False)]
    assert ranges(m, B) == [(50, 60, False)]


def test_relock_of_held_range_changes_nothing() -> None:
    m = LockManager()
    take(m, A, 0, 100, True)
    before = m.held()
    r = take(m, A, 10, 10, True)
    assert m.held() == before
    assert r.effects == (Granted(r.lock),)


def test_unlock_in_the_middle_splits() -> None:
    m = LockManager()
    take(m, A, 0, 0, True)
    effects = m.unlock(F, A, 10, 10)
    assert ranges(m, A) == [(0, 10, True), (20, RANGE_END, True)]
    assert effects == (Released(Lock(F, A, HA, 10, 20, True)),)
    assert m.lock_count(HA) == 2


def test_unlock_spanning_several_records_and_to_end() -> None:
    m = LockManager()
    take(m, A, 0, 10, False)
    take(m, A, 20, 10, True)
    take(m, A, 40, 10, False)
    effects = m.unlock(F, A, 5, 0)
    assert ranges(m, A) == [(0, 5, False)]
    assert [
        (e.lock.start, e.lock.end, e.lock.exclusive) for e in effects if isinstance(e, Released)
    ] == [
        (5, 10, False),
        (20, 30, True),
        (40, 50, False),
    ]


def test_unlock_of_what_is_not_held_succeeds_without_effects() -> None:
    m = LockManager()
    take(m, A, 0, 10, True)
    assert m.unlock(F, A, 10, 10) == ()
    assert m.unlock(F, B, 0, 0) == ()
    assert m.unlock(G, A, 0, 0) == ()
    assert ranges(m, A) == [(0, 10, True)]


def test_unlock_everything_forgets_the_file_and_host() -> None:
    m = LockManager()
    take(m, A, 0, 10, True)
    take(m, A, 20, 10, False)
    m.unlock(F, A, 0, 0)
    assert m.held() == [] and m.lock_count(HA) == 0
    assert m.held(host=HA) == []


# -- two-phase lock ----------------------------------------------------------------------------


def test_apply_lock_after_test() -> None:
    m = LockManager()
    assert m.test(F, A, 0, 10, True) is None
    r = m.apply_lock(F, A, HA, 0, 10, True)
    assert isinstance(r, LockGranted) and r.effects == (Granted(Lock(F, A, HA, 0, 10, True)),)
    with pytest.raises(LockConflictError) as info:
        m.apply_lock(F, B, HB, 5, 1, False)
    assert info.value.holder.owner == A
    assert ranges(m, B) == []


def test_admit_veto_denies_non_blocking_lock_without_holder() -> None:
    seen: list[Lock] = []

    def admit(lk: Lock) -> bool:
        seen.append(lk)
        return False

    m = LockManager(admit=admit)
    r = m.lock(F, A, HA, 0, 10, True, block=False, now=0.0)
    assert r == LockDenied(None)
    assert seen == [Lock(F, A, HA, 0, 10, True)]
    assert m.held() == []


# -- hosts, owners, listing --------------------------------------------------------------------


def test_drop_host_releases_only_that_host() -> None:
    m = LockManager()
    take(m, A, 0, 10, True)
    take(m, A2, 20, 10, False)
    take(m, A, 0, 50, False, file=G)
    take(m, B, 20, 10, False)
    take(m, C, 100, 10, True, file=G)
    effects = m.drop_host(HA)
    released = {
        (e.lock.owner, e.lock.file, e.lock.start) for e in effects if isinstance(e, Released)
    }
    assert released == {(A, F, 0), (A2, F, 20), (A, G, 0)}
    assert {lk.owner for lk in m.held()} == {B, C}
    assert m.held(host=HA) == [] and m.lock_count(HA) == 0
    assert m.drop_host(HA) == ()
    # B and C are untouched, and the freed range is free again.
    take(m, C, 0, 10, True)


def test_drop_owner_releases_only_that_owner() -> None:
    m = LockManager()
    take(m, A, 0, 10, True)
    take(m, A2, 20, 10, True)
    effects = m.drop_owner(A)
    assert effects == (Released(Lock(F, A, HA, 0, 10, True)),)
    assert ranges(m, A2) == [(20, 30, True)]
    assert m.lock_count(HA) == 1


def test_listing_per_host_and_per_file() -> None:
    m = LockManager()
    take(m, A, 0, 10, True)
    take(m, A, 0, 10, True, file=G)
    take(m, B, 50, 10, True)
    assert {(lk.file, lk.owner) for lk in m.held(host=HA)} == {(F, A), (G, A)}
    assert {lk.owner for lk in m.held(file=F)} == {A, B}
    assert [lk.owner for lk in m.held(host=HB, file=F)] == [B]
    assert m.held(host=HB, file=G) == []
    assert len(m.held()) == 3


# -- limits ------------------------------------------------------------------------------------


def test_max_locks_per_host_counts_records() -> None:
    m = LockManager(max_locks_per_host=2)
    take(m, A, 0, 10, True)
    take(m, A2, 20, 10, True)
    r = m.lock(F, A, HA, 40, 10, True, block=False, now=0.0)
    assert r == LimitExceeded(HA, "locks_per_host", 2)
    assert m.lock_count(HA) == 2
    take(m, A, 10, 5, True)  # merges: no new record, allowed
    take(m, B, 40, 10, True)  # other host is not capped by A's use
    # A split into three would exceed the cap as well.
    m.unlock(F, A2, 0, 0)
    r2 = m.lock(F, A, HA, 5, 1, False, block=False, now=0.0)
    assert isinstance(r2, LimitExceeded) and r2.host == HA
    assert ranges(m, A) == [(0, 15, True)]


def test_effects_replay_rebuilds_the_same_state() -> None:
    m = LockManager()
    log: list[Effect] = []
    log += take(m, A, 0, 100, False).effects
    log += take(m, A, 20, 10, True).effects
    log += take(m, B, 200, 0, True).effects
    log += m.unlock(F, A, 50, 10)
    log += m.drop_host(HB)
    replica = LockManager()
    for e in log:
        if isinstance(e, Granted):
            lk = e.lock
            replica.apply_lock(lk.file, lk.owner, lk.host, lk.start, lk.length, lk.exclusive)
        elif isinstance(e, Released):
            replica.unlock(e.lock.file, e.lock.owner, e.lock.start, e.lock.length)
    assert sorted(map(repr, replica.held())) == sorted(map(repr, m.held()))


def test_many_owners_on_one_file() -> None:
    m = LockManager()
    for i in range(1000):
        take(m, ("h", i), i * 10, 5, True)
    assert m.test(F, ("h", 1), 5003, 1, True) is not None
    assert m.test(F, ("h", 1), 5006, 3, True) is None
    for i in range(1000):
        take(m, ("r", i), 0, 0, False, file=G)
    holder = m.test(G, ("r", 0), 7, 1, True)
    assert holder is not None and holder.owner == ("r", 1)
    for i in range(1000):
        assert m.unlock(G, ("r", i), 0, 0)
    assert m.held(file=G) == []


def test_owner_holds_and_file_in_use() -> None:
    m = LockManager()
    assert not m.owner_holds("f", "o1") and not m.file_in_use("f")
    assert isinstance(m.lock("f", "o1", "h", 0, 10, True, block=False, now=0.0), LockGranted)
    assert m.owner_holds("f", "o1") and not m.owner_holds("f", "o2")
    assert not m.owner_holds("g", "o1")
    assert isinstance(m.lock("f", "o2", "h", 0, 10, True, block=True, now=0.0), LockBlocked)
    m.unlock("f", "o1", 0, 5)
    assert m.owner_holds("f", "o1") and m.file_in_use("f")
    m.unlock("f", "o1", 5, 5)  # o2 is granted from the queue
    assert not m.owner_holds("f", "o1") and m.owner_holds("f", "o2")
    m.unlock("f", "o2", 0, 0)
    assert not m.file_in_use("f")
    m.share("f", "o3", "h", ShareAccess.READ, ShareDeny.NONE)
    assert m.file_in_use("f")
    m.unshare("f", "o3")
    assert not m.file_in_use("f")


# -- fast paths: first lock on a file, release of an owner's only record -------------------


def test_first_lock_on_a_file_and_its_whole_release_keep_the_indexes() -> None:
    m = LockManager()
    r = take(m, A, 0, 10, True)
    assert r.effects == (Granted(r.lock),)
    take(m, A, 0, 5, False, file=G)
    take(m, A2, 5, 5, True, file=G)
    assert m.lock_count(HA) == 3 and m.owner_holds(F, A) and m.host_busy(HA)
    assert m.unlock(F, A, 0, 0) == (Released(r.lock),)
    assert not m.owner_holds(F, A) and not m.file_in_use(F) and m.lock_count(HA) == 2
    assert m.unlock(G, A, 0, 0) != () and m.unlock(G, A2, 0, 0) != ()
    assert m.lock_count(HA) == 0 and not m.host_busy(HA) and m.held() == []
    # A release inside the only record splits it (the general path).
    take(m, B, 0, 10, True)
    assert [e.lock.start for e in m.unlock(F, B, 2, 3) if isinstance(e, Released)] == [2]
    assert ranges(m, B) == [(0, 2, True), (5, 10, True)]


def test_first_lock_on_a_file_honours_the_host_cap_and_the_admit_veto() -> None:
    m = LockManager(max_locks_per_host=1)
    take(m, A, 0, 1, True)
    r = m.lock(G, A, HA, 0, 1, True, block=False, now=0.0)
    assert isinstance(r, LimitExceeded) and r.limit == "locks_per_host"
    assert not m.file_in_use(G)
    vetoed = LockManager(admit=lambda _lk: False)
    d = vetoed.lock(F, A, HA, 0, 1, True, block=False, now=0.0)
    assert isinstance(d, LockDenied) and d.holder is None and not vetoed.file_in_use(F)


def test_the_granted_record_is_a_whole_lock() -> None:
    """The record a non-blocking LOCK on a free file grants (the fast path) is the request's
    whole Lock, every field in place."""
    m = LockManager()
    r = m.lock("f", "o", "h", 5, 10, True, block=False, now=0.0)
    assert isinstance(r, LockGranted)
    assert len(r.lock) == len(Lock._fields)
    assert r.lock == Lock("f", "o", "h", 5, 15, True)
