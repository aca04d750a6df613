"""NFSv3 / MOUNT v3 codecs: round trips and hostile input (RFC 1813 XDR)."""

from __future__ import annotations

from typing import Any

import pytest

from floatlock.nfs.proto import CreateMode, DirOpArgs, Ftype3, Nfsstat3, StableHow
from floatlock.nfs.proto_args import (
    CreateArgs,
    MknodArgs,
    ReaddirArgs,
    SetattrArgs,
    WriteArgs,
)
from floatlock.nfs.proto_attr import Fattr3, NfsTime, Sattr3, WccAttr, WccData
from floatlock.nfs.proto_dirlist import DirEntry, ReaddirRes, entry_size
from floatlock.nfs.proto_mount import (
    ExportNode,
    MountEntry,
    MountRes,
    Mountstat3,
    decode_exportlist,
    decode_mountlist,
    encode_exportlist,
    encode_mountlist,
)
from floatlock.nfs.proto_res import CreateRes, LookupRes
from floatlock.nfs.proto_res_fs import FsinfoRes
from floatlock.nfs.proto_res_io import ReadRes, WriteRes
from floatlock.xdr import Decoder, Encoder, XdrError

T = NfsTime(1_700_000_000, 123)
ATTR = Fattr3(Ftype3.REG, 0o644, 1, 10, 20, 5, 4096, (0, 0), 9, 77, T, T, T)


def enc(obj: Any) -> bytes:
    e = Encoder()
    obj.encode(e)
    return e.getvalue()


@pytest.mark.parametrize(
    "args",
    [
        SetattrArgs(b"fh", Sattr3(0o600, 1, 2, 3, "server", T), T),
        SetattrArgs(b"fh", Sattr3()),
        WriteArgs(b"fh", 1 << 40, 3, StableHow.FILE_SYNC, b"abc"),
        CreateArgs(DirOpArgs(b"d", "n"), CreateMode.GUARDED, Sattr3(mode=0o640)),
        CreateArgs(DirOpArgs(b"d", "n"), CreateMode.EXCLUSIVE, verf=b"12345678"),
        MknodArgs(DirOpArgs(b"d", "n"), Ftype3.CHR, Sattr3(), (1, 3)),
        MknodArgs(DirOpArgs(b"d", "n"), Ftype3.FIFO, Sattr3(mode=0o600)),
        MknodArgs(DirOpArgs(b"d", "n"), Ftype3.REG),
    ],
)
def test_args_round_trip(args: Any) -> None:
    assert type(args).decode(Decoder(enc(args))) == args


def test_readdirplus_args_round_trip() -> None:
    a = ReaddirArgs(b"fh", 5, b"v" * 8, 8192, 1024, True)
    assert ReaddirArgs.decode_plus(Decoder(enc(a))) == a
    r = ReaddirArgs(b"fh", 5, b"v" * 8, 8192)
    assert ReaddirArgs.decode(Decoder(enc(r))) == r


def test_fattr_is_84_bytes_and_round_trips() -> None:
    data = enc(ATTR)
    assert len(data) == 84
    assert Fattr3.decode(Decoder(data)) == ATTR


@pytest.mark.parametrize(
    "res",
    [
        LookupRes(Nfsstat3.OK, ATTR, b"handle", ATTR),
        LookupRes(Nfsstat3.NOENT, ATTR),
        ReadRes(Nfsstat3.OK, ATTR, True, b"hello"),
        ReadRes(Nfsstat3.ACCES, None),
        WriteRes(Nfsstat3.OK, WccData(WccAttr(1, T, T), ATTR), 5, StableHow.DATA_SYNC, b"w" * 8),
        CreateRes(Nfsstat3.OK, WccData(None, ATTR), b"fh", ATTR),
        CreateRes(Nfsstat3.EXIST, WccData(WccAttr(0, T, T), None)),
        FsinfoRes(Nfsstat3.OK, ATTR, 1, 2, 3, 4, 5, 6, 7, 8, T, 0x1B),
    ],
)
def test_results_round_trip(res: Any) -> None:
    assert type(res).decode(Decoder(res.encode())) == res


