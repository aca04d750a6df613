"""The GETATTR and LOOKUP shortcuts (nfs/shortcuts.py) against the general path.

Every case runs the shortcut first, then the general path (the procedure's handler on the
event loop, as the dispatcher runs it when the shortcut returns None).  Where the shortcut
answers, its reply must be byte for byte the general path's; where it must not (every error
but a negative LOOKUP, every handle not cached), it must return None, and the general path's
answer is checked as well, so the case is one the general path handles.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nfs import ops_attr, ops_lookup
from floatlock.nfs.context import Caller, Request, ServerState
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_args import FhArgs
from floatlock.nfs.shortcuts import Shortcuts
from floatlock.rpc.message import AuthSys, Call, encode_call, parse_call, success_header
from floatlock.xdr import Encoder
from tests.unit.nfsstate import ROOT, handle_of, nfs_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

USER = AuthSys(0, "client", 1000, 1000, (1000,))
NOBODY_IN = AuthSys(0, "client", 0xFFFFFFFF, 1000, ())  # an id no account has
GETATTR, LOOKUP = 1, 3
XID = 0x1234


@pytest.fixture
def export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    (export / "f").write_bytes(b"12345")
    (export / "private").mkdir(mode=0o700)
    (export / "private" / "p").write_bytes(b"")
    os.symlink("f", export / "link")
    return export


@pytest.fixture
def state(export: Path) -> Iterator[ServerState]:
    with nfs_state(export, "rw,root_squash,secure") as st:
        yield st


def _call(proc: int, args: bytes, auth: AuthSys | None, port: int) -> tuple[bytes, Call]:
    data = encode_call(XID, NFS_PROGRAM, NFS_V3, proc, args, auth)
    call = parse_call(data, ("127.0.0.1", port), transport="tcp")
    call.auth = auth  # as the dispatcher sets it from the credential
    return data, call


def _general(st: ServerState, proc: int, args: bytes, auth: AuthSys | None, port: int) -> bytes:
    """The general path's whole reply (as a worker gives it: a handle not cached is opened)."""
    req = Request(st, Caller(auth, "127.0.0.1", port, "tcp"))
    if proc == GETATTR:
        res = ops_attr.getattr3(req, FhArgs(args_fh(args)))
        return success_header(XID) + res.encode()
    enc = Encoder()
    fh = args_fh(args)
    enc.opaque(fh, 64)
    (n,) = struct.unpack_from(">I", args, 4 + len(fh) + (-len(fh) & 3))
    name = args[8 + len(fh) + (-len(fh) & 3) :][:n]
    lres = ops_lookup.lookup3(req, DirOpArgs(fh, name.decode("utf-8", "surrogateescape")))
    return success_header(XID) + lres.encode()


def args_fh(args: bytes) -> bytes:
    (n,) = struct.unpack_from(">I", args)
    return args[4 : 4 + n]


def fh_args(fh: bytes) -> bytes:
    enc = Encoder()
    enc.opaque(fh, 64)
    return enc.getvalue()


def lookup_args(fh: bytes, name: bytes) -> bytes:
    enc = Encoder()
    enc.opaque(fh, 64)
    enc.opaque(name, 4096)
    return enc.getvalue()


def both(
    st: ServerState, proc: int, args: bytes, auth: AuthSys | None = ROOT, port: int = 700
) -> tuple[bytes | None, bytes]:
    shortcuts = Shortcuts(st.resolver, st.access)
    data, call = _call(proc, args, auth, port)
    fast = (shortcuts.getattr3 if proc == GETATTR else shortcuts.lookup3)(data, call)
    return fast, _general(st, proc, args, auth, port)


def status(reply: bytes) -> Nfsstat3:
    return Nfsstat3(struct.unpack_from(">I", reply, 24)[0])


def cached(st: ServerState, path: Path) -> bytes:
    fh = handle_of(st, path)
    st.resolver.open_handle(fh).close()
    return fh


def test_getattr_of_cached_handles_is_the_general_reply(state: ServerState, export: Path) -> None:
    for path in (export, export / "f", export / "d", export / "link", export / "private"):
        fast, general = both(state, GETATTR, fh_args(cached(state, path)))
        assert fast is not None, path
        assert fast == general and status(general) == Nfsstat3.OK
    # Any caller: GETATTR needs no identity.
    fast, general = both(state, GETATTR, fh_args(cached(state, export / "f")), USER)
    assert fast == general
    fast, general = both(state, GETATTR, fh_args(cached(state, export / "f")), None)
    assert fast == general


