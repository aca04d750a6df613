"""lockd's calls to clients: NLM_GRANTED and the ``*_RES`` results of ``*_MSG`` calls (asyncio).

Theory of operation
-------------------
XNFS NLM ("Asynchronous procedures", "NLM_GRANTED"): when a blocked lock is granted, the server
calls the client's lock manager with NLM_GRANTED and the lock's ``nlm_testargs``; a client that
used the message procedures (``*_MSG``) gets each result as a separate ``*_RES`` *call*.  Both
go to the client's NLM program, found through the client's portmapper, and both must come
*from the server address the client talked to* (``host.server``): the client matches callbacks
to the server it locked against by address, and after a failover that address is the only
name the server has.

* :meth:`NlmCallbacks.granted` calls NLM_GRANTED until the client answers (the RPC client
  retransmits within one attempt; attempts are repeated ``attempts`` times), and returns the
  ``nlm_res`` status, or None when the client never answered: lockd then takes the grant back
  (:meth:`floatlock.nlm.service.NlmService.granted_answered`).
* :meth:`NlmCallbacks.granted_msg` is the asynchronous form for clients that asked with
  LOCK_MSG: it calls NLM_GRANTED_MSG (procedure 10, whose RPC reply, if the client sends one,
  is void and means nothing) and waits for the client's NLM_GRANTED_RES call (procedure 15),
  which the program hands to :meth:`NlmCallbacks.granted_res`.  The ``nlm_testargs`` cookie is
  lockd's own, unique per grant, and GRANTED_RES is matched by it and by the client address;
  a missing GRANTED_RES makes it resend GRANTED_MSG, ``attempts`` times in all.
* :meth:`NlmCallbacks.result` sends one ``*_RES`` call; it is void and best effort (a lost
  result makes the client retry its ``*_MSG``, as XNFS expects).

The client's NLM port is looked up per call with ``port_of(client, vers, source)`` (the
portmapper by default); tests pass a fixed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from floatlock.net.client import RpcClient
from floatlock.nlm.codec import codec_for
from floatlock.nlm.proto import NLM_PROG, NlmProc, Res, ShareRes, TestRes
from floatlock.nlm.service import SendGranted, SendResult
from floatlock.portmap.register import getport
from floatlock.rpc.message import RpcError
from floatlock.xdr import Decoder, XdrError

__all__ = ["NlmCallbacks", "PortOf"]

log = logging.getLogger("floatlock.nlm.callbacks")

#: (client address, NLM version, source address) -> the client's NLM UDP port (0: none).
PortOf = Callable[[str, int, str], Awaitable[int]]


async def _portmapper(client: str, vers: int, source: str) -> int:
    return await getport(client, NLM_PROG, vers, "udp", source=source)


class NlmCallbacks:
    """Sends NLM_GRANTED and ``*_RES`` calls from the right server address."""

    def __init__(
        self,
        *,
        port_of: PortOf | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
        rto: float = 0.5,
    ) -> None:
        self._port_of = port_of if port_of is not None else _portmapper
        self.timeout = timeout
        self.attempts = attempts
        self.rto = rto
        self.sent = 0
        self.failed = 0
        # (client address, cookie) -> the GRANTED_RES status awaited for a GRANTED_MSG.
        self._res: dict[tuple[str, bytes], asyncio.Future[int]] = {}

    async def _call(self, client: str, source: str, vers: int, proc: int, body: bytes) -> bytes:
        port = await self._port_of(client, vers, source)
        if not port:
            raise ConnectionError(f"{client} has no NLM v{vers} registered")
        async with await RpcClient.connect(
            client, port, "udp", source=source, timeout=self.timeout, rto=self.rto
        ) as rpc:
            return await rpc.call(NLM_PROG, vers, proc, body)

    async def granted(self, eff: SendGranted) -> int | None:
        """Call NLM_GRANTED; the client's ``nlm_res`` status, or None if it never answered."""
        codec = codec_for(eff.vers)
        body = codec.encode_testargs(eff.args)
        host = eff.host
        for attempt in range(self.attempts):
            try:
                reply = await self._call(host.addr, host.server, eff.vers, NlmProc.GRANTED, body)
                self.sent += 1
                return codec.res(Decoder(reply)).stat
            except (TimeoutError, ConnectionError, OSError, RpcError, XdrError) as e:
                log.info("GRANTED to %s (attempt %d) failed: %s", host.addr, attempt + 1, e)
        self.failed += 1
        return None

    async def granted_msg(self, eff: SendGranted) -> int | None:
        """Call NLM_GRANTED_MSG and await GRANTED_RES; its status, or None if none came."""
        codec = codec_for(eff.vers)
        body = codec.encode_testargs(eff.args)
        host = eff.host
        key = (host.addr, eff.args.cookie)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._res[key] = fut
        try:
            for attempt in range(self.attempts):
                sending = asyncio.ensure_future(
                    self._call(host.addr, host.server, eff.vers, NlmProc.GRANTED_MSG, body)
                )
                try:
                    stat = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                except TimeoutError:
                    log.info("no GRANTED_RES from %s (attempt %d)", host.addr, attempt + 1)
                    continue
                finally:
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await sending
                self.sent += 1
                return stat
        finally:
            del self._res[key]
        self.failed += 1
        return None

    def granted_res(self, client: str, cookie: bytes, stat: int) -> bool:
        """A GRANTED_RES arrived from ``client``; True when it answered a GRANTED_MSG."""
        fut = self._res.get((client, cookie))
        if fut is None or fut.done():
            return False
        fut.set_result(stat)
        return True

    async def result(self, eff: SendResult) -> bool:
        """Send a ``*_RES`` call; True when the client accepted it."""
        codec = codec_for(eff.vers)
        r = eff.result
        if isinstance(r, TestRes):
            body = codec.encode_testres(r)
        elif isinstance(r, ShareRes):
            body = codec.encode_shareres(r)
        else:
            assert isinstance(r, Res)
            body = codec.encode_res(r)
        host = eff.host
        try:
            await self._call(host.addr, host.server, eff.vers, eff.proc, body)
        except (TimeoutError, ConnectionError, OSError, RpcError) as e:
            self.failed += 1
            log.info("%s to %s failed: %s", eff.proc.name, host.addr, e)
            return False
        self.sent += 1
        return True
