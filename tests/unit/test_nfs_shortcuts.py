"""The GETATTR, LOOKUP and ACCESS shortcuts (nfs/shortcuts.py) against the general path.

Every case runs the shortcut first, then the general path's operation (ops_attr.getattr3,
ops_lookup.lookup3, ops_attr.access3) as a worker runs it, which is what the dispatcher ends
with when the shortcut returns None. Where the shortcut answers, its reply must be byte for
byte the general path's; where it must not (every error but a negative LOOKUP, every handle not
cached), it must return None, and the general path's answer is checked as well, so each case is
the one it claims to be. After every call no cache entry may still be in use. The last tests go
through the real NfsServer and dispatcher with the shortcuts on and off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from floatlock.address import ServerAddress
from floatlock.nfs import ops_attr, ops_lookup
from floatlock.nfs.context import ServerState
from floatlock.nfs.exports import parse_exports
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_args import AccessArgs, FhArgs
from floatlock.nfs.service import NfsServer
from floatlock.nfs.shortcuts import Shortcuts
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AuthSys, Call, encode_call, parse_call, success_header
from floatlock.xdr import Encoder
from tests.unit.nfsstate import KEY, ROOT, cached, handle_of, nfs_state, request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

USER = AuthSys(0, "client", 1000, 1000, (1000,))
NOBODY_IN = AuthSys(0, "client", 0xFFFFFFFF, 1000, ())  # an id no account has
GETATTR, LOOKUP, ACCESS = 1, 3, 4
EVERY_BIT = 0x3F  # READ, LOOKUP, MODIFY, EXTEND, DELETE, EXECUTE
XID = 0x1234


@pytest.fixture
def export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    (export / "d" / "e").write_bytes(b"")
    (export / "f").write_bytes(b"12345")
    (export / "private").mkdir(mode=0o700)
    (export / "private" / "p").write_bytes(b"")
    (export / "own").mkdir(mode=0o700)
    (export / "own" / "x").write_bytes(b"")
    os.chown(export / "own", 1000, 1000)
    os.symlink("f", export / "link")
    os.symlink("d", export / "dlink")
    os.close(os.open(os.fsencode(export) + b"/\xff\xfe", os.O_CREAT | os.O_WRONLY))
    return export


@pytest.fixture
def state(export: Path) -> Iterator[ServerState]:
    with nfs_state(export, "rw,root_squash,secure") as st:
        yield st


def _encoded(args: FhArgs | DirOpArgs | AccessArgs) -> bytes:
    enc = Encoder()
    args.encode(enc)
    return enc.getvalue()


def fh_args(fh: bytes) -> bytes:
    return _encoded(FhArgs(fh))


def access_args(fh: bytes, bits: int) -> bytes:
    return _encoded(AccessArgs(fh, bits))


def lookup_args(fh: bytes, name: bytes) -> bytes:
    # surrogateescape: Encoder.string gives back the very bytes, UTF-8 or not.
    return _encoded(DirOpArgs(fh, name.decode("utf-8", "surrogateescape")))


def _call(proc: int, args: bytes, auth: AuthSys | None, port: int) -> tuple[bytes, Call]:
    data = encode_call(XID, NFS_PROGRAM, NFS_V3, proc, args, auth)
    call = parse_call(data, ("127.0.0.1", port), transport="tcp")
    call.auth = auth  # as the dispatcher sets it from the credential
    return data, call


def in_use(st: ServerState) -> list[bytes]:
    return [e.fh for e in st.resolver.cache._entries.values() if e.users]


def both(
    st: ServerState,
    fh: bytes,
    name: bytes | None = None,
    auth: AuthSys | None = ROOT,
    port: int = 700,
    access: int | None = None,
) -> tuple[bytes | None, bytes]:
    """(the shortcut's reply or None, the general path's reply) of GETATTR of ``fh``; with
    ``name``, LOOKUP of ``name`` in ``fh``; with ``access``, ACCESS of those bits of ``fh``."""
    shortcuts = Shortcuts(st.resolver, st.access)
    if access is not None:
        data, call = _call(ACCESS, access_args(fh, access), auth, port)
        fast = shortcuts.access3(data, call)
    elif name is None:
        data, call = _call(GETATTR, fh_args(fh), auth, port)
        fast = shortcuts.getattr3(data, call)
    else:
        data, call = _call(LOOKUP, lookup_args(fh, name), auth, port)
        fast = shortcuts.lookup3(data, call)
    assert in_use(st) == []
    req = request(st, auth, inline=False, port=port)
    if access is not None:
        general = ops_attr.access3(req, AccessArgs(fh, access)).encode()
    elif name is None:
        general = ops_attr.getattr3(req, FhArgs(fh)).encode()
    else:
        text = name.decode("utf-8", "surrogateescape")
        general = ops_lookup.lookup3(req, DirOpArgs(fh, text)).encode()
    assert in_use(st) == []
    return fast, success_header(XID) + general


def status(reply: bytes) -> Nfsstat3:
    return Nfsstat3(struct.unpack_from(">I", reply, 24)[0])


def agree(st: ServerState, fh: bytes, name: bytes | None = None, **kw: object) -> Nfsstat3:
    """The shortcut answers, with the general path's very bytes; their status."""
    fast, general = both(st, fh, name, **kw)  # type: ignore[arg-type]
    assert fast is not None, (fh, name, kw)
    assert fast == general
    return status(general)


