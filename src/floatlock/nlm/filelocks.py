"""The held byte-range locks of one file, indexed for fast conflict checks (sans-IO).

Theory of operation
-------------------
POSIX record locks (fcntl(2) F_SETLK semantics, which NLM mirrors: XNFS NLM chapter, "Lock
semantics") give every (file, owner) a set of disjoint ranges, each shared or exclusive.  A new
lock by an owner *replaces* whatever that owner held in its range (so it upgrades or downgrades
in place), ranges of the same type that overlap or touch merge into one record, and an unlock
of part of a record splits it.  Locks of different owners conflict when they overlap and at
least one is exclusive; an owner never conflicts with itself.

:class:`FileLocks` keeps three lists sorted by ``start``:

* per owner: that owner's records -- disjoint, so their ends are sorted too and one bisect finds
  the records a lock or unlock touches (``plan_lock`` / ``plan_unlock`` then ``commit``);
* ``exclusive``: every exclusive record of the file.  Exclusive records of *different* owners
  cannot overlap (they would conflict) and one owner's records are disjoint, so this list is
  disjoint: one bisect finds the only record that can straddle a request's start;
* shared records, which may overlap across owners: those running to the end of the file in
  their own list (any of them starting before a request's end overlaps it), the bounded ones in
  a list scanned only from ``start - longest bounded length``.

So a TEST or LOCK costs O(log n + k) for k records near the range, not a scan of the file.  The
shared window degrades towards a scan only when a file mixes very long bounded shared locks
with many short ones; whole-file locks (length 0) do not affect it.

Planning is split from committing so the caller can enforce per-host limits on the exact
number of records a request would add before anything changes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from operator import attrgetter

from floatlock.nlm.ranges import RANGE_END
from floatlock.nlm.records import Lock, OwnerKey

__all__ = ["FileLocks", "Plan"]

_start = attrgetter("start")
_end = attrgetter("end")


class Plan:
    """What a lock or unlock would do to one owner's records (see :meth:`FileLocks.commit`)."""

    __slots__ = ("added", "delta", "hi", "lo", "owner", "removed", "replacement")

    def __init__(
        self,
        owner: OwnerKey,
        lo: int,
        hi: int,
        replacement: list[Lock],
        removed: list[Lock],
        added: list[Lock],
    ) -> None:
        self.owner = owner
        self.lo = lo
        self.hi = hi
        self.replacement = replacement
        self.removed = removed
        self.added = added
        #: Change in the owner's number of records (the lists are not changed afterwards).
        self.delta = len(added) - len(removed)


