"""statd's writer: batches collapse writes of one file, keep the order of one identity's
effects, fsync each directory once, and report failures to the jobs they concern."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from floatlock.address import ServerAddress
from floatlock.nsm.effects import (
    Callback,
    DeleteBackup,
    MoveToBackup,
    Notify,
    Record,
    WriteRecords,
    WriteState,
)
from floatlock.nsm.monitor import NODE
from floatlock.nsm.store import IdentityStore, StateDir
from floatlock.nsm.writer import StoreWriter

PRIV = bytes(range(16))
VS = ServerAddress("127.0.0.10")


def rec(mon_name: str, my_name: str = "n", priv: bytes = PRIV) -> Record:
    return Record(mon_name, my_name, Callback(100021, 4, 16), priv)


def writer(tmp: Path) -> tuple[StoreWriter, list[Path]]:
    synced: list[Path] = []
    sd = StateDir(tmp)
    for name in (NODE, VS):
        sd.identity(name).ensure()
    return StoreWriter(sd, sync_dir=synced.append), synced


def test_same_file_collapses_to_the_last_write_and_each_directory_is_synced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, synced = writer(tmp_path)
    writes: list[tuple[str, int]] = []
    real = IdentityStore.write_records

    def counting(
        self: IdentityStore, mon_name: str, records: tuple[Record, ...], dirs: set[Path] | None
    ) -> None:
        writes.append((mon_name, len(records)))
        real(self, mon_name, records, dirs)

    monkeypatch.setattr(IdentityStore, "write_records", counting)
    a1, a2, b = rec("a", "n1"), rec("a", "n2"), rec("b")
    errors = w.write_batch(
        [
            [WriteRecords(NODE, "a", (a1,))],
            [WriteRecords(NODE, "b", (b,))],
            [WriteRecords(NODE, "a", (a1, a2))],
            [WriteRecords(VS, "a", (rec("a", str(VS)),)), WriteState(VS, 3)],
            [WriteRecords(NODE, "b", ())],  # SM_UNMON of b after its SM_MON
        ]
    )
    assert errors == [None] * 5
    assert sorted(writes) == [("a", 1), ("a", 2), ("b", 0)]  # a of NODE written once
    node, vs = StateDir(tmp_path).identity(NODE), StateDir(tmp_path).identity(VS)
    assert node.load().records == [a1, a2]
    assert vs.read_state() == 3 and len(vs.load().records) == 1
    assert sorted(synced) == sorted([node.sm, vs.sm, vs.path])  # one fsync per directory
    assert (w.batches, w.jobs, w.dir_syncs) == (1, 5, 3)


def test_move_to_backup_keeps_the_order_of_the_identity(tmp_path: Path) -> None:
    w, _ = writer(tmp_path)
    old, new = rec("a", priv=bytes(16)), rec("a", priv=bytes([1]) * 16)
    assert w.write_batch(
        [
            [WriteRecords(NODE, "a", (old,))],
            [WriteState(NODE, 3), MoveToBackup(NODE)],
            [WriteRecords(NODE, "a", (new,))],
        ]
    ) == [None, None, None]
    node = StateDir(tmp_path).identity(NODE)
    assert node.load_backup().records == [old]  # written before the move, moved
    assert node.load().records == [new]  # written after it
    assert w.write_batch([[DeleteBackup(NODE, "a")], [MoveToBackup(NODE)]]) == [None, None]
    assert node.load_backup().records == [new] and node.load().records == []


def test_a_failed_write_fails_the_jobs_that_wrote_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = writer(tmp_path)
    real = IdentityStore.write_records

    def broken(
        self: IdentityStore, mon_name: str, records: tuple[Record, ...], dirs: set[Path] | None
    ) -> None:
        if mon_name == "bad":
            raise OSError("disk full")
        real(self, mon_name, records, dirs)

    monkeypatch.setattr(IdentityStore, "write_records", broken)
    errors = w.write_batch(
        [
            [WriteRecords(NODE, "bad", (rec("bad"),))],
            [WriteRecords(NODE, "ok", (rec("ok"),))],
            [WriteRecords(NODE, "bad", (rec("bad"), rec("bad", "m")))],
        ]
    )
    assert [type(e) for e in errors] == [OSError, type(None), OSError]
    assert [r.mon_name for r in StateDir(tmp_path).identity(NODE).load().records] == ["ok"]


def test_a_failed_directory_sync_fails_the_jobs_of_that_directory(tmp_path: Path) -> None:
    sd = StateDir(tmp_path)
    for name in (NODE, VS):
        sd.identity(name).ensure()
    bad = sd.identity(VS).sm

    def sync(d: Path) -> None:
        if d == bad:
            raise OSError("EIO")

    w = StoreWriter(sd, sync_dir=sync)
    errors = w.write_batch(
        [[WriteRecords(NODE, "a", (rec("a"),))], [WriteRecords(VS, "a", (rec("a", str(VS)),))]]
    )
    assert errors[0] is None and isinstance(errors[1], OSError)


def test_jobs_complete_in_order_from_the_thread_and_close_drains(tmp_path: Path) -> None:
    async def main() -> None:
        w, _ = writer(tmp_path)
        futs = [w.submit([WriteRecords(NODE, f"c{i}", (rec(f"c{i}"),))]) for i in range(50)]
        assert w.pending_records(NODE, "c49") is futs[-1]
        assert w.last() is futs[-1]
        done: list[int] = []

        def note(i: int) -> Callable[[asyncio.Future[None]], None]:
            return lambda _f: done.append(i)

        for i, f in enumerate(futs):
            f.add_done_callback(note(i))
        await w.close()  # every queued job is written first
        await asyncio.sleep(0)
        assert all(f.done() and f.exception() is None for f in futs)
        assert done == list(range(50))
        assert w.jobs == 50 and w.batches <= 50
        assert len(StateDir(tmp_path).identity(NODE).load().records) == 50
        assert w.last() is None and w.pending_records(NODE, "c49") is None
        # A job after close starts a new thread.
        await w.submit([WriteState(NODE, 5)])
        assert StateDir(tmp_path).identity(NODE).read_state() == 5
        await w.close()
        nothing = w.submit([Notify(NODE, "x", "y", 1)])  # no file effect: done at once
        assert nothing.done() and w.last() is None

    asyncio.run(main())
