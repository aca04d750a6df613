"""The export-directory resolver: handles, identity, staleness, and no escape from the root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nlm.files import ExportDirResolver, FileResolver, StaleHandle


@pytest.fixture
def export(tmp_path: Path) -> Iterator[tuple[Path, ExportDirResolver]]:
    root = tmp_path / "export"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(b"a")
    (root / "sub" / "b").write_bytes(b"b")
    (tmp_path / "secret").write_bytes(b"outside")
    with ExportDirResolver(root) as r:
        yield root, r


def test_handle_resolves_to_stable_identity(export: tuple[Path, ExportDirResolver]) -> None:
    root, r = export
    resolver: FileResolver = r
    fh = r.handle("a")
    assert len(fh) == 32
    f = resolver.resolve(fh)
    st = os.stat(root / "a")
    assert f.key == (st.st_dev, st.st_ino)
    assert f.display == "a"
    assert r.handle(root / "a") == fh  # absolute path under root: same handle
    assert resolver.resolve(r.handle("sub/b")).key != f.key


def test_open_gives_a_descriptor_of_the_file(export: tuple[Path, ExportDirResolver]) -> None:
    _, r = export
    f = r.resolve(r.handle("sub/b"))
    fd = f.open(write=True)
    try:
        assert os.pread(fd, 10, 0) == b"b"
        os.pwrite(fd, b"B", 0)
    finally:
        os.close(fd)
    fd = f.open(write=False)
    try:
        assert os.pread(fd, 10, 0) == b"B"
        with pytest.raises(OSError):
            os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)


def test_unknown_or_forged_handles_are_stale(export: tuple[Path, ExportDirResolver]) -> None:
    _, r = export
    fh = r.handle("a")
    with pytest.raises(StaleHandle):
        r.resolve(fh[:-1] + bytes([fh[-1] ^ 1]))
    with pytest.raises(StaleHandle):
        r.resolve(b"")
    other = ExportDirResolver(r.root)
    try:
        with pytest.raises(StaleHandle):
            other.resolve(fh)  # another resolver (another secret) never minted it
    finally:
        other.close()


def test_removed_or_replaced_file_is_stale(export: tuple[Path, ExportDirResolver]) -> None:
    root, r = export
    fh = r.handle("a")
    f = r.resolve(fh)
    held = f.open(write=False)  # keeps the old inode alive, so its number cannot be reused
    try:
        (root / "a.new").write_bytes(b"new inode")
        os.replace(root / "a.new", root / "a")
        with pytest.raises(StaleHandle, match="replaced"):
            r.resolve(fh)
        with pytest.raises(StaleHandle, match="replaced"):
            f.open(write=False)
        (root / "a").unlink()
        with pytest.raises(StaleHandle, match="gone"):
            r.resolve(fh)
        with pytest.raises(StaleHandle, match="gone"):
            f.open(write=False)
    finally:
        os.close(held)


def test_no_access_outside_root(export: tuple[Path, ExportDirResolver]) -> None:
    root, r = export
    os.symlink(root.parent / "secret", root / "link")
    os.symlink(root.parent, root / "dirlink")
    for bad in ("../secret", "link", "dirlink/secret", root.parent / "secret", "sub", "", "."):
        with pytest.raises(StaleHandle):
            r.handle(bad)
    with pytest.raises(StaleHandle):
        r.handle("missing")
