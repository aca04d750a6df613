"""A bounded, reference-counted LRU of open descriptors with an idle sweep.

The common part of :class:`floatlock.nfs.openfiles.OpenFiles` (READ/WRITE descriptors) and
:class:`floatlock.nfs.handlecache.HandleCache` (``O_PATH`` descriptors of verified handles):
entries keyed by a hashable key, indexed by inode (so REMOVE and RENAME can drop every entry
of the inode they unlink), at most ``max_entries`` (least recently used evicted first), none
kept ``idle_seconds`` after their last use (a sweeper thread, stopped by :meth:`close`).  An
entry's descriptor is closed only when no call is using it (``users``), so a descriptor number
is never reused under a running call.  Thread safe.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

Inode = tuple[int, int]


class LruEntry(Protocol):
    """What the cache needs of an entry."""

    fd: int
    inode: Inode
    last_used: float
    users: int
    dropped: bool
    closed: bool


K = TypeVar("K", bound=Hashable)
E = TypeVar("E", bound=LruEntry)


class RefCountedLru(Generic[K, E]):
    """key -> entry owning a descriptor; subclasses say how an entry's key is made."""

    #: Does :meth:`release` count as a use for the idle sweep?
    touch_on_release = False
    #: Is ``last_used`` only set with a move to the end (so the sweep may stop early)?
    ordered_last_used = False

    def __init__(
        self,
        max_entries: int,
        idle_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweeper: bool = True,
        thread_name: str = "nfs-lru",
        limit_name: str = "max_entries",
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"{limit_name} must be at least 1")
        self.max_entries = max_entries
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, E] = OrderedDict()
        self._by_inode: dict[Inode, dict[K, E]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if sweeper:
            self._thread = threading.Thread(target=self._sweep_loop, name=thread_name)
            self._thread.daemon = True
            self._thread.start()

    def _key(self, entry: E) -> K:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(self, key: K) -> E | None:
        """The entry of ``key``, in use until :meth:`release`; None on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            return self._use(key, entry)

    def _add(self, key: K, fd: int, make: Callable[[float], E]) -> E:
        """Cache ``fd`` (now owned by the cache) under ``key``; ``make(now)`` builds the
        entry.  The entry is returned in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # another thread made it meanwhile: use theirs
                os.close(fd)
            else:
                entry = make(self._clock())
                self._entries[key] = entry
                self._by_inode.setdefault(entry.inode, {})[key] = entry
                while len(self._entries) > self.max_entries:
                    _, old = self._entries.popitem(last=False)
                    self._unindex(old)
                    self._drop(old)
            return self._use(key, entry)

    def release(self, entry: E) -> None:
        with self._lock:
            entry.users -= 1
            if self.touch_on_release:
                entry.last_used = self._clock()
            if entry.dropped and entry.users == 0:
                self._close(entry)

    def discard(self, entry: E) -> None:
        """Forget ``entry`` (e.g. its file was removed); closed once no call uses it."""
        key = self._key(entry)
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]
                self._unindex(entry)
                self._drop(entry)

    def forget_inode(self, dev: int, ino: int) -> int:
        """Drop every entry of inode (dev, ino) (REMOVE, RMDIR, RENAME over it); how many."""
        with self._lock:
            entries = self._by_inode.pop((dev, ino), {})
            for key, entry in entries.items():
                if self._entries.get(key) is entry:
                    del self._entries[key]
                self._drop(entry)
            return len(entries)

    def sweep(self, now: float | None = None) -> int:
        """Close the entries idle ``idle_seconds`` or more; how many were dropped."""
        now = self._clock() if now is None else now
        dropped = 0
        with self._lock:
            # Least recently used first.
            for key, entry in list(self._entries.items()):
                idle = now - entry.last_used >= self.idle_seconds
                if not idle and self.ordered_last_used:
                    break  # every later entry is fresher still
                if idle and entry.users == 0:
                    del self._entries[key]
                    self._unindex(entry)
                    self._drop(entry)
                    dropped += 1
        return dropped

    def close(self) -> None:
        """Stop the sweeper and close everything (entries in use: when released)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for entry in self._entries.values():
                self._drop(entry)
            self._entries.clear()
            self._by_inode.clear()

    # -- with the lock held ----------------------------------------------------------------

    def _use(self, key: K, entry: E) -> E:
        self._entries.move_to_end(key)
        entry.users += 1
        entry.last_used = self._clock()
        return entry

    def _unindex(self, entry: E) -> None:
        entries = self._by_inode.get(entry.inode)
        if entries is not None:
            key = self._key(entry)
            if entries.get(key) is entry:
                del entries[key]
            if not entries:
                del self._by_inode[entry.inode]

    def _drop(self, entry: E) -> None:
        entry.dropped = True
        if entry.users == 0:
            self._close(entry)

    @staticmethod
    def _close(entry: LruEntry) -> None:
        if not entry.closed:
            entry.closed = True
            os.close(entry.fd)

    def _sweep_loop(self) -> None:
        interval = max(self.idle_seconds / 2, 0.05)
        while not self._stop.wait(interval):
            self.sweep()