def declines(st: ServerState, fh: bytes, name: bytes | None = None, **kw: object) -> Nfsstat3:
    """The shortcut leaves the call to the general path; the general path's status."""
    fast, general = both(st, fh, name, **kw)  # type: ignore[arg-type]
    assert fast is None, (fh, name, kw)
    return status(general)


def looked_up(st: ServerState, d: bytes, name: bytes) -> None:
    """``name`` in ``d`` looked up once as root (its file now cached, when root may)."""
    both(st, d, name)


# -- GETATTR -------------------------------------------------------------------------------


def test_getattr_of_cached_handles_is_the_general_reply(state: ServerState, export: Path) -> None:
    for path in (export, export / "f", export / "d", export / "link", export / "private"):
        fh = cached(state, path)
        # Any caller, even AUTH_NONE: GETATTR needs no identity.
        for auth in (ROOT, USER, None):
            assert agree(state, fh, auth=auth) == Nfsstat3.OK


def test_getattr_leaves_every_other_case_to_the_general_path(
    state: ServerState, export: Path
) -> None:
    # Not cached: the general path on the loop hands it to a worker, which opens it.
    fh = handle_of(state, export / "f")
    assert declines(state, fh) == Nfsstat3.OK
    assert fh in state.resolver.cache
    assert agree(state, fh) == Nfsstat3.OK
    # The secure option: a request from an unprivileged port.
    assert declines(state, fh, port=1024) == Nfsstat3.PERM
    # Malformed arguments: GARBAGE_ARGS is the dispatcher's, from the general decoder.
    for args in (fh_args(fh)[:-1], fh_args(fh) + bytes(4), struct.pack(">I", 65) + bytes(68)):
        data, call = _call(GETATTR, args, ROOT, 700)
        assert Shortcuts(state.resolver, state.access).getattr3(data, call) is None
    # Removed since it was cached: STALE, and the entry leaves the cache.
    os.unlink(export / "f")
    assert declines(state, fh) == Nfsstat3.STALE
    assert fh not in state.resolver.cache


def test_getattr_of_a_directory_moved_out_or_removed(state: ServerState, export: Path) -> None:
    d, private = cached(state, export / "d"), cached(state, export / "private")
    os.rename(export / "d", export.parent / "outside")
    assert declines(state, d) == Nfsstat3.STALE
    assert declines(state, d, b"e") == Nfsstat3.STALE
    os.remove(export / "private" / "p")
    os.rmdir(export / "private")
    assert declines(state, private) == Nfsstat3.STALE
    assert declines(state, private, b"p") == Nfsstat3.STALE


def test_the_client_list_decides_as_for_the_general_path(export: Path) -> None:
    clients = "198.18.0.0/15(rw) 127.0.0.1(rw,insecure,no_root_squash)"
    with nfs_state(export, clients=clients) as st:
        root = cached(st, export)
        looked_up(st, root, b"f")
        assert agree(st, root, port=40000) == Nfsstat3.OK  # insecure: any port
        assert agree(st, root, b"f", port=40000) == Nfsstat3.OK
    with nfs_state(export, clients="198.18.0.0/15(rw,no_root_squash)") as st:
        root = cached(st, export)
        assert declines(st, root) == Nfsstat3.ACCES
        assert declines(st, root, b"nope") == Nfsstat3.ACCES


# -- LOOKUP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth", [ROOT, USER, NOBODY_IN, None], ids=["root", "user", "id-1", "none"]
)
def test_lookup_of_cached_names_is_the_general_reply(
    state: ServerState, export: Path, auth: AuthSys | None
) -> None:
    root = cached(state, export)
    d = cached(state, export / "d")
    for directory, name in ((root, b"f"), (root, b"d"), (root, b"link"), (root, b"private")):
        looked_up(state, directory, name)
        assert agree(state, directory, name, auth=auth) == Nfsstat3.OK
    looked_up(state, d, b"e")
    assert agree(state, d, b"e", auth=auth) == Nfsstat3.OK


