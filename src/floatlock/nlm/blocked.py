"""Blocked lock requests: a FIFO queue per file and deadlock detection (sans-IO).

Theory of operation
-------------------
A blocking NLM LOCK (``block = TRUE``, XNFS NLM chapter "nlm4_lockargs") that conflicts with a
held lock is answered ``NLM4_BLOCKED`` and remembered; when the conflict goes away the server
takes the lock and tells the client with an ``NLM_GRANTED`` callback.  This module only stores
those requests; the policy of when to grant them lives in :class:`floatlock.nlm.locks.LockManager`.

Each request is a :class:`Waiter`: the immutable :class:`~floatlock.nlm.records.BlockedLock`
plus ``last_seen``, the last ``now`` at which the client asked for it (clients re-send a
blocking LOCK while they wait; a re-send refreshes ``last_seen`` and keeps the queue position).
Waiters are kept in arrival order per file (an insertion-ordered dict serves as an ordered set
with O(1) removal) and indexed by owner and by host, so that cancel, drop of a host and the
wait-for graph are cheap.

Deadlock: owner A *waits for* owner B when a request of A is blocked by a lock B holds (or, for
fairness, by an earlier request of B it must not overtake).  Queueing a request of A that
would wait for owners from which A is reachable in that graph closes a cycle -- nobody in it
could ever proceed -- so the request is refused with ``NLM4_DEADLCK`` instead (the same check
POSIX asks of F_SETLKW, EDEADLK).  :func:`reaches` is the graph search; the caller supplies the
edges, because they depend on the held locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from floatlock.nlm.records import BlockedLock, FileKey, HostKey, OwnerKey

__all__ = ["BlockedQueue", "Waiter", "reaches"]


class Waiter:
    """One queued request and when its client last asked for it."""

    __slots__ = ("blocked", "last_seen")

    def __init__(self, blocked: BlockedLock, last_seen: float) -> None:
        self.blocked = blocked
        self.last_seen = last_seen

    def __repr__(self) -> str:
        return f"Waiter({self.blocked!r}, last_seen={self.last_seen!r})"


class BlockedQueue:
    """Blocked requests in arrival order per file, indexed by owner and host."""

    __slots__ = ("_by_file", "_by_host", "_by_owner")

    def __init__(self) -> None:
        self._by_file: dict[FileKey, dict[Waiter, None]] = {}
        self._by_owner: dict[OwnerKey, dict[Waiter, None]] = {}
        self._by_host: dict[HostKey, dict[Waiter, None]] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_file.values())

    def count(self, host: HostKey) -> int:
        """Requests queued by ``host``."""
        return len(self._by_host.get(host, ()))

    def add(self, blocked: BlockedLock) -> Waiter:
        """Append ``blocked`` to its file's queue."""
        waiter = Waiter(blocked, blocked.queued_at)
        lk = blocked.lock
        self._by_file.setdefault(lk.file, {})[waiter] = None
        self._by_owner.setdefault(lk.owner, {})[waiter] = None
        self._by_host.setdefault(lk.host, {})[waiter] = None
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue (it must be queued)."""
        lk = waiter.blocked.lock
        for index, key in (
            (self._by_file, lk.file),
            (self._by_owner, lk.owner),
            (self._by_host, lk.host),
        ):
            entries = index[key]
            del entries[waiter]
            if not entries:
                del index[key]

    def __contains__(self, waiter: Waiter) -> bool:
        return waiter in self._by_file.get(waiter.blocked.lock.file, ())

    def find(
        self, file: FileKey, owner: OwnerKey, start: int, end: int, exclusive: bool
    ) -> Waiter | None:
        """The oldest request of ``owner`` on ``file`` with exactly this range and type.

        NLM matches CANCEL and re-sent LOCKs to a blocked request this way (XNFS NLM_CANCEL).
        """
        for waiter in self._by_owner.get(owner, ()):
            lk = waiter.blocked.lock
            if (lk.file, lk.start, lk.end, lk.exclusive) == (file, start, end, exclusive):
                return waiter
        return None

    def has_file(self, file: FileKey) -> bool:
        """True when requests are queued on ``file``."""
        return file in self._by_file

    def of_file(self, file: FileKey) -> list[Waiter]:
        """``file``'s requests in arrival order."""
        return list(self._by_file.get(file, ()))

    def of_owner(self, owner: OwnerKey) -> list[Waiter]:
        """``owner``'s requests in arrival order."""
        return list(self._by_owner.get(owner, ()))

    def of_host(self, host: HostKey) -> list[Waiter]:
        """``host``'s requests."""
        return list(self._by_host.get(host, ()))

    def all(self) -> list[Waiter]:
        """Every request, file by file in arrival order."""
        return [w for per_file in self._by_file.values() for w in per_file]

    def seen_before(self, cutoff: float) -> list[Waiter]:
        """Requests whose client has not asked for them since ``cutoff`` (inclusive)."""
        return [w for w in self.all() if w.last_seen <= cutoff]


def reaches(
    starts: Iterable[OwnerKey],
    target: OwnerKey,
    waits_for: Callable[[OwnerKey], Iterable[OwnerKey]],
) -> bool:
    """True when ``target`` is one of ``starts`` or reachable from them along ``waits_for``.

    Iterative depth-first search; each owner is expanded once, so the cost is bounded by the
    number of blocked requests and the conflicts they see.
    """
    stack = list(starts)
    seen: set[OwnerKey] = set()
    while stack:
        owner = stack.pop()
        if owner == target:
            return True
        if owner in seen:
            continue
        seen.add(owner)
        stack.extend(waits_for(owner))
    return False
