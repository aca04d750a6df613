"""The handle codec, squashing, cookie verifiers and the errno mapping (sans-IO)."""

from __future__ import annotations

import errno
import os

import pytest

from floatlock.nfs import creds
from floatlock.nfs.cookies import ZERO, cookie_ok, cookie_verifier
from floatlock.nfs.creds import Identity, Squash, squash
from floatlock.nfs.errors import NfsError, status_of_errno
from floatlock.nfs.handles import MAX_KERNEL_HANDLE, HandleCodec
from floatlock.nfs.proto import NFS3_FHSIZE, Nfsstat3
from floatlock.rpc.message import AuthSys

KEY = bytes(range(32))


def test_handle_round_trip_and_size() -> None:
    c = HandleCodec(KEY)
    for kernel in (b"", b"\x01" * 8, b"\xff" * MAX_KERNEL_HANDLE):
        fh = c.encode(7, 0x81, kernel)
        assert len(fh) <= NFS3_FHSIZE
        p = c.decode(fh)
        assert (p.export_id, p.handle_type, p.kernel) == (7, 0x81, kernel)
    with pytest.raises(NfsError) as ei:
        c.encode(7, 1, b"\0" * (MAX_KERNEL_HANDLE + 1))
    assert ei.value.status == Nfsstat3.SERVERFAULT


def test_every_flipped_bit_is_rejected() -> None:
    c = HandleCodec(KEY)
    fh = c.encode(3, 1, b"abcdefgh")
    for i in range(len(fh) * 8):
        bad = bytearray(fh)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(NfsError) as ei:
            c.decode(bytes(bad))
        assert ei.value.status == Nfsstat3.BADHANDLE


def test_other_key_and_truncation_rejected() -> None:
    fh = HandleCodec(KEY).encode(3, 1, b"abcdefgh")
    for bad in (fh[:-1], fh + b"\0", b"", HandleCodec(b"x" * 32).encode(3, 1, b"abcdefgh")):
        with pytest.raises(NfsError) as ei:
            HandleCodec(KEY).decode(bad)
        assert ei.value.status == Nfsstat3.BADHANDLE


def test_squash_modes() -> None:
    root = AuthSys(0, "c", 0, 0, (0, 5))
    user = AuthSys(0, "c", 1000, 100, (100, 0))
    assert squash(root, Squash.ROOT) == Identity(65534, 65534, (65534, 5))
    assert squash(user, Squash.ROOT) == Identity(1000, 100, (100, 65534))
    assert squash(root, Squash.NONE) == Identity(0, 0, (0, 5))
    assert squash(user, Squash.ALL, 7, 8) == Identity(7, 8, ())
    assert squash(None, Squash.NONE, 7, 8) == Identity(7, 8, ())
    plain = AuthSys(0, "c", 1000, 100, (100,))
    assert squash(plain, Squash.ROOT) == Identity(1000, 100, (100,))


def test_squash_answers_are_remembered_per_credential_object_and_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """squash memoizes by object identity (the dispatcher shares one AuthSys per credential):
    a repeated call gets the very same Identity, and no other credential, mode or anonymous
    id ever gets it, however many calls came between (the memo is bounded and cleared)."""
    monkeypatch.setattr(creds, "_SQUASHED", {})
    monkeypatch.setattr(creds, "_SQUASHED_MAX", 8)
    user = AuthSys(0, "c", 0, 0, (0,))
    first = squash(user, Squash.ROOT, 7, 8)
    assert squash(user, Squash.ROOT, 7, 8) is first
    assert squash(user, Squash.NONE, 7, 8) == Identity(0, 0, (0,))
    assert squash(user, Squash.ROOT, 9, 8) == Identity(9, 8, (8,))
    assert squash(AuthSys(0, "c", 1000, 0, (0,)), Squash.ROOT, 7, 8) == Identity(1000, 8, (8,))
    assert squash(None, Squash.ROOT, 7, 8) == Identity(7, 8, ())
    # Credentials made and dropped one after another, past the bound: once the memo is
    # cleared their ids come round again, and each must still get its own identity.
    sizes = []
    for uid in range(1, 40):
        assert squash(AuthSys(0, "c", uid, uid, ()), Squash.ROOT, 7, 8) == Identity(uid, uid, ())
        sizes.append(len(creds._SQUASHED))
    assert max(sizes) <= 8 and min(sizes[8:]) < max(sizes)  # bounded, and cleared
    assert squash(user, Squash.ROOT, 7, 8) == first


def test_squash_makes_uint32_minus_one_anonymous() -> None:
    """(uint32)-1 is no account, and setfsuid/setfsgid take it as "change nothing"."""
    bad = AuthSys(0, "c", 2**32 - 1, 2**32 - 1, (5, 2**32 - 1))
    for mode in (Squash.ROOT, Squash.NONE):
        assert squash(bad, mode, 7, 8) == Identity(7, 8, (5, 8))
    assert squash(AuthSys(0, "c", 2**32 - 1, 100, ()), Squash.NONE, 7, 8) == Identity(7, 100, ())


def test_cookie_verifier_changes_with_directory() -> None:
    a = os.stat_result((0o40755, 10, 1, 2, 0, 0, 4096, 1, 2, 3, 0, 0, 0, 1, 2, 3))
    b = os.stat_result((0o40755, 10, 1, 2, 0, 0, 4096, 1, 2, 3, 0, 0, 0, 1, 5, 3))
    va, vb = cookie_verifier(a), cookie_verifier(b)
    assert va != vb and ZERO not in (va, vb)
    assert cookie_ok(0, vb, a)  # a fresh listing needs no verifier
    assert cookie_ok(99, ZERO, a)  # clients may send zero
    assert cookie_ok(99, va, a)
    assert not cookie_ok(99, va, b)


def test_errno_mapping() -> None:
    assert status_of_errno(errno.ENOENT) == Nfsstat3.NOENT
    assert status_of_errno(errno.EACCES) == Nfsstat3.ACCES
    assert status_of_errno(errno.EPERM) == Nfsstat3.PERM
    assert status_of_errno(errno.ENOTEMPTY) == Nfsstat3.NOTEMPTY
    assert status_of_errno(errno.EDQUOT) == Nfsstat3.DQUOT
    assert status_of_errno(errno.ESTALE) == Nfsstat3.STALE
    assert status_of_errno(errno.EXDEV) == Nfsstat3.XDEV
    assert status_of_errno(errno.ENAMETOOLONG) == Nfsstat3.NAMETOOLONG
    assert status_of_errno(errno.ECHILD) == Nfsstat3.IO
    assert status_of_errno(None) == Nfsstat3.IO
