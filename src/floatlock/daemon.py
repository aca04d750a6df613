"""The daemon: one process that owns all state, wires the programs to the transports.

Theory of operation
-------------------
One :class:`~floatlock.rpc.dispatch.Dispatcher` holds every program (NFS, MOUNT, NLM, NSM and,
when no rpcbind runs, the portmapper).  Each service has a port of its own (firewalls and
clients expect NFS on 2049, the others are found through the portmapper); on each port and each
listen address the daemon runs a UDP and a TCP server over that one dispatcher.  Wildcard
listen addresses are the default: a virtual address that moves onto this node is served the
moment it is configured on an interface, and the transports tell every handler which local
address each request arrived on (:mod:`floatlock.address`).

The daemon is the only place that knows every component.  lockd's core never calls statd: it
returns effects ("monitor this client under this server address") that the lockd adapter
carries out through the statd client, which the daemon points at the in-process statd.

Start order: state directories, components, listeners, then portmapper registration (clients
must not find a port before it answers).  Stop order is the reverse, and statd's state number
is made even on a clean stop (the NSM rule) by its own close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from floatlock.config import Config
from floatlock.net.portpair import listen_pair
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import PortmapError, PortmapHandle, start_portmapper
from floatlock.rpc.dispatch import Dispatcher

log = logging.getLogger("floatlock.daemon")

# NFS WRITE of 1 MiB plus its header must fit in one TCP record.
MAX_TCP_RECORD = (1 << 20) + 8192


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the admin."""


@dataclass(slots=True)
class Service:
    """A group of programs served on one port, and how to put them into the dispatcher."""

    name: str
    port: int
    register: Callable[[Dispatcher], None]
    programs: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Listener:
    service: str
    host: str
    udp: UdpServer
    tcp: TcpServer


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dispatcher = Dispatcher()
        self.services: list[Service] = []
        self.listeners: list[Listener] = []
        self.portmap: PortmapHandle | None = None
        self._starters: list[Callable[[], Awaitable[None]]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._timers: list[tuple[float, Callable[[float], None]]] = []
        self._timer_tasks: list[asyncio.Task[None]] = []
        #: the components, by name, for whoever steers the daemon (tests; later the control
        #: socket of the roadmap)
        self.components: dict[str, object] = {}

    def add_service(self, service: Service, programs: list[tuple[int, int]] | None = None) -> None:
        """Add ``service``; the programs it advertises are those its ``register`` added to
        the dispatcher, or ``programs`` when given (one registration serving two ports)."""
        before = {(p, v) for p, v, _ in self.dispatcher.programs()}
        service.register(self.dispatcher)
        if programs is None:
            programs = sorted({(p, v) for p, v, _ in self.dispatcher.programs()} - before)
        service.programs = list(programs)
        self.services.append(service)

    def on_start(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` once the services listen, before they are advertised."""
        self._starters.append(fn)

    def on_close(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(fn)

    def add_timer(self, interval: float, fn: Callable[[float], None]) -> None:
        """Call ``fn(now)`` every ``interval`` seconds while the daemon runs (monotonic now:
        the sans-IO cores' clock)."""
        self._timers.append((interval, fn))

    async def start(self) -> None:
        _raise_fd_limit()
        endpoints: list[Endpoint] = []
        for svc in self.services:
            endpoints += await self._listen(svc)
        for fn in self._starters:
            await fn()
        for interval, tick in self._timers:
            self._timer_tasks.append(asyncio.create_task(self._run_timer(interval, tick)))
        await self._start_portmapper(endpoints)

    @staticmethod
    async def _run_timer(interval: float, tick: Callable[[float], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                tick(time.monotonic())
            except Exception:
                log.exception("timer %r failed", tick)

    async def _listen(self, svc: Service) -> list[Endpoint]:
        """UDP and TCP servers for ``svc`` on every listen address; the endpoints bound."""
        endpoints: list[Endpoint] = []
        failures: list[str] = []
        for host in self.cfg.server.listen:
            try:
                udp, tcp = await listen_pair(
                    self.dispatcher, host, svc.port, max_record=MAX_TCP_RECORD
                )
            except OSError as e:
                if e.errno == errno.EAFNOSUPPORT or (
                    e.errno == errno.EADDRNOTAVAIL and host in ("::", "::1")
                ):
                    log.info("no IPv6 here: not listening on %s", host)
                    continue
                failures.append(f"{host} port {svc.port}: {e.strerror or e}")
                continue
            self.listeners.append(Listener(svc.name, host, udp, tcp))
            v6 = ":" in host
            for prog, vers in svc.programs:
                endpoints.append(Endpoint(prog, vers, "udp6" if v6 else "udp", udp.port))
                endpoints.append(Endpoint(prog, vers, "tcp6" if v6 else "tcp", tcp.port))
            log.info("%s listening on %s port %d (udp, tcp)", svc.name, host, udp.port)
        if failures:
            raise StartupError(f"{svc.name}: cannot listen on {'; '.join(failures)}")
        if not any(listener.service == svc.name for listener in self.listeners):
            raise StartupError(f"{svc.name}: no listen address could be used")
        return endpoints

    async def _start_portmapper(self, endpoints: list[Endpoint]) -> None:
        mode = self.cfg.portmap.mode
        if mode == "off":
            return
        port = self.cfg.ports.portmap
        netids = [("udp6", "tcp6") if ":" in h else ("udp", "tcp") for h in self.cfg.server.listen]
        builtin_netids = tuple(dict.fromkeys(n for pair in netids for n in pair))
        try:
            if mode == "system":
                from floatlock.portmap.register import register_with_rpcbind

                self.portmap = await register_with_rpcbind(endpoints, port=port)
            elif mode == "builtin":
                from floatlock.portmap.register import builtin_portmapper

                self.portmap = builtin_portmapper(
                    self.dispatcher, endpoints, port=port, netids=builtin_netids
                )
            else:
                self.portmap = await start_portmapper(
                    self.dispatcher,
                    endpoints,
                    rpcbind_port=port,
                    builtin_port=port,
                    builtin_netids=builtin_netids,
                )
        except PortmapError as e:
            raise StartupError(str(e)) from None
        if self.portmap.mode == "builtin":
            pm = Service("portmap", port, lambda d: None)
            await self._listen(pm)

    async def stop(self) -> None:
        for task in self._timer_tasks:
            task.cancel()
        self._timer_tasks.clear()
        if self.portmap is not None:
            await self.portmap.close()
        for listener in self.listeners:
            listener.udp.close()
            await listener.tcp.close()
        self.listeners.clear()
        for fn in reversed(self._closers):
            try:
                await fn()
            except Exception:
                log.exception("error while stopping")


def _raise_fd_limit() -> None:
    """lockd mirrors every NLM lock owner's locks on a file through an open file description
    of its own (OFD locks), and NFS keeps descriptors open: the default soft limit of 1024
    would cap a server at about a thousand lock owners.  Take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("open file limit raised from %d to %d", soft, target)


async def serve(daemon: Daemon) -> int:
    """Run until SIGTERM or SIGINT; return the process exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
    except StartupError as e:
        log.error("cannot start: %s", e)
        await daemon.stop()
        return 1
    log.info("floatlock ready (pid %d)", os.getpid())
    await stop.wait()
    log.info("stopping")
    await daemon.stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    return 0
