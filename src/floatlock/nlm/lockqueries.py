"""The lock core's tables and the read-only questions asked of them (sans-IO).

:class:`LockQueries` holds the state of :class:`~floatlock.nlm.locks.LockManager` -- held
locks (:class:`~floatlock.nlm.locktable.LockTable`), blocked requests
(:class:`~floatlock.nlm.blocked.BlockedQueue`) and, through
:class:`~floatlock.nlm.sharing.ShareManager`, share reservations -- and answers what lockd,
status listings and the host table ask without changing anything: who holds what, who waits,
whether a file or a host still has state (lockd prunes files and collects hosts by these), and
the counts the caps are checked against.  :class:`~floatlock.nlm.locks.LockManager` derives
from it and adds every transition (LOCK, UNLOCK, CANCEL, wake-ups, dropping); keeping the
queries apart keeps that state machine in one module of its own.
"""

from __future__ import annotations

from floatlock.nlm.blocked import BlockedQueue
from floatlock.nlm.locktable import LockTable
from floatlock.nlm.records import BlockedLock, FileKey, HostKey, Lock, OwnerKey
from floatlock.nlm.sharing import ShareManager

__all__ = ["LockQueries"]


class LockQueries(ShareManager):
    """The lock core's tables and the questions that only read them."""

    def __init__(self, *, max_shares_per_host: int) -> None:
        super().__init__(max_shares_per_host=max_shares_per_host)
        self._table = LockTable()
        self._queue = BlockedQueue()

    # -- listing -----------------------------------------------------------------------------

    def held(self, *, host: HostKey | None = None, file: FileKey | None = None) -> list[Lock]:
        """Held lock records, optionally only those of ``host`` and/or on ``file``."""
        return list(self._table.held(host, file))

    def waiting(
        self, *, host: HostKey | None = None, file: FileKey | None = None
    ) -> list[BlockedLock]:
        """Queued requests (arrival order per file), optionally filtered."""
        if file is not None:
            waiters = self._queue.of_file(file)
        elif host is not None:
            waiters = self._queue.of_host(host)
        else:
            waiters = self._queue.all()
        return [w.blocked for w in waiters if host is None or w.blocked.lock.host == host]

    def owner_holds(self, file: FileKey, owner: OwnerKey) -> bool:
        """True when ``owner`` holds a lock on ``file`` (O(1): lockd closes the owner's
        kernel descriptor of the file when this turns False)."""
        return self._table.owner_holds(file, owner)

    def file_in_use(self, file: FileKey) -> bool:
        """True while ``file`` has held locks, queued requests or share reservations."""
        return (
            self._table.file(file) is not None
            or self._queue.has_file(file)
            or self._shares.has_file(file)
        )

    def host_busy(self, host: HostKey) -> bool:
        """True while ``host`` holds a lock or a share reservation or has a queued request
        (three dict lookups, no listing)."""
        return bool(self._table.count(host) or self._queue.count(host) or self._shares.count(host))

    def lock_count(self, host: HostKey) -> int:
        """Held lock records of ``host`` (what ``max_locks_per_host`` caps)."""
        return self._table.count(host)

    def blocked_count(self, host: HostKey | None = None) -> int:
        """Queued requests of ``host``, or of everyone."""
        return len(self._queue) if host is None else self._queue.count(host)
