"""Property tests for every wire decoder: garbage in, XdrError (and only XdrError) out.

Every decoder floatlock runs on bytes from the network is fed random byte strings, strings of
"interesting" XDR words (lengths at and past the limits, booleans out of range, enum values
just past the end, 0xffffffff counts), and valid encodings that were then truncated or
mutated.  Each must either return a value or raise :class:`floatlock.xdr.XdrError`: any other
exception would escape the dispatcher's GARBAGE_ARGS path.  Each call is also run under
``tracemalloc`` and may not allocate more than a small multiple of its input: a decoder that
trusts a claimed length or count before checking it fails here.  Inputs are at most a few KiB,
so a decoder that loops without consuming its input would hit pytest's timeout.

The argument decoders are not listed by hand: they are collected from a dispatcher holding
everything ``floatlock serve`` registers (NFS, MOUNT, NLM v1/v3/v4, NSM) plus the built-in
portmapper (v2, v3, v4), so a procedure added later is fuzzed without touching this file.  The
result decoders (the client side: NLM replies, NSM replies, portmap lists, NFS and MOUNT
results) and the RPC header parsers are listed explicitly.

Where encoders exist, values drawn by Hypothesis must survive encode -> decode unchanged and
consume every byte.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from floatlock.config import Config, ExportSection, PortmapSection, ServerSection
from floatlock.nfs import proto_res, proto_res_fs, proto_res_io
from floatlock.nfs.proto import CreateMode, DirOpArgs, Ftype3, Nfsstat3, StableHow
from floatlock.nfs.proto_args import (
    AccessArgs,
    CreateArgs,
    FhArgs,
    LinkArgs,
    MkdirArgs,
    MknodArgs,
    ReadArgs,
    ReaddirArgs,
    RenameArgs,
    SetattrArgs,
    SymlinkArgs,
    WriteArgs,
)
from floatlock.nfs.proto_attr import Fattr3, NfsTime, Sattr3, WccAttr, WccData
from floatlock.nfs.proto_dirlist import DirEntry, ReaddirRes
from floatlock.nfs.proto_mount import (
    ExportNode,
    MountEntry,
    MountRes,
    Mountstat3,
    decode_dirpath,
    decode_exportlist,
    decode_mountlist,
    encode_dirpath,
    encode_exportlist,
    encode_mountlist,
)
from floatlock.nlm.codec import V1, V4, NlmCodec
from floatlock.nlm.proto import (
    CancArgs,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    Notify,
    Res,
    Share,
    ShareArgs,
    ShareRes,
    SmStatus,
    TestArgs,
    TestRes,
    UnlockArgs,
)
from floatlock.nsm import proto as nsm
from floatlock.portmap import proto as pm
from floatlock.portmap.registry import PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import (
    AuthSys,
    Rejected,
    RpcError,
    encode_call,
    parse_call,
    parse_reply,
    success_header,
)
from floatlock.server import build_daemon
from floatlock.xdr import Decoder, Encoder, XdrError

EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_INPUT = 4096
# A decoder may allocate its result and some bookkeeping, never what a claimed length says.
ALLOC_SLACK = 256 * 1024
ALLOC_FACTOR = 32

Decode = Callable[[Decoder], Any]


# -- the decoders ---------------------------------------------------------------------------


def _served_decoders(tmp: Path) -> dict[str, Decode]:
    """Every argument decoder the daemon (plus the built-in portmapper) registers."""
    cfg = Config(
        server=ServerSection(listen=("127.0.0.1",), state_dir=tmp / "state"),
        portmap=PortmapSection("off"),
        exports=(ExportSection(tmp / "export"),),
    )
    daemon = build_daemon(cfg)
    try:
        d: Dispatcher = daemon.dispatcher
        PortmapService(PortmapRegistry()).register(d)
        out: dict[str, Decode] = {}
        for (prog, vers), procs in sorted(d._procs.items()):
            for num, proc in sorted(procs.items()):
                if proc.decode is not None:
                    out[f"{prog}/{vers}/{num}:{proc.name}"] = proc.decode
        return out

    finally:
        daemon.components["nfs"].close()  # type: ignore[attr-defined]


def _distinct(named: dict[str, Decode]) -> dict[str, Decode]:
    """One name per distinct decoder (GETATTR, FSSTAT, ... share FhArgs.decode)."""
    first: dict[Decode, str] = {}
    for key, fn in named.items():
        first.setdefault(fn, key)
    return {key: fn for fn, key in first.items()}


SERVED: dict[str, Decode] = {}


def _served() -> dict[str, Decode]:
    if not SERVED:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            SERVED.update(_served_decoders(Path(tmp)))
    return SERVED


def _bound(fn: Callable[[Decoder, bool], Any], plus: bool) -> Decode:
    return lambda dec: fn(dec, plus)


RESULT_DECODERS: dict[str, Decode] = {
    **{
        f"nlm-v{4 if c.wide else 1}-{n}": getattr(c, n)
        for c in (V1, V4)
        for n in (
            "res",
            "testres",
            "shareres",
            "lock",
            "testargs",
            "lockargs",
            "cancargs",
            "unlockargs",
            "shareargs",
        )
    },
    "nlm-notify": NlmCodec.notify,
    "nlm-sm_status": NlmCodec.sm_status,
    "nsm-sm_stat_res": nsm.decode_sm_stat_res,
    "nsm-sm_mon2_res": nsm.decode_sm_mon2_res,
    "nsm-sm_stat": nsm.decode_sm_stat,
    "nsm-status": nsm.decode_status,
    "nsm-stat_chge": nsm.decode_stat_chge,
    "nsm-mon": nsm.decode_mon,
    "nsm-mon_id": nsm.decode_mon_id,
    "nsm-my_id": nsm.decode_my_id,
    "nsm-sm_name": nsm.decode_sm_name,
    "pmap-mapping": pm.PmapMapping.decode,
    "pmap-pmaplist": pm.decode_pmaplist,
    "rpcb": pm.Rpcb.decode,
    "rpcb-list": pm.decode_rpcblist,
    "rpcb-entry": pm.RpcbEntry.decode,
    "rpcb-entry-list": pm.decode_rpcb_entry_list,
    "rpcb-stat": pm.RpcbStat.decode,
    "netbuf": pm.Netbuf.decode,
    "mount-res": MountRes.decode,
    "mount-dirpath": decode_dirpath,
    "mount-list": decode_mountlist,
    "mount-exports": decode_exportlist,
    "nfs-fattr3": Fattr3.decode,
    "nfs-sattr3": Sattr3.decode,
    "nfs-wcc_data": WccData.decode,
    "nfs-readdir-res": _bound(ReaddirRes.decode, False),
    "nfs-readdirplus-res": _bound(ReaddirRes.decode, True),
    **{
        f"nfs-{res.__name__}": res.decode
        for res in (
            proto_res.GetattrRes,
            proto_res.WccRes,
            proto_res.LookupRes,
            proto_res.AccessRes,
            proto_res_io.ReadlinkRes,
            proto_res_io.ReadRes,
            proto_res_io.WriteRes,
            proto_res.CreateRes,
            proto_res.RenameRes,
            proto_res.LinkRes,
            proto_res_fs.FsstatRes,
            proto_res_fs.FsinfoRes,
            proto_res_fs.PathconfRes,
            proto_res_io.CommitRes,
        )
    },
}


def _auth_sys(dec: Decoder) -> AuthSys:
    return AuthSys.decode(dec.rest())


def _parse_call(dec: Decoder) -> Any:
    try:
        return parse_call(dec.rest())
    except Rejected as r:  # a ready MSG_DENIED reply: a normal outcome
        return r.reply


def _parse_reply(dec: Decoder) -> Any:
    try:
        return parse_reply(dec.rest())
    except RpcError as e:  # denied / not accepted: a normal outcome
        return e


RPC_DECODERS: dict[str, Decode] = {
    "rpc-auth_sys": _auth_sys,
    "rpc-parse_call": _parse_call,
    "rpc-parse_reply": _parse_reply,
}


def run_decoder(fn: Decode, data: bytes) -> Any:
    """Decode ``data``; fail on any exception but XdrError and on absurd allocation.

    Allocations are traced only around the decoder (tracing Hypothesis too costs minutes).
    """
    dec = Decoder(data)
    tracemalloc.start()
    try:
        return fn(dec)
    except XdrError:
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        limit = ALLOC_SLACK + ALLOC_FACTOR * len(data)
        assert peak <= limit, f"{fn!r} allocated {peak} bytes for {len(data)} input bytes"


# -- strategies for junk ---------------------------------------------------------------------

# Words that steer XDR decoders into their edge cases: small lengths and counts, the limits
# (16 gids, 64-byte handles, 255/1024/1025/4096-byte strings), booleans 0/1/2, enum ends, and
# huge or negative values.
INTERESTING = [
    0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 20, 23, 32, 63, 64, 65, 100, 128, 255, 256,
    400, 401, 1024, 1025, 4096, 4097, 10004, 100000, 100003, 100005, 100021, 100024,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 26, (1 << 26) + 1,
]  # fmt: skip

words = st.lists(
    st.one_of(st.sampled_from(INTERESTING), st.integers(0, 0xFFFFFFFF)), max_size=64
).map(lambda ws: struct.pack(f">{len(ws)}I", *ws))


@st.composite
def junk(draw: st.DrawFn) -> bytes:
    """Random bytes, XDR-ish words, or words with a ragged (non multiple of 4) tail."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=MAX_INPUT))
    data = draw(words)
    if kind == 2:
        data += draw(st.binary(min_size=1, max_size=3))
    return data


