"""The built-in portmapper and the registration client on real loopback sockets.

The built-in portmapper doubles as "a system rpcbind" here: :func:`register_with_rpcbind`
and :func:`getport` are pointed at it on an ephemeral port, so the client side is tested
without root.  The real rpcbind and rpcinfo are in tests/interop/test_rpcinfo.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from floatlock.address import ServerAddress
from floatlock.net.client import RpcClient
from floatlock.portmap.proto import (
    PMAP_PROG,
    Endpoint,
    Netbuf,
    PmapMapping,
    PmapProc,
    Rpcb,
    RpcbProc,
    RpcbStat,
    decode_pmaplist,
    decode_rpcb_entry_list,
    decode_rpcblist,
)
from floatlock.portmap.register import (
    builtin_portmapper,
    getport,
    register_with_rpcbind,
    rpcbind_running,
    start_portmapper,
)
from floatlock.portmap.registry import SUPERUSER, UNKNOWN_OWNER, PortmapRegistry
from floatlock.portmap.service import PortmapService
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import AcceptStat, RpcError, encode_call, parse_reply
from floatlock.xdr import Decoder, Encoder
from tests.integration.serving import serving

NLM = 100021
IS_ROOT = os.geteuid() == 0


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(fn(), 60)

    return asyncio.run(bounded())


def _bool(body: bytes) -> bool:
    dec = Decoder(body)
    v = dec.boolean()
    dec.done()
    return v


def _str(body: bytes) -> str:
    dec = Decoder(body)
    v = dec.string()
    dec.done()
    return v


def _u32(body: bytes) -> int:
    return int(struct.unpack(">I", body)[0])


ENDPOINTS = (
    Endpoint(NLM, 4, "udp", 4045),
    Endpoint(NLM, 4, "tcp", 4046),
    Endpoint(NLM, 1, "udp", 4045),
)


def test_builtin_portmapper_over_udp_and_tcp() -> None:
    async def main() -> None:
        d = Dispatcher()
        async with serving(d) as port:
            handle = builtin_portmapper(d, ENDPOINTS, port=port)
            assert handle.mode == "builtin" and handle.registry is not None
            udp = await RpcClient.connect("127.0.0.1", port, "udp", timeout=5)
            tcp = await RpcClient.connect("127.0.0.1", port, "tcp", timeout=5)
            try:
                await udp.call(PMAP_PROG, 2, PmapProc.NULL)
                # v2 DUMP: portmapper's own udp/tcp v2-4 entries plus ours.
                dump = decode_pmaplist(Decoder(await tcp.call(PMAP_PROG, 2, PmapProc.DUMP)))
                assert PmapMapping(PMAP_PROG, 2, 17, port) in dump
                assert PmapMapping(PMAP_PROG, 4, 6, port) in dump
                assert PmapMapping(NLM, 4, 6, 4046) in dump
                assert len(dump) == 6 + 3
                q = PmapMapping(NLM, 4, 6, 0).to_bytes()
                assert _u32(await udp.call(PMAP_PROG, 2, PmapProc.GETPORT, q)) == 4046
                q = PmapMapping(NLM, 3, 17, 0).to_bytes()
                assert _u32(await udp.call(PMAP_PROG, 2, PmapProc.GETPORT, q)) == 0

                # v3/v4 GETADDR: the netid is that of the transport asked over, and the
                # wildcard is merged with the address the query arrived on.
                q = Rpcb(NLM, 4, "", "", "").to_bytes()
                assert _str(await udp.call(PMAP_PROG, 3, RpcbProc.GETADDR, q)) == (
                    "127.0.0.1.15.205"
                )
                assert _str(await tcp.call(PMAP_PROG, 4, RpcbProc.GETADDR, q)) == (
                    "127.0.0.1.15.206"
                )
                q3 = Rpcb(NLM, 3, "", "", "").to_bytes()
                assert _str(await tcp.call(PMAP_PROG, 4, RpcbProc.GETADDR, q3)) != ""
                assert _str(await tcp.call(PMAP_PROG, 4, RpcbProc.GETVERSADDR, q3)) == ""

                body = await udp.call(PMAP_PROG, 4, RpcbProc.DUMP)
                rows = decode_rpcblist(Decoder(body))
                assert Rpcb(NLM, 1, "udp", "0.0.0.0.15.205", SUPERUSER) in rows

                body = await udp.call(PMAP_PROG, 4, RpcbProc.GETADDRLIST, q)
                entries = decode_rpcb_entry_list(Decoder(body))
                assert [(e.maddr, e.netid, e.proto) for e in entries] == [
                    ("127.0.0.1.15.205", "udp", "udp"),
                    ("127.0.0.1.15.206", "tcp", "tcp"),
                ]

                t = _u32(await udp.call(PMAP_PROG, 3, RpcbProc.GETTIME))
                assert abs(t - int(__import__("time").time())) < 3600

                enc = Encoder()
                enc.string("127.0.0.1.0.111")
                body = await udp.call(PMAP_PROG, 3, RpcbProc.UADDR2TADDR, enc.getvalue())
                nb = Netbuf.decode(Decoder(body))
                assert nb.buf == bytes.fromhex("0200006f7f0000010000000000000000")
                enc = Encoder()
                nb.encode(enc)
                body = await udp.call(PMAP_PROG, 4, RpcbProc.TADDR2UADDR, enc.getvalue())
                assert _str(body) == "127.0.0.1.0.111"

                body = await tcp.call(PMAP_PROG, 4, RpcbProc.GETSTAT)
                dec = Decoder(body)
                stats = [RpcbStat.decode(dec) for _ in range(3)]
                dec.done()
                assert stats[0].info[PmapProc.GETPORT] == 2
                assert stats[2].info[RpcbProc.GETADDR] >= 2

                # Deliberately refused: CALLIT, BCAST, INDIRECT (amplification).
                fwd = struct.pack(">IIII", PMAP_PROG, 2, 0, 0)
                for vers, proc in ((2, 5), (3, 5), (4, 5), (4, 10), (4, 13)):
                    with pytest.raises(RpcError) as ei:
                        await udp.call(PMAP_PROG, vers, proc, fwd)
                    assert ei.value.accept_stat == AcceptStat.PROC_UNAVAIL
            finally:
                await udp.close()
                await tcp.close()
            await handle.close()
            assert [m.prog for m in handle.registry.dump()] == [PMAP_PROG] * 6

    run(main)


def test_local_set_and_unset_and_owners() -> None:
    async def main() -> None:
        d = Dispatcher()
        reg = PortmapRegistry()
        PortmapService(reg).register(d)
        async with serving(d) as port:
            async with await RpcClient.connect("127.0.0.1", port, "udp", timeout=5) as c:
                m = PmapMapping(300000, 1, 17, 5555).to_bytes()
                assert _bool(await c.call(PMAP_PROG, 2, PmapProc.SET, m))
                assert not _bool(await c.call(PMAP_PROG, 2, PmapProc.SET, m))
                # The owner comes from the caller (unprivileged port), not from the request.
                r = Rpcb(300000, 1, "tcp6", "::.21.179", SUPERUSER).to_bytes()
                assert _bool(await c.call(PMAP_PROG, 4, RpcbProc.SET, r))
                assert {x.owner for x in reg.dump()} == {UNKNOWN_OWNER}
                q = Rpcb(300000, 1, "", "", "").to_bytes()
                assert _bool(await c.call(PMAP_PROG, 3, RpcbProc.UNSET, q))
                assert len(reg) == 0
            if IS_ROOT:
                priv = await RpcClient.connect("127.0.0.1", port, "tcp", privileged=True, timeout=5)
                async with priv:
                    r = Rpcb(300001, 1, "udp", "0.0.0.0.0.9", "").to_bytes()
                    assert _bool(await priv.call(PMAP_PROG, 4, RpcbProc.SET, r))
                assert reg.dump() == [Rpcb(300001, 1, "udp", "0.0.0.0.0.9", SUPERUSER)]
                async with await RpcClient.connect("127.0.0.1", port, "udp", timeout=5) as c:
                    # An ordinary local user cannot remove the superuser's mapping.
                    m = PmapMapping(300001, 1, 0, 0).to_bytes()
                    assert not _bool(await c.call(PMAP_PROG, 2, PmapProc.UNSET, m))
                assert len(reg) == 1

    run(main)


def _raw_call(vers: int, proc: int, args: bytes, xid: int) -> bytes:
    return encode_call(xid, PMAP_PROG, vers, proc, args)


def test_set_from_a_remote_caller_is_refused_and_retransmits_hit_the_cache() -> None:
    d = Dispatcher()
    reg = PortmapRegistry()
    svc = PortmapService(reg)
    svc.register(d)
    server = ServerAddress("198.18.0.1")
    m = PmapMapping(300000, 1, 17, 5555).to_bytes()
    for vers, proc, args in ((2, 1, m), (4, 1, Rpcb(1, 1, "udp", "0.0.0.0.0.1").to_bytes())):
        reply = d.dispatch(_raw_call(vers, proc, args, 7), ("198.18.0.9", 700), server, "udp")
        assert isinstance(reply, bytes)
        assert not _bool(parse_reply(reply).body)
    assert len(reg) == 0 and svc.refused == 2

    # A retransmitted SET (same xid, same client) gets the first answer again, not FALSE.
    msg = _raw_call(2, 1, m, 99)
    first = d.dispatch(msg, ("127.0.0.1", 40000), server, "udp")
    again = d.dispatch(msg, ("127.0.0.1", 40000), server, "udp")
    assert isinstance(first, bytes) and first == again
    assert _bool(parse_reply(first).body)
    fresh = d.dispatch(_raw_call(2, 1, m, 100), ("127.0.0.1", 40000), server, "udp")
    assert isinstance(fresh, bytes) and not _bool(parse_reply(fresh).body)


def test_garbage_arguments_are_garbage_args() -> None:
    d = Dispatcher()
    PortmapService(PortmapRegistry()).register(d)
    reply = d.dispatch(
        _raw_call(4, 3, b"\0\0\0\1", 5), ("127.0.0.1", 1), ServerAddress("127.0.0.1"), "udp"
    )
    assert isinstance(reply, bytes)
    with pytest.raises(RpcError) as ei:
        parse_reply(reply)
    assert ei.value.accept_stat == AcceptStat.GARBAGE_ARGS


def test_register_getport_and_close_against_a_portmapper() -> None:
    async def main() -> None:
        d = Dispatcher()
        reg = PortmapRegistry()
        PortmapService(reg).register(d)
        async with serving(d) as port:
            assert await rpcbind_running("127.0.0.1", port)
            # A stale registration of an earlier run must not make ours fail.
            assert reg.set(NLM, 4, "udp", "0.0.0.0.0.1", SUPERUSER)
            handle = await start_portmapper(
                Dispatcher(), ENDPOINTS, rpcbind_port=port, probe_timeout=2
            )
            assert handle.mode == "rpcbind"
            want_owner = SUPERUSER if IS_ROOT else UNKNOWN_OWNER
            assert reg.dump() == [e.rpcb(want_owner) for e in ENDPOINTS]
            assert await getport("127.0.0.1", NLM, 4, "tcp", port=port) == 4046
            assert await getport("127.0.0.1", NLM, 4, "udp", port=port) == 4045
            assert await getport("127.0.0.1", NLM, 3, "udp", port=port) == 0
            await handle.close()
            await handle.close()  # idempotent
            assert len(reg) == 0

    run(main)


def test_registration_falls_back_to_pmap_v2() -> None:
    async def main() -> None:
        d = Dispatcher()
        reg = PortmapRegistry()
        # A version-2-only portmapper, like the classic portmap daemon.
        d.register(PMAP_PROG, 2, PortmapService(reg).procedures(2))
        async with serving(d) as port:
            handle = await register_with_rpcbind(ENDPOINTS[:2], port=port)
            assert [(m.netid, m.addr) for m in reg.dump()] == [
                ("udp", "0.0.0.0.15.205"),
                ("tcp", "0.0.0.0.15.206"),
            ]
            await handle.close()
            assert len(reg) == 0

    run(main)


def test_no_portmapper_means_builtin() -> None:
    async def main() -> None:
        # A port nobody serves: find one by binding and closing (UDP NULL gets no answer).
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        assert not await rpcbind_running("127.0.0.1", port, timeout=0.3)
        d = Dispatcher()
        handle = await start_portmapper(
            d, ENDPOINTS, rpcbind_port=port, probe_timeout=0.3, builtin_port=port
        )
        assert handle.mode == "builtin"
        assert (PMAP_PROG, 4, "portmapper") in list(d.programs())
        assert handle.registry is not None
        assert handle.registry.getport(NLM, 1, 17) == 4045
        assert handle.registry.getport(PMAP_PROG, 2, 6) == port

    run(main)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_lookups_use_udp6_and_tcp6() -> None:
    async def main() -> None:
        d = Dispatcher()
        eps = (Endpoint(NLM, 4, "udp6", 4045), Endpoint(NLM, 4, "tcp6", 4046))
        async with serving(d, "::1") as port:
            builtin_portmapper(d, eps, port=port, netids=("udp6", "tcp6"))
            assert await getport("::1", NLM, 4, "udp", port=port) == 4045
            assert await getport("::1", NLM, 4, "tcp", port=port) == 4046
            assert await getport("::1", NLM, 1, "tcp", port=port) == 0
            async with await RpcClient.connect("::1", port, "udp", timeout=5) as c:
                q = Rpcb(NLM, 4, "", "", "").to_bytes()
                assert _str(await c.call(PMAP_PROG, 4, RpcbProc.GETADDR, q)) == "::1.15.205"
                body = await c.call(PMAP_PROG, 4, RpcbProc.GETADDRLIST, q)
                assert [e.netid for e in decode_rpcb_entry_list(Decoder(body))] == [
                    "udp6",
                    "tcp6",
                ]

    run(main)
