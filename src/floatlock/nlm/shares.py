"""DOS share reservations (NLM SHARE / UNSHARE), sans-IO.

Theory of operation
-------------------
XNFS's NLM chapter ("nlm_share", procedures NLM_SHARE and NLM_UNSHARE) lets a PC client open a
file with a *share reservation*: ``fsh_access`` says how the opener will use the file (read,
write, both) and ``fsh_mode`` which uses it denies to everyone else (deny none/read/write/
read-write).  Reservations are whole-file and independent of byte-range locks.

A new reservation by owner O is refused when, for some reservation held by another owner,
``new.access & held.deny`` (we would do what they deny) or ``new.deny & held.access`` (we would
deny what they already do).  A reservation by the same owner on the same file replaces the old
one; the same owner never conflicts with itself.  UNSHARE of a reservation that does not exist
succeeds.  Owners and hosts are opaque keys as in :mod:`floatlock.nlm.records`; lockd builds a
share owner from (host key, oh) since nlm_share has no svid.

:class:`ShareTable` only stores reservations and answers conflicts; limits and effects are added
by :class:`floatlock.nlm.sharing.ShareManager`, a base of :class:`floatlock.nlm.locks.LockManager`,
the single entry point lockd calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from floatlock.nlm.records import FileKey, HostKey, OwnerKey

__all__ = ["ShareAccess", "ShareDeny", "ShareReservation", "ShareTable"]


class ShareAccess(IntFlag):
    """``fsh_access`` (XNFS ``fsh_access``: fsa_NONE=0, fsa_R=1, fsa_W=2, fsa_RW=3)."""

    NONE = 0
    READ = 1
    WRITE = 2
    READ_WRITE = 3


class ShareDeny(IntFlag):
    """``fsh_mode`` (XNFS ``fsh_mode``: fsm_DN=0, fsm_DR=1, fsm_DW=2, fsm_DRW=3)."""

    NONE = 0
    READ = 1
    WRITE = 2
    READ_WRITE = 3


@dataclass(frozen=True, slots=True)
class ShareReservation:
    """``owner`` (of ``host``) opened ``file`` for ``access`` and denies ``deny`` to others."""

    file: FileKey
    owner: OwnerKey
    host: HostKey
    access: ShareAccess
    deny: ShareDeny

    def conflicts_with(self, other: ShareReservation) -> bool:
        """True when the two reservations cannot coexist (different owners, same file)."""
        if self.owner == other.owner or self.file != other.file:
            return False
        return bool(self.access & other.deny) or bool(self.deny & other.access)


class ShareTable:
    """Share reservations by file, with per-host indexes for listing and dropping."""

    __slots__ = ("_by_file", "_by_host", "_by_owner")

    def __init__(self) -> None:
        self._by_file: dict[FileKey, dict[OwnerKey, ShareReservation]] = {}
        self._by_host: dict[HostKey, dict[tuple[FileKey, OwnerKey], ShareReservation]] = {}
        self._by_owner: dict[OwnerKey, dict[FileKey, ShareReservation]] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_file.values())

    def conflict(self, share: ShareReservation) -> ShareReservation | None:
        """The first held reservation that ``share`` conflicts with, or None."""
        for held in self._by_file.get(share.file, {}).values():
            if share.conflicts_with(held):
                return held
        return None

    def get(self, file: FileKey, owner: OwnerKey) -> ShareReservation | None:
        """The reservation of ``owner`` on ``file``, if any."""
        return self._by_file.get(file, {}).get(owner)

    def put(self, share: ShareReservation) -> ShareReservation | None:
        """Store ``share`` (the caller checked conflicts); return the one it replaced."""
        old = self.remove(share.file, share.owner)
        self._by_file.setdefault(share.file, {})[share.owner] = share
        self._by_host.setdefault(share.host, {})[(share.file, share.owner)] = share
        self._by_owner.setdefault(share.owner, {})[share.file] = share
        return old

    def remove(self, file: FileKey, owner: OwnerKey) -> ShareReservation | None:
        """Remove and return the reservation of ``owner`` on ``file`` (None if absent)."""
        per_file = self._by_file.get(file)
        if per_file is None or owner not in per_file:
            return None
        share = per_file.pop(owner)
        if not per_file:
            del self._by_file[file]
        per_host = self._by_host[share.host]
        del per_host[(file, owner)]
        if not per_host:
            del self._by_host[share.host]
        per_owner = self._by_owner[owner]
        del per_owner[file]
        if not per_owner:
            del self._by_owner[owner]
        return share

    def count(self, host: HostKey) -> int:
        """How many reservations ``host`` holds."""
        return len(self._by_host.get(host, ()))

    def of_host(self, host: HostKey) -> list[ShareReservation]:
        """The reservations held by ``host``'s owners."""
        return list(self._by_host.get(host, {}).values())

    def of_owner(self, owner: OwnerKey) -> list[ShareReservation]:
        """The reservations held by ``owner``."""
        return list(self._by_owner.get(owner, {}).values())

    def has_file(self, file: FileKey) -> bool:
        """True when ``file`` has reservations."""
        return file in self._by_file

    def of_file(self, file: FileKey) -> list[ShareReservation]:
        """The reservations held on ``file``."""
        return list(self._by_file.get(file, {}).values())

    def all(self) -> list[ShareReservation]:
        """Every reservation."""
        return [s for per_file in self._by_file.values() for s in per_file.values()]
