"""Blocked NLM requests waiting for a *local* (kernel) lock holder, and how they are woken.

Theory of operation
-------------------
NLM locks are the server's POSIX record locks (XNFS NLM, "Lock semantics"): lockd mirrors every
grant as a kernel OFD lock (:mod:`floatlock.nlm.kernel`), so a process on the server, or another
server of the same cluster filesystem, can hold a range an NLM client asks for.  A blocking
LOCK vetoed *only* by such a holder is queued like any blocked request (XNFS NLM "NLM_LOCK":
``block`` = TRUE, answer ``LCK_BLOCKED``, then NLM_GRANTED).  An NLM holder's UNLOCK goes
through lockd, which reruns the file's queue at once; a local holder's ``F_UNLCK`` or
``close`` tells lockd nothing -- the kernel has no notification for "a lock went away" short of
becoming a waiter oneself.

Two designs were weighed:

* **A helper thread per waited file doing a blocking ``F_OFD_SETLKW``** on a spare description
  (then unlocking and posting ``retry_file`` to the loop).  Latency is the scheduler's, and it
  costs no CPU while waiting.  But such a wait cannot be abandoned: CPython's ``fcntl`` retries
  the call on EINTR and only the main thread runs signal handlers, so a thread whose NLM waiter
  was cancelled (or expired, or its host dropped) stays parked until the local holder lets go,
  which a daemon holding a lock may never do.  Each parked thread pins a file descriptor and a
  stack, one waited range per thread (other waiters' ranges on the same file need more
  threads), and for its brief ownership the helper *takes* the lock, so a local ``F_SETLK``
  racing it fails spuriously.
* **A bounded-rate probe, only for files with kernel-vetoed waiters** (chosen).  When the core's
  ``admit`` veto fails because the kernel is busy, the service notes that exact request here.
  While any such note exists, the adapter (:mod:`floatlock.nlm.program`) runs a timer every
  ``local_poll_interval`` (20 ms by default); each tick asks the kernel, with one
  ``F_OFD_GETLK`` per noted request on the waiting owner's own description (or a read-only one),
  whether its range is now free, and only then reruns that file's queue (``retry_file``), whose
  veto notes the requests still refused.  Notes of requests no longer queued are dropped at the
  next tick, and with them the timer.  Worst-case latency is one interval (well under XNFS's
  client retry times and the 100 ms goal); cost is ~50 cheap syscalls per second per noted
  request, and nothing at all when no NLM request waits for a local holder.  A probe never takes
  a lock, so local processes never see a phantom holder.

The reverse direction needs nothing here: an NLM lock is a kernel OFD lock, so a local
``F_SETLK`` fails and a local ``F_SETLKW`` waits until the NLM UNLOCK releases it.

This module is sans-IO bookkeeping; the probe itself is
:meth:`floatlock.nlm.service.NlmService.poll_local`.
"""

from __future__ import annotations

from floatlock.nlm.records import FileKey, Lock

__all__ = ["DEFAULT_POLL_INTERVAL", "LocalWaits"]

#: Seconds between probes while NLM requests wait for local holders.
DEFAULT_POLL_INTERVAL = 0.02


class LocalWaits:
    """Requests (per file) that the kernel refused because of a holder outside lockd."""

    __slots__ = ("_files",)

    def __init__(self) -> None:
        self._files: dict[FileKey, dict[Lock, None]] = {}

    def __bool__(self) -> bool:
        return bool(self._files)

    def __len__(self) -> int:
        """Files with noted requests."""
        return len(self._files)

    def note(self, lock: Lock) -> None:
        """The kernel refused ``lock`` (a request that may now be queued)."""
        self._files.setdefault(lock.file, {})[lock] = None

    def files(self) -> list[FileKey]:
        return list(self._files)

    def take(self, file: FileKey) -> list[Lock]:
        """Remove and return ``file``'s notes (the caller notes again what is still refused)."""
        return list(self._files.pop(file, ()))

    def discard(self, file: FileKey) -> None:
        self._files.pop(file, None)
