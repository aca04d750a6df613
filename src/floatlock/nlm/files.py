"""How lockd turns an NLM file handle into a file: the resolver interface, and a simple one.

Theory of operation
-------------------
An NLM request names its file by the NFS file handle the client got from the NFS server
(XNFS NLM, "nlm4_lock": ``fh``).  lockd needs three things from it:

* a stable *identity* (``LockFile.key``) on which the lock core keys its tables, the same for
  every handle of the same file (e.g. ``(st_dev, st_ino)``), so two handles of one file share
  locks;
* a *display* text for logs and listings;
* an *open file description* for the kernel mirror (:mod:`floatlock.nlm.kernel`), so local
  processes see NLM locks and NLM sees theirs.

:class:`FileResolver` is that interface (the NFS layer's handle code implements it);
``resolve`` raises :class:`StaleHandle` for a handle it does not know or whose file is gone,
which lockd answers with ``NLM4_STALE_FH`` (v4) or ``DENIED_NOLOCKS`` (v1/v3).

:class:`ExportDirResolver` is a small resolver over one export directory for tests and tools:
``handle(path)`` mints a 32-byte handle (32 bytes, so that v1/v3 clients that insist on NFSv2
sized handles accept it too): magic, ``st_dev``, ``st_ino`` and a keyed BLAKE2b tag over them and
the relative path, so handles cannot be forged or guessed.  It only ever opens files it minted a
handle for, by their path relative to the root, refuses symlinks and anything but regular files,
and checks after ``open`` that the descriptor is still the same inode: nothing outside the root
can be reached through it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "ExportDirResolver",
    "ExportFile",
    "FileResolver",
    "LockFile",
    "StaleHandle",
]


class StaleHandle(Exception):
    """The handle names no file (unknown, forged, or the file was removed or replaced)."""


class LockFile(Protocol):
    """A file lockd can lock."""

    @property
    def key(self) -> Hashable:
        """File identity: equal for every handle of the same file."""
        ...

    @property
    def display(self) -> str:
        """Text for logs and listings."""
        ...

    def open(self, write: bool) -> int:
        """A new open file description (caller closes it); raises StaleHandle or OSError."""
        ...


class FileResolver(Protocol):
    """Maps an NFS file handle (bytes from an NLM request) to a :class:`LockFile`."""

    def resolve(self, fh: bytes) -> LockFile:
        """The file of ``fh``; raises :class:`StaleHandle` when there is none."""
        ...


_MAGIC: Final = b"FLk1"
_HEAD: Final = struct.Struct(">4sQQ")
_TAG_LEN: Final = 12
HANDLE_LEN: Final = _HEAD.size + _TAG_LEN  # 32


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A regular file under an :class:`ExportDirResolver` root."""

    root_fd: int
    rel: str
    dev: int
    ino: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    @property
    def display(self) -> str:
        return self.rel

    def open(self, write: bool) -> int:
        flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.rel, flags, dir_fd=self.root_fd)
        except FileNotFoundError:
            raise StaleHandle(f"{self.rel}: gone") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise StaleHandle(f"{self.rel}: replaced")
        return fd


class ExportDirResolver:
    """A :class:`FileResolver` over the regular files of one directory tree."""

    def __init__(self, root: Path, secret: bytes | None = None) -> None:
        self.root = root.resolve(strict=True)
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._files: dict[bytes, ExportFile] = {}

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> ExportDirResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tag(self, dev: int, ino: int, rel: str) -> bytes:
        h = hashlib.blake2b(digest_size=_TAG_LEN, key=self._secret)
        h.update(_HEAD.pack(_MAGIC, dev, ino))
        h.update(rel.encode("utf-8", "surrogateescape"))
        return h.digest()

    def _relative(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root)
            except ValueError:
                raise StaleHandle(f"{path}: outside the export {self.root}") from None
        parts = p.parts
        if not parts or any(part in ("..", ".", "") for part in parts):
            raise StaleHandle(f"{path}: not a plain path under the export")
        # Every directory on the way must be a real directory inside the root, not a symlink.
        real = (self.root / p).resolve()
        if real != self.root / p or not real.is_relative_to(self.root):
            raise StaleHandle(f"{path}: leaves the export through a symlink")
        return str(p)

    def handle(self, path: str | Path) -> bytes:
        """Mint the 32-byte handle of the regular file at ``path`` (relative or under root)."""
        rel = self._relative(path)
        try:
            st = os.stat(rel, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise StaleHandle(f"{path}: no such file") from None
        if not stat.S_ISREG(st.st_mode):
            raise StaleHandle(f"{path}: not a regular file")
        fh = _HEAD.pack(_MAGIC, st.st_dev, st.st_ino) + self._tag(st.st_dev, st.st_ino, rel)
        self._files[fh] = ExportFile(self._root_fd, rel, st.st_dev, st.st_ino)
        return fh

    def resolve(self, fh: bytes) -> ExportFile:
        f = self._files.get(fh)
        if f is None:
            raise StaleHandle("unknown file handle")
        try:
            st = os.stat(f.rel, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise StaleHandle(f"{f.rel}: gone") from None
        if (st.st_dev, st.st_ino) != (f.dev, f.ino):
            raise StaleHandle(f"{f.rel}: replaced")
        return f
