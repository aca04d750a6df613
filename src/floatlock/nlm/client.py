"""An asyncio NLM client: TEST, LOCK, CANCEL, UNLOCK, SHARE, UNSHARE, NM_LOCK, FREE_ALL.

Theory of operation
-------------------
:class:`NlmClient` speaks NLM v1, v3 or v4 (XNFS, chapters "Network Lock Manager Protocol"
and "NLM Version 4") to one server over UDP or TCP, with the synchronous procedures only
(the ``*_MSG`` forms exist for servers that cannot answer in time; every lockd answers the
synchronous ones).  The lock owner is the XNFS triple ``caller_name`` (default: the local
host name), ``svid`` (default: our pid) and ``oh`` (default: ``b"svid@caller_name"``, the
shape the Linux client uses), so a later invocation can name the same owner to unlock.

* **Extents.**  v1 and v3 carry 32-bit ``l_offset``/``l_len``; a range that does not fit is
  refused with :class:`NlmRangeError` rather than silently narrowed.  Length 0 means "to the
  end of the file" in every version.
* **Blocking locks** (XNFS "NLM_LOCK", ``block`` TRUE): a ``BLOCKED`` answer means the
  server will call our lock manager with GRANTED later, so a :class:`~floatlock.nlm.granted.
  GrantedListener` is started (lazily, at the first blocking lock) and registered with the
  local portmapper.  The client waits for the matching GRANTED; every ``poll_interval``
  seconds it repeats the blocking LOCK (a lost GRANTED, or no callback registration
  possible: Linux's client polls every 30 s the same way).  When ``wait_timeout`` runs out,
  it sends CANCEL (XNFS "NLM_CANCEL") and returns ``BLOCKED``.
* **Statuses** are returned as :class:`~floatlock.nlm.proto.Nlm4Stat` values for every
  version; :func:`status_name` spells them as the specification does: ``NLM4_DENIED`` for
  v4, ``nlm_denied`` for v1/v3.
* **FREE_ALL** (XNFS v3 "NLM_FREE_ALL") returns void and is answered like any procedure.

Errors: :class:`NlmError` for what the client refuses to send or cannot decode; RPC errors
(:class:`~floatlock.net.client.RpcTimeout`, :class:`~floatlock.rpc.message.RpcError`,
:class:`OSError`) pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from floatlock.net.client import RpcClient, Transport
from floatlock.nlm.codec import codec_for
from floatlock.nlm.granted import GrantedListener
from floatlock.nlm.proto import (
    NLM_PROG,
    CancArgs,
    FshAccess,
    FshMode,
    Holder,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    NlmProc,
    Notify,
    Share,
    ShareArgs,
    TestArgs,
    UnlockArgs,
)
from floatlock.portmap.proto import PMAP_PORT
from floatlock.portmap.register import getport
from floatlock.rpc.message import AuthSys
from floatlock.xdr import Decoder, XdrError

__all__ = [
    "NlmClient",
    "NlmError",
    "NlmRangeError",
    "TestResult",
    "default_oh",
    "status_name",
]

_U32_MAX: Final = 0xFFFFFFFF
_U64_MAX: Final = 0xFFFFFFFFFFFFFFFF
LINUX_POLL_INTERVAL: Final = 30.0  # Linux NLMCLNT_POLL_TIMEOUT: re-send a blocked LOCK

T = TypeVar("T")


class NlmError(Exception):
    """The client cannot send this request, or cannot understand the answer."""


class NlmRangeError(NlmError, ValueError):
    """The extent does not fit the version's offset/length fields."""


def status_name(stat: int, vers: int) -> str:
    """``NLM4_DENIED_GRACE_PERIOD`` (v4) or ``nlm_denied_grace_period`` (v1/v3)."""
    try:
        name = Nlm4Stat(stat).name
    except ValueError:
        return f"status {stat}"
    return f"NLM4_{name}" if vers == 4 else f"nlm_{name.lower()}"


def default_oh(svid: int, caller_name: str) -> bytes:
    """The owner handle Linux's client would send: ``b"<svid>@<caller_name>"``."""
    return f"{svid}@{caller_name}".encode()


@dataclass(frozen=True, slots=True)
class TestResult:
    """The answer to TEST: ``holder`` is set exactly when ``stat`` is DENIED."""

    stat: Nlm4Stat
    holder: Holder | None = None

    @property
    def granted(self) -> bool:
        return self.stat == Nlm4Stat.GRANTED


