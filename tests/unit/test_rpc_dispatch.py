"""RPC v2 (RFC 5531): every accept and reject status, AUTH_SYS limits, the reply cache."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floatlock.address import ServerAddress
from floatlock.rpc.dispatch import NO_REPLY, Call, Dispatcher, Procedure
from floatlock.rpc.drc import IN_PROGRESS, ReplyCache
from floatlock.rpc.message import (
    AcceptStat,
    AuthSys,
    RpcError,
    encode_call,
    parse_reply,
    success_header,
)
from floatlock.xdr import Decoder, Encoder, XdrError

PROG = 0x20000999
CLIENT = ("127.0.0.1", 700)
SERVER = ServerAddress("127.0.0.1")


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self, args: int, call: Call) -> int:
        self.n += 1
        return args + self.n

    def boom(self, _args: None, _call: Call) -> None:
        raise RuntimeError("handler bug")


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def make() -> tuple[Dispatcher, Counter]:
    now = [0.0]
    d = Dispatcher(clock=lambda: now[0])
    c = Counter()
    d.register(
        PROG,
        2,
        {
            1: Procedure("BUMP", c.bump, Decoder.u32, u32, idempotent=False),
            2: Procedure("BOOM", c.boom),
            3: Procedure("SILENT", lambda a, call: NO_REPLY),
            4: Procedure("WHO", lambda a, call: call, None, lambda call: u32(call.auth.uid)),
        },
    )
    d.register(PROG, 4, {})
    return d, c


def call(d: Dispatcher, msg: bytes, client: tuple[str, int] = CLIENT) -> bytes | None:
    out = d.dispatch(msg, client, SERVER, "udp")
    assert out is None or isinstance(out, bytes)
    return out


def status_of(reply: bytes | None) -> int | None:
    assert reply is not None
    try:
        parse_reply(reply)
    except RpcError as e:
        return e.accept_stat if e.accept_stat is not None else -1
    return AcceptStat.SUCCESS


def test_success_and_null() -> None:
    d, _ = make()
    assert parse_reply(call(d, encode_call(1, PROG, 2, 1, u32(10))) or b"").body == u32(11)
    assert parse_reply(call(d, encode_call(2, PROG, 4, 0)) or b"").body == b""


def test_accept_errors() -> None:
    d, _ = make()
    assert status_of(call(d, encode_call(1, PROG + 1, 2, 0))) == AcceptStat.PROG_UNAVAIL
    with pytest.raises(RpcError, match="supports 2-4"):
        parse_reply(call(d, encode_call(1, PROG, 3, 0)) or b"")
    assert status_of(call(d, encode_call(1, PROG, 2, 99))) == AcceptStat.PROC_UNAVAIL
    assert status_of(call(d, encode_call(1, PROG, 2, 1, b"\0\0"))) == AcceptStat.GARBAGE_ARGS
    # Trailing bytes after the arguments are garbage too.
    assert status_of(call(d, encode_call(1, PROG, 2, 1, u32(1) * 2))) == AcceptStat.GARBAGE_ARGS
    assert status_of(call(d, encode_call(1, PROG, 2, 2))) == AcceptStat.SYSTEM_ERR
    assert call(d, encode_call(1, PROG, 2, 3)) is None
    assert d.stats.garbage_args == 2 and d.stats.system_err == 1


def test_rejections() -> None:
    d, _ = make()
    msg = bytearray(encode_call(1, PROG, 2, 0))
    msg[8:12] = u32(3)  # rpcvers 3
    with pytest.raises(RpcError, match="RPC version mismatch"):
        parse_reply(call(d, bytes(msg)) or b"")
    msg = bytearray(encode_call(1, PROG, 2, 0))
    msg[24:28] = u32(3)  # AUTH_DH
    with pytest.raises(RpcError, match="AUTH_BADCRED"):
        parse_reply(call(d, bytes(msg)) or b"")
    # A credential body over 400 bytes (RFC 5531 section 8.2).
    big = struct.pack(">IIIIIIII", 1, 0, 2, PROG, 2, 0, 1, 404) + b"\0" * 404 + b"\0" * 8
    with pytest.raises(RpcError, match="AUTH_BADCRED"):
        parse_reply(call(d, big) or b"")
    # A verifier over 400 bytes.
    bigv = struct.pack(">IIIIIIIIII", 1, 0, 2, PROG, 2, 0, 0, 0, 0, 404) + b"\0" * 404
    with pytest.raises(RpcError, match="AUTH_BADVERF"):
        parse_reply(call(d, bigv) or b"")


def test_auth_sys_limits() -> None:
    d, _ = make()
    ok = AuthSys(1, "host", 1000, 100, tuple(range(16)))
    assert parse_reply(call(d, encode_call(1, PROG, 2, 4, cred=ok)) or b"").body == u32(1000)
    # 17 groups: one over appendix A's gids<16>.
    e = Encoder()
    e.u32(1)
    e.string("host")
    e.u32(0)
    e.u32(0)
    e.uint_array(list(range(17)))
    body = e.getvalue()
    msg = struct.pack(">IIIIIIII", 9, 0, 2, PROG, 2, 4, 1, len(body)) + body + b"\0" * 8
    with pytest.raises(RpcError, match="AUTH_BADCRED"):
        parse_reply(call(d, msg) or b"")
    with pytest.raises(XdrError):
        AuthSys(1, "x" * 256, 0, 0, ()).encode()


def test_not_a_call_is_dropped() -> None:
    d, _ = make()
    msg = bytearray(encode_call(1, PROG, 2, 0))
    msg[4:8] = u32(1)
    assert call(d, bytes(msg)) is None
    assert call(d, b"\0" * 7) is None
    assert d.stats.malformed_dropped == 2


def test_retransmission_answered_from_cache_not_rerun() -> None:
    d, c = make()
    msg = encode_call(77, PROG, 2, 1, u32(10))
    first = call(d, msg)
    again = call(d, msg)
    assert first == again and c.n == 1
    # Same xid from another client port is another call.
    call(d, msg, ("127.0.0.1", 701))
    assert c.n == 2
    # Same xid with other arguments (a rebooted client reusing xids) is run again.
    call(d, encode_call(77, PROG, 2, 1, u32(11)))
    assert c.n == 3


def test_cache_on_streams_false_skips_the_cache_over_tcp_only() -> None:
    d, c = make()
    d.register(
        PROG,
        3,
        {1: Procedure("BUMP", c.bump, Decoder.u32, u32, idempotent=False, cache_on_streams=False)},
    )
    msg = encode_call(78, PROG, 3, 1, u32(10))
    # Over TCP a duplicate is run again (the procedure's answer follows the state) ...
    assert d.dispatch(msg, CLIENT, SERVER, "tcp") != d.dispatch(msg, CLIENT, SERVER, "tcp")
    assert c.n == 2
    # ... over UDP it is answered from the cache, byte for byte, and not run.
    first = call(d, msg)
    assert call(d, msg) == first and c.n == 3
    # A procedure that keeps the default is cached over TCP too.
    bump = encode_call(79, PROG, 2, 1, u32(10))
    assert d.dispatch(bump, CLIENT, SERVER, "tcp") == d.dispatch(bump, CLIENT, SERVER, "tcp")
    assert c.n == 4


def test_reply_cache_states() -> None:
    drc = ReplyCache(max_entries=2, ttl=10)
    k = ReplyCache.key(CLIENT, 1, b"a")
    assert drc.begin(k, 0.0) is None
    assert drc.begin(k, 1.0) is IN_PROGRESS
    drc.finish(k, b"reply", 2.0)
    assert drc.begin(k, 3.0) == b"reply"
    assert drc.begin(k, 20.0) is None  # expired: a new call
    for xid in range(2, 6):
        drc.begin(ReplyCache.key(CLIENT, xid, b"a"), 21.0)
    assert len(drc) == 2


@given(st.binary(max_size=200))
def test_garbage_never_raises_and_service_goes_on(blob: bytes) -> None:
    d, _ = make()
    out = call(d, blob)
    assert out is None or len(out) >= 12
    assert parse_reply(call(d, encode_call(3, PROG, 2, 1, u32(1))) or b"").xid == 3


@given(st.binary(min_size=1, max_size=60), st.integers(0, 59))
def test_mutated_calls_never_raise(args: bytes, flip: int) -> None:
    d, _ = make()
    msg = bytearray(encode_call(3, PROG, 2, 1, args))
    msg[flip % len(msg)] ^= 0xFF
    call(d, bytes(msg))


def test_plain_handler_may_defer_with_a_coroutine() -> None:
    """A sync handler that returns a coroutine is finished asynchronously, reply cached."""
    import asyncio

    runs: list[int] = []

    async def slow(v: int) -> int:
        await asyncio.sleep(0)
        return v * 2

    def handler(v: int, _call: Call) -> object:
        runs.append(v)
        return slow(v) if v > 5 else v

    d = Dispatcher()
    d.register(PROG, 1, {1: Procedure("MAYBE", handler, Decoder.u32, u32, idempotent=False)})
    fast = d.dispatch(encode_call(1, PROG, 1, 1, u32(3)), CLIENT, SERVER, "udp")
    assert isinstance(fast, bytes) and parse_reply(fast).body == u32(3)
    msg = encode_call(2, PROG, 1, 1, u32(7))
    pending = d.dispatch(msg, CLIENT, SERVER, "udp")
    assert not isinstance(pending, bytes) and pending is not None
    # The retransmission while the first is running is dropped, not run again.
    assert d.dispatch(msg, CLIENT, SERVER, "udp") is None
    reply = asyncio.run(pending)  # type: ignore[arg-type]
    assert reply is not None and parse_reply(reply).body == u32(14)
    assert d.dispatch(msg, CLIENT, SERVER, "udp") == reply
    assert runs == [3, 7]


def test_a_handler_returning_a_future_is_answered_when_it_is_done() -> None:
    """The worker pool's way: the handler returns a future, the reply follows its result (the
    reply cache finished with it), a failure is SYSTEM_ERR, a cancellation no reply at all."""
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []

        def handler(v: int, _call: Call) -> asyncio.Future[int]:
            fut: asyncio.Future[int] = loop.create_future()
            futures.append(fut)
            return fut

        d = Dispatcher()
        d.register(PROG, 1, {1: Procedure("LATER", handler, Decoder.u32, u32, idempotent=False)})

        def send(xid: int) -> object:
            return d.dispatch(encode_call(xid, PROG, 1, 1, u32(xid)), CLIENT, SERVER, "udp")

        first, failing, cancelled = send(1), send(2), send(3)
        assert all(isinstance(p, asyncio.Future) for p in (first, failing, cancelled))
        assert send(1) is None  # its retransmission while it runs: dropped
        futures[0].set_result(41)
        futures[1].set_exception(RuntimeError("worker failed"))
        futures[2].cancel()
        reply = await first  # type: ignore[misc]
        assert parse_reply(reply).body == u32(41)
        assert status_of(await failing) == AcceptStat.SYSTEM_ERR  # type: ignore[misc]
        with pytest.raises(asyncio.CancelledError):
            await cancelled  # type: ignore[misc]
        assert send(1) == reply  # from the reply cache
        assert d.stats.system_err == 1

    asyncio.run(main())


def test_a_reply_nobody_waits_for_still_enters_the_cache_and_exits_go_through() -> None:
    """The reply future cancelled (a server closing) while the work finishes: the reply cache
    still gets the reply, so a retransmission is answered, not run again.  A SystemExit from
    the work is not turned into a reply: it leaves the loop as it would have from a Task."""
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []

        def handler(v: int, _call: Call) -> asyncio.Future[int]:
            futures.append(loop.create_future())
            return futures[-1]

        d = Dispatcher()
        d.register(PROG, 1, {1: Procedure("LATER", handler, Decoder.u32, u32, idempotent=False)})
        msg = encode_call(7, PROG, 1, 1, u32(7))
        pending = d.dispatch(msg, CLIENT, SERVER, "udp")
        assert isinstance(pending, asyncio.Future)
        pending.cancel()
        futures[0].set_result(70)
        await asyncio.sleep(0)
        cached = d.dispatch(msg, CLIENT, SERVER, "udp")
        assert isinstance(cached, bytes) and parse_reply(cached).body == u32(70)
        assert len(futures) == 1  # not run again

        exiting = d.dispatch(encode_call(8, PROG, 1, 1, u32(8)), CLIENT, SERVER, "udp")
        assert isinstance(exiting, asyncio.Future)
        futures[1].set_exception(SystemExit(3))
        await asyncio.sleep(0)

    with pytest.raises(SystemExit):
        asyncio.run(main())


def test_a_shortcut_answers_or_hands_the_call_to_its_procedure() -> None:
    d = Dispatcher()
    seen: list[int] = []

    def shortcut(data: bytes, c: Call) -> bytes | None:
        (arg,) = struct.unpack_from(">I", data, c.args)
        if arg == 13:
            raise RuntimeError("shortcut bug")
        return success_header(c.xid) + u32(arg * 100) if arg % 2 else None

    def handler(args: int, c: Call) -> int:
        seen.append(args)
        return args

    d.register(PROG, 2, {1: Procedure("ECHO", handler, Decoder.u32, u32, shortcut=shortcut)})
    # Answered by the shortcut: the handler never runs.
    assert parse_reply(call(d, encode_call(1, PROG, 2, 1, u32(3))) or b"").body == u32(300)
    assert seen == []
    # None: the procedure runs as if the shortcut had not been tried.
    assert parse_reply(call(d, encode_call(2, PROG, 2, 1, u32(4))) or b"").body == u32(4)
    assert seen == [4]
    # A message that is not bytes (a view) is the procedure's: shortcuts slice bytes.
    view = memoryview(encode_call(4, PROG, 2, 1, u32(5)))
    assert parse_reply(call(d, view) or b"").body == u32(5)  # type: ignore[arg-type]
    assert seen == [4, 5]
    # A failing shortcut is the server's error, as a failing handler is.
    assert status_of(call(d, encode_call(3, PROG, 2, 1, u32(13)))) == AcceptStat.SYSTEM_ERR
    assert d.stats.system_err == 1 and seen == [4, 5]


def test_a_shortcut_would_bypass_the_reply_cache() -> None:
    with pytest.raises(ValueError, match="reply cache"):
        Procedure("X", lambda a, c: None, idempotent=False, shortcut=lambda data, c: None)
