"""ONC RPC version 2 messages (RFC 5531 section 9): call and reply headers, authentication.

Server side: :func:`parse_call` reads a call header and either returns a :class:`CallHeader`
(with the offset where the procedure's arguments begin) or a ready-made rejection reply.
Replies are built by the ``*_reply`` functions, which return header bytes; the body follows.

Client side: :func:`encode_call` and :func:`parse_reply`.

Authentication (RFC 5531 section 8 and appendix A): AUTH_NONE and AUTH_SYS are accepted;
their limits are enforced here (opaque_auth body at most 400 bytes, machinename at most 255,
at most 16 supplementary gids) so that no handler ever sees an out-of-spec credential.  Our
replies always carry an AUTH_NONE verifier, which is what AUTH_SYS servers send (RFC 5531 A).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from floatlock.address import ServerAddress
from floatlock.xdr import Decoder, Encoder, XdrError

RPC_VERSION = 2
CALL = 0
REPLY = 1

MAX_AUTH_BYTES = 400  # RFC 5531 section 8.2: opaque body<400>
MAX_MACHINE_NAME = 255  # RFC 5531 appendix A: string machinename<255>
MAX_GIDS = 16  # RFC 5531 appendix A: unsigned int gids<16>


class AuthFlavor(IntEnum):
    NONE = 0
    SYS = 1
    SHORT = 2
    DH = 3
    RPCSEC_GSS = 6


class ReplyStat(IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(IntEnum):
    OK = 0
    BADCRED = 1
    REJECTEDCRED = 2
    BADVERF = 3
    REJECTEDVERF = 4
    TOOWEAK = 5
    INVALIDRESP = 6
    FAILED = 7


@dataclass(frozen=True, slots=True)
class AuthSys:
    """An AUTH_SYS credential (RFC 5531 appendix A)."""

    stamp: int
    machinename: str
    uid: int
    gid: int
    gids: tuple[int, ...]

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.stamp)
        enc.string(self.machinename, MAX_MACHINE_NAME)
        enc.u32(self.uid)
        enc.u32(self.gid)
        enc.uint_array(self.gids, MAX_GIDS)
        return enc.getvalue()

    @classmethod
    def decode(cls, body: bytes) -> AuthSys:
        """Decode a credential body; every byte must belong to the credential."""
        dec = Decoder(body)
        stamp = dec.u32()
        name = dec.string(MAX_MACHINE_NAME)
        uid = dec.u32()
        gid = dec.u32()
        gids = tuple(dec.uint_array(MAX_GIDS))
        dec.done()
        return cls(stamp, name, uid, gid, gids)


_HDR = struct.Struct(">IIIIIIII")  # xid, mtype, rpcvers, prog, vers, proc, cred flavor, len
_HDR_SIZE = _HDR.size
_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")


_NO_ADDRESS = ServerAddress("")


class Call:
    """A decoded call header plus where it came from: what a handler knows besides its args.

    ``args`` is the offset in the message where the procedure's arguments begin.
    """

    __slots__ = (
        "args",
        "auth",
        "client",
        "cred_body",
        "cred_flavor",
        "proc",
        "prog",
        "server",
        "transport",
        "vers",
        "xid",
    )

    def __init__(
        self,
        xid: int,
        prog: int,
        vers: int,
        proc: int,
        flavor: int,
        cred: bytes,
        args: int,
        client: Any = None,
        server: ServerAddress = _NO_ADDRESS,
        transport: str = "",
    ) -> None:
        self.xid = xid
        self.prog = prog
        self.vers = vers
        self.proc = proc
        self.cred_flavor = flavor
        self.cred_body = cred
        self.args = args
        self.auth: AuthSys | None = None  # set by the dispatcher for AUTH_SYS
        self.client = client  # the peer's socket address tuple, (host, port, ...)
        self.server = server  # the local address the call arrived on (the seed's key)
        self.transport = transport  # "udp" or "tcp"

    @property
    def client_ip(self) -> str:
        return str(self.client[0])

    def __repr__(self) -> str:
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        return (
            f"Call(xid={self.xid:#x}, {self.prog}/{self.vers}/{self.proc} "
            f"from {peer} to {self.server} over {self.transport})"
        )


class Rejected(Exception):
    """A call that must be answered with ``reply`` before the program is even looked up."""

    def __init__(self, xid: int, reply: bytes, reason: str) -> None:
        super().__init__(reason)
        self.xid = xid
        self.reply = reply


# The common case, AUTH_NONE credential and verifier, decodes with one unpack.
_HDR_NULL = struct.Struct(">IIIIIIIIII")
_HDR_NULL_SIZE = _HDR_NULL.size


def parse_call(
    data: bytes, client: Any = None, server: ServerAddress = _NO_ADDRESS, transport: str = ""
) -> Call:
    """Parse an RPC call header.

    Raises :class:`XdrError` when the message is not a well-formed call (it is dropped: with
    no trustworthy xid there is nobody to answer, RFC 5531 section 9 gives no reply for it),
    and :class:`Rejected` when it must be answered with a MSG_DENIED reply.
    """
    n = len(data)
    if n >= _HDR_NULL_SIZE:
        xid, mtype, rpcvers, prog, vers, proc, flavor, clen, _vf, vlen = _HDR_NULL.unpack_from(
            data, 0
        )
        if clen == 0 and vlen == 0 and flavor == 0 and mtype == CALL and rpcvers == RPC_VERSION:
            return Call(xid, prog, vers, proc, 0, b"", _HDR_NULL_SIZE, client, server, transport)
    elif n < _HDR_SIZE + 8:
        raise XdrError("short RPC call header")
    else:
        xid, mtype, rpcvers, prog, vers, proc, flavor, clen = _HDR.unpack_from(data, 0)
    # (The first eight words are the same in both layouts: no second unpack.)
    if mtype != CALL:
        raise XdrError(f"message type {mtype} is not CALL")
    if rpcvers != RPC_VERSION:
        raise Rejected(xid, rpc_mismatch_reply(xid), f"RPC version {rpcvers}")
    if clen > MAX_AUTH_BYTES:
        raise Rejected(xid, auth_error_reply(xid, AuthStat.BADCRED), f"credential of {clen} B")
    pos = _HDR_SIZE + clen + (-clen & 3)
    if pos + 8 > n:
        raise XdrError("truncated credential")
    cred = data[_HDR_SIZE : _HDR_SIZE + clen]
    _vflavor, vlen = _U32X2.unpack_from(data, pos)
    if vlen > MAX_AUTH_BYTES:
        raise Rejected(xid, auth_error_reply(xid, AuthStat.BADVERF), f"verifier of {vlen} B")
    pos += 8 + vlen + (-vlen & 3)
    if pos > n:
        raise XdrError("truncated verifier")
    if flavor != 0 and flavor != 1:
        # Only AUTH_NONE and AUTH_SYS are offered; RFC 5531 section 9 AUTH_REJECTEDCRED would
        # invite the client to retry the same flavor, BADCRED tells it this one will not do.
        raise Rejected(xid, auth_error_reply(xid, AuthStat.BADCRED), f"auth flavor {flavor}")
    return Call(xid, prog, vers, proc, flavor, cred, pos, client, server, transport)


# -- replies (server side) ---------------------------------------------------------------

_ACCEPTED = struct.Struct(">IIIIII")  # xid, REPLY, MSG_ACCEPTED, verf flavor, verf len, stat
_ACCEPTED_RANGE = struct.Struct(">IIIIIIII")
_DENIED_MISMATCH = struct.Struct(">IIIIII")
_DENIED_AUTH = struct.Struct(">IIIII")


def success_header(xid: int) -> bytes:
    return _ACCEPTED.pack(xid, REPLY, 0, 0, 0, 0)


def accepted_reply(xid: int, stat: int) -> bytes:
    return _ACCEPTED.pack(xid, REPLY, 0, 0, 0, stat)


def prog_mismatch_reply(xid: int, low: int, high: int) -> bytes:
    return _ACCEPTED_RANGE.pack(xid, REPLY, 0, 0, 0, AcceptStat.PROG_MISMATCH, low, high)


def rpc_mismatch_reply(xid: int) -> bytes:
    return _DENIED_MISMATCH.pack(xid, REPLY, 1, RejectStat.RPC_MISMATCH, 2, 2)


def auth_error_reply(xid: int, stat: int) -> bytes:
    return _DENIED_AUTH.pack(xid, REPLY, 1, RejectStat.AUTH_ERROR, stat)


# -- calls and replies (client side) -----------------------------------------------------


def encode_call(
    xid: int,
    prog: int,
    vers: int,
    proc: int,
    args: bytes = b"",
    cred: AuthSys | None = None,
) -> bytes:
    if cred is None:
        head = _HDR.pack(xid, CALL, RPC_VERSION, prog, vers, proc, 0, 0)
        return head + b"\0\0\0\0\0\0\0\0" + args
    body = cred.encode()
    head = _HDR.pack(xid, CALL, RPC_VERSION, prog, vers, proc, 1, len(body))
    return head + body + b"\0\0\0\0\0\0\0\0" + args


class RpcError(Exception):
    """A reply that carries no result: the call was rejected or not accepted."""

    def __init__(self, message: str, accept_stat: int | None = None) -> None:
        super().__init__(message)
        self.accept_stat = accept_stat


@dataclass(frozen=True, slots=True)
class Reply:
    xid: int
    body: bytes  # the procedure's results, after the accepted-SUCCESS header


def reply_xid(data: bytes) -> int | None:
    """The xid of a reply message, or None when ``data`` is not one (cheap pre-check)."""
    if len(data) < 8:
        return None
    xid, mtype = _U32X2.unpack_from(data, 0)
    return xid if mtype == REPLY else None


def parse_reply(data: bytes) -> Reply:
    """Parse a reply; raises :class:`RpcError` unless accepted with SUCCESS, XdrError if bad."""
    dec = Decoder(data)
    xid = dec.u32()
    if dec.u32() != REPLY:
        raise XdrError("not a reply")
    stat = dec.u32()
    if stat == ReplyStat.MSG_DENIED:
        why = dec.u32()
        if why == RejectStat.RPC_MISMATCH:
            low, high = dec.u32(), dec.u32()
            raise RpcError(f"RPC version mismatch (server supports {low}-{high})")
        if why == RejectStat.AUTH_ERROR:
            a = dec.u32()
            name = AuthStat(a).name if a in AuthStat._value2member_map_ else str(a)
            raise RpcError(f"authentication error: AUTH_{name}")
        raise XdrError(f"bad reject status {why}")
    if stat != ReplyStat.MSG_ACCEPTED:
        raise XdrError(f"bad reply status {stat}")
    dec.u32()  # verifier flavor
    dec.opaque(MAX_AUTH_BYTES)
    accept = dec.u32()
    if accept == AcceptStat.SUCCESS:
        return Reply(xid, dec.rest())
    if accept == AcceptStat.PROG_MISMATCH:
        low, high = dec.u32(), dec.u32()
        raise RpcError(f"program version mismatch (server supports {low}-{high})", accept)
    name = AcceptStat(accept).name if accept in AcceptStat._value2member_map_ else str(accept)
    raise RpcError(name, accept)
