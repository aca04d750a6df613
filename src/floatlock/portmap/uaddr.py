"""Universal addresses (RFC 1833 section 2.1; RFC 5665 section 5.2.3) and Linux sockaddrs.

A universal address is the text form of a transport address: for IP, the host's text followed
by the port as two more decimal octets, ``h1.h2.h3.h4.p1.p2`` with ``port = p1 * 256 + p2``;
IPv6 uses the usual colon form followed by ``.p1.p2``.  rpcbind's UADDR2TADDR / TADDR2UADDR
convert them to and from the raw ``struct sockaddr`` a netbuf carries
(:class:`floatlock.portmap.proto.Netbuf`).  Conversions only; every failure is a
:class:`UaddrError` (a :class:`ValueError`).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Final

__all__ = [
    "UaddrError",
    "merge_uaddr",
    "parse_uaddr",
    "sockaddr_to_uaddr",
    "uaddr",
    "uaddr_to_sockaddr",
]


class UaddrError(ValueError):
    """Text that is not a universal address floatlock can use."""


# -- universal addresses (RFC 1833 section 2.1; RFC 5665 section 5.2.3) ---------------------


def uaddr(host: str, port: int) -> str:
    """The universal address of ``host``:``port``, e.g. ``uaddr("0.0.0.0", 4045)``."""
    if not 0 <= port <= 0xFFFF:
        raise UaddrError(f"port out of range: {port}")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as e:
        raise UaddrError(str(e)) from None
    return f"{ip}.{port >> 8}.{port & 0xFF}"


def parse_uaddr(text: str) -> tuple[str, int]:
    """``(host, port)`` of an IPv4 or IPv6 universal address; raises :class:`UaddrError`."""
    parts = text.rsplit(".", 2)
    if len(parts) != 3:
        raise UaddrError(f"not a universal address: {text!r}")
    host, hi, lo = parts
    # Strictly decimal octets: int() would also take " 1", "+1" or "1_0".
    if not (hi.isdigit() and lo.isdigit() and hi.isascii() and lo.isascii()):
        raise UaddrError(f"bad port octets in {text!r}")
    p1, p2 = int(hi), int(lo)
    if p1 > 255 or p2 > 255:
        raise UaddrError(f"port octet over 255 in {text!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UaddrError(f"bad host in universal address {text!r}") from None
    return str(ip), p1 * 256 + p2


def merge_uaddr(registered: str, local_ip: str) -> str:
    """Replace a wildcard host (0.0.0.0, ::) by the local address the query arrived on.

    A service bound to every address registers a wildcard; the caller needs a real address
    (RFC 1833 section 2.2.2, "merged address" of RPCBPROC_GETADDRLIST).  Answering with the
    address the *caller* used is what keeps a floating IP's clients on that IP.  Addresses
    of the other family, or ones that do not parse, are returned unchanged.
    """
    try:
        host, port = parse_uaddr(registered)
    except UaddrError:
        return registered
    ip = ipaddress.ip_address(host)
    if not ip.is_unspecified:
        return registered
    try:
        local = ipaddress.ip_address(local_ip)
    except ValueError:
        return registered
    if local.version != ip.version:
        return registered
    return uaddr(str(local), port)


# -- raw sockaddrs (the netbufs of UADDR2TADDR / TADDR2UADDR, RFC 1833 section 2.1) ------------

_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)
# A netbuf carries a raw struct sockaddr; rpcbind sends the local machine's layout, family in
# host byte order.  We do the same (Linux, little-endian on every platform we target).
_FAMILY = struct.Struct("=H")


def uaddr_to_sockaddr(text: str) -> bytes:
    """A Linux ``struct sockaddr_in``/``sockaddr_in6`` for a universal address."""
    host, port = parse_uaddr(text)
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return _FAMILY.pack(_AF_INET) + struct.pack(">H", port) + ip.packed + bytes(8)
    return _FAMILY.pack(_AF_INET6) + struct.pack(">HI", port, 0) + ip.packed + bytes(4)


def sockaddr_to_uaddr(raw: bytes) -> str:
    """The universal address of a Linux sockaddr; raises :class:`UaddrError`."""
    if len(raw) < 2:
        raise UaddrError("sockaddr too short")
    (family,) = _FAMILY.unpack_from(raw)
    if family == _AF_INET and len(raw) >= 8:
        (port,) = struct.unpack_from(">H", raw, 2)
        return uaddr(str(ipaddress.IPv4Address(raw[4:8])), port)
    if family == _AF_INET6 and len(raw) >= 24:
        (port,) = struct.unpack_from(">H", raw, 2)
        return uaddr(str(ipaddress.IPv6Address(raw[8:24])), port)
    raise UaddrError(f"unsupported sockaddr family {family}")
