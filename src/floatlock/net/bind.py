"""Binding client sockets: a chosen source address, a fixed port, or a reserved port.

A virtual server must be seen calling *from its own address* (a client's statd and lockd match
the caller by address), some peers insist on a reserved source port (< 1024, the RFC 1057-era
convention; needs root), and ``rpc.statd -o PORT`` sends every SM_NOTIFY from one fixed port so
a firewall can let the answers in.  :func:`bind_source` makes such a socket; the RPC client
(:mod:`floatlock.net.client`) connects it to the peer address :func:`peer_address` picks in
the source's family.

A fixed UDP port shared by several sockets at once (``shared``): each socket sets SO_REUSEADDR
before binding and is then *connected* to its own peer.  Linux hands an incoming datagram to the
socket whose connected peer matches the sender, so parallel calls to different peers from one
source port each get their own replies.  Two shared sockets connected to the same peer get
each other's replies at random; UDP retransmission sorts that out once one of them closes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import Any, Literal

__all__ = ["RESERVED_PORTS", "bind_source", "peer_address"]

# Reserved ports tried by ``privileged`` binds, highest first (bindresvport(3) uses 600-1023
# too; the lowest ones are left to well-known services).
RESERVED_PORTS = range(1023, 599, -1)


def bind_source(
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    source: str | None,
    source_port: int = 0,
    privileged: bool = False,
    *,
    shared: bool = False,
) -> socket.socket:
    """A non-blocking socket bound to ``source`` (or the wildcard) and a port.

    With ``privileged`` (and ``source_port`` 0) the ports 1023 down to 600 are tried in turn,
    skipping those in use; :class:`PermissionError` when we may not bind them at all.  With
    ``shared`` a fixed ``source_port`` may be held by other shared sockets at the same time
    (see the module docstring); it has no effect without a fixed port.
    """
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if source_port and (kind == socket.SOCK_STREAM or shared):
            # TCP: a reconnect from the same fixed port must not wait out TIME_WAIT.  Not for
            # privileged picks: with SO_REUSEADDR two clients could bind the same reserved
            # port and the second connect() to the same server would fail (EADDRNOTAVAIL).
            # UDP (shared): several connected sockets on one port, one per peer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host = source if source is not None else ("::" if family == socket.AF_INET6 else "")
        if privileged and source_port == 0:
            for port in RESERVED_PORTS:
                try:
                    sock.bind((host, port))
                    break
                except OSError as e:
                    if e.errno in (errno.EACCES, errno.EPERM):
                        raise PermissionError(e.errno, "binding a reserved port needs root") from e
                    if e.errno != errno.EADDRINUSE:
                        raise
            else:
                raise OSError(errno.EADDRINUSE, "no free reserved port in 600-1023")
        elif source is not None or source_port:
            sock.bind((host, source_port))
    except BaseException:
        sock.close()
        raise
    return sock


async def peer_address(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    transport: Literal["udp", "tcp"],
    source: str | None,
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The server's socket address, in the family of ``source`` when one is given (a socket
    bound to ``source`` can only reach a peer of its own family)."""
    want = socket.AF_UNSPEC
    if source is not None:
        want = socket.AF_INET6 if ipaddress.ip_address(source).version == 6 else socket.AF_INET
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        infos = await loop.getaddrinfo(host, port, family=want, type=kind)
        if not infos:
            raise OSError(f"cannot resolve {host!r}") from None
        family, _, _, _, addr = infos[0]
        return family, tuple(addr)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if want != socket.AF_UNSPEC and want != family:
        raise ValueError(f"source {source} and server {host} are of different address families")
    return family, (host, port)