class NlmClient:
    """One NLM version and transport to one server, as one lock owner.

    Create with :meth:`connect`; close with :meth:`close` (also unregisters the callback
    service a blocking lock started).
    """

    def __init__(
        self,
        rpc: RpcClient,
        vers: int,
        *,
        caller_name: str,
        svid: int,
        oh: bytes,
        cred: AuthSys | None,
        pmap_port: int,
        local_pmap_port: int,
        poll_interval: float,
    ) -> None:
        self.rpc = rpc
        self.vers = vers
        self.codec = codec_for(vers)
        self.caller_name = caller_name
        self.svid = svid
        self.oh = oh
        self.cred = cred
        self.pmap_port = pmap_port
        self.local_pmap_port = local_pmap_port
        self.poll_interval = poll_interval
        self.server_ip: str = str(rpc.addr[0])
        self.listener: GrantedListener | None = None
        self._cookie = random.getrandbits(32)

    @classmethod
    async def connect(
        cls,
        host: str,
        *,
        version: int = 4,
        transport: Transport = "udp",
        port: int | None = None,
        pmap_port: int = PMAP_PORT,
        local_pmap_port: int = PMAP_PORT,
        source: str | None = None,
        privileged: bool = False,
        caller_name: str | None = None,
        svid: int | None = None,
        oh: bytes | None = None,
        cred: AuthSys | None = None,
        timeout: float = 10.0,
        poll_interval: float = LINUX_POLL_INTERVAL,
    ) -> NlmClient:
        """Connect to the NLM of ``host``; ``port`` None asks the server's portmapper.

        Args:
            pmap_port: the server's portmapper port (111).
            local_pmap_port: where the GRANTED callback service registers (127.0.0.1).
            cred: AUTH_SYS credential; None sends one with our uid/gid and ``caller_name``.
            poll_interval: seconds between repeats of a blocked LOCK.
        """
        if version not in (1, 3, 4):
            raise NlmError(f"no NLM version {version}")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        ip = str(infos[0][4][0])
        if port is None:
            port = await getport(
                ip, NLM_PROG, version, transport, source=source, port=pmap_port, timeout=timeout
            )
            if not port:
                raise NlmError(f"NLM v{version} over {transport} is not registered at {host}")
        name = caller_name if caller_name is not None else socket.gethostname()
        owner = svid if svid is not None else os.getpid()
        if cred is None:
            cred = AuthSys(0, name[:255], os.getuid(), os.getgid(), ())
        rpc = await RpcClient.connect(
            ip, port, transport, source=source, privileged=privileged, timeout=timeout
        )
        return cls(
            rpc,
            version,
            caller_name=name,
            svid=owner,
            oh=oh if oh is not None else default_oh(owner, name),
            cred=cred,
            pmap_port=pmap_port,
            local_pmap_port=local_pmap_port,
            poll_interval=poll_interval,
        )

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
            self.listener = None
        await self.rpc.close()

    async def __aenter__(self) -> NlmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers --------------------------------------------------------------------------

    def _next_cookie(self) -> bytes:
        self._cookie = (self._cookie + 1) & _U32_MAX
        return self._cookie.to_bytes(4, "big")

    def _lock(self, fh: bytes, offset: int, length: int) -> NlmLock:
        limit = _U64_MAX if self.vers == 4 else _U32_MAX
        if not (0 <= offset <= limit and 0 <= length <= limit):
            raise NlmRangeError(
                f"offset {offset} length {length} does not fit NLM v{self.vers}"
                f" ({'64' if self.vers == 4 else '32'}-bit fields)"
            )
        return NlmLock(self.caller_name, fh, self.oh, self.svid, offset, length)

    def _need_v3(self, what: str) -> None:
        if self.vers == 1:
            raise NlmError(f"{what} needs NLM v3 or v4 (XNFS NLM_VERSX)")

    async def _call(
        self, proc: int, args: bytes, decode: Callable[[Decoder], T], timeout: float | None
    ) -> T:
        body = await self.rpc.call(NLM_PROG, self.vers, proc, args, cred=self.cred, timeout=timeout)
        try:
            dec = Decoder(body)
            res = decode(dec)
            dec.done()
        except XdrError as e:
            raise NlmError(f"undecodable {NlmProc(proc).name} reply: {e}") from e
        return res

    async def _res(self, proc: int, args: bytes, timeout: float | None) -> Nlm4Stat:
        res = await self._call(proc, args, self.codec.res, timeout)
        return Nlm4Stat(res.stat)

    # -- procedures -----------------------------------------------------------------------

    async def test(
        self, fh: bytes, offset: int = 0, length: int = 0, exclusive: bool = True
    ) -> TestResult:
        """XNFS "NLM_TEST": would this lock be granted?  DENIED names the holder."""
        a = TestArgs(self._next_cookie(), exclusive, self._lock(fh, offset, length))
        r = await self._call(NlmProc.TEST, self.codec.encode_testargs(a), self.codec.testres, None)
        return TestResult(Nlm4Stat(r.stat), r.holder)

    async def lock(
        self,
        fh: bytes,
        offset: int = 0,
        length: int = 0,
        exclusive: bool = True,
        *,
        block: bool = False,
        reclaim: bool = False,
        state: int = 0,
        wait_timeout: float | None = None,
        on_blocked: Callable[[], None] | None = None,
    ) -> Nlm4Stat:
        """XNFS "NLM_LOCK".  With ``block``, a BLOCKED answer is waited out: GRANTED when
        the server's GRANTED callback arrives, BLOCKED (after a CANCEL) when
        ``wait_timeout`` seconds passed first (None: wait for ever).  ``on_blocked`` is
        called once when the server first answers BLOCKED."""
        lk = self._lock(fh, offset, length)
        if not block:
            return await self._send_lock(lk, exclusive, False, reclaim, state)
        listener = await self._listener()
        waiter = listener.expect(lk, self.server_ip)
        try:
            stat = await self._send_lock(lk, exclusive, True, reclaim, state)
            if stat != Nlm4Stat.BLOCKED:
                return stat
            if on_blocked is not None:
                on_blocked()
            try:
                async with asyncio.timeout(wait_timeout):
                    return await self._wait_granted(waiter.future, lk, exclusive, state)
            except TimeoutError:
                pass
        finally:
            listener.forget(waiter)
        with contextlib.suppress(OSError, NlmError):
            await self._cancel(lk, exclusive, True)
        return Nlm4Stat.BLOCKED

    async def _wait_granted(
        self, fut: asyncio.Future[None], lk: NlmLock, exclusive: bool, state: int
    ) -> Nlm4Stat:
        """Wait for the GRANTED callback, repeating the blocking LOCK every poll interval."""
        while True:
            done, _ = await asyncio.wait({fut}, timeout=self.poll_interval)
            if done:
                return Nlm4Stat.GRANTED
            stat = await self._send_lock(lk, exclusive, True, False, state)
            if stat != Nlm4Stat.BLOCKED:
                return stat

    async def _send_lock(
        self, lk: NlmLock, exclusive: bool, block: bool, reclaim: bool, state: int
    ) -> Nlm4Stat:
        a = LockArgs(self._next_cookie(), block, exclusive, lk, reclaim, state)
        return await self._res(NlmProc.LOCK, self.codec.encode_lockargs(a), None)

    async def _listener(self) -> GrantedListener:
        if self.listener is None:
            listener = GrantedListener(
                self.vers, pmap_port=self.local_pmap_port, server_pmap_port=self.pmap_port
            )
            await listener.start()
            self.listener = listener
        return self.listener

    async def nm_lock(
        self, fh: bytes, offset: int = 0, length: int = 0, exclusive: bool = True
    ) -> Nlm4Stat:
        """XNFS "NLM_NM_LOCK": a non-blocking LOCK for which the server does not monitor us."""
        self._need_v3("NM_LOCK")
        a = LockArgs(
            self._next_cookie(), False, exclusive, self._lock(fh, offset, length), False, 0
        )
        return await self._res(NlmProc.NM_LOCK, self.codec.encode_lockargs(a), None)

    async def cancel(
        self,
        fh: bytes,
        offset: int = 0,
        length: int = 0,
        exclusive: bool = True,
        *,
        block: bool = True,
    ) -> Nlm4Stat:
        """XNFS "NLM_CANCEL": withdraw a blocked LOCK with the same arguments."""
        return await self._cancel(self._lock(fh, offset, length), exclusive, block)

    async def _cancel(self, lk: NlmLock, exclusive: bool, block: bool) -> Nlm4Stat:
        a = CancArgs(self._next_cookie(), block, exclusive, lk)
        return await self._res(NlmProc.CANCEL, self.codec.encode_cancargs(a), None)

    async def unlock(self, fh: bytes, offset: int = 0, length: int = 0) -> Nlm4Stat:
        """XNFS "NLM_UNLOCK": GRANTED even when nothing was held."""
        a = UnlockArgs(self._next_cookie(), self._lock(fh, offset, length))
        return await self._res(NlmProc.UNLOCK, self.codec.encode_unlockargs(a), None)

    async def share(
        self,
        fh: bytes,
        mode: FshMode = FshMode.DN,
        access: FshAccess = FshAccess.RW,
        reclaim: bool = False,
    ) -> Nlm4Stat:
        """XNFS "NLM_SHARE": a DOS share reservation (v3/v4)."""
        return await self._share(NlmProc.SHARE, fh, mode, access, reclaim)

    async def unshare(
        self, fh: bytes, mode: FshMode = FshMode.DN, access: FshAccess = FshAccess.RW
    ) -> Nlm4Stat:
        """XNFS "NLM_UNSHARE"."""
        return await self._share(NlmProc.UNSHARE, fh, mode, access, False)

    async def _share(
        self, proc: int, fh: bytes, mode: FshMode, access: FshAccess, reclaim: bool
    ) -> Nlm4Stat:
        self._need_v3(NlmProc(proc).name)
        s = Share(self.caller_name, fh, self.oh, int(mode), int(access))
        a = ShareArgs(self._next_cookie(), s, reclaim)
        r = await self._call(proc, self.codec.encode_shareargs(a), self.codec.shareres, None)
        return Nlm4Stat(r.stat)

    async def free_all(self, name: str | None = None, state: int = 0) -> None:
        """XNFS "NLM_FREE_ALL": drop every lock and share of ``name`` (default: ours).
        The procedure returns void."""
        self._need_v3("FREE_ALL")
        args = self.codec.encode_notify(Notify(name or self.caller_name, state))
        await self._call(NlmProc.FREE_ALL, args, _void, None)

    async def null(self) -> None:
        await self.rpc.call(NLM_PROG, self.vers, NlmProc.NULL, cred=self.cred)


def _void(_dec: Decoder) -> None:
    return None
