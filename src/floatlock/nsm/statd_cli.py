"""``floatlock statd``: floatlock's statd alone, a drop-in for nfs-utils ``rpc.statd`` (same
short options where they exist).  :func:`add_arguments` and :func:`run` are re-exported by
:mod:`floatlock.nsm.statd`, where the command line code was first.

* **Listening.**  UDP and TCP on every ``--listen`` address (repeatable), all on one port
  number (``-p``, or the one the first socket was given).  Without ``--listen``: ``0.0.0.0``
  and, when this host has IPv6 (``::1`` can be bound), ``::``; a default ``::`` that cannot be
  bound is skipped with a log line, while an address given explicitly must work.
* **rpcbind.**  100024 v1 is registered for ``udp``/``tcp`` and, when an IPv6 address is
  listened on, ``udp6``/``tcp6`` (``--no-rpcbind``: nothing).
* **Outgoing port.**  ``-o PORT`` makes every SM_NOTIFY (and the portmapper query before it)
  leave from that port, as ``rpc.statd -o`` does (:mod:`floatlock.nsm.notify`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from floatlock.portmap.proto import Endpoint

if TYPE_CHECKING:
    from floatlock.net.tcp import TcpServer
    from floatlock.net.udp import UdpServer
    from floatlock.nsm.statd import StatdConfig
    from floatlock.rpc.dispatch import Dispatcher

__all__ = [
    "DEFAULT_LISTEN",
    "Listeners",
    "add_arguments",
    "config_from_args",
    "ipv6_available",
    "listen",
    "listen_addresses",
    "run",
]

log = logging.getLogger("floatlock.nsm.statd")

SM_PROG, SM_VERS = 100024, 1
DEFAULT_LISTEN = ("0.0.0.0", "::")
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)
_EPHEMERAL_TRIES = 8  # an ephemeral port of one family may be taken in the other


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``floatlock statd`` (nfs-utils rpc.statd's where they exist)."""
    parser.add_argument(
        "-P", "--state-directory-path", default="/var/lib/floatlock/statd", type=Path,
        help="state directory (node/ and vs/<address>/, each with sm/, sm.bak/, state)",
    )  # fmt: skip
    parser.add_argument("-H", "--ha-callout", default=None, help="HA callout program")
    parser.add_argument(
        "-L", "--no-notify", action="store_true", help="do not notify peers at start"
    )
    parser.add_argument("-p", "--port", type=int, default=0, help="port to listen on")
    parser.add_argument(
        "-o", "--outgoing-port", type=int, default=0,
        help="source port of SM_NOTIFY and of the portmapper queries before it (0: any)",
    )  # fmt: skip
    parser.add_argument("-F", "--foreground", action="store_true", help="stay in foreground")
    parser.add_argument("-d", "--no-syslog", action="store_true", help="debug log to stderr")
    parser.add_argument("-n", "--name", default=None, help="node name sent in SM_NOTIFY")
    parser.add_argument(
        "--listen", action="append", default=None, metavar="ADDR",
        help="address to listen on (repeatable; default: 0.0.0.0, and :: when IPv6 works)",
    )  # fmt: skip
    parser.add_argument("--grace", type=float, default=90.0, help="grace seconds per identity")
    parser.add_argument(
        "--virtual-server", action="append", default=[], metavar="ADDR",
        help="take this virtual server address over at start (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-rpcbind", action="store_true", help="do not register with rpcbind")
    parser.add_argument(
        "--no-resolve", action="store_true",
        help="never look host-named peers up (match SM_NOTIFY by mon_name or address text)",
    )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> StatdConfig:
    """The :class:`~floatlock.nsm.statd.StatdConfig` the options ask for."""
    from floatlock.nsm.statd import StatdConfig

    if not 0 <= args.outgoing_port <= 0xFFFF:
        raise ValueError(f"outgoing port out of range: {args.outgoing_port}")
    return StatdConfig(
        state_dir=args.state_directory_path,
        grace=args.grace,
        notify=not args.no_notify,
        node_name=args.name,
        ha_callout=args.ha_callout,
        resolve_names=not args.no_resolve,
        outgoing_port=args.outgoing_port,
    )