def test_lookup_of_odd_names(state: ServerState, export: Path) -> None:
    root = cached(state, export)
    # Not UTF-8: the bytes as sent, found as the general path finds them.
    looked_up(state, root, b"\xff\xfe")
    assert agree(state, root, b"\xff\xfe") == Nfsstat3.OK
    # A symbolic link to a directory is not a directory to look up in (no following).
    dlink = cached(state, export / "dlink")
    assert declines(state, dlink, b"e") == Nfsstat3.NOTDIR


def test_a_negative_lookup_is_the_general_reply(state: ServerState, export: Path) -> None:
    root = cached(state, export)
    for name in (b"nope", "caf\u00e9".encode(), b"\xff\xfd", b"x" * 255):
        assert agree(state, root, name) == Nfsstat3.NOENT


def test_lookup_as_the_caller(state: ServerState, export: Path) -> None:
    private = cached(state, export / "private")
    cached(state, export / "private" / "p")  # cached: only the search as the caller refuses
    # root is squashed to nobody, and so is the user: neither may search a 0700 directory.
    for auth in (ROOT, USER, None):
        assert declines(state, private, b"p", auth=auth) == Nfsstat3.ACCES
        assert declines(state, private, b"nope", auth=auth) == Nfsstat3.ACCES
    with nfs_state(export, "rw,no_root_squash") as st:
        private = cached(st, export / "private")
        looked_up(st, private, b"p")
        assert agree(st, private, b"p") == Nfsstat3.OK
        assert declines(st, private, b"p", auth=None) == Nfsstat3.ACCES  # anonymous


def test_lookup_as_the_squashed_identity(export: Path) -> None:
    # all_squash: uid 1000, the owner, is nobody too.
    with nfs_state(export, "rw,all_squash") as st:
        own = cached(st, export / "own")
        cached(st, export / "own" / "x")
        for name in (b"x", b"nope"):
            assert declines(st, own, name, auth=USER) == Nfsstat3.ACCES
    # anonuid: squashed root and anonymous callers become the owner, who may search.
    with nfs_state(export, "rw,root_squash,anonuid=1000,anongid=1000") as st:
        own = cached(st, export / "own")
        cached(st, export / "own" / "x")
        for auth in (ROOT, None, USER):
            assert agree(st, own, b"x", auth=auth) == Nfsstat3.OK
            assert agree(st, own, b"nope", auth=auth) == Nfsstat3.NOENT


def test_lookup_leaves_every_other_case_to_the_general_path(
    state: ServerState, export: Path
) -> None:
    # The directory is not cached (the general path opens it).
    assert declines(state, handle_of(state, export / "d"), b"nope") == Nfsstat3.NOENT
    root = cached(state, export)
    expected = {
        b"f": Nfsstat3.OK,  # not cached yet: the general path opens and caches it
        b".": Nfsstat3.OK,
        b"..": Nfsstat3.OK,  # the export root's parent is the root itself
        b"": Nfsstat3.ACCES,
        b"a/b": Nfsstat3.ACCES,
        b"f/": Nfsstat3.ACCES,
        b"a\0b": Nfsstat3.ACCES,
        b"x" * 256: Nfsstat3.NAMETOOLONG,
        "\u00e9".encode() * 128: Nfsstat3.NAMETOOLONG,
    }
    for name, want in expected.items():
        assert declines(state, root, name) == want, name
    # ".." of a subdirectory is the cached export root, and still the general path's.
    assert declines(state, cached(state, export / "d"), b"..") == Nfsstat3.OK
    # The "directory" is a file.
    assert declines(state, cached(state, export / "f"), b"x") == Nfsstat3.NOTDIR
    # From an unprivileged port.
    assert declines(state, root, b"f", port=2049) == Nfsstat3.PERM
    # Malformed arguments.
    args = lookup_args(root, b"f")
    for bad in (args[:-1], args + bytes(4)):
        data, call = _call(LOOKUP, bad, ROOT, 700)
        assert Shortcuts(state.resolver, state.access).lookup3(data, call) is None


def test_lookup_of_a_mount_point_is_refused(state: ServerState, export: Path) -> None:
    (export / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(export / "mnt")], check=True)
    try:
        # (The shortcut's st_dev test is a backstop: the mount's root has no cache entry under
        # this export, so it declines for that already; this pins the outcome, not the test.)
        root = cached(state, export)
        assert declines(state, root, b"mnt") == Nfsstat3.ACCES
    finally:
        subprocess.run(["umount", str(export / "mnt")], check=True)


