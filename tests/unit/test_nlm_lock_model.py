"""Property test: the lock core against a naive model of byte positions.

The model keeps, per (file, owner), a dict position -> exclusive? over positions 0..64, where
position 64 stands for "64 and everything after it" (requests either end at or before 64 or
run to the end of the file, so that is exact).  Hypothesis drives TEST, LOCK (blocking or not),
UNLOCK, CANCEL and drop_host with small ranges so conflicts are common, and after every step
checks the core against the model, against a replica rebuilt only from the effects (what a
journal would see), and a few invariants: no two conflicting locks are ever held, records are
canonical (sorted, disjoint, merged), host counts are exact, and no waiter is left in the queue
although nothing holds it back.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from floatlock.nlm.effects import Effect, Granted, GrantedFromQueue, Released
from floatlock.nlm.locks import LockManager
from floatlock.nlm.ranges import RANGE_END
from floatlock.nlm.records import Lock
from floatlock.nlm.results import LockBlocked, LockDeadlock, LockDenied, LockGranted

TOP = 64  # the position standing for [64, infinity)
HOSTS = ("h0", "h1", "h2")
OWNERS = tuple((h, i) for h in HOSTS for i in range(2))
FILES = ("f0", "f1")

Owner = tuple[str, int]
Positions = dict[int, bool]
State = dict[tuple[Hashable, Hashable], Positions]

owners = st.sampled_from(OWNERS)
files = st.sampled_from(FILES)
offsets = st.integers(0, TOP - 1)


@st.composite
def extents(draw: st.DrawFn) -> tuple[int, int]:
    off = draw(offsets)
    length = draw(st.integers(0, min(8, TOP - off)))
    return off, length


def span(start: int, end: int) -> range:
    return range(start, TOP + 1 if end >= RANGE_END else end)


def region(off: int, length: int) -> range:
    return span(off, RANGE_END if length == 0 else off + length)


def set_region(state: State, file: Hashable, owner: Hashable, where: range, excl: bool) -> None:
    held = state.setdefault((file, owner), {})
    for p in where:
        held[p] = excl


def clear_region(state: State, file: Hashable, owner: Hashable, where: range) -> None:
    held = state.get((file, owner), {})
    for p in where:
        held.pop(p, None)


def conflicts(state: State, file: Hashable, owner: Hashable, where: range, excl: bool) -> bool:
    return any(
        f == file and o != owner and any(p in held and (excl or held[p]) for p in where)
        for (f, o), held in state.items()
    )


def normal(state: State) -> State:
    return {k: dict(v) for k, v in state.items() if v}


class LockCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = LockManager()
        self.model: State = {}
        self.replica: State = {}
        self.now = 0.0

    # -- effects -------------------------------------------------------------------------------

    def absorb(self, effects: tuple[Effect, ...], *, semantic_done: bool) -> None:
        """Feed effects to the replica; queue grants also update the model (checked first)."""
        for e in effects:
            if isinstance(e, Granted):
                lk = e.lock
                set_region(self.replica, lk.file, lk.owner, span(lk.start, lk.end), lk.exclusive)
            elif isinstance(e, GrantedFromQueue):
                lk = e.blocked.lock
                where = span(lk.start, lk.end)
                assert not conflicts(self.replica, lk.file, lk.owner, where, lk.exclusive)
                set_region(self.replica, lk.file, lk.owner, where, lk.exclusive)
                assert semantic_done
                set_region(self.model, lk.file, lk.owner, where, lk.exclusive)
            elif isinstance(e, Released):
                lk = e.lock
                held = self.replica.get((lk.file, lk.owner), {})
                where = span(lk.start, lk.end)
                assert all(held.get(p) is lk.exclusive for p in where), e
                clear_region(self.replica, lk.file, lk.owner, where)

    # -- rules ---------------------------------------------------------------------------------

    @rule(file=files, owner=owners, ext=extents(), excl=st.booleans())
    def test(self, file: str, owner: Owner, ext: tuple[int, int], excl: bool) -> None:
        holder = self.core.test(file, owner, ext[0], ext[1], excl)
        where = region(*ext)
        if not conflicts(self.model, file, owner, where, excl):
            assert holder is None
        else:
            assert holder is not None
            self.check_holder(holder, file, owner, where, excl)

    def check_holder(self, h: Lock, file: str, owner: Owner, where: range, excl: bool) -> None:
        assert h.file == file and h.owner != owner and (excl or h.exclusive)
        held = self.model.get((file, h.owner), {})
        hspan = span(h.start, h.end)
        assert all(held.get(p) is h.exclusive for p in hspan)
        assert set(hspan) & set(where)

    @rule(
        file=files,
        owner=owners,
        ext=extents(),
        excl=st.booleans(),
        block=st.booleans(),
        dt=st.sampled_from([0.0, 1.0, 5.0]),
    )
    def lock(
        self, file: str, owner: Owner, ext: tuple[int, int], excl: bool, block: bool, dt: float
    ) -> None:
        self.now += dt
        where = region(*ext)
        had_conflict = conflicts(self.model, file, owner, where, excl)
        r = self.core.lock(file, owner, owner[0], ext[0], ext[1], excl, block=block, now=self.now)
        if isinstance(r, LockGranted):
            assert not had_conflict
            set_region(self.model, file, owner, where, excl)
        elif isinstance(r, LockDenied):
            assert not block and had_conflict and r.holder is not None
            self.check_holder(r.holder, file, owner, where, excl)
        elif isinstance(r, LockDeadlock):
            assert block and r.holders
        else:
            assert isinstance(r, LockBlocked) and block
        self.absorb(r.effects, semantic_done=True)

    @rule(file=files, owner=owners, ext=extents())
    def unlock(self, file: str, owner: Owner, ext: tuple[int, int]) -> None:
        clear_region(self.model, file, owner, region(*ext))
        self.absorb(self.core.unlock(file, owner, *ext), semantic_done=True)

    @precondition(lambda self: self.core.waiting())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        b = data.draw(st.sampled_from(self.core.waiting()))
        lk = b.lock
        effects = self.core.cancel(lk.file, lk.owner, lk.start, lk.length, lk.exclusive)
        assert effects
        self.absorb(effects, semantic_done=True)

    @rule(host=st.sampled_from(HOSTS))
    def drop_host(self, host: str) -> None:
        for key in list(self.model):
            if key[1][0] == host:  # type: ignore[index]
                del self.model[key]
        self.absorb(self.core.drop_host(host), semantic_done=True)
        assert self.core.held(host=host) == []
        assert self.core.waiting(host=host) == []

    @rule(age=st.sampled_from([0.0, 3.0]))
    def expire(self, age: float) -> None:
        self.absorb(self.core.expire(self.now, age), semantic_done=True)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def core_matches_model_and_replica(self) -> None:
        core: State = {}
        for lk in self.core.held():
            set_region(core, lk.file, lk.owner, span(lk.start, lk.end), lk.exclusive)
        assert normal(core) == normal(self.model)
        assert normal(self.replica) == normal(self.model)

    @invariant()
    def records_are_canonical_and_safe(self) -> None:
        held = self.core.held()
        by_owner: dict[tuple[Hashable, Hashable], list[Lock]] = {}
        for lk in held:
            by_owner.setdefault((lk.file, lk.owner), []).append(lk)
        for records in by_owner.values():
            records.sort(key=lambda lk: lk.start)
            for a, b in itertools.pairwise(records):
                assert a.end < b.start or (a.end == b.start and a.exclusive != b.exclusive)
        for i, a in enumerate(held):
            for b in held[i + 1 :]:
                assert not a.conflicts_with(b)
        for host in HOSTS:
            assert self.core.lock_count(host) == sum(lk.host == host for lk in held)

    @invariant()
    def no_waiter_is_forgotten(self) -> None:
        held = self.core.held()
        for f in FILES:
            queue = self.core.waiting(file=f)
            for i, b in enumerate(queue):
                lk = b.lock
                assert any(lk.conflicts_with(h) for h in held) or any(
                    lk.conflicts_with(e.lock) for e in queue[:i]
                ), f"{b} could be granted"


LockCoreMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLockCore = LockCoreMachine.TestCase
