"""Effects: what a call into the lock core changed, as small immutable values.

Theory of operation
-------------------
Every mutating call of :class:`floatlock.nlm.locks.LockManager` returns a tuple of effects in
the order the changes happened.  lockd's service layer carries them out (GRANTED callbacks for
:class:`GrantedFromQueue`, unlocking the kernel OFD mirror for :class:`Released`), and later a
journal, metrics and status listings observe them without reaching into the core (roadmap:
"the lock core returns effects").

Lock effects speak in *regions*, exactly like fcntl(2) record locks: :class:`Granted` means
"``lock.owner`` now holds ``[lock.start, lock.end)`` with this type, replacing whatever it held
there" and :class:`Released` means "``lock.owner`` no longer holds anything in that range"
(one per held record or piece released, with the type it had).  Replaying the effects in order
onto an empty core, or onto kernel OFD locks, rebuilds the same state.

Effects and results (:mod:`floatlock.nlm.results`) are values nobody changes once made, but
the ones made on every LOCK and UNLOCK are plain slotted dataclasses, not ``frozen``: a frozen
dataclass's ``__init__`` sets each field through ``object.__setattr__`` and costs about twice
as much (``python -m timeit -s "from floatlock.nlm.effects import Granted" "Granted(1)"``:
110 ns, against 257 ns for the frozen class it was), while
equality still compares the class, so ``Granted(l) != Released(l)``.  Being mutable they are
not hashable: nothing puts an effect or a result in a set or uses one as a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from floatlock.nlm.records import BlockedLock, Lock
from floatlock.nlm.shares import ShareReservation

__all__ = [
    "Blocked",
    "CancelReason",
    "Cancelled",
    "Effect",
    "Granted",
    "GrantedFromQueue",
    "Released",
    "ShareAdded",
    "ShareRemoved",
]


class CancelReason(Enum):
    """Why a blocked request left the queue without being granted."""

    CANCELLED = "cancelled"  # NLM_CANCEL from the client
    EXPIRED = "expired"  # not re-sent within the caller's max age
    DROPPED = "dropped"  # its host or owner was dropped


@dataclass(slots=True)
class Granted:
    """The owner now holds ``lock``'s range with ``lock``'s type (a LOCK request succeeded)."""

    lock: Lock


@dataclass(slots=True)
class GrantedFromQueue:
    """A queued request was granted: same as :class:`Granted`, and send NLM_GRANTED."""

    blocked: BlockedLock


@dataclass(slots=True)
class Released:
    """The owner no longer holds ``lock``'s range (which it held with ``lock``'s type)."""

    lock: Lock


@dataclass(slots=True)
class Blocked:
    """A blocking request was queued."""

    blocked: BlockedLock


@dataclass(slots=True)
class Cancelled:
    """A queued request left the queue without being granted."""

    blocked: BlockedLock
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class ShareAdded:
    """A share reservation now holds (replacing the owner's previous one on the file)."""

    share: ShareReservation


@dataclass(frozen=True, slots=True)
class ShareRemoved:
    """A share reservation was released."""

    share: ShareReservation


Effect = Granted | GrantedFromQueue | Released | Blocked | Cancelled | ShareAdded | ShareRemoved