def test_getattr_leaves_every_other_case_to_the_general_path(
    state: ServerState, export: Path
) -> None:
    # Not cached: the general path on the loop hands it to a worker, which opens it.
    fh = handle_of(state, export / "f")
    fast, general = both(state, GETATTR, fh_args(fh))
    assert fast is None and status(general) == Nfsstat3.OK
    assert fh in state.resolver.cache
    # The secure option: a request from an unprivileged port.
    fast, general = both(state, GETATTR, fh_args(fh), port=1024)
    assert fast is None and status(general) == Nfsstat3.PERM
    # Removed since it was cached: STALE, and the entry leaves the cache.
    os.unlink(export / "f")
    data, call = _call(GETATTR, fh_args(fh), ROOT, 700)
    assert Shortcuts(state.resolver, state.access).getattr3(data, call) is None
    assert fh not in state.resolver.cache
    # Malformed arguments: GARBAGE_ARGS is the dispatcher's, from the general decoder.
    for args in (fh_args(fh)[:-1], fh_args(fh) + b"\0\0\0\0", struct.pack(">I", 65) + bytes(68)):
        data, call = _call(GETATTR, args, ROOT, 700)
        assert Shortcuts(state.resolver, state.access).getattr3(data, call) is None


def test_getattr_for_a_client_the_export_refuses(export: Path) -> None:
    with nfs_state(export, "rw,no_root_squash") as st:
        st.access.options = lambda export, ip: None  # type: ignore[method-assign]
        fh = cached(st, export / "f")
        data, call = _call(GETATTR, fh_args(fh), ROOT, 700)
        assert Shortcuts(st.resolver, st.access).getattr3(data, call) is None
        assert status(_general(st, GETATTR, fh_args(fh), ROOT, 700)) == Nfsstat3.ACCES


@pytest.mark.parametrize(
    "auth", [ROOT, USER, NOBODY_IN, None], ids=["root", "user", "id-1", "none"]
)
def test_lookup_of_cached_names_is_the_general_reply(
    state: ServerState, export: Path, auth: AuthSys | None
) -> None:
    root_fh = cached(state, export)
    for name in (b"f", b"d", b"link", b"private"):
        general = _general(state, LOOKUP, lookup_args(root_fh, name), auth, 700)
        assert status(general) == Nfsstat3.OK  # the child is in the cache now
        fast, general = both(state, LOOKUP, lookup_args(root_fh, name), auth)
        assert fast is not None and fast == general, name


def test_a_negative_lookup_is_the_general_reply(state: ServerState, export: Path) -> None:
    root_fh = cached(state, export)
    for name in (b"nope", "caf\u00e9".encode(), b"\xff\xfe"):
        fast, general = both(state, LOOKUP, lookup_args(root_fh, name))
        assert fast is not None and fast == general and status(general) == Nfsstat3.NOENT


def test_lookup_as_the_caller(state: ServerState, export: Path) -> None:
    private = cached(state, export / "private")
    _general(state, LOOKUP, lookup_args(private, b"p"), ROOT, 700)  # p is cached now
    # root is squashed to nobody, and so is the user: neither may search a 0700 directory.
    for auth in (ROOT, USER):
        fast, general = both(state, LOOKUP, lookup_args(private, b"p"), auth)
        assert fast is None and status(general) == Nfsstat3.ACCES
        fast, general = both(state, LOOKUP, lookup_args(private, b"nope"), auth)
        assert fast is None and status(general) == Nfsstat3.ACCES
    with nfs_state(export, "rw,no_root_squash") as st:
        private = cached(st, export / "private")
        _general(st, LOOKUP, lookup_args(private, b"p"), ROOT, 700)
        fast, general = both(st, LOOKUP, lookup_args(private, b"p"), ROOT)
        assert fast is not None and fast == general and status(general) == Nfsstat3.OK


def test_lookup_leaves_every_other_case_to_the_general_path(
    state: ServerState, export: Path
) -> None:
    root_fh = cached(state, export)
    expected = {
        b"f": Nfsstat3.OK,  # not cached yet: the general path opens and caches it
        b".": Nfsstat3.OK,
        b"..": Nfsstat3.OK,  # the export root's parent is the root itself
        b"": Nfsstat3.ACCES,
        b"a/b": Nfsstat3.ACCES,
        b"a\0b": Nfsstat3.ACCES,
        b"x" * 256: Nfsstat3.NAMETOOLONG,
        b"f/": Nfsstat3.ACCES,
    }
    for name, want in expected.items():
        fast, general = both(state, LOOKUP, lookup_args(root_fh, name))
        assert fast is None and status(general) == want, name
    # ".." of a subdirectory is the cached export root, and still the general path's.
    fast, general = both(state, LOOKUP, lookup_args(cached(state, export / "d"), b".."))
    assert fast is None and status(general) == Nfsstat3.OK
    # A name of 255 bytes is legal: a negative lookup the shortcut answers.
    fast, general = both(state, LOOKUP, lookup_args(root_fh, b"x" * 255))
    assert fast == general and status(general) == Nfsstat3.NOENT
    # The "directory" is a file.
    f = cached(state, export / "f")
    fast, general = both(state, LOOKUP, lookup_args(f, b"x"))
    assert fast is None and status(general) == Nfsstat3.NOTDIR
    # From an unprivileged port.
    fast, general = both(state, LOOKUP, lookup_args(root_fh, b"f"), port=2049)
    assert fast is None and status(general) == Nfsstat3.PERM
    # Malformed arguments.
    args = lookup_args(root_fh, b"f")
    for bad in (args[:-1], args + b"\0\0\0\0"):
        data, call = _call(LOOKUP, bad, ROOT, 700)
        assert Shortcuts(state.resolver, state.access).lookup3(data, call) is None
