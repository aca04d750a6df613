"""Held byte-range locks of every file, indexed by owner and host (sans-IO).

Theory of operation
-------------------
:class:`LockTable` owns one :class:`~floatlock.nlm.filelocks.FileLocks` per file that has
locks, and keeps three indexes in step with every change: the files each owner holds locks on,
the owners each host has with locks, and each host's number of held records (what lockd's
per-host cap counts).  They make listing a host's locks, dropping a host (failover: release the
clients of one server address) and dropping an owner cost the size of what is dropped, not of
the whole table.  Files, owners and hosts disappear from the indexes when their last record
goes, so a long-running server does not accumulate empty entries.

It applies plans and releases ranges; policy (conflicts, queue, limits, effects) is
:class:`floatlock.nlm.locks.LockManager`'s.
"""

from __future__ import annotations

from collections.abc import Iterator

from floatlock.nlm.filelocks import FileLocks, Plan
from floatlock.nlm.records import FileKey, HostKey, Lock, OwnerKey

__all__ = ["LockTable"]

#: Planning reads a file's records only: one empty table serves every file without locks.
_NO_LOCKS = FileLocks()


class LockTable:
    """All held locks."""

    __slots__ = ("_count", "_files", "_host_owners", "_owner_files")

    def __init__(self) -> None:
        self._files: dict[FileKey, FileLocks] = {}
        self._owner_files: dict[OwnerKey, dict[FileKey, None]] = {}
        self._host_owners: dict[HostKey, dict[OwnerKey, None]] = {}
        self._count: dict[HostKey, int] = {}

    def file(self, file: FileKey) -> FileLocks | None:
        """``file``'s locks, or None when it has none."""
        return self._files.get(file)

    def count(self, host: HostKey) -> int:
        """Held records of ``host``."""
        return self._count.get(host, 0)

    def owners_of(self, host: HostKey) -> list[OwnerKey]:
        """Owners of ``host`` that hold locks."""
        return list(self._host_owners.get(host, ()))

    def owner_holds(self, file: FileKey, owner: OwnerKey) -> bool:
        """True when ``owner`` holds at least one record on ``file`` (two dict lookups)."""
        files = self._owner_files.get(owner)
        return files is not None and file in files

    def files_of(self, owner: OwnerKey) -> list[FileKey]:
        """Files on which ``owner`` holds locks."""
        return list(self._owner_files.get(owner, ()))

    def plan_lock(self, request: Lock) -> Plan:
        """Plan granting ``request`` (see :meth:`FileLocks.plan_lock`)."""
        fl = self._files.get(request.file)
        return (fl if fl is not None else _NO_LOCKS).plan_lock(request)

    def insert_first(self, lk: Lock) -> None:
        """Add ``lk`` to a file that has no locks (:meth:`commit` of the plan that
        :meth:`plan_lock` makes for it, without the plan)."""
        file, owner, host = lk.file, lk.owner, lk.host
        self._files[file] = FileLocks.first(lk)
        counts = self._count
        counts[host] = counts.get(host, 0) + 1
        self._owner_files.setdefault(owner, {})[file] = None
        self._host_owners.setdefault(host, {})[owner] = None

    def commit(self, file: FileKey, host: HostKey, plan: Plan) -> None:
        """Apply ``plan`` (made for ``file`` on the current state) and update the indexes."""
        if not plan.removed and not plan.added:
            return
        files = self._files
        fl = files.get(file)
        if fl is None:
            fl = files[file] = FileLocks()
        owner = plan.owner
        had = fl.has_owner(owner)
        fl.commit(plan)
        delta = plan.delta
        if delta:
            counts = self._count
            count = counts.get(host, 0) + delta
            if count:
                counts[host] = count
            else:
                counts.pop(host, None)
        has = fl.has_owner(owner)
        if has and not had:
            self._owner_files.setdefault(owner, {})[file] = None
            self._host_owners.setdefault(host, {})[owner] = None
        elif had and not has:
            self._unindex_owner(file, owner, host)
        if not fl:
            del files[file]

    def _unindex_owner(self, file: FileKey, owner: OwnerKey, host: HostKey) -> None:
        """``owner`` (of ``host``) holds nothing on ``file`` any more: drop it from the indexes."""
        owned = self._owner_files[owner]
        del owned[file]
        if not owned:
            del self._owner_files[owner]
            owners = self._host_owners[host]
            del owners[owner]
            if not owners:
                del self._host_owners[host]

    def release(self, file: FileKey, owner: OwnerKey, start: int, end: int) -> list[Lock]:
        """Unlock ``[start, end)`` of ``owner`` on ``file``; return the pieces released."""
        fl = self._files.get(file)
        if fl is None:
            return []
        lk = fl.take_sole(owner, start, end)
        if lk is not None:
            # Fast path: the owner's only record here, released whole.
            host = lk.host
            counts = self._count
            count = counts[host] - 1
            if count:
                counts[host] = count
            else:
                del counts[host]
            self._unindex_owner(file, owner, host)
            if not fl:
                del self._files[file]
            return [lk]
        plan = fl.plan_unlock(owner, start, end)
        if not plan.removed:
            return []
        self.commit(file, plan.removed[0].host, plan)
        return [
            lk
            if start <= lk.start and lk.end <= end
            else Lock(lk.file, owner, lk.host, max(lk.start, start), min(lk.end, end), lk.exclusive)
            for lk in plan.removed
        ]

    def held(self, host: HostKey | None, file: FileKey | None) -> Iterator[Lock]:
        """Held records, restricted to ``host`` and/or ``file`` when given."""
        if file is not None:
            fl = self._files.get(file)
            if fl is not None:
                for lk in fl.all():
                    if host is None or lk.host == host:
                        yield lk
        elif host is not None:
            for owner in self._host_owners.get(host, ()):
                for f in self._owner_files[owner]:
                    yield from self._files[f].of_owner(owner)
        else:
            for fl in self._files.values():
                yield from fl.all()
