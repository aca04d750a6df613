"""fsuid.acting_as: the thread's filesystem identity as the kernel reports it.

Each check runs in a thread of its own (identities are per thread), and reads the thread's
fsuid, fsgid and supplementary groups from /proc/thread-self/status, not from our own
bookkeeping.  Needs root (setfsuid to another user).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from floatlock.nfs import fsuid
from floatlock.nfs.creds import Identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def kernel_ids() -> tuple[int, int, tuple[int, ...]]:
    """(fsuid, fsgid, groups) of the calling thread, from the kernel."""
    with open("/proc/thread-self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    fsuid_ = int(fields["Uid"].split()[3])
    fsgid_ = int(fields["Gid"].split()[3])
    groups = tuple(sorted(int(g) for g in fields["Groups"].split()))
    return fsuid_, fsgid_, groups


def in_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # handed to the test's thread
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


BASE = tuple(sorted(os.getgroups()))


def test_acting_as_sets_and_restores_ids() -> None:
    def run() -> list[tuple[int, int, tuple[int, ...]]]:
        seen = [kernel_ids()]
        with fsuid.acting_as(Identity(1234, 5678, (11, 22))):
            seen.append(kernel_ids())
        seen.append(kernel_ids())
        return seen

    before, inside, after = in_thread(run)
    assert before == (0, 0, BASE)
    assert inside == (1234, 5678, (11, 22))
    # fsuid and fsgid are root's again; the groups stay when they may (module docstring).
    assert after[:2] == (0, 0)
    assert after[2] == ((11, 22) if fsuid.LAZY_GROUPS else BASE)


def test_next_caller_gets_exactly_its_own_groups() -> None:
    def run() -> list[tuple[int, ...]]:
        seen = []
        for groups in [(11, 22), (11, 22), (33,), (), (44, 55, 66)]:
            with fsuid.acting_as(Identity(1000, 1000, groups)):
                seen.append(kernel_ids()[2])
        return seen

    assert in_thread(run) == [(11, 22), (11, 22), (33,), (), (44, 55, 66)]


def test_groups_matter_for_access_and_are_not_carried_over() -> None:
    """A caller whose groups differ from the previous caller's cannot use the previous
    caller's group permission (the lazy groups must be switched, not left)."""
    # Not under tmp_path: pytest's base directory is 0700, which uid 1000 cannot cross.
    top = Path(tempfile.mkdtemp(prefix="floatlock-fsuid-"))
    top.chmod(0o755)
    d = top / "g"
    d.mkdir()
    os.chown(d, 0, 4242)
    os.chmod(d, 0o070)  # only group 4242 may enter
    (d / "f").write_text("x")

    def can_stat(groups: tuple[int, ...]) -> bool:
        with fsuid.acting_as(Identity(1000, 1000, groups)):
            try:
                os.stat(d / "f")
                return True
            except PermissionError:
                return False

    try:
        seen = in_thread(lambda: [can_stat((4242,)), can_stat((1000,)), can_stat((4242, 7))])
    finally:
        shutil.rmtree(top)
    assert seen == [True, False, True]


def test_exception_in_body_restores_root() -> None:
    def run() -> tuple[int, int, tuple[int, ...]]:
        with pytest.raises(ValueError), fsuid.acting_as(Identity(1000, 1000, (5,))):
            raise ValueError("boom")
        return kernel_ids()

    assert in_thread(run)[:2] == (0, 0)


def test_root_identity_changes_nothing_and_base_groups_restores() -> None:
    def run() -> list[tuple[int, int, tuple[int, ...]]]:
        seen = []
        with fsuid.acting_as(Identity(0, 0, ())):
            seen.append(kernel_ids())
        with fsuid.acting_as(Identity(1000, 1000, (9,))):
            pass
        fsuid.base_groups()
        seen.append(kernel_ids())
        return seen

    assert in_thread(run) == [(0, 0, BASE), (0, 0, BASE)]


