"""On-disk store: nfs-utils record format, crash-safe writes, torn/foreign files skipped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from floatlock.address import ServerAddress
from floatlock.nsm.monitor import NODE, Callback, Record
from floatlock.nsm.store import IdentityStore, StateDir, format_record, parse_record

PRIV = bytes(range(16))
# Written by nfs-utils 2.6.2 rpc.statd for SM_MON(mon_name 127.0.0.2, my_name 198.18.0.9,
# 100021/4/16, priv 00..0f) from 127.0.0.1 (tests/interop re-checks this against the real one).
NFS_UTILS_LINE = (
    "0100007f 000186b5 00000004 00000010 000102030405060708090a0b0c0d0e0f 127.0.0.2 198.18.0.9\n"
)


@pytest.mark.skipif(sys.byteorder != "little", reason="golden line is from a little-endian host")
def test_record_line_is_nfs_utils_format() -> None:
    rec = Record("127.0.0.2", "198.18.0.9", Callback(100021, 4, 16), PRIV, "127.0.0.1")
    assert format_record(rec) == NFS_UTILS_LINE
    assert parse_record(NFS_UTILS_LINE) == rec


def test_hostile_names_round_trip_through_a_line() -> None:
    rec = Record("a b\n../x", "my name", Callback(-1, 1, 2), PRIV, "127.0.0.1")
    line = format_record(rec)
    assert line.count("\n") == 1 and len(line.split()) == 7
    assert parse_record(line) == rec


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0100007f 000186b5 00000004 00000010 00 a b\n",
        "0100007f 000186b5 00000004 zzzzzzzz 000102030405060708090a0b0c0d0e0f a b\n",
        "0100007f 000186b5 00000004 00000010 000102030405060708090a0b0c0d0e0f a/b c\n",
        "0100007f 000186b5 00000004 00000010 000102030405060708090a0b0c0d0e0f a\n",
    ],
)
def test_bad_lines_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_record(bad)


def test_write_load_delete(tmp_path: Path) -> None:
    st = IdentityStore(tmp_path / "node")
    st.ensure()
    recs = (
        Record("c1", "n1", Callback(100021, 4, 16), PRIV),
        Record("c1", "n2", Callback(100021, 4, 16), PRIV),
    )
    st.write_records("c1", recs)
    st.write_records("../evil", (Record("../evil", "n1", Callback(1, 2, 3), PRIV),))
    assert sorted(os.listdir(st.sm)) == ["%2E.%2Fevil", "c1"]
    assert list(tmp_path.rglob("evil")) == []
    assert st.load().records == [Record("../evil", "n1", Callback(1, 2, 3), PRIV), *recs]
    st.write_records("c1", ())
    assert os.listdir(st.sm) == ["%2E.%2Fevil"]
    st.write_records("never-there", ())  # deleting nothing is fine


def test_torn_and_foreign_files_are_reported_and_skipped(tmp_path: Path) -> None:
    st = IdentityStore(tmp_path)
    st.ensure()
    good = Record("c1", "n", Callback(100021, 4, 16), PRIV)
    st.write_records("c1", (good,))
    (st.sm / "c2").write_text(format_record(good)[:30])  # torn: cut mid-line
    (st.sm / "c3").write_bytes(b"\xff\xfe binary junk")
    (st.sm / "c4").write_text("hello world\n" + format_record(good))
    (st.sm / ".tmp.c5.123").write_text("half a write")
    res = st.load()
    assert res.records == [good, good]  # c1, and c4's good line
    assert len(res.skipped) == 3
    assert not (st.sm / ".tmp.c5.123").exists()  # leftover of a crash removed


def test_state_file_round_trip_and_torn(tmp_path: Path) -> None:
    st = IdentityStore(tmp_path)
    st.ensure()
    assert st.read_state() == 0
    st.write_state(7)
    assert st.state_file.read_bytes() == (7).to_bytes(4, sys.byteorder)  # as nfs-utils
    assert st.read_state() == 7
    st.state_file.write_bytes(b"\x01\x02")
    assert st.read_state() == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_crash_between_temp_write_and_rename_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = IdentityStore(tmp_path)
    st.ensure()
    old = Record("c1", "n", Callback(100021, 4, 16), PRIV)
    st.write_records("c1", (old,))

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        st.write_records("c1", (old, Record("c1", "m", Callback(100021, 4, 16), PRIV)))
    monkeypatch.undo()
    assert st.load().records == [old]  # old content intact; the temp file is cleaned up
    assert [p.name for p in st.sm.iterdir()] == ["c1"]


def test_move_to_backup_merges(tmp_path: Path) -> None:
    st = IdentityStore(tmp_path)
    st.ensure()
    a = Record("c1", "n", Callback(100021, 4, 16), PRIV)
    b = Record("c1", "m", Callback(100021, 4, 16), PRIV)
    st.write_records("c1", (a,))
    st.move_to_backup()
    st.write_records("c1", (a, b))
    st.write_records("c2", (Record("c2", "n", Callback(100021, 4, 16), PRIV),))
    st.move_to_backup()
    assert os.listdir(st.sm) == []
    assert [r.my_name for r in st.load_backup().records] == ["n", "m", "n"]
    st.delete_backup("c1")
    assert os.listdir(st.bak) == ["c2"]


def test_state_dir_layout(tmp_path: Path) -> None:
    sd = StateDir(tmp_path)
    assert sd.identity(NODE).path == tmp_path / "node"
    assert sd.identity(ServerAddress("fe80::1")).path == tmp_path / "vs" / "fe80::1"
    sd.identity(ServerAddress("198.18.0.1")).ensure()
    (tmp_path / "vs" / ".junk").mkdir()
    assert sd.virtual_servers() == ["198.18.0.1"]