def ipv6_available() -> bool:
    """True when this host (network namespace) has working IPv6: ``::1`` can be bound."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def listen_addresses(given: Sequence[str] | None) -> tuple[list[str], frozenset[str]]:
    """The addresses to listen on, and those of them that may be skipped when unusable
    (the defaulted IPv6 wildcard)."""
    if given:
        return list(dict.fromkeys(given)), frozenset()
    hosts = [h for h in DEFAULT_LISTEN if ":" not in h or ipv6_available()]
    return hosts, frozenset(h for h in hosts if ":" in h)


@dataclass(slots=True)
class Listeners:
    """The servers :func:`listen` started, their common port and the endpoints to register."""

    servers: list[tuple[str, UdpServer, TcpServer]]
    port: int
    endpoints: list[Endpoint]

    @property
    def hosts(self) -> list[str]:
        return [h for h, _, _ in self.servers]

    async def close(self) -> None:
        for _, udp, tcp in self.servers:
            udp.close()
            await tcp.close()
        self.servers = []


async def _listen_once(
    dispatcher: Dispatcher, hosts: Sequence[str], port: int, optional: frozenset[str]
) -> Listeners:
    from floatlock.net.portpair import listen_pair

    ls = Listeners([], port, [])
    try:
        for host in hosts:
            # One port number for every address and both transports, as rpc.statd has: the
            # first address's (listen_pair picks it for port 0), then the same on the others.
            try:
                udp, tcp = await listen_pair(dispatcher, host, ls.port)
            except OSError as e:
                if host in optional and e.errno in _NO_IPV6:
                    log.info("no IPv6 here: not listening on %s (%s)", host, e.strerror or e)
                    continue
                raise
            ls.port = udp.port
            ls.servers.append((host, udp, tcp))
        if not ls.servers:
            raise OSError(errno.EADDRNOTAVAIL, f"none of {', '.join(hosts)} can be listened on")
    except BaseException:
        await ls.close()
        raise
    eps: dict[Endpoint, None] = {}
    for host in ls.hosts:
        six = "6" if ":" in host else ""
        eps[Endpoint(SM_PROG, SM_VERS, "udp" + six, ls.port)] = None
        eps[Endpoint(SM_PROG, SM_VERS, "tcp" + six, ls.port)] = None
    ls.endpoints = list(eps)
    return ls


async def listen(
    dispatcher: Dispatcher,
    hosts: Sequence[str],
    port: int = 0,
    optional: frozenset[str] = frozenset(),
) -> Listeners:
    """UDP and TCP servers of ``dispatcher`` on every address of ``hosts``, on one port.

    ``port`` 0: the port the first UDP socket gets, tried again (a few times) when another
    address or transport finds it taken.  Addresses in ``optional`` that fail for want of IPv6
    are skipped.  Raises :class:`OSError`.
    """
    for attempt in range(1, _EPHEMERAL_TRIES + 1):
        try:
            return await _listen_once(dispatcher, hosts, port, optional)
        except OSError as e:
            if port != 0 or e.errno != errno.EADDRINUSE or attempt == _EPHEMERAL_TRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def run(args: argparse.Namespace) -> int:
    """Run statd alone until SIGINT/SIGTERM; exit status."""
    from floatlock.nsm.statd import Statd
    from floatlock.portmap.register import PortmapError, register_with_rpcbind
    from floatlock.rpc.dispatch import Dispatcher

    logging.basicConfig(
        level=logging.DEBUG if args.no_syslog else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as e:
        log.error("%s", e)
        return 2
    dispatcher = Dispatcher()
    statd = Statd(config, dispatcher)
    hosts, optional = listen_addresses(args.listen)
    try:
        listeners = await listen(dispatcher, hosts, args.port, optional)
    except OSError as e:
        log.error("cannot listen on %s port %d: %s", ", ".join(hosts), args.port, e)
        return 1
    handle = None
    if not args.no_rpcbind:
        try:
            handle = await register_with_rpcbind(listeners.endpoints)
        except (PortmapError, OSError) as e:
            log.error("cannot register with rpcbind: %s", e)
            await listeners.close()
            return 1
    await statd.start(args.virtual_server)
    print(
        f"floatlock statd listening on {', '.join(listeners.hosts)} port {listeners.port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await statd.stop()
    if handle is not None:
        await handle.close()
    await listeners.close()
    return 0
