"""Results of LOCK and SHARE requests to the lock core.

Theory of operation
-------------------
:meth:`floatlock.nlm.locks.LockManager.lock` answers with exactly one of :class:`LockGranted`,
:class:`LockDenied`, :class:`LockBlocked`, :class:`LockDeadlock` or :class:`LimitExceeded`,
which lockd maps one to one onto ``NLM4_GRANTED``, ``NLM4_DENIED``, ``NLM4_BLOCKED``,
``NLM4_DEADLCK`` and ``NLM4_DENIED_NOLOCKS`` (XNFS NLM chapter, "nlm4_stats").  SHARE answers
with :class:`ShareGranted`, :class:`ShareDenied` or :class:`LimitExceeded`.  Every result
carries ``effects`` (possibly empty) to be carried out like those of any other call.
"""

from __future__ import annotations

from dataclasses import dataclass

from floatlock.nlm.effects import Effect
from floatlock.nlm.records import BlockedLock, HostKey, Lock
from floatlock.nlm.shares import ShareReservation

__all__ = [
    "LimitExceeded",
    "LockBlocked",
    "LockDeadlock",
    "LockDenied",
    "LockGranted",
    "LockResult",
    "ShareDenied",
    "ShareGranted",
    "ShareResult",
]


@dataclass(slots=True)
class LockGranted:
    """The lock is held now."""

    lock: Lock
    effects: tuple[Effect, ...]


@dataclass(slots=True)
class LockDenied:
    """A conflicting lock is held: ``holder``, or None when only the ``admit`` veto refused."""

    holder: Lock | None
    effects: tuple[Effect, ...] = ()


@dataclass(slots=True)
class LockBlocked:
    """The request waits in the queue; a later effect will grant or cancel it."""

    blocked: BlockedLock
    effects: tuple[Effect, ...]


@dataclass(slots=True)
class LockDeadlock:
    """Queueing would close a wait-for cycle; ``holders`` are the locks it would wait on."""

    holders: tuple[Lock, ...]
    effects: tuple[Effect, ...] = ()


@dataclass(slots=True)
class LimitExceeded:
    """A configured cap refused the request; enough to log which host hit which cap."""

    host: HostKey
    limit: str  # "locks_per_host", "blocked_per_host", "blocked_total" or "shares_per_host"
    maximum: int
    effects: tuple[Effect, ...] = ()


@dataclass(slots=True)
class ShareGranted:
    """The reservation holds now."""

    share: ShareReservation
    effects: tuple[Effect, ...]


@dataclass(slots=True)
class ShareDenied:
    """``holder``'s reservation conflicts with the one asked for."""

    holder: ShareReservation
    effects: tuple[Effect, ...] = ()


LockResult = LockGranted | LockDenied | LockBlocked | LockDeadlock | LimitExceeded
ShareResult = ShareGranted | ShareDenied | LimitExceeded
