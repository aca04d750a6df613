"""The lock core's share reservations: NLM SHARE and UNSHARE with their per-host cap (sans-IO).

XNFS's NLM chapter ("nlm_share", procedures NLM_SHARE and NLM_UNSHARE) gives PC clients
whole-file share reservations that are independent of byte-range locks (see
:mod:`floatlock.nlm.shares` for the conflict rule and :class:`~floatlock.nlm.shares.ShareTable`,
which stores them).  :class:`ShareManager` adds what the lock core answers with: the
``max_shares_per_host`` cap (:class:`~floatlock.nlm.results.LimitExceeded`, lockd's
``NLM4_DENIED_NOLOCKS``), the :class:`~floatlock.nlm.results.ShareResult` of SHARE and the
``ShareAdded`` / ``ShareRemoved`` effects, and the listing of reservations.

Separate from :mod:`floatlock.nlm.locks` because nothing here touches byte-range locks or the
queue of blocked requests: :class:`~floatlock.nlm.locks.LockManager` derives from this class,
so lockd still calls one lock core, which keeps to itself what concerns both (``drop_host``,
``drop_owner``, ``file_in_use``, ``host_busy`` read ``_shares`` too).
"""

from __future__ import annotations

from floatlock.nlm.effects import Effect, ShareAdded, ShareRemoved
from floatlock.nlm.records import FileKey, HostKey, OwnerKey
from floatlock.nlm.results import LimitExceeded, ShareDenied, ShareGranted, ShareResult
from floatlock.nlm.shares import ShareAccess, ShareDeny, ShareReservation, ShareTable

__all__ = ["ShareManager"]


class ShareManager:
    """Share reservations of every file, at most ``max_shares_per_host`` per host."""

    def __init__(self, *, max_shares_per_host: int) -> None:
        self.max_shares_per_host = max_shares_per_host
        self._shares = ShareTable()

    def share(
        self, file: FileKey, owner: OwnerKey, host: HostKey, access: ShareAccess, deny: ShareDeny
    ) -> ShareResult:
        """NLM SHARE; the same owner re-sharing a file replaces its reservation."""
        res = ShareReservation(file, owner, host, ShareAccess(access), ShareDeny(deny))
        holder = self._shares.conflict(res)
        if holder is not None:
            return ShareDenied(holder)
        if (
            self._shares.get(file, owner) is None
            and self._shares.count(host) >= self.max_shares_per_host
        ):
            return LimitExceeded(host, "shares_per_host", self.max_shares_per_host)
        self._shares.put(res)
        return ShareGranted(res, (ShareAdded(res),))

    def unshare(self, file: FileKey, owner: OwnerKey) -> tuple[Effect, ...]:
        """NLM UNSHARE; removing a reservation that does not exist is fine."""
        old = self._shares.remove(file, owner)
        return () if old is None else (ShareRemoved(old),)

    def shares(
        self, *, host: HostKey | None = None, file: FileKey | None = None
    ) -> list[ShareReservation]:
        """Share reservations, optionally filtered."""
        if file is not None:
            found = self._shares.of_file(file)
        elif host is not None:
            found = self._shares.of_host(host)
        else:
            found = self._shares.all()
        return [s for s in found if host is None or s.host == host]