def test_readdir_result_sizes_match_the_accounting() -> None:
    entries = (DirEntry(1, "a", 10, ATTR, b"f" * 28), DirEntry(2, "bcdef", 20, None, None))
    res = ReaddirRes(Nfsstat3.OK, ATTR, b"v" * 8, entries, True, plus=True)
    data = res.encode()
    assert ReaddirRes.decode(Decoder(data), plus=True) == res
    plain = ReaddirRes(Nfsstat3.OK, ATTR, b"v" * 8, (DirEntry(1, "abc", 3),), False)
    head = len(ReaddirRes(Nfsstat3.OK, ATTR, b"v" * 8, (), False).encode())
    assert len(plain.encode()) - head == entry_size(3, False, 0)[1]
    # The accounting never underestimates (entries without attributes are smaller).
    assert len(data) - head <= entry_size(1, True, 28)[1] + entry_size(5, True, 28)[1]


def test_mount_codecs() -> None:
    ok = MountRes(Mountstat3.OK, b"h" * 30, (1,))
    assert MountRes.decode(Decoder(ok.encode())) == ok
    assert MountRes.decode(Decoder(MountRes(Mountstat3.ACCES).encode())).status == (
        Mountstat3.ACCES
    )
    ml = [MountEntry("198.18.0.5", "/srv"), MountEntry("h", "/x")]
    assert decode_mountlist(Decoder(encode_mountlist(ml))) == ml
    ex = [ExportNode("/srv", ("*", "198.18.0.0/15")), ExportNode("/x", ())]
    assert decode_exportlist(Decoder(encode_exportlist(ex))) == ex


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0\0\0\x41" + b"x" * 68,  # a 65-byte handle: over NFS3_FHSIZE
        b"\0\0\0\2fh\0\0" + b"\0\0\0\0" * 4 + b"\0\0\0\3",  # time_how 3
    ],
)
def test_hostile_setattr_args(data: bytes) -> None:
    with pytest.raises(XdrError):
        SetattrArgs.decode(Decoder(data))


def test_bad_enum_in_write_and_create() -> None:
    w = bytearray(enc(WriteArgs(b"fh", 0, 1, StableHow.UNSTABLE, b"x")))
    w[8 + 8 + 4 + 3] = 9  # stable_how
    with pytest.raises(XdrError):
        WriteArgs.decode(Decoder(bytes(w)))
    c = bytearray(enc(CreateArgs(DirOpArgs(b"d", "n"), CreateMode.UNCHECKED)))
    c[8 + 8 + 3] = 3  # createmode3
    with pytest.raises(XdrError):
        CreateArgs.decode(Decoder(bytes(c)))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 1 << 20])
def test_write_decode_at_is_decode_with_a_view_of_the_message(size: int) -> None:
    data = bytes(i & 0xFF for i in range(size))
    args = WriteArgs(b"h" * 28, 1 << 33, size, StableHow.FILE_SYNC, data)
    prefix = b"rpc-header-stand-in!"
    msg = prefix + enc(args)
    got = WriteArgs.decode_at(msg, len(prefix))
    assert got == WriteArgs.decode(Decoder(msg, len(prefix))) == args
    assert isinstance(got.data, memoryview) and got.data.readonly
    assert got.data.obj is msg  # no copy of the data


def test_write_decode_at_refuses_what_decode_refuses() -> None:
    good = enc(WriteArgs(b"fh", 0, 5, StableHow.UNSTABLE, b"abcde"))
    bad_stable = bytearray(good)
    bad_stable[8 + 8 + 4 + 3] = 9
    for msg in (good[:-1], good[:-4], good + b"\0\0\0\0", bytes(bad_stable), good[:10], b""):
        dec = Decoder(msg)
        with pytest.raises(XdrError):  # what the dispatcher does without decode_at
            WriteArgs.decode(dec)
            dec.done()
        with pytest.raises(XdrError):
            WriteArgs.decode_at(msg, 0)
