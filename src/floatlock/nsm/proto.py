"""NSM (Network Status Monitor, program 100024 version 1) types and their XDR codecs.

The types are those of ``sm_inter.x`` (Open Group XNFS, "Network Status Monitor Protocol"),
plus floatlock's one extension, procedure ``SM_MON2`` (see docs/protocol-extensions.md): the
same arguments as SM_MON, and a result that also says how many seconds of grace remain for the
server identity named by ``my_name``.  Only floatlock's lockd calls it; a standard statd answers
PROC_UNAVAIL and the caller falls back to SM_MON.

Codecs are plain functions ``decode_x(Decoder) -> X`` / ``encode_x(X) -> bytes``, the shapes
:class:`floatlock.rpc.dispatch.Procedure` takes.  String lengths are bounded by SM_MAXSTRLEN
(XNFS: ``string mon_name<SM_MAXSTRLEN>``) so an oversized name is GARBAGE_ARGS before any
handler sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from floatlock.xdr import Decoder, Encoder, XdrError

__all__ = [
    "PRIV_SIZE",
    "SM_MAXSTRLEN",
    "SM_PROG",
    "SM_VERS",
    "Mon",
    "MonId",
    "MyId",
    "Proc",
    "Res",
    "SmMon2Res",
    "SmStatRes",
    "StatChge",
    "Status",
]

SM_PROG: Final = 100024
SM_VERS: Final = 1
SM_MAXSTRLEN: Final = 1024
PRIV_SIZE: Final = 16


class Proc(IntEnum):
    NULL = 0
    SM_STAT = 1
    SM_MON = 2
    SM_UNMON = 3
    SM_UNMON_ALL = 4
    SM_SIMU_CRASH = 5
    SM_NOTIFY = 6
    # floatlock extension (docs/protocol-extensions.md): far above the XNFS numbers so that a
    # future standard procedure cannot collide with it.
    SM_MON2 = 100


class Res(IntEnum):
    STAT_SUCC = 0
    STAT_FAIL = 1


@dataclass(frozen=True, slots=True)
class MyId:
    """Who asks for monitoring and which RPC procedure to call back (``struct my_id``)."""

    my_name: str
    my_prog: int
    my_vers: int
    my_proc: int


@dataclass(frozen=True, slots=True)
class MonId:
    """``struct mon_id``: the monitored host and the requester."""

    mon_name: str
    my_id: MyId


@dataclass(frozen=True, slots=True)
class Mon:
    """``struct mon``: SM_MON's argument; ``priv`` comes back in the status callback."""

    mon_id: MonId
    priv: bytes


@dataclass(frozen=True, slots=True)
class SmStatRes:
    res_stat: Res
    state: int


@dataclass(frozen=True, slots=True)
class SmMon2Res:
    """SM_MON2's result: SM_MON's plus the grace seconds left for ``my_name`` (0: none)."""

    res_stat: Res
    state: int
    grace_remaining: int


@dataclass(frozen=True, slots=True)
class StatChge:
    """``struct stat_chge``: SM_NOTIFY's argument (the rebooted host and its new state)."""

    mon_name: str
    state: int


@dataclass(frozen=True, slots=True)
class Status:
    """``struct status``: the argument of the callback statd makes to the requester."""

    mon_name: str
    state: int
    priv: bytes


# -- decoders -------------------------------------------------------------------------------


def decode_sm_name(dec: Decoder) -> str:
    return dec.string(SM_MAXSTRLEN)


def decode_my_id(dec: Decoder) -> MyId:
    name = dec.string(SM_MAXSTRLEN)
    prog, vers, proc = dec.i32(), dec.i32(), dec.i32()
    return MyId(name, prog, vers, proc)


def decode_mon_id(dec: Decoder) -> MonId:
    return MonId(dec.string(SM_MAXSTRLEN), decode_my_id(dec))


def decode_mon(dec: Decoder) -> Mon:
    return Mon(decode_mon_id(dec), dec.opaque_fixed(PRIV_SIZE))


def decode_stat_chge(dec: Decoder) -> StatChge:
    return StatChge(dec.string(SM_MAXSTRLEN), dec.i32())


def decode_status(dec: Decoder) -> Status:
    return Status(dec.string(SM_MAXSTRLEN), dec.i32(), dec.opaque_fixed(PRIV_SIZE))


def decode_sm_stat_res(dec: Decoder) -> SmStatRes:
    res = dec.enum(frozenset((0, 1)))
    return SmStatRes(Res(res), dec.i32())


def decode_sm_mon2_res(dec: Decoder) -> SmMon2Res:
    res = dec.enum(frozenset((0, 1)))
    return SmMon2Res(Res(res), dec.i32(), dec.u32())


def decode_sm_stat(dec: Decoder) -> int:
    return dec.i32()


# -- encoders -------------------------------------------------------------------------------


def _my_id(enc: Encoder, m: MyId) -> None:
    enc.string(m.my_name, SM_MAXSTRLEN)
    enc.i32(m.my_prog)
    enc.i32(m.my_vers)
    enc.i32(m.my_proc)


def encode_sm_name(name: str) -> bytes:
    enc = Encoder()
    enc.string(name, SM_MAXSTRLEN)
    return enc.getvalue()


def encode_my_id(m: MyId) -> bytes:
    enc = Encoder()
    _my_id(enc, m)
    return enc.getvalue()


def encode_mon_id(m: MonId) -> bytes:
    enc = Encoder()
    enc.string(m.mon_name, SM_MAXSTRLEN)
    _my_id(enc, m.my_id)
    return enc.getvalue()


def encode_mon(m: Mon) -> bytes:
    if len(m.priv) != PRIV_SIZE:
        raise XdrError(f"priv must be {PRIV_SIZE} bytes")
    return encode_mon_id(m.mon_id) + m.priv


def encode_sm_stat_res(r: SmStatRes) -> bytes:
    enc = Encoder()
    enc.i32(r.res_stat)
    enc.i32(r.state)
    return enc.getvalue()


def encode_sm_mon2_res(r: SmMon2Res) -> bytes:
    enc = Encoder()
    enc.i32(r.res_stat)
    enc.i32(r.state)
    enc.u32(r.grace_remaining)
    return enc.getvalue()


def encode_sm_stat(state: int) -> bytes:
    enc = Encoder()
    enc.i32(state)
    return enc.getvalue()


def encode_stat_chge(s: StatChge) -> bytes:
    enc = Encoder()
    enc.string(s.mon_name, SM_MAXSTRLEN)
    enc.i32(s.state)
    return enc.getvalue()


def encode_status(s: Status) -> bytes:
    if len(s.priv) != PRIV_SIZE:
        raise XdrError(f"priv must be {PRIV_SIZE} bytes")
    enc = Encoder()
    enc.string(s.mon_name, SM_MAXSTRLEN)
    enc.i32(s.state)
    enc.opaque_fixed(s.priv)
    return enc.getvalue()