@st.composite
def mutated(draw: st.DrawFn, good: bytes) -> bytes:
    """``good`` truncated, with a byte or word changed, or with words inserted/removed."""
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 4))
        n = len(data)
        if op == 0:
            del data[draw(st.integers(0, n)) :]
        elif op == 1 and n:
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == 2 and n >= 4:
            i = draw(st.integers(0, n // 4 - 1)) * 4
            data[i : i + 4] = struct.pack(">I", draw(st.sampled_from(INTERESTING)))
        elif op == 3:
            i = draw(st.integers(0, n))
            data[i:i] = draw(words)[:16]
        elif op == 4 and n >= 4:
            i = draw(st.integers(0, n // 4 - 1)) * 4
            del data[i : i + 4]
    return bytes(data)


# -- no exception but XdrError, no absurd allocation -----------------------------------------


def test_served_decoders_cover_every_program() -> None:
    """The collection above really holds every program's argument decoders."""
    names = _served()
    progs = {k.split("/")[0] for k in names}
    assert progs == {"100000", "100003", "100005", "100021", "100024"}
    assert {k.split("/")[1] for k in names if k.startswith("100021/")} == {"1", "3", "4"}
    assert sum(k.startswith("100003/") for k in names) == 21  # every NFSv3 procedure but NULL
    assert any(k.endswith(":LOCK") for k in names) and any(k.endswith(":SM_MON") for k in names)


def _served_names() -> list[str]:
    return sorted(_distinct(_served()))


@pytest.mark.parametrize("name", _served_names())
@FUZZ
@given(data=junk())
def test_served_argument_decoder_on_junk(name: str, data: bytes) -> None:
    run_decoder(_served()[name], data)


@pytest.mark.parametrize("name", sorted(RESULT_DECODERS) + sorted(RPC_DECODERS))
@FUZZ
@given(data=junk())
def test_decoder_on_junk(name: str, data: bytes) -> None:
    run_decoder({**RESULT_DECODERS, **RPC_DECODERS}[name], data)


# -- value strategies, round trips, and mutations of valid encodings ------------------------

u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-(1 << 31), (1 << 31) - 1)
u64 = st.integers(0, (1 << 64) - 1)
small_text = st.text(max_size=40)
netobj = st.binary(max_size=64)
fh = st.binary(max_size=64)
name = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=40
)


def nlm_lock(wide: bool) -> st.SearchStrategy[NlmLock]:
    ext = u64 if wide else u32
    return st.builds(NlmLock, small_text, netobj, netobj, i32, ext, ext)


def nlm_values(codec: NlmCodec) -> st.SearchStrategy[tuple[str, Any]]:
    lk = nlm_lock(codec.wide)
    ext = u64 if codec.wide else u32
    stat = st.sampled_from(list(Nlm4Stat) if codec.wide else list(Nlm4Stat)[:5])
    holder = st.builds(Holder, st.booleans(), i32, netobj, ext, ext)
    testres = st.one_of(
        st.builds(TestRes, netobj, stat.filter(lambda s: s != Nlm4Stat.DENIED), st.none()),
        st.builds(TestRes, netobj, st.just(Nlm4Stat.DENIED), holder),
    )
    share = st.builds(Share, small_text, netobj, netobj, st.integers(0, 3), st.integers(0, 3))
    return st.one_of(
        st.tuples(
            st.just("lockargs"),
            st.builds(LockArgs, netobj, st.booleans(), st.booleans(), lk, st.booleans(), i32),
        ),
        st.tuples(st.just("testargs"), st.builds(TestArgs, netobj, st.booleans(), lk)),
        st.tuples(
            st.just("cancargs"), st.builds(CancArgs, netobj, st.booleans(), st.booleans(), lk)
        ),
        st.tuples(st.just("unlockargs"), st.builds(UnlockArgs, netobj, lk)),
        st.tuples(st.just("shareargs"), st.builds(ShareArgs, netobj, share, st.booleans())),
        st.tuples(st.just("notify"), st.builds(Notify, small_text, i32)),
        st.tuples(
            st.just("sm_status"),
            st.builds(SmStatus, small_text, i32, st.binary(min_size=16, max_size=16)),
        ),
        st.tuples(st.just("res"), st.builds(Res, netobj, stat)),
        st.tuples(st.just("testres"), testres),
        st.tuples(st.just("shareres"), st.builds(ShareRes, netobj, stat, i32)),
    )


def nlm_codec(codec: NlmCodec, kind: str) -> tuple[Callable[[Any], bytes], Decode]:
    return getattr(codec, f"encode_{kind}"), getattr(codec, kind)


def _round_trip(encode: Callable[[Any], bytes], decode: Decode, value: Any) -> bytes:
    data = encode(value)
    dec = Decoder(data)
    assert decode(dec) == value
    dec.done()
    return data


@pytest.mark.parametrize("codec", [V1, V4], ids=["v1", "v4"])
@FUZZ
@given(data=st.data())
def test_nlm_round_trip_and_mutations(codec: NlmCodec, data: st.DataObject) -> None:
    kind, value = data.draw(nlm_values(codec))
    encode, decode = nlm_codec(codec, kind)
    good = _round_trip(encode, decode, value)
    run_decoder(decode, data.draw(mutated(good)))


my_id = st.builds(nsm.MyId, small_text, i32, i32, i32)
mon_id = st.builds(nsm.MonId, small_text, my_id)
NSM_CASES: list[tuple[st.SearchStrategy[Any], Callable[[Any], bytes], Decode]] = [
    (small_text, nsm.encode_sm_name, nsm.decode_sm_name),
    (my_id, nsm.encode_my_id, nsm.decode_my_id),
    (mon_id, nsm.encode_mon_id, nsm.decode_mon_id),
    (
        st.builds(nsm.Mon, mon_id, st.binary(min_size=16, max_size=16)),
        nsm.encode_mon,
        nsm.decode_mon,
    ),
    (st.builds(nsm.StatChge, small_text, i32), nsm.encode_stat_chge, nsm.decode_stat_chge),
    (
        st.builds(nsm.Status, small_text, i32, st.binary(min_size=16, max_size=16)),
        nsm.encode_status,
        nsm.decode_status,
    ),
    (
        st.builds(nsm.SmStatRes, st.sampled_from(nsm.Res), i32),
        nsm.encode_sm_stat_res,
        nsm.decode_sm_stat_res,
    ),
    (
        st.builds(nsm.SmMon2Res, st.sampled_from(nsm.Res), i32, u32),
        nsm.encode_sm_mon2_res,
        nsm.decode_sm_mon2_res,
    ),
    (i32, nsm.encode_sm_stat, nsm.decode_sm_stat),
]


@pytest.mark.parametrize("case", range(len(NSM_CASES)))
@FUZZ
@given(data=st.data())
def test_nsm_round_trip_and_mutations(case: int, data: st.DataObject) -> None:
    strategy, encode, decode = NSM_CASES[case]
    good = _round_trip(encode, decode, data.draw(strategy))
    run_decoder(decode, data.draw(mutated(good)))


def _enc(item: Callable[[Any, Encoder], None]) -> Callable[[Any], bytes]:
    def encode(v: Any) -> bytes:
        enc = Encoder()
        item(v, enc)
        return enc.getvalue()

    return encode


pmap_mapping = st.builds(pm.PmapMapping, u32, u32, u32, u32)
netid = st.text(max_size=10)
rpcb = st.builds(pm.Rpcb, u32, u32, netid, small_text, small_text)
rpcb_entry = st.builds(pm.RpcbEntry, small_text, netid, u32, netid, netid)
PMAP_CASES: list[tuple[st.SearchStrategy[Any], Callable[[Any], bytes], Decode]] = [
    (pmap_mapping, _enc(pm.PmapMapping.encode), pm.PmapMapping.decode),
    (st.lists(pmap_mapping, max_size=8), pm.encode_pmaplist, pm.decode_pmaplist),
    (rpcb, _enc(pm.Rpcb.encode), pm.Rpcb.decode),
    (st.lists(rpcb, max_size=8), pm.encode_rpcblist, pm.decode_rpcblist),
    (rpcb_entry, _enc(pm.RpcbEntry.encode), pm.RpcbEntry.decode),
    (st.lists(rpcb_entry, max_size=8), pm.encode_rpcb_entry_list, pm.decode_rpcb_entry_list),
    (st.builds(pm.Netbuf, u32, st.binary(max_size=128)), _enc(pm.Netbuf.encode), pm.Netbuf.decode),
    (
        st.builds(
            pm.RpcbStat,
            st.tuples(*[st.integers(0, 0x7FFFFFFF)] * pm.RPCBSTAT_HIGHPROC),
            st.integers(0, 0x7FFFFFFF),
            st.integers(0, 0x7FFFFFFF),
        ),
        _enc(pm.RpcbStat.encode),
        pm.RpcbStat.decode,
    ),
]


@pytest.mark.parametrize("case", range(len(PMAP_CASES)))
@FUZZ
@given(data=st.data())
def test_portmap_round_trip_and_mutations(case: int, data: st.DataObject) -> None:
    strategy, encode, decode = PMAP_CASES[case]
    good = _round_trip(encode, decode, data.draw(strategy))
    run_decoder(decode, data.draw(mutated(good)))


nfstime = st.builds(NfsTime, u32, u32)
settime = st.one_of(st.none(), st.just("server"), nfstime)
sattr = st.builds(
    Sattr3,
    st.none() | u32,
    st.none() | u32,
    st.none() | u32,
    st.none() | u64,
    settime,
    settime,
)
dirop = st.builds(DirOpArgs, fh, name)
fattr = st.builds(
    Fattr3,
    st.sampled_from(Ftype3),
    u32,
    u32,
    u32,
    u32,
    u64,
    u64,
    st.tuples(u32, u32),
    u64,
    u64,
    nfstime,
    nfstime,
    nfstime,
)
wcc = st.builds(WccData, st.none() | st.builds(WccAttr, u64, nfstime, nfstime), st.none() | fattr)
verf = st.binary(min_size=8, max_size=8)
NFS_CASES: list[tuple[st.SearchStrategy[Any], Callable[[Any], bytes], Decode]] = [
    (st.builds(FhArgs, fh), _enc(FhArgs.encode), FhArgs.decode),
    (
        st.builds(SetattrArgs, fh, sattr, st.none() | nfstime),
        _enc(SetattrArgs.encode),
        SetattrArgs.decode,
    ),
    (dirop, _enc(DirOpArgs.encode), DirOpArgs.decode),
    (st.builds(AccessArgs, fh, u32), _enc(AccessArgs.encode), AccessArgs.decode),
    (st.builds(ReadArgs, fh, u64, u32), _enc(ReadArgs.encode), ReadArgs.decode),
    (
        st.builds(WriteArgs, fh, u64, u32, st.sampled_from(StableHow), st.binary(max_size=200)),
        _enc(WriteArgs.encode),
        WriteArgs.decode,
    ),
    (
        st.one_of(
            st.builds(
                CreateArgs,
                dirop,
                st.sampled_from([CreateMode.UNCHECKED, CreateMode.GUARDED]),
                sattr,
            ),
            st.builds(CreateArgs, dirop, st.just(CreateMode.EXCLUSIVE), st.just(Sattr3()), verf),
        ),
        _enc(CreateArgs.encode),
        CreateArgs.decode,
    ),
    (st.builds(MkdirArgs, dirop, sattr), _enc(MkdirArgs.encode), MkdirArgs.decode),
    (
        st.builds(SymlinkArgs, dirop, sattr, small_text),
        _enc(SymlinkArgs.encode),
        SymlinkArgs.decode,
    ),
    (
        st.one_of(
            st.builds(
                MknodArgs,
                dirop,
                st.sampled_from([Ftype3.CHR, Ftype3.BLK]),
                sattr,
                st.tuples(u32, u32),
            ),
            st.builds(MknodArgs, dirop, st.sampled_from([Ftype3.SOCK, Ftype3.FIFO]), sattr),
            st.builds(MknodArgs, dirop, st.sampled_from([Ftype3.REG, Ftype3.DIR, Ftype3.LNK])),
        ),
        _enc(MknodArgs.encode),
        MknodArgs.decode,
    ),
    (st.builds(RenameArgs, dirop, dirop), _enc(RenameArgs.encode), RenameArgs.decode),
    (st.builds(LinkArgs, fh, dirop), _enc(LinkArgs.encode), LinkArgs.decode),
    (
        st.builds(ReaddirArgs, fh, u64, verf, u32),
        _enc(ReaddirArgs.encode),
        ReaddirArgs.decode,
    ),
    (
        st.builds(ReaddirArgs, fh, u64, verf, u32, u32, st.just(True)),
        _enc(ReaddirArgs.encode),
        ReaddirArgs.decode_plus,
    ),
    (fattr, _enc(Fattr3.encode), Fattr3.decode),
    (wcc, _enc(WccData.encode), WccData.decode),
    (
        st.one_of(
            st.builds(proto_res.GetattrRes, st.just(Nfsstat3.OK), fattr),
            st.builds(
                proto_res.GetattrRes,
                st.sampled_from([s for s in Nfsstat3 if s != Nfsstat3.OK]),
            ),
        ),
        lambda r: r.encode(),
        proto_res.GetattrRes.decode,
    ),
    (
        st.builds(
            ReaddirRes,
            st.just(Nfsstat3.OK),
            st.none() | fattr,
            verf,
            st.lists(
                st.builds(DirEntry, u64, name, u64, st.none() | fattr, st.none() | fh), max_size=4
            ).map(tuple),
            st.booleans(),
            st.just(True),
        ),
        lambda r: r.encode(),
        _bound(ReaddirRes.decode, True),
    ),
]


@pytest.mark.parametrize("case", range(len(NFS_CASES)))
@FUZZ
@given(data=st.data())
def test_nfs_round_trip_and_mutations(case: int, data: st.DataObject) -> None:
    strategy, encode, decode = NFS_CASES[case]
    good = _round_trip(encode, decode, data.draw(strategy))
    run_decoder(decode, data.draw(mutated(good)))


mount_path = st.text(max_size=60)
MOUNT_CASES: list[tuple[st.SearchStrategy[Any], Callable[[Any], bytes], Decode]] = [
    (mount_path, encode_dirpath, decode_dirpath),
    (
        st.one_of(
            st.builds(
                MountRes,
                st.just(Mountstat3.OK),
                fh,
                st.lists(u32, max_size=8).map(tuple),
            ),
            st.builds(
                MountRes,
                st.sampled_from([s for s in Mountstat3 if s != Mountstat3.OK]),
                st.just(b""),
                st.just(()),
            ),
        ),
        lambda r: r.encode(),
        MountRes.decode,
    ),
    (
        st.lists(st.builds(MountEntry, st.text(max_size=20), mount_path), max_size=5),
        encode_mountlist,
        decode_mountlist,
    ),
    (
        st.lists(
            st.builds(
                ExportNode, mount_path, st.lists(st.text(max_size=20), max_size=4).map(tuple)
            ),
            max_size=5,
        ),
        encode_exportlist,
        decode_exportlist,
    ),
]


@pytest.mark.parametrize("case", range(len(MOUNT_CASES)))
@FUZZ
@given(data=st.data())
def test_mount_round_trip_and_mutations(case: int, data: st.DataObject) -> None:
    strategy, encode, decode = MOUNT_CASES[case]
    good = _round_trip(encode, decode, data.draw(strategy))
    run_decoder(decode, data.draw(mutated(good)))


auth_sys = st.builds(
    AuthSys, u32, st.text(max_size=60), u32, u32, st.lists(u32, max_size=16).map(tuple)
)


@FUZZ
@given(cred=auth_sys, data=st.data())
def test_auth_sys_round_trip_and_mutations(cred: AuthSys, data: st.DataObject) -> None:
    body = cred.encode()
    assume(len(body) <= 400)
    assert AuthSys.decode(body) == cred
    run_decoder(_auth_sys, data.draw(mutated(body)))


@FUZZ
@given(
    xid=u32,
    prog=u32,
    vers=u32,
    proc=u32,
    args=st.binary(max_size=64).map(lambda b: b + bytes(-len(b) & 3)),
    cred=st.none() | auth_sys.filter(lambda c: len(c.encode()) <= 400),
    data=st.data(),
)
def test_call_header_round_trip_and_mutations(
    xid: int, prog: int, vers: int, proc: int, args: bytes, cred: AuthSys | None,
    data: st.DataObject,
) -> None:  # fmt: skip
    msg = encode_call(xid, prog, vers, proc, args, cred)
    call = parse_call(msg)
    assert (call.xid, call.prog, call.vers, call.proc) == (xid, prog, vers, proc)
    assert msg[call.args :] == args
    if cred is not None:
        assert call.cred_flavor == 1 and AuthSys.decode(call.cred_body) == cred
    run_decoder(_parse_call, data.draw(mutated(msg)))


@FUZZ
@given(xid=u32, body=st.binary(max_size=64), data=st.data())
def test_reply_round_trip_and_mutations(xid: int, body: bytes, data: st.DataObject) -> None:
    msg = success_header(xid) + body
    reply = parse_reply(msg)
    assert (reply.xid, reply.body) == (xid, body)
    run_decoder(_parse_reply, data.draw(mutated(msg)))


# -- the checks themselves can fail ----------------------------------------------------------


def test_run_decoder_rejects_other_exceptions_and_big_allocations() -> None:
    """A decoder raising anything but XdrError, or trusting a claimed length, is caught."""

    def raises_value_error(dec: Decoder) -> None:
        int("x")

    def trusts_length(dec: Decoder) -> bytes:
        return bytes(dec.u32())

    with pytest.raises(ValueError):
        run_decoder(raises_value_error, b"")
    with pytest.raises(AssertionError, match="allocated"):
        run_decoder(trusts_length, struct.pack(">I", 1 << 26))
    assert run_decoder(V4.res, b"\0\0\0\0\0\0\0\0") == Res(b"", Nlm4Stat.GRANTED)
