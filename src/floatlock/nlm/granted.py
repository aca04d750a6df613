"""The NLM client's callback service: receiving GRANTED for a blocked lock request.

Theory of operation
-------------------
XNFS, NLM chapter, "NLM_LOCK": a LOCK with ``block`` set that cannot be granted at once is
answered ``nlm_blocked``; when the lock becomes free the *server* calls the client's lock
manager with ``NLM_GRANTED`` (procedure 5, answered with ``nlm_res``) or the message form
``NLM_GRANTED_MSG`` (procedure 10, answered by a separate ``NLM_GRANTED_RES`` call, XNFS
"Asynchronous procedures").  The server finds the client's lock manager through the
portmapper at the client's address, so a process that is its own NLM client must serve
program 100021 of its version on some port and register it there (PMAP SET from loopback
works both with a system rpcbind and floatlock's built-in portmapper).

:class:`GrantedListener` runs that service: one UDP and one TCP server on an ephemeral port
with a :class:`~floatlock.rpc.dispatch.Dispatcher` holding GRANTED and GRANTED_MSG, the
registration (unless another NLM already owns the mapping: then nothing is registered and the
client falls back to polling, as Linux's client does every 30 s), and a table of waiters.  A
GRANTED matches a waiter when fh, owner handle, svid and extent are equal and, when the
waiter names one, it came from the server's address; it is answered ``nlm_granted``.  A
GRANTED that matches nothing (we gave up and cancelled) is answered ``nlm_denied`` so that the
server releases the lock again (XNFS "NLM_GRANTED": the client "may" refuse).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from floatlock.net.client import RpcConnectionError, RpcTimeout, rpc_call
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.nlm.codec import codec_for
from floatlock.nlm.proto import NLM_PROG, Nlm4Stat, NlmLock, NlmProc, Res, TestArgs
from floatlock.portmap.proto import PMAP_PORT, Endpoint
from floatlock.portmap.register import PortmapError, PortmapHandle, getport, register_with_rpcbind
from floatlock.rpc.dispatch import NO_REPLY, Call, Dispatcher, Procedure
from floatlock.rpc.message import RpcError
from floatlock.xdr import XdrError

__all__ = ["GrantedListener", "Waiter"]

log = logging.getLogger("floatlock.nlm.client")

_RES_TIMEOUT: Final = 5.0


@dataclass(slots=True, eq=False)
class Waiter:
    """A blocked request waiting for its GRANTED; ``future`` resolves when it arrives."""

    lock: NlmLock
    server_ip: str | None
    future: asyncio.Future[None] = field(repr=False)

    def matches(self, lk: NlmLock, caller_ip: str) -> bool:
        mine = self.lock
        if self.server_ip is not None and caller_ip != self.server_ip:
            return False
        return (
            lk.fh == mine.fh
            and lk.oh == mine.oh
            and lk.svid == mine.svid
            and lk.offset == mine.offset
            and lk.length == mine.length
        )


class GrantedListener:
    """Serve NLM GRANTED / GRANTED_MSG of one version and match them to waiters.

    Args:
        vers: the NLM version (1, 3 or 4) whose callbacks are served.
        host: address the callback sockets bind to ("0.0.0.0": reachable on every address).
        pmap_host, pmap_port: the local portmapper the service is registered with.
        register: False serves without registering (the caller registers it some other way).
        server_pmap_port: the port of the *server's* portmapper, used to find where to send
            GRANTED_RES.
    """

    def __init__(
        self,
        vers: int,
        *,
        host: str = "0.0.0.0",
        pmap_host: str = "127.0.0.1",
        pmap_port: int = PMAP_PORT,
        register: bool = True,
        server_pmap_port: int = PMAP_PORT,
    ) -> None:
        self.vers = vers
        self.host = host
        self.pmap_host = pmap_host
        self.pmap_port = pmap_port
        self.register = register
        self.server_pmap_port = server_pmap_port
        self.codec = codec_for(vers)
        self.registered = False
        self.granted_calls = 0
        self.unmatched_calls = 0
        self._waiters: list[Waiter] = []
        self._udp: UdpServer | None = None
        self._tcp: TcpServer | None = None
        self._handle: PortmapHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The UDP port of the service (TCP listens on :attr:`tcp_port`)."""
        assert self._udp is not None
        return int(self._udp.sockname[1])

    @property
    def tcp_port(self) -> int:
        assert self._tcp is not None
        return self._tcp.port

    def dispatcher(self) -> Dispatcher:
        c = self.codec
        d = Dispatcher()
        d.register(
            NLM_PROG,
            self.vers,
            {
                NlmProc.GRANTED: Procedure("GRANTED", self._granted, c.testargs, c.encode_res),
                NlmProc.GRANTED_MSG: Procedure("GRANTED_MSG", self._granted_msg, c.testargs),
            },
            name="nlockmgr",
        )
        return d

    async def start(self) -> None:
        d = self.dispatcher()
        self._udp = UdpServer(d, self.host, 0)
        await self._udp.start()
        self._tcp = TcpServer(d, self.host, 0)
        await self._tcp.start()
        if self.register:
            await self._register()

    async def _register(self) -> None:
        """Register with the local portmapper unless another NLM already owns the mapping."""
        try:
            other = await getport(
                self.pmap_host, NLM_PROG, self.vers, "udp", port=self.pmap_port, timeout=2.0
            )
        except (OSError, RpcError, XdrError) as e:
            log.warning(
                "no portmapper at %s:%d (%s); GRANTED callbacks cannot reach us",
                self.pmap_host,
                self.pmap_port,
                e,
            )
            return
        if other:
            log.info("NLM v%d already registered (port %d); polling instead", self.vers, other)
            return
        eps = (
            Endpoint(NLM_PROG, self.vers, "udp", self.port),
            Endpoint(NLM_PROG, self.vers, "tcp", self.tcp_port),
        )
        try:
            self._handle = await register_with_rpcbind(
                eps, host=self.pmap_host, port=self.pmap_port
            )
        except (PortmapError, OSError) as e:
            log.warning("cannot register the GRANTED callback service: %s", e)
            return
        self.registered = True

    def expect(self, lock: NlmLock, server_ip: str | None) -> Waiter:
        """Start waiting for the GRANTED of ``lock`` (before the LOCK is sent: UDP may
        deliver the GRANTED before the BLOCKED reply)."""
        w = Waiter(lock, server_ip, asyncio.get_running_loop().create_future())
        self._waiters.append(w)
        return w

    def forget(self, w: Waiter) -> None:
        if w in self._waiters:
            self._waiters.remove(w)

    def _match(self, args: TestArgs, call: Call) -> int:
        """XNFS "NLM_GRANTED": nlm_granted when we wait for this lock, else nlm_denied."""
        for w in self._waiters:
            if w.matches(args.lock, call.client_ip):
                self._waiters.remove(w)
                if not w.future.done():
                    w.future.set_result(None)
                self.granted_calls += 1
                return Nlm4Stat.GRANTED
        self.unmatched_calls += 1
        log.info("GRANTED from %s matches no blocked request: %s", call.client_ip, args.lock)
        return Nlm4Stat.DENIED

    def _granted(self, args: TestArgs, call: Call) -> Res:
        return Res(args.cookie, self._match(args, call))

    def _granted_msg(self, args: TestArgs, call: Call) -> Any:
        stat = self._match(args, call)
        task = asyncio.get_running_loop().create_task(
            self._send_res(call.client_ip, Res(args.cookie, stat))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return NO_REPLY

    async def _send_res(self, host: str, res: Res) -> None:
        """XNFS "Asynchronous procedures": the answer to GRANTED_MSG is a GRANTED_RES call
        to the caller's lock manager, found through its portmapper."""
        try:
            port = await getport(host, NLM_PROG, self.vers, "udp", port=self.server_pmap_port)
            if not port:
                log.info("no NLM v%d at %s for GRANTED_RES", self.vers, host)
                return
            await rpc_call(
                host,
                port,
                "udp",
                NLM_PROG,
                self.vers,
                NlmProc.GRANTED_RES,
                self.codec.encode_res(res),
                timeout=_RES_TIMEOUT,
            )
        except (RpcTimeout, RpcConnectionError, OSError, RpcError, XdrError) as e:
            # GRANTED_RES is a message: the server's reply (void) may never come.
            log.debug("GRANTED_RES to %s: %s", host, e)

    async def close(self) -> None:
        """Unregister, stop serving, and fail the waiters still pending."""
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        self._waiters.clear()
        if self._handle is not None:
            await self._handle.close()
            self._handle = None
        for t in list(self._tasks):
            t.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            await self._tcp.close()