# -- ACCESS --------------------------------------------------------------------------------


def _access(st: ServerState, fh: bytes, bits: int, **kw: object) -> int:
    """The shortcut's ACCESS answer, which must be the general path's: the bits granted."""
    fast, general = both(st, fh, access=bits, **kw)  # type: ignore[arg-type]
    assert fast is not None and fast == general and status(general) == Nfsstat3.OK
    return int(struct.unpack_from(">I", general, len(general) - 4)[0])


def test_access_is_the_general_reply(state: ServerState, export: Path) -> None:
    os.chmod(export / "f", 0o640)
    os.chown(export / "f", 1000, 2000)
    paths = [export, export / "f", export / "d", export / "private", export / "own"]
    for path in paths:
        fh = cached(state, path)
        for auth in (ROOT, USER, NOBODY_IN, None):
            for bits in (EVERY_BIT, 0, 0x1, 0x2 | 0x4, 0x20, 0xFFFFFFFF):
                _access(state, fh, bits, auth=auth)
    f = cached(state, export / "f")
    # The owner may read and write, not execute; root is squashed to nobody: nothing.
    assert _access(state, f, EVERY_BIT, auth=USER) == 0x1 | 0x4 | 0x8
    assert _access(state, f, EVERY_BIT, auth=ROOT) == 0
    assert _access(state, cached(state, export / "own"), EVERY_BIT, auth=USER) == 0x1F


def test_access_on_a_read_only_export_and_as_the_squashed_identity(export: Path) -> None:
    with nfs_state(export, "ro,no_root_squash") as st:
        d = cached(st, export / "d")
        assert _access(st, d, EVERY_BIT) == 0x1 | 0x2  # no bit that writes
    with nfs_state(export, "rw,all_squash,anonuid=1000,anongid=1000") as st:
        own = cached(st, export / "own")
        for auth in (ROOT, NOBODY_IN, None):
            assert _access(st, own, EVERY_BIT, auth=auth) == 0x1F


def test_access_leaves_every_other_case_to_the_general_path(
    state: ServerState, export: Path
) -> None:
    fh = handle_of(state, export / "f")
    fast, general = both(state, fh, access=EVERY_BIT)  # not cached
    assert fast is None and status(general) == Nfsstat3.OK
    fast, general = both(state, fh, access=EVERY_BIT, port=1024)  # insecure port
    assert fast is None and status(general) == Nfsstat3.PERM
    for bad in (fh_args(fh), fh_args(fh) + bytes(3), fh_args(fh) + bytes(8)):
        data, call = _call(ACCESS, bad, ROOT, 700)
        assert Shortcuts(state.resolver, state.access).access3(data, call) is None
    os.unlink(export / "f")
    fast, general = both(state, fh, access=EVERY_BIT)
    assert fast is None and status(general) == Nfsstat3.STALE


def test_access_bits_by_mode(state: ServerState, export: Path) -> None:
    """What the kernel grants "other" (uid 1000 is neither owner nor in the group), bit by
    bit: pinned here, since the general path and the shortcut share granted_access."""
    cases = {
        ("file", 0o755): 0x1 | 0x20,  # READ, EXECUTE
        ("file", 0o757): 0x1 | 0x4 | 0x8 | 0x20,  # never DELETE on a file
        ("file", 0o700): 0,
        ("dir", 0o733): 0x2 | 0x4 | 0x8 | 0x10,  # LOOKUP, MODIFY, EXTEND, DELETE; no READ
        ("dir", 0o755): 0x1 | 0x2,  # never EXECUTE on a directory
    }
    for (kind, mode), want in cases.items():
        path = export / f"{kind}{mode:o}"
        if kind == "dir":
            path.mkdir()
        else:
            path.write_bytes(b"")
        os.chown(path, 0, 0)
        os.chmod(path, mode)
        fh = cached(state, path)
        assert _access(state, fh, 0xFFFFFFFF, auth=USER) == want, (kind, oct(mode))
        assert _access(state, fh, 0x1, auth=USER) == want & 0x1


def test_access_of_other_handles(state: ServerState, export: Path) -> None:
    # A symbolic link (its own handle): the general path's answer, whatever it is.
    link = cached(state, export / "link")
    for auth in (ROOT, USER, None):
        _access(state, link, EVERY_BIT, auth=auth)
    # Anonymous on a private directory: nothing.
    assert _access(state, cached(state, export / "private"), EVERY_BIT, auth=None) == 0
    # A directory moved out of the export since it was cached.
    d = cached(state, export / "d")
    os.rename(export / "d", export.parent / "outside")
    fast, general = both(state, d, access=EVERY_BIT)
    assert fast is None and status(general) == Nfsstat3.STALE


