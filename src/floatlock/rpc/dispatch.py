"""The program / version / procedure registry and the dispatch of one RPC call.

Theory of operation
-------------------
Transports hand :meth:`Dispatcher.dispatch` one whole call message plus where it came from
(client address, the server address it arrived on, the transport).  The dispatcher parses the
header (:mod:`floatlock.rpc.message`), finds the procedure, decodes its arguments, runs the
handler and encodes the reply.  It answers every error RFC 5531 section 9 defines:
PROG_UNAVAIL, PROG_MISMATCH (with the lowest and highest version registered), PROC_UNAVAIL,
GARBAGE_ARGS (arguments that do not decode, or do not decode exactly), SYSTEM_ERR (the
handler raised), RPC_MISMATCH and AUTH_ERROR; a message that is not even a call is dropped
and counted.

Handlers are plain functions of their decoded arguments and a :class:`Call` (who asked, on
which server address): ``handler(args, call) -> result``.  A handler may be a coroutine
function; then ``dispatch`` returns an awaitable and the transport sends the reply when it is
done, while other calls go on.  A plain handler may also return a coroutine when it has to
wait this once (lockd before a host's first lock, while statd is asked to monitor it): the
common case stays on the synchronous path, which costs no task.  A handler that must not
be answered (the NLM ``*_MSG`` procedures send their results as separate calls) returns
:data:`NO_REPLY`.

Non-idempotent procedures go through the duplicate request cache (:mod:`floatlock.rpc.drc`).

``dispatch`` is on every request's path: it allocates the call object and little else.
"""

from __future__ import annotations

import logging
import time
from asyncio import Future
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from inspect import iscoroutinefunction
from types import CoroutineType
from typing import Any, Final, Generic, TypeVar

from floatlock.address import ServerAddress
from floatlock.rpc.drc import IN_PROGRESS, ReplyCache
from floatlock.rpc.message import (
    AcceptStat,
    AuthStat,
    AuthSys,
    Call,
    Rejected,
    accepted_reply,
    auth_error_reply,
    parse_call,
    prog_mismatch_reply,
    success_header,
)
from floatlock.rpc.parts import EncodedParts, Reply, joined
from floatlock.xdr import Decoder, XdrError

__all__ = [
    "NO_REPLY",
    "Call",
    "DispatchResult",
    "Dispatcher",
    "Procedure",
    "RpcStats",
    "null_procedure",
]

log = logging.getLogger("floatlock.rpc")

A = TypeVar("A")
R = TypeVar("R")


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY: Final = _NoReply()


