"""LOOKUP, CREATE and READ on the event loop (``cached_only`` requests): same answers as a worker's,
the same permission checks, and nothing done before handing a call to a worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nfs import ops_create, ops_io, ops_lookup
from floatlock.nfs.context import ServerState
from floatlock.nfs.proto import CreateMode, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_args import CreateArgs, ReadArgs
from floatlock.nfs.proto_attr import Sattr3
from floatlock.nfs.proto_res import CreateRes
from floatlock.nfs.proto_res_io import ReadRes
from floatlock.nfs.resolver import NotCached
from floatlock.rpc.message import AuthSys
from floatlock.xdr import Decoder
from tests.unit.nfsstate import ROOT, cached, handle_of, nfs_state, request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

USER = AuthSys(0, "client", 1000, 1000, ())


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, ServerState]]:
    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    (export / "f").write_bytes(b"12345")
    (export / "private").mkdir(mode=0o700)
    (export / "private" / "p").write_bytes(b"")
    with nfs_state(export) as st:
        yield export, st


def test_lookup_inline_needs_the_directory_cached(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = handle_of(st, export)
    with pytest.raises(NotCached):
        ops_lookup.lookup3(request(st), DirOpArgs(fh, "f"))
    st.resolver.open_handle(fh).close()
    res = ops_lookup.lookup3(request(st), DirOpArgs(fh, "f"))  # child opened inline
    assert res.status == Nfsstat3.OK
    assert res.fh == handle_of(st, export / "f")
    assert res.attr is not None and res.attr.size == 5
    assert res.fh in st.resolver.cache
    again = ops_lookup.lookup3(request(st), DirOpArgs(fh, "f"))  # child from the cache
    worker = ops_lookup.lookup3(request(st, inline=False), DirOpArgs(fh, "f"))
    assert again == worker
    assert ops_lookup.lookup3(request(st), DirOpArgs(fh, "nope")).status == Nfsstat3.NOENT


def test_lookup_inline_checks_as_the_caller(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = cached(st, export / "private")
    assert ops_lookup.lookup3(request(st, USER), DirOpArgs(fh, "p")).status == Nfsstat3.ACCES
    assert ops_lookup.lookup3(request(st), DirOpArgs(fh, "p")).status == Nfsstat3.OK


def _create(
    name: str,
    how: CreateMode = CreateMode.UNCHECKED,
    *,
    mode: int | None = None,
    size: int | None = None,
) -> CreateArgs:
    return CreateArgs(DirOpArgs(b"", name), how, Sattr3(mode=mode, size=size))


def test_create_existing_inline(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = cached(st, export)

    def run(a: CreateArgs, user: AuthSys = ROOT, *, inline: bool = True) -> CreateRes:
        a = CreateArgs(DirOpArgs(fh, a.where.name), a.mode, a.attrs, a.verf)
        return ops_create.create3(request(st, user, inline=inline), a)

    res = run(_create("f", mode=0o600))
    assert res.status == Nfsstat3.OK and res.fh == handle_of(st, export / "f")
    assert res.attr is not None and res.attr.size == 5 and res.attr.mode == 0o644
    assert res == run(_create("f", mode=0o600), inline=False)
    assert run(_create("f", size=5)).status == Nfsstat3.OK  # unchanged size: inline
    assert run(_create("f", CreateMode.GUARDED)).status == Nfsstat3.EXIST
    assert run(_create("d")).status == Nfsstat3.EXIST  # not a regular file
    assert run(_create("f", CreateMode.EXCLUSIVE)).status == Nfsstat3.EXIST
    with pytest.raises(NotCached):  # a truncate: in a worker
        run(_create("f", size=0))
    assert (export / "f").stat().st_size == 5
    with pytest.raises(NotCached):  # a new file: in a worker, nothing created here
        run(_create("new"))
    assert not (export / "new").exists()
    assert run(_create("new"), inline=False).status == Nfsstat3.OK


def test_create_inline_permission_and_read_only(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = cached(st, export / "private")
    a = CreateArgs(DirOpArgs(fh, "p"), CreateMode.UNCHECKED, Sattr3())
    assert ops_create.create3(request(st, USER), a).status == Nfsstat3.ACCES
    assert ops_create.create3(request(st), a).status == Nfsstat3.OK
    with nfs_state(export, "ro,no_root_squash") as ro_state:
        rfh = cached(ro_state, export)
        ra = CreateArgs(DirOpArgs(rfh, "f"), CreateMode.UNCHECKED, Sattr3())
        assert ops_create.create3(request(ro_state), ra).status == Nfsstat3.ROFS


def test_read_inline_needs_a_cached_descriptor(state: tuple[Path, ServerState]) -> None:
    export, st = state
    fh = cached(st, export / "f")
    a = ReadArgs(fh, 1, 100)
    with pytest.raises(NotCached):  # no READ descriptor yet: a worker opens it
        ops_io.read3(request(st), a)
    worker = ops_io.read3(request(st, inline=False), a)
    assert worker.status == Nfsstat3.OK and worker.data == b"2345" and worker.eof
    res = ops_io.read3(request(st), a)  # descriptor cached, data in the page cache
    assert res == worker
    assert ReadRes.decode(Decoder(res.encode())) == worker
    assert ops_io.read3(request(st), ReadArgs(fh, 0, 2)).data == b"12"


def test_read_inline_checks_as_the_caller(state: tuple[Path, ServerState]) -> None:
    export, st = state
    (export / "f").chmod(0o600)
    fh = cached(st, export / "f")
    assert ops_io.read3(request(st, inline=False), ReadArgs(fh, 0, 5)).status == Nfsstat3.OK
    assert ops_io.read3(request(st, USER), ReadArgs(fh, 0, 5)).status == Nfsstat3.ACCES
