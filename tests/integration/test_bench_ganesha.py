"""Smoke test of the NFS-Ganesha benchmark harness (bench/ganesha.py, nlm_calls, nfs_client).

Ganesha is only a benchmark peer, so this skips wherever it is not installed (CI included)
or when not root.  One Ganesha start (about 3 s, most of it the shortened grace period) is
shared by the module; every load run is bounded by a call count, and nothing asserts on
timing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ganesha import GaneshaServer, available, ganesha
from bench.loadgen import run_load
from bench.nfs_client import NfsClient, NfsError, Nfsstat3, RpcConn, StableHow
from bench.nlm_calls import (
    SlotLock,
    check_unlocked,
    lock_unlock_sequences,
    nlm_lock,
    nlm_test,
    nlm_unlock,
    verify_sequences,
)

from floatlock.nlm.proto import Nlm4Stat

REASON = available()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.timeout(180),
    pytest.mark.skipif(REASON is not None, reason=f"NFS-Ganesha: {REASON}"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (rpcload)"),
]

SLOTS = 4
HOSTNAME = "bench-smoke"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaneshaServer]:
    export = tmp_path_factory.mktemp("ganesha-export")
    with ganesha(export, start_timeout=60) as srv:
        yield srv


@pytest.fixture(autouse=True)
def in_namespace(server: GaneshaServer) -> Iterator[None]:
    """Each test's sockets and subprocesses live in Ganesha's network namespace."""
    with server.entered():
        yield


@pytest.fixture(scope="module")
def files(server: GaneshaServer) -> list[bytes]:
    with server.entered(), server.nfs_client() as nfs:
        root = nfs.mount(server.export_path())
        return [nfs.create(root, f"smoke{i}") for i in range(SLOTS)]


def test_ports_and_namespace(server: GaneshaServer) -> None:
    assert (server.ports.nfs, server.ports.mount, server.ports.nlm) == (2049, 20048, 32803)
    out = server.run_in_ns(["rpcinfo", "-p", "127.0.0.1"]).stdout
    assert "nlockmgr" in out
    assert (server.export_dir / ".floatlock-probe").exists()


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_nfs_lookup_create_write_read(server: GaneshaServer, proto: str) -> None:
    with server.nfs_client(proto) as nfs:
        root = nfs.mount(server.export_path())
        fh = nfs.create(root, f"io-{proto}")
        assert nfs.lookup(root, f"io-{proto}") == fh
        with pytest.raises(NfsError) as err:
            nfs.lookup(root, "no-such-file")
        assert err.value.status == Nfsstat3.NOENT
        assert nfs.write(fh, 0, b"x" * 8192, StableHow.FILE_SYNC) == 8192
        assert nfs.getattr(fh) == 8192
        got = nfs.read(fh, 4096, 8192)
        assert got.data == b"x" * 4096 and got.eof
    assert (server.export_dir / f"io-{proto}").read_bytes() == b"x" * 8192


def test_locks_conflict_between_owners(server: GaneshaServer, files: list[bytes]) -> None:
    a = SlotLock(files[0], 7, b"7@a", 0, 0)
    b = SlotLock(files[0], 8, b"8@b", 100, 1)
    with RpcConn(server.host, server.ports.nlm, "udp") as conn:
        assert nlm_lock(conn, a, hostname="a") == Nlm4Stat.GRANTED
        assert nlm_lock(conn, b, hostname="b") == Nlm4Stat.DENIED
        assert nlm_test(conn, b, hostname="b") == Nlm4Stat.DENIED
        assert check_unlocked(conn, [files[0]]) == [files[0]]
        assert nlm_unlock(conn, a, hostname="a") == Nlm4Stat.GRANTED
        assert nlm_test(conn, b, hostname="b") == Nlm4Stat.GRANTED
        assert check_unlocked(conn, files) == []


def test_sequences_are_granted(server: GaneshaServer, files: list[bytes]) -> None:
    seqs = lock_unlock_sequences(files, 4, hostname=HOSTNAME)
    assert len(seqs) == SLOTS and all(len(s) == 2 for s in seqs)
    assert verify_sequences(server.host, server.ports.nlm, seqs) == [0] * (2 * SLOTS)
    shared = lock_unlock_sequences(files[:1], 4, slots=SLOTS, hostname=HOSTNAME)
    assert verify_sequences(server.host, server.ports.nlm, shared) == [0] * (2 * SLOTS)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_rpcload_lock_unlock_pairs(server: GaneshaServer, files: list[bytes], proto: str) -> None:
    seqs = lock_unlock_sequences(files, 4, hostname=HOSTNAME)
    res = run_load(
        server.host, server.ports.nlm, proto, SLOTS, sequences=seqs, calls=400, warmup_calls=40
    )
    assert res.calls >= 400
    assert res.errors == 0
    assert res.sequences > 0
    with RpcConn(server.host, server.ports.nlm, "udp") as conn:
        assert check_unlocked(conn, files) == []


def _sees_local_changes(srv: GaneshaServer) -> tuple[bool, bool, bool]:
    """(GETATTR shows a size written beside Ganesha, LOOKUP misses a name removed beside it,
    LOOKUP finds a name created beside it), each asked right after Ganesha answered the
    same call before the change: what test_nfs_server's
    test_metadata_is_never_answered_from_a_cache asks of floatlock."""

    def found(nfs: NfsClient, root: bytes, name: str) -> bool:
        try:
            nfs.lookup(root, name)
        except NfsError as e:
            assert e.status == Nfsstat3.NOENT
            return False
        return True

    with srv.entered(), srv.nfs_client("tcp") as nfs:
        root = nfs.mount(srv.export_path())
        fh = nfs.create(root, "beside-size")
        assert nfs.getattr(fh) == 0
        (srv.export_dir / "beside-size").write_bytes(b"y" * 100)
        size_seen = nfs.getattr(fh) == 100
        nfs.create(root, "beside-gone")
        assert found(nfs, root, "beside-gone")
        (srv.export_dir / "beside-gone").unlink()
        removal_seen = not found(nfs, root, "beside-gone")
        assert not found(nfs, root, "beside-new")
        (srv.export_dir / "beside-new").touch()
        creation_seen = found(nfs, root, "beside-new")
    return size_seen, removal_seen, creation_seen


def test_shared_configuration_sees_changes_made_beside_it(
    server: GaneshaServer, tmp_path: Path
) -> None:
    """bench.nfs_io's two Ganesha columns: by default Ganesha answers GETATTR and LOOKUP of
    a name it knows from its metadata cache, blind to a change made beside it (a name it
    did not find it looks up again); ``shared=True`` (the configuration for a directory
    others change too, floatlock's semantics: ``Attr_Expiration_Time = 0`` alone) sees all
    three."""
    with ganesha(tmp_path, shared=True, netns=f"flgan-shared-{os.getpid()}") as shared:
        assert _sees_local_changes(shared) == (True, True, True)
    assert _sees_local_changes(server) == (False, False, True)
