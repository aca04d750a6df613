"""The kernel's message-header layouts for recvmmsg/sendmmsg, and the libc entry points.

Why
---
Python 3.11's socket module has neither ``recvmmsg(2)`` nor ``sendmmsg(2)``;
:mod:`floatlock.net.mmsg` calls them through ctypes over memory it lays out once.  This module
is that layout: the glibc structures (``iovec``, ``msghdr``, ``mmsghdr``, ``cmsghdr``,
``sockaddr_in6``) as ctypes definitions, and, computed from their ``sizeof`` and field
``offset`` (never hard-coded numbers), the ``struct`` formats the hot path packs and unpacks
with, the control-message encoding, the decoding of a raw sockaddr, and the two libc functions
(None off Linux/glibc: :func:`available`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "IOV_PACK",
    "IOV_SIZE",
    "LIBC",
    "MMSG_SIZE",
    "NAME_STRIDE",
    "RESULT",
    "SEND_HDR",
    "IoVec",
    "MMsgHdr",
    "SockaddrIn6",
    "align",
    "available",
    "encode_cmsgs",
    "first_cmsg_data",
    "sockaddr_tuple",
]


# -- the kernel's structures (glibc, Linux) ---------------------------------------------------


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))


class CMsgHdr(ctypes.Structure):
    _fields_ = (
        ("cmsg_len", ctypes.c_size_t),
        ("cmsg_level", ctypes.c_int),
        ("cmsg_type", ctypes.c_int),
    )


class SockaddrIn6(ctypes.Structure):
    _fields_ = (
        ("sin6_family", ctypes.c_ushort),
        ("sin6_port", ctypes.c_uint16),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", ctypes.c_ubyte * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    )


_ALIGN: Final = ctypes.sizeof(ctypes.c_size_t)


def align(n: int, to: int = _ALIGN) -> int:
    return (n + to - 1) // to * to


def _code(ctype: Any) -> str:
    """The struct code ('=' mode, no padding) of an integer or pointer ctypes type."""
    size = ctypes.sizeof(ctype)
    signed = ctype in (ctypes.c_int, ctypes.c_long, ctypes.c_short)
    code = {2: "h", 4: "i", 8: "q"}[size]
    return code if signed else code.upper()


def _hdr_fields() -> dict[str, tuple[int, Any]]:
    """Every scalar field of an mmsghdr: name -> (offset in MMsgHdr, ctypes type)."""
    base = MMsgHdr.msg_hdr.offset
    out: dict[str, tuple[int, Any]] = {
        name: (base + getattr(MsgHdr, name).offset, t) for name, t in MsgHdr._fields_
    }
    out["msg_len"] = (MMsgHdr.msg_len.offset, ctypes.c_uint)
    return out


def _struct_of(
    size: int, fields: dict[str, tuple[int, Any]], names: tuple[str, ...]
) -> struct.Struct:
    """A struct.Struct of exactly ``size`` bytes reading/writing ``names`` at their offsets.

    The gaps are pad bytes ('x'): on pack_into they are written as zeros, so a Struct used to
    write must name every field it must not clobber.
    """
    fmt, pos = "=", 0
    for off, ctype in sorted((fields[n] for n in names), key=lambda f: f[0]):
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += _code(ctype)
        pos = off + ctypes.sizeof(ctype)
    if size > pos:
        fmt += f"{size - pos}x"
    st = struct.Struct(fmt)
    assert st.size == size, (fmt, size)
    return st


_HDR_FIELDS: Final = _hdr_fields()
MMSG_SIZE: Final = ctypes.sizeof(MMsgHdr)
IOV_SIZE: Final = ctypes.sizeof(IoVec)
#: Read after recvmmsg: (msg_namelen, msg_controllen, msg_flags, msg_len) of one message.
RESULT: Final = _struct_of(
    MMSG_SIZE, _HDR_FIELDS, ("msg_namelen", "msg_controllen", "msg_flags", "msg_len")
)
#: Written per reply: a whole send mmsghdr (msg_len is an output; written as 0).
SEND_HDR: Final = _struct_of(
    MMSG_SIZE,
    _HDR_FIELDS,
    (
        "msg_name",
        "msg_namelen",
        "msg_iov",
        "msg_iovlen",
        "msg_control",
        "msg_controllen",
        "msg_flags",
        "msg_len",
    ),
)
IOV_PACK: Final = struct.Struct("=" + _code(ctypes.c_void_p) + _code(ctypes.c_size_t))
assert IOV_PACK.size == IOV_SIZE
_CMSG_HDR_SIZE: Final = ctypes.sizeof(CMsgHdr)
NAME_STRIDE: Final = align(ctypes.sizeof(SockaddrIn6))


def _cmsg_space(datalen: int) -> int:
    return _CMSG_HDR_SIZE + align(datalen)


def encode_cmsgs(cmsgs: list[tuple[int, int, bytes]]) -> bytes:
    """Control messages as the kernel reads them (CMSG_LEN in the header, CMSG_SPACE apart)."""
    out = b""
    for level, kind, data in cmsgs:
        hdr = bytes(CMsgHdr(_CMSG_HDR_SIZE + len(data), level, kind))
        out += (hdr + data).ljust(_cmsg_space(len(data)), b"\0")
    return out


def first_cmsg_data(control: bytes) -> bytes | None:
    """The data of the first control message in a received control buffer, if any."""
    if len(control) < _CMSG_HDR_SIZE:
        return None
    hdr = CMsgHdr.from_buffer_copy(control[:_CMSG_HDR_SIZE])
    end = min(int(hdr.cmsg_len), len(control))
    return control[_CMSG_HDR_SIZE:end]


def sockaddr_tuple(raw: bytes) -> tuple[Any, ...]:
    """A raw sockaddr_in/sockaddr_in6 as the tuple socket.recvmsg returns for it."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6 and len(raw) >= ctypes.sizeof(SockaddrIn6):
        sa = SockaddrIn6.from_buffer_copy(raw[: ctypes.sizeof(SockaddrIn6)])
        host = socket.inet_ntop(socket.AF_INET6, bytes(sa.sin6_addr))
        scope = int(sa.sin6_scope_id)
        if scope and (host.startswith("fe8") or host.lower().startswith("ff02")):
            try:
                host += "%" + socket.if_indextoname(scope)
            except OSError:
                host += f"%{scope}"
        return (host, port, socket.ntohl(int(sa.sin6_flowinfo)), scope)
    raise ValueError(f"unexpected sockaddr family {family}")


# -- libc -------------------------------------------------------------------------------------

_Func = Callable[..., int]


def _load_libc() -> tuple[_Func, _Func] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        recvmmsg = libc.recvmmsg
        sendmmsg = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


LIBC: Final = _load_libc()


def available() -> bool:
    """True when recvmmsg/sendmmsg can be called (Linux with a glibc-like libc)."""
    return LIBC is not None
