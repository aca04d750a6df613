"""lockd's side of NSM: asking a statd to monitor a peer (SM_MON2, falling back to SM_MON).

floatlock's statd answers SM_MON2 (docs/protocol-extensions.md) with the result of SM_MON plus
the seconds of grace left for ``my_name``, the server address the client talked to; a standard
statd (nfs-utils) answers PROC_UNAVAIL, and the same request is then sent as plain SM_MON, so
lockd works with either.  One UDP call per attempt, retransmitted by
:mod:`floatlock.net.client`.
"""

from __future__ import annotations

from dataclasses import dataclass

from floatlock.net.client import rpc_call
from floatlock.nsm.proto import (
    SM_PROG,
    SM_VERS,
    Mon,
    MonId,
    MyId,
    Proc,
    Res,
    decode_sm_mon2_res,
    decode_sm_stat_res,
    encode_mon,
)
from floatlock.rpc.message import AcceptStat, RpcError
from floatlock.xdr import Decoder

__all__ = ["MonitorResult", "monitor"]


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """Outcome of :func:`monitor`; ``grace_remaining`` None: the statd is a standard one."""

    ok: bool
    state: int
    grace_remaining: int | None


async def monitor(
    statd_addr: tuple[str, int],
    mon_name: str,
    my_name: str,
    callback: tuple[int, int, int],
    priv: bytes,
    *,
    timeout: float = 5.0,
) -> MonitorResult:
    """Ask statd to monitor ``mon_name`` for ``my_name`` (lockd's SM_MON).

    floatlock's statd answers SM_MON2 with the grace seconds left for ``my_name``; a standard
    statd (nfs-utils) answers PROC_UNAVAIL, and the same request is then sent as plain SM_MON
    (docs/protocol-extensions.md).
    """
    host, port = statd_addr
    args = encode_mon(Mon(MonId(mon_name, MyId(my_name, *callback)), priv))
    try:
        body = await rpc_call(
            host, port, "udp", SM_PROG, SM_VERS, Proc.SM_MON2, args, timeout=timeout
        )
    except RpcError as e:
        if e.accept_stat != AcceptStat.PROC_UNAVAIL:
            raise
    else:
        r2 = decode_sm_mon2_res(Decoder(body))
        ok = r2.res_stat == Res.STAT_SUCC
        return MonitorResult(ok, r2.state, r2.grace_remaining if ok else None)
    body = await rpc_call(host, port, "udp", SM_PROG, SM_VERS, Proc.SM_MON, args, timeout=timeout)
    r = decode_sm_stat_res(Decoder(body))
    return MonitorResult(r.res_stat == Res.STAT_SUCC, r.state, None)