@dataclass(frozen=True, slots=True)
class Procedure(Generic[A, R]):
    """One procedure: decode its arguments, handle them, encode the result.

    ``decode`` None means void arguments; ``encode`` None means a void result.
    ``decode_at``: an optional fast path equivalent to ``decode``, that decodes straight from
    the message bytes (the arguments at the given offset, to the very end; XdrError when they
    do not decode exactly), for the hottest procedures.  ``encode_reply``: likewise optional,
    the whole successful reply to the call with the given xid (``success_header`` followed by
    ``encode``'s bytes) in one go.

    ``shortcut``: optional, tried before the arguments are decoded: the whole reply to the
    common case of the call, straight from the message (``shortcut(data, call)``), or None,
    and then the procedure runs as if it had not been tried.  Idempotent procedures only (a
    shortcut's reply bypasses the reply cache); an exception in it is a SYSTEM_ERR as in a
    handler.

    ``idempotent`` False sends the call through the duplicate request cache (rpc/drc.py).
    ``cache_on_streams`` False skips that cache for calls that came over a connection (TCP):
    for procedures whose re-execution answers as the first execution would have, given the
    server's state at the time (NLM's LOCK, UNLOCK, CANCEL: Linux lockd keeps no reply cache
    at all).  Over a connection a call reaches us once; a client retransmits only on a new
    connection, after it saw no reply, so nothing of the first answer was acted on.  Over UDP
    a duplicate can arrive *after* the client acted on the reply (a LOCK's duplicate after its
    UNLOCK), so datagrams always go through the cache.
    """

    name: str
    handler: Callable[[A, Call], R] | Callable[[A, Call], Awaitable[R]]
    decode: Callable[[Decoder], A] | None = None
    encode: Callable[[R], bytes] | None = None
    idempotent: bool = True
    decode_at: Callable[[bytes, int], A] | None = None
    encode_reply: Callable[[int, R], bytes] | None = None
    cache_on_streams: bool = True
    shortcut: Callable[[bytes, Call], bytes | None] | None = None
    is_async: bool = field(init=False, default=False)
    calls: list[int] = field(init=False, default_factory=lambda: [0], compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", iscoroutinefunction(self.handler))
        if self.shortcut is not None and not self.idempotent:
            raise ValueError(f"{self.name}: a shortcut would bypass the reply cache")


def _null_handler(_args: None, _call: Call) -> None:
    return None


def null_procedure() -> Procedure[None, None]:
    """Procedure 0 of every program (RFC 5531 section 12: 'do nothing' by convention)."""
    return Procedure("NULL", _null_handler)


@dataclass(slots=True)
class RpcStats:
    calls: int = 0
    malformed_dropped: int = 0
    garbage_args: int = 0
    denied: int = 0
    prog_unavail: int = 0
    prog_mismatch: int = 0
    proc_unavail: int = 0
    system_err: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


#: Decoded AUTH_SYS credentials kept, by their bytes (oldest dropped first).
MAX_CACHED_CREDS = 1024
DispatchResult = Reply | None | Awaitable[Reply | None]


class Dispatcher:
    """Registry of programs and the dispatch of calls to them."""

    def __init__(
        self,
        drc: ReplyCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # (prog, vers) -> {proc: Procedure}; prog -> (low, high) for PROG_MISMATCH.
        self._procs: dict[tuple[int, int], dict[int, Procedure[Any, Any]]] = {}
        self._versions: dict[int, tuple[int, int]] = {}
        self._names: dict[int, str] = {}
        self.drc = drc if drc is not None else ReplyCache()
        self._clock = clock
        self.stats = RpcStats()
        self._creds: dict[bytes, AuthSys] = {}  # AUTH_SYS body -> decoded, oldest first

    def register(
        self, prog: int, vers: int, procs: Mapping[int, Procedure[Any, Any]], name: str = ""
    ) -> None:
        table = dict(procs)
        table.setdefault(0, null_procedure())
        self._procs[(prog, vers)] = table
        low, high = self._versions.get(prog, (vers, vers))
        self._versions[prog] = (min(low, vers), max(high, vers))
        if name:
            self._names[prog] = name

    def programs(self) -> Iterator[tuple[int, int, str]]:
        """(prog, vers, name) for every registered program version, for the portmapper."""
        for prog, vers in sorted(self._procs):
            yield prog, vers, self._names.get(prog, str(prog))

    def dispatch(
        self, data: bytes, client: Hashable, server: ServerAddress, transport: str
    ) -> DispatchResult:
        """Answer one call message: reply bytes, None (send nothing) or an awaitable of them."""
        stats = self.stats
        stats.calls += 1
        try:
            call = parse_call(data, client, server, transport)
        except Rejected as rej:
            stats.denied += 1
            log.info("denied call from %s: %s", client, rej)
            return rej.reply
        except XdrError as e:
            stats.malformed_dropped += 1
            log.debug("dropped malformed message from %s: %s", client, e)
            return None
        xid = call.xid
        if call.cred_flavor == 1:
            # Clients send the same few credentials over and over: decode each once.  AuthSys
            # is immutable, so one object serves every call that carried those bytes.
            body = call.cred_body
            auth = self._creds.get(body)
            if auth is None:
                try:
                    auth = AuthSys.decode(body)
                except XdrError as e:
                    stats.denied += 1
                    log.info("bad AUTH_SYS credential from %s: %s", client, e)
                    return auth_error_reply(xid, AuthStat.BADCRED)
                creds = self._creds
                if len(creds) >= MAX_CACHED_CREDS:
                    del creds[next(iter(creds))]
                creds[body] = auth
            call.auth = auth
        procs = self._procs.get((call.prog, call.vers))
        if procs is None:
            versions = self._versions.get(call.prog)
            if versions is None:
                stats.prog_unavail += 1
                return accepted_reply(xid, AcceptStat.PROG_UNAVAIL)
            stats.prog_mismatch += 1
            return prog_mismatch_reply(xid, *versions)
        proc = procs.get(call.proc)
        if proc is None:
            stats.proc_unavail += 1
            return accepted_reply(xid, AcceptStat.PROC_UNAVAIL)
        proc.calls[0] += 1
        shortcut = proc.shortcut
        if shortcut is not None and type(data) is bytes:
            try:
                quick = shortcut(data, call)
            except Exception as e:
                return self._failed(proc, call, None, e)
            if quick is not None:
                return quick

        decode = proc.decode
        decode_at = proc.decode_at
        try:
            if decode_at is not None and type(data) is bytes:
                args: Any = decode_at(data, call.args)
            elif decode is None:
                args = None
            else:
                dec = Decoder(data, call.args)
                args = decode(dec)
                dec.done()
        except XdrError as e:
            stats.garbage_args += 1
            log.info("GARBAGE_ARGS for %s from %s: %s", proc.name, client, e)
            return accepted_reply(xid, AcceptStat.GARBAGE_ARGS)

        if proc.idempotent or (transport == "tcp" and not proc.cache_on_streams):
            if proc.is_async:
                return self._run_async(proc, args, call, None)
            return self._run(proc, args, call, None)

        drc = self.drc
        now = self._clock()
        key = ReplyCache.key(client, xid, data)
        cached = drc.begin(key, now)
        if cached is not None:
            return None if cached is IN_PROGRESS else cached
        if proc.is_async:
            return self._run_async(proc, args, call, key)
        reply = self._run(proc, args, call, key)
        if type(reply) is bytes:
            # Synchronous: no other call began since, the entry is still the newest.  The
            # time of begin() is kept: the handler ran in between, microseconds ago.
            drc.finish_last(key, reply, now)
        elif reply is None:
            drc.finish(key, None, now)
        return reply

    def _run(
        self, proc: Procedure[Any, Any], args: Any, call: Call, key: Any
    ) -> Reply | Coroutine[Any, Any, Reply | None] | Future[Reply | None] | None:
        """Run a plain handler.  One that returns a coroutine (a slow path it took, such as
        waiting for statd before a first lock) is finished as an async handler would be."""
        try:
            result = proc.handler(args, call)
            if type(result) is CoroutineType:
                return self._finish(proc, result, call, key)
            if isinstance(result, Future):
                return self._chain(proc, result, call, key)
            return _reply(proc, call, result)
        except Exception as e:
            return self._failed(proc, call, None, e)  # dispatch() finishes the cache entry

    def _chain(
        self, proc: Procedure[Any, Any], pending: Future[Any], call: Call, key: Any
    ) -> Future[Reply | None]:
        """The reply future of a handler that returned a future (the NFS worker pool's):
        what :meth:`_finish` does, as that future's done callback rather than a Task.  A
        Task would first run a step of its own in the next turn of the loop, before the
        work even started, and cost a coroutine frame or two besides."""
        out: Future[Reply | None] = pending.get_loop().create_future()

        def settle(done: Future[Any]) -> None:
            if done.cancelled():
                out.cancel()
                return
            exc = done.exception()
            if exc is None:
                try:
                    reply = self._settle(proc, call, key, done.result())
                except Exception as e:
                    reply = self._failed(proc, call, key, e)
            else:
                reply = self._failed(proc, call, key, exc)
                if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: the
                    out.cancel()  # loop runs this callback and lets these two through
                    raise exc
            # The reply cache has it even when nobody waits for it any more (a closed server).
            if not out.cancelled():
                out.set_result(reply)

        pending.add_done_callback(settle)
        return out

    def _settle(self, proc: Procedure[Any, Any], call: Call, key: Any, result: Any) -> Reply | None:
        reply = _reply(proc, call, result)
        if key is not None:
            assert not isinstance(reply, tuple)  # non-idempotent: _reply joined it
            self.drc.finish(key, reply, self._clock())
        return reply

    def _failed(self, proc: Procedure[Any, Any], call: Call, key: Any, exc: BaseException) -> Reply:
        """SYSTEM_ERR for a call whose handler (or shortcut) raised ``exc``: counted, logged
        with the traceback, and given to the reply cache under ``key`` if there is one."""
        self.stats.system_err += 1
        log.error("SYSTEM_ERR: %s failed for %r", proc.name, call, exc_info=exc)
        reply = accepted_reply(call.xid, AcceptStat.SYSTEM_ERR)
        if key is not None:
            self.drc.finish(key, reply, self._clock())
        return reply

    def _run_async(
        self, proc: Procedure[Any, Any], args: Any, call: Call, key: Any
    ) -> Coroutine[Any, Any, Reply | None]:
        return self._finish(proc, proc.handler(args, call), call, key)

    async def _finish(
        self, proc: Procedure[Any, Any], pending: Awaitable[Any], call: Call, key: Any
    ) -> Reply | None:
        try:
            result = await pending
        except Exception as e:
            return self._failed(proc, call, key, e)
        try:
            return self._settle(proc, call, key, result)
        except Exception as e:
            return self._failed(proc, call, key, e)


def _reply(proc: Procedure[Any, Any], call: Call, result: Any) -> Reply | None:
    """The reply message for a handler's ``result`` (None: NO_REPLY, send nothing).

    An :class:`EncodedParts` result stays in pieces (a tuple, the RPC header first) only for
    an idempotent procedure called over TCP: the datagram transports send one joined
    message, and the duplicate request cache keeps bytes (``dispatch`` finishes its entry
    only for a bytes reply)."""
    xid = call.xid
    if result is NO_REPLY:
        return None
    if type(result) is EncodedParts:
        if proc.idempotent and call.transport == "tcp":
            return (success_header(xid), *result)
        return joined((success_header(xid), *result))
    if proc.encode_reply is not None:
        return proc.encode_reply(xid, result)
    if proc.encode is None:
        return success_header(xid)
    return success_header(xid) + proc.encode(result)
