"""The files lockd has resolved: NFS handle -> file, and the files something refers to.

Theory of operation
-------------------
Every LOCK, UNLOCK, CANCEL, TEST and SHARE names its file by an NFS file handle (XNFS NLM,
"nlm4_lock": ``fh``).  Resolving one through the NFS layer costs a MAC check,
``open_by_handle_at``, ``fstat`` and a close, so :class:`FileTable` keeps two maps:

* **handle -> (file, when resolved)**, trusted for ``ttl`` seconds, at most ``max_handles``
  (oldest out first).  Within that time a handle whose file was removed may still be locked,
  as Linux lockd does for as long as it keeps the file open; the kernel locks then sit on the
  removed inode and harm nobody.
* **file key -> file, while in use**: the files that hold a lock, a queued request or a share
  (``in_use(key)``, asked of the lock core).  The kernel mirror and the local-holder poll reach
  a file's descriptor through it.  ``prune(key)`` forgets a file nothing refers to any more.

Sans-IO apart from the resolver it is given: time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from floatlock.nlm.files import FileResolver, LockFile, StaleHandle

__all__ = ["DEFAULT_HANDLE_TTL", "DEFAULT_MAX_HANDLES", "FileTable"]

#: Seconds a resolved file handle is trusted before it is resolved again.
DEFAULT_HANDLE_TTL = 2.0
#: Resolved file handles kept at most.
DEFAULT_MAX_HANDLES = 4096


class FileTable:
    """Resolved handles and the files in use; see the module docstring."""

    __slots__ = ("_handles", "_in_use", "_open", "max_handles", "resolver", "ttl")

    def __init__(
        self,
        resolver: FileResolver,
        in_use: Callable[[Hashable], bool],
        *,
        ttl: float = DEFAULT_HANDLE_TTL,
        max_handles: int = DEFAULT_MAX_HANDLES,
    ) -> None:
        self.resolver = resolver
        self._in_use = in_use
        self.ttl = ttl
        self.max_handles = max_handles
        self._open: dict[Hashable, LockFile] = {}  # file key -> file, while in use
        self._handles: dict[bytes, tuple[LockFile, float]] = {}  # handle -> (file, resolved at)

    def __len__(self) -> int:
        """Files in use."""
        return len(self._open)

    def file(self, fh: bytes, now: float) -> LockFile:
        """The file of ``fh``, resolved at most once per ``ttl`` seconds, now counted as in
        use until :meth:`prune` finds nothing refers to it.  Raises :class:`StaleHandle`."""
        cached = self._handles.get(fh)
        if cached is not None and now - cached[1] < self.ttl:
            lf = cached[0]
        else:
            lf = self.resolver.resolve(fh)  # raises StaleHandle: nothing cached
            handles = self._handles
            if cached is not None:
                del handles[fh]
            elif len(handles) >= self.max_handles:
                del handles[next(iter(handles))]
            handles[fh] = (lf, now)
        open_ = self._open
        if lf.key not in open_:
            open_[lf.key] = lf
        return lf

    def cached_handles(self) -> int:
        """Resolved handles kept."""
        return len(self._handles)

    def get(self, key: Hashable) -> LockFile | None:
        """The file in use under ``key``, if any."""
        return self._open.get(key)

    def prune(self, key: Hashable) -> bool:
        """Forget file ``key`` if nothing refers to it any more; True when it was forgotten."""
        if key in self._open and not self._in_use(key):
            del self._open[key]
            return True
        return False

    def prune_handle(self, fh: bytes) -> Hashable | None:
        """:meth:`prune` for the file of handle ``fh`` (resolving it if it is not cached;
        nothing for a stale handle); the key of the file forgotten, or None."""
        cached = self._handles.get(fh)
        try:
            key = cached[0].key if cached is not None else self.resolver.resolve(fh).key
        except StaleHandle:
            return None
        return key if self.prune(key) else None

    def forget_handles(self) -> None:
        """Drop the resolved-handle cache (every handle is resolved again on next use)."""
        self._handles.clear()