def test_a_new_thread_inherits_lingering_groups_and_is_not_fooled() -> None:
    """Thread A leaves a caller's groups in place (lazy); a thread A starts inherits them in
    the kernel.  A caller there whose groups are the daemon's own must get exactly those."""

    def child() -> tuple[int, ...]:
        with fsuid.acting_as(Identity(1000, 1000, BASE)):
            return kernel_ids()[2]

    def parent() -> tuple[tuple[int, ...], tuple[int, ...]]:
        with fsuid.acting_as(Identity(1000, 1000, (11, 22))):
            pass
        lingering = kernel_ids()[2]
        return lingering, in_thread(child)

    lingering, seen = in_thread(parent)
    assert lingering == ((11, 22) if fsuid.LAZY_GROUPS else BASE)
    assert seen == BASE


def test_a_switch_that_fails_half_way_is_undone() -> None:
    """(uint32)-1 is setfsgid's "no change": the gid part fails after the groups were set;
    the thread must be back at fsuid/fsgid 0, not left half the caller."""

    def run() -> tuple[int, int, tuple[int, ...]]:
        with pytest.raises(fsuid.IdentityError), fsuid.acting_as(Identity(1000, 2**32 - 1, (7,))):
            pass
        return kernel_ids()

    assert in_thread(run)[:2] == (0, 0)

    def run_uid() -> tuple[int, int, tuple[int, ...]]:
        with pytest.raises(fsuid.IdentityError), fsuid.acting_as(Identity(2**32 - 1, 1000, ())):
            pass
        return kernel_ids()

    assert in_thread(run_uid)[:2] == (0, 0)


def test_lazy_groups_only_with_the_filesystem_capabilities() -> None:
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert (eff & 0x1F == 0x1F) == fsuid.LAZY_GROUPS


@pytest.mark.skipif(not fsuid.FACCESSAT2, reason="no faccessat2 here")
def test_may_asks_the_kernel_as_the_current_fs_identity(tmp_path: Path) -> None:
    """``may`` answers for the fsuid, fsgid and groups, not the real ids (root's)."""
    path = tmp_path / "f"
    path.write_text("x")
    os.chown(path, 0, 4242)
    os.chmod(path, 0o640)  # owner rw, group 4242 r, others nothing
    fd = os.open(path, os.O_PATH)

    def as_(ident: Identity) -> tuple[bool, bool, bool]:
        with fsuid.acting_as(ident):
            return fsuid.may(fd, os.R_OK), fsuid.may(fd, os.W_OK), fsuid.may(fd, os.X_OK)

    try:
        seen = in_thread(
            lambda: [
                (fsuid.may(fd, os.R_OK), fsuid.may(fd, os.W_OK), fsuid.may(fd, os.X_OK)),
                as_(Identity(1000, 1000, (4242,))),
                as_(Identity(1000, 1000, (1000,))),
                as_(Identity(1000, 4242, ())),
                as_(Identity(0, 0, ())),
            ]
        )
    finally:
        os.close(fd)
    # Root: read and write whatever the bits, execute only with an x bit somewhere.
    assert seen == [
        (True, True, False),
        (True, False, False),
        (False, False, False),
        (True, False, False),
        (True, True, False),
    ]


def test_without_faccessat2_nothing_is_granted_and_the_server_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No fallback that would ask with root's real or effective ids: may() raises, and an
    NfsServer is not built."""
    from floatlock.nfs.exports import parse_exports
    from floatlock.nfs.service import NfsServer

    monkeypatch.setattr(fsuid, "FACCESSAT2", False)
    fd = os.open(tmp_path, os.O_PATH)
    try:
        with pytest.raises(fsuid.IdentityError):
            fsuid.may(fd, os.R_OK)
    finally:
        os.close(fd)
    with pytest.raises(fsuid.IdentityError, match="faccessat2"):
        NfsServer(parse_exports(f"{tmp_path} *(rw)"), b"k" * 32)
