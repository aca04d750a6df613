"""The resolver's handle cache: hits, bounds, invalidation, and containment kept correct."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nfs.errors import NfsError
from floatlock.nfs.exports import parse_exports
from floatlock.nfs.handlecache import HandleCache
from floatlock.nfs.proto import Nfsstat3
from floatlock.nfs.resolver import NotCached, Resolver

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

KEY = b"k" * 32


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, Resolver]]:
    """An export ``tmp_path/export`` (not a whole filesystem) beside ``tmp_path/outside``."""
    export = tmp_path / "export"
    (export / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (export / "f").write_bytes(b"x")
    exports = parse_exports(f"{export} *(rw)")
    resolver = Resolver(exports, KEY, sweeper=False)
    try:
        assert not resolver.roots[0].whole_fs
        yield export, tmp_path / "outside", resolver
    finally:
        resolver.close()


def _fh(resolver: Resolver, path: Path) -> bytes:
    root = resolver.roots[0]
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        return resolver.handle_of(root, fd)
    finally:
        os.close(fd)


def _stale(resolver: Resolver, fh: bytes) -> bool:
    try:
        resolver.open_handle(fh).close()
    except NfsError as e:
        assert e.status == Nfsstat3.STALE
        return True
    return False


def test_hit_reuses_the_descriptor_and_cached_only(
    tree: tuple[Path, Path, Resolver],
) -> None:
    export, _, resolver = tree
    fh = _fh(resolver, export / "a" / "b")
    with pytest.raises(NotCached):
        resolver.open_handle(fh, cached_only=True)
    with resolver.open_handle(fh) as first:
        fd = first.fd
    with resolver.open_handle(fh, cached_only=True) as again:
        assert again.fd == fd and again.is_dir
    os.fstat(fd)  # still open: owned by the cache, not closed by Obj.close
    assert len(resolver.cache) == 1


def test_directory_moved_out_of_the_export_is_refused(
    tree: tuple[Path, Path, Resolver],
) -> None:
    export, outside, resolver = tree
    fh_b = _fh(resolver, export / "a" / "b")
    fh_a = _fh(resolver, export / "a")
    resolver.open_handle(fh_b).close()
    resolver.open_handle(fh_a).close()
    # A local process moves the *parent* out: no RENAME went through the server.
    os.rename(export / "a", outside / "a")
    assert _stale(resolver, fh_b)
    assert _stale(resolver, fh_a)
    # Back inside: served again.
    os.rename(outside / "a", export / "a")
    assert not _stale(resolver, fh_b)
    # Moved out while the server's generation says "a directory changed" (as RENAME does).
    os.rename(export / "a", outside / "a")
    resolver.cache.dirs_changed()
    assert _stale(resolver, fh_b)


def test_renamed_inside_stays_valid_and_rmdir_is_stale(
    tree: tuple[Path, Path, Resolver],
) -> None:
    export, _, resolver = tree
    fh_b = _fh(resolver, export / "a" / "b")
    resolver.open_handle(fh_b).close()
    os.rename(export / "a", export / "c")
    resolver.cache.dirs_changed()
    with resolver.open_handle(fh_b) as obj:
        assert obj.is_dir
    os.rmdir(export / "c" / "b")
    assert _stale(resolver, fh_b)
    assert len(resolver.cache) == 0


def test_removed_file_is_stale_and_forget_inode_closes(
    tree: tuple[Path, Path, Resolver],
) -> None:
    export, _, resolver = tree
    fh = _fh(resolver, export / "f")
    with resolver.open_handle(fh) as obj:
        fd = obj.fd
        st = obj.st
        # Forgotten while in use: closed only on release.
        assert resolver.cache.forget_inode(st.st_dev, st.st_ino) == 1
        os.fstat(fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    resolver.open_handle(fh).close()
    os.unlink(export / "f")
    assert _stale(resolver, fh)


def test_lru_bound_and_idle_sweep(tmp_path: Path) -> None:
    now = [0.0]
    cache = HandleCache(2, 10.0, clock=lambda: now[0], sweeper=False)
    st = os.stat(tmp_path)
    fds = [os.open(tmp_path, os.O_PATH) for _ in range(3)]
    entries = []
    for i, fd in enumerate(fds):
        entries.append(cache.add(bytes([i]), None, fd, st, 0))  # type: ignore[arg-type]
        cache.release(entries[-1])
    assert len(cache) == 2 and bytes([0]) not in cache and entries[0].closed
    now[0] = 5.0
    e = cache.acquire(bytes([2]))
    assert e is not None
    cache.release(e)
    now[0] = 12.0
    assert cache.sweep() == 1  # entry 1 idle for 12 s, entry 2 for 7 s
    assert bytes([2]) in cache and entries[1].closed
    cache.close()
    assert all(x.closed for x in entries)