def test_a_failing_export_decision_leaves_nothing_held(state: ServerState, export: Path) -> None:
    fh = cached(state, export / "f")

    def options(*_args: object) -> None:
        raise RuntimeError("export decision failed")

    state.access.options = options  # type: ignore[method-assign]
    shortcuts = Shortcuts(state.resolver, state.access)
    for proc, args, run in (
        (GETATTR, fh_args(fh), shortcuts.getattr3),
        (ACCESS, access_args(fh, 1), shortcuts.access3),
        (LOOKUP, lookup_args(cached(state, export), b"f"), shortcuts.lookup3),
    ):
        data, call = _call(proc, args, ROOT, 700)
        with pytest.raises(RuntimeError):  # the dispatcher's SYSTEM_ERR
            run(data, call)
        assert in_use(state) == []


# -- through the server and the dispatcher -------------------------------------------------


def _counted(
    shortcut: Callable[[bytes, Call], bytes | None], hits: list[int]
) -> Callable[..., bytes | None]:
    def counting(data: bytes, call: Call) -> bytes | None:
        reply = shortcut(data, call)
        hits.append(reply is not None)
        return reply

    return counting


def test_the_server_answers_the_same_with_and_without_shortcuts(export: Path) -> None:
    """The real NfsServer's procedures in two dispatchers, one without shortcuts: the same
    reply to every call and the same statistics."""
    srv = NfsServer(
        parse_exports(f"{export} *(rw,root_squash,anonuid=1000,anongid=1000)"),
        KEY,
        resolve_names=False,
        workers=1,
    )
    hits: list[int] = []
    on, off = Dispatcher(), Dispatcher()
    procs = srv.nfs_procedures()
    on.register(
        NFS_PROGRAM,
        NFS_V3,
        {
            k: dataclasses.replace(p, shortcut=_counted(p.shortcut, hits)) if p.shortcut else p
            for k, p in procs.items()
        },
    )
    off.register(
        NFS_PROGRAM, NFS_V3, {k: dataclasses.replace(p, shortcut=None) for k, p in procs.items()}
    )
    server = ServerAddress("127.0.0.1")

    async def reply(d: Dispatcher, data: bytes, port: int) -> object:
        r = d.dispatch(data, ("127.0.0.1", port), server, "tcp")
        return r if r is None or isinstance(r, bytes | tuple) else await r

    async def main() -> None:
        root = handle_of(srv.state, export)
        own = handle_of(srv.state, export / "own")
        cases = [
            (GETATTR, fh_args(root)),
            (GETATTR, fh_args(own)),
            (LOOKUP, lookup_args(root, b"own")),
            (LOOKUP, lookup_args(own, b"x")),
            (LOOKUP, lookup_args(own, b"nope")),
            (LOOKUP, lookup_args(root, b"f")),
            (LOOKUP, lookup_args(root, b"..")),
            (LOOKUP, lookup_args(root, b"f") + bytes(4)),
            (ACCESS, access_args(root, EVERY_BIT)),
            (ACCESS, access_args(own, EVERY_BIT)),
            (ACCESS, access_args(own, EVERY_BIT) + bytes(4)),
        ]
        for _ in range(3):
            for auth in (ROOT, USER, None):
                for port in (700, 4000):
                    for proc, args in cases:
                        data = encode_call(7, NFS_PROGRAM, NFS_V3, proc, args, auth)
                        assert await reply(off, data, port) == await reply(on, data, port)

    try:
        asyncio.run(main())
        # (Before close, which empties the cache.)
        assert in_use(srv.state) == []
    finally:
        srv.close()
    assert on.stats.as_dict() == off.stats.as_dict()
    assert sum(hits) > len(hits) // 4  # the shortcuts did answer much of it


def test_no_shortcut_without_inline_metadata(export: Path) -> None:
    for inline in (True, False):
        srv = NfsServer(
            parse_exports(f"{export} *(rw)"),
            KEY,
            resolve_names=False,
            workers=1,
            inline_metadata=inline,
        )
        try:
            procs = srv.nfs_procedures()
            shortcuts = {procs[p].name for p in procs if procs[p].shortcut is not None}
            assert shortcuts == ({"GETATTR", "LOOKUP", "ACCESS"} if inline else set())
            assert sorted(procs) == list(range(1, 22))  # every NFSv3 procedure but NULL
        finally:
            srv.close()