class FileLocks:
    """Held locks of one file."""

    __slots__ = ("_by_owner", "_exclusive", "_shared", "_shared_max_len", "_shared_to_end")

    def __init__(self) -> None:
        self._by_owner: dict[OwnerKey, list[Lock]] = {}
        self._exclusive: list[Lock] = []
        self._shared: list[Lock] = []
        self._shared_to_end: list[Lock] = []
        # Upper bound on (end - start) of bounded shared records; only reset when none remain.
        self._shared_max_len = 0

    @classmethod
    def first(cls, lk: Lock) -> FileLocks:
        """A file's locks holding only ``lk`` (what committing it to an empty file makes)."""
        fl = cls()
        fl._by_owner[lk.owner] = [lk]
        fl._index(lk)
        return fl

    def take_sole(self, owner: OwnerKey, start: int, end: int) -> Lock | None:
        """When ``owner``'s only record here lies inside ``[start, end)``, remove and return
        it (the commit of :meth:`plan_unlock`'s plan, without the plan); else None."""
        records = self._by_owner.get(owner)
        if records is None or len(records) != 1:
            return None
        lk = records[0]
        if lk.start < start or lk.end > end:
            return None
        del self._by_owner[owner]
        self._unindex(lk)
        return lk

    def __bool__(self) -> bool:
        return bool(self._by_owner)

    def __len__(self) -> int:
        return len(self._exclusive) + len(self._shared) + len(self._shared_to_end)

    def owners(self) -> list[OwnerKey]:
        """Owners holding at least one record here."""
        return list(self._by_owner)

    def has_owner(self, owner: OwnerKey) -> bool:
        """True when ``owner`` holds at least one record here."""
        return owner in self._by_owner

    def of_owner(self, owner: OwnerKey) -> list[Lock]:
        """``owner``'s records, sorted (a copy)."""
        return list(self._by_owner.get(owner, ()))

    def all(self) -> Iterator[Lock]:
        """Every record, grouped by owner."""
        for records in self._by_owner.values():
            yield from records

    # -- conflicts ---------------------------------------------------------------------------

    def conflicts(self, owner: OwnerKey, start: int, end: int, exclusive: bool) -> Iterator[Lock]:
        """Records of other owners that a lock of ``[start, end)`` would conflict with."""
        excl = self._exclusive
        i = max(bisect_right(excl, start, key=_start) - 1, 0)
        for n in range(i, len(excl)):
            lk = excl[n]
            if lk.start >= end:
                break
            if lk.end > start and lk.owner != owner:
                yield lk
        if not exclusive:
            return
        for lk in self._shared_to_end:
            if lk.start >= end:
                break
            if lk.owner != owner:
                yield lk
        shared = self._shared
        i = bisect_left(shared, start - self._shared_max_len + 1, key=_start)
        for n in range(i, len(shared)):
            lk = shared[n]
            if lk.start >= end:
                break
            if lk.end > start and lk.owner != owner:
                yield lk

    def first_conflict(self, owner: OwnerKey, start: int, end: int, exclusive: bool) -> Lock | None:
        """The first conflicting record (exclusive ones first), or None."""
        return next(self.conflicts(owner, start, end, exclusive), None)

    def owner_blocks(self, holder: OwnerKey, request: Lock) -> bool:
        """True when a record of ``holder`` conflicts with ``request`` (of another owner)."""
        if holder == request.owner:
            return False
        records = self._by_owner.get(holder)
        if not records:
            return False
        i = bisect_right(records, request.start, key=_end)
        for n in range(i, len(records)):
            lk = records[n]
            if lk.start >= request.end:
                break
            if lk.exclusive or request.exclusive:
                return True
        return False

    # -- planning ----------------------------------------------------------------------------

    def plan_lock(self, request: Lock) -> Plan:
        """Plan making ``request``'s owner hold ``request``'s range with its type."""
        owner, start, end, exclusive = request.owner, request.start, request.end, request.exclusive
        records = self._by_owner.get(owner, [])
        # Records touching the range: end >= start (adjacent on the left counts, for merging)
        # and start <= end (adjacent on the right counts).
        lo = bisect_left(records, start, key=_end)
        hi = bisect_right(records, end, key=_start)
        new_start, new_end = start, end
        kept: list[Lock] = []
        removed: list[Lock] = []
        added: list[Lock] = []
        for lk in records[lo:hi]:
            if lk.exclusive == exclusive:
                if lk.start <= start and lk.end >= end:
                    # Already held with this type: nothing changes.
                    return Plan(owner, lo, hi, records[lo:hi], [], [])
                new_start = min(new_start, lk.start)
                new_end = max(new_end, lk.end)
                removed.append(lk)
            elif lk.end <= start or lk.start >= end:
                kept.append(lk)  # merely adjacent, other type: untouched
            else:
                removed.append(lk)
                if lk.start < start:
                    added.append(Lock(lk.file, owner, lk.host, lk.start, start, lk.exclusive))
                if lk.end > end:
                    added.append(Lock(lk.file, owner, lk.host, end, lk.end, lk.exclusive))
        added.append(
            Lock(request.file, owner, request.host, new_start, new_end, exclusive)
            if (new_start, new_end) != (start, end)
            else request
        )
        replacement = sorted(kept + added, key=_start)
        return Plan(owner, lo, hi, replacement, removed, added)

    def plan_unlock(self, owner: OwnerKey, start: int, end: int) -> Plan:
        """Plan releasing whatever ``owner`` holds in ``[start, end)``."""
        records = self._by_owner.get(owner, [])
        lo = bisect_right(records, start, key=_end)
        hi = bisect_left(records, end, key=_start)
        removed = records[lo:hi]
        added: list[Lock] = []
        for lk in removed:
            if lk.start < start:
                added.append(Lock(lk.file, owner, lk.host, lk.start, start, lk.exclusive))
            if lk.end > end:
                added.append(Lock(lk.file, owner, lk.host, end, lk.end, lk.exclusive))
        return Plan(owner, lo, hi, added, removed, added)

    def commit(self, plan: Plan) -> None:
        """Carry out a plan made on the current state (nothing may change in between)."""
        if not plan.removed and not plan.added:
            return
        records = self._by_owner.get(plan.owner)
        if records is None:
            records = self._by_owner[plan.owner] = []
        records[plan.lo : plan.hi] = plan.replacement
        if not records:
            del self._by_owner[plan.owner]
        for lk in plan.removed:
            self._unindex(lk)
        for lk in plan.added:
            self._index(lk)

    # -- indexes -----------------------------------------------------------------------------

    def _index_list(self, lk: Lock) -> list[Lock]:
        if lk.exclusive:
            return self._exclusive
        return self._shared_to_end if lk.end >= RANGE_END else self._shared

    def _index(self, lk: Lock) -> None:
        target = self._index_list(lk)
        insort(target, lk, key=_start)
        if target is self._shared:
            self._shared_max_len = max(self._shared_max_len, lk.end - lk.start)

    def _unindex(self, lk: Lock) -> None:
        target = self._index_list(lk)
        i = bisect_left(target, lk.start, key=_start)
        while target[i] is not lk:  # shared records of several owners may share a start
            i += 1
        del target[i]
        if target is self._shared and not target:
            self._shared_max_len = 0
