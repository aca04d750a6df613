"""Pre-encoded NLM call messages for rpcload's sequence mode, and a few blocking NLM calls.

Theory of operation: rpcload (``bench/c/rpcload.c``, ``-f SEQFILE``) replays whole RPC call
messages and only rewrites their xid, so every byte of an NLM call is fixed here, once.
:func:`lock_unlock_sequences` gives each in-flight slot a sequence [LOCK, UNLOCK] of the same
lock with its own owner (``svid`` and ``oh``) and its own file (or, with fewer files than
slots, its own byte range), so 32 slots never contend: every LOCK should be GRANTED at once.

The calls look like the Linux kernel client's (``fs/lockd/clntproc.c``, ``clntxdr.c``):
AUTH_SYS with the host name as machine name, ``caller_name`` the same host name, ``oh`` the
text ``"<svid>@<hostname>"``, a 4-byte cookie, non-blocking LOCK (F_SETLK), ``state`` the
client's NSM state number.  Arguments are encoded with :mod:`floatlock.nlm.proto` (XNFS NLM
v4 ``nlm4_lockargs``/``nlm4_unlockargs``/``nlm4_testargs``; v1/v3 with 32-bit extents).

NLM-level refusals (DENIED, DENIED_GRACE_PERIOD) are RPC-level SUCCESS, invisible to
rpcload's ``errors``; :func:`wait_until_granted` (before a run) and :func:`check_unlocked`
(after it) close that gap with real calls.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.nfs_client import RpcConn
from floatlock.nlm.codec import codec_for
from floatlock.nlm.proto import LockArgs, Nlm4Stat, NlmLock, NlmProc, TestArgs, UnlockArgs
from floatlock.rpc.message import AuthSys, encode_call, parse_reply, reply_xid
from floatlock.xdr import Decoder

__all__ = [
    "NLM_PROG",
    "SlotLock",
    "check_unlocked",
    "lock_call",
    "lock_unlock_sequences",
    "nlm_lock",
    "nlm_test",
    "nlm_unlock",
    "slot_locks",
    "test_call",
    "unlock_call",
    "verify_sequences",
    "wait_until_granted",
]

NLM_PROG = 100021
DEFAULT_STATE = 3  # an NSM state number: odd means "up"
PLACEHOLDER_XID = 0  # rpcload overwrites the xid of every message


@dataclass(frozen=True, slots=True)
class SlotLock:
    """The lock one slot takes and releases: file, owner, range."""

    fh: bytes
    svid: int
    oh: bytes
    offset: int
    length: int


def kernel_cred(hostname: str, uid: int = 0, gid: int = 0) -> AuthSys:
    """AUTH_SYS as the Linux client sends it on NLM calls (the file opener's ids)."""
    return AuthSys(0, hostname, uid, gid, (gid,))


def slot_locks(
    fh_list: Sequence[bytes],
    slots: int,
    *,
    hostname: str,
    first_svid: int = 1000,
    range_len: int = 0,
) -> list[SlotLock]:
    """One non-contending lock per slot.

    Slot i locks file ``fh_list[i % len(fh_list)]``.  When files are shared between slots
    (fewer files than slots), slot i locks bytes ``[i*stride, i*stride + stride)`` with
    ``stride = range_len or 4096``; with a file per slot it locks ``[0, range_len)``
    (``range_len`` 0 means to the end of the file: a whole-file lock, as flock(2) on an
    NFSv3 mount sends).  The owner is svid ``first_svid + i``, ``oh = "<svid>@<hostname>"``.
    """
    if not fh_list:
        raise ValueError("need at least one file handle")
    if slots < 1:
        raise ValueError("need at least one slot")
    shared = len(fh_list) < slots
    stride = range_len or 4096
    out = []
    for i in range(slots):
        svid = first_svid + i
        offset, length = (i * stride, stride) if shared else (0, range_len)
        out.append(
            SlotLock(fh_list[i % len(fh_list)], svid, f"{svid}@{hostname}".encode(), offset, length)
        )
    return out


def _nlm_lock(lk: SlotLock, hostname: str) -> NlmLock:
    return NlmLock(hostname, lk.fh, lk.oh, lk.svid, lk.offset, lk.length)


def lock_call(
    lk: SlotLock,
    *,
    hostname: str,
    version: int = 4,
    exclusive: bool = True,
    block: bool = False,
    reclaim: bool = False,
    state: int = DEFAULT_STATE,
    cookie: bytes = b"",
    xid: int = PLACEHOLDER_XID,
    cred: AuthSys | None = None,
) -> bytes:
    """A whole RPC call message NLM LOCK for lk."""
    args = LockArgs(
        cookie or struct.pack(">I", lk.svid),
        block,
        exclusive,
        _nlm_lock(lk, hostname),
        reclaim,
        state,
    )
    body = codec_for(version).encode_lockargs(args)
    return encode_call(xid, NLM_PROG, version, NlmProc.LOCK, body, cred or kernel_cred(hostname))


def unlock_call(
    lk: SlotLock,
    *,
    hostname: str,
    version: int = 4,
    cookie: bytes = b"",
    xid: int = PLACEHOLDER_XID,
    cred: AuthSys | None = None,
) -> bytes:
    """A whole RPC call message NLM UNLOCK for lk."""
    args = UnlockArgs(cookie or struct.pack(">I", lk.svid), _nlm_lock(lk, hostname))
    body = codec_for(version).encode_unlockargs(args)
    return encode_call(xid, NLM_PROG, version, NlmProc.UNLOCK, body, cred or kernel_cred(hostname))


def test_call(
    lk: SlotLock,
    *,
    hostname: str,
    version: int = 4,
    exclusive: bool = True,
    cookie: bytes = b"test",
    xid: int = PLACEHOLDER_XID,
    cred: AuthSys | None = None,
) -> bytes:
    """A whole RPC call message NLM TEST for lk."""
    args = TestArgs(cookie, exclusive, _nlm_lock(lk, hostname))
    body = codec_for(version).encode_testargs(args)
    return encode_call(xid, NLM_PROG, version, NlmProc.TEST, body, cred or kernel_cred(hostname))


# Not a test function, whatever pytest's collection rules say.
test_call.__test__ = False  # type: ignore[attr-defined]


def lock_unlock_sequences(
    fh_list: Sequence[bytes],
    version: int = 4,
    exclusive: bool = True,
    *,
    slots: int | None = None,
    hostname: str | None = None,
    range_len: int = 0,
    first_svid: int = 1000,
    state: int = DEFAULT_STATE,
    uid: int = 0,
    gid: int = 0,
) -> list[list[bytes]]:
    """For each slot, [NLM LOCK (non-blocking), NLM UNLOCK of the same], fully encoded.

    ``slots`` defaults to ``len(fh_list)`` (a file per slot).  Pass the result to
    ``bench.loadgen.run_load(..., sequences=...)`` with ``inflight == slots``.
    """
    host = hostname or socket.gethostname()
    cred = kernel_cred(host, uid, gid)
    locks = slot_locks(
        fh_list, slots or len(fh_list), hostname=host, first_svid=first_svid, range_len=range_len
    )
    return [
        [
            lock_call(
                lk, hostname=host, version=version, exclusive=exclusive, state=state, cred=cred
            ),
            unlock_call(lk, hostname=host, version=version, cred=cred),
        ]
        for lk in locks
    ]


# -- blocking calls (probes and checks) ------------------------------------------------------


def _res_stat(body: bytes) -> int:
    dec = Decoder(body)
    dec.opaque(1024)  # cookie
    return dec.i32()


def nlm_lock(conn: RpcConn, lk: SlotLock, *, hostname: str, version: int = 4) -> int:
    """LOCK (non-blocking, exclusive) through conn; returns the nlm4_stats value."""
    args = LockArgs(b"probe", False, True, _nlm_lock(lk, hostname), False, DEFAULT_STATE)
    body = codec_for(version).encode_lockargs(args)
    return _res_stat(conn.call(NLM_PROG, version, NlmProc.LOCK, body))


def nlm_unlock(conn: RpcConn, lk: SlotLock, *, hostname: str, version: int = 4) -> int:
    """UNLOCK through conn; returns the nlm4_stats value."""
    body = codec_for(version).encode_unlockargs(UnlockArgs(b"probe", _nlm_lock(lk, hostname)))
    return _res_stat(conn.call(NLM_PROG, version, NlmProc.UNLOCK, body))


def nlm_test(conn: RpcConn, lk: SlotLock, *, hostname: str, version: int = 4) -> int:
    """TEST (exclusive) through conn; GRANTED means no conflicting lock."""
    body = codec_for(version).encode_testargs(TestArgs(b"test", True, _nlm_lock(lk, hostname)))
    return _res_stat(conn.call(NLM_PROG, version, NlmProc.TEST, body))


def verify_sequences(
    host: str, port: int, sequences: Sequence[Sequence[bytes]], *, timeout: float = 2.0
) -> list[int]:
    """Send every message of every sequence once, in order, over UDP; the NLM statuses.

    This replays the exact bytes rpcload will send (with fresh xids), so a benchmark can
    check before measuring that each LOCK and UNLOCK really is GRANTED.
    """
    stats = []
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        xid = 0x5EC00000
        for seq in sequences:
            for msg in seq:
                xid += 1
                sock.send(struct.pack(">I", xid) + msg[4:])
                while True:
                    data = sock.recv(65536)
                    if reply_xid(data) == xid:
                        break
                stats.append(_res_stat(parse_reply(data).body))
    return stats


def wait_until_granted(
    conn: RpcConn,
    lk: SlotLock,
    *,
    hostname: str,
    version: int = 4,
    timeout: float = 120.0,
    interval: float = 0.25,
) -> float:
    """Probe LOCK until GRANTED (the server's grace period is over), then UNLOCK.

    Returns the seconds waited; raises TimeoutError after timeout, RuntimeError on a status
    other than GRANTED or DENIED_GRACE_PERIOD.
    """
    start = time.monotonic()
    while True:
        stat = nlm_lock(conn, lk, hostname=hostname, version=version)
        if stat == Nlm4Stat.GRANTED:
            nlm_unlock(conn, lk, hostname=hostname, version=version)
            return time.monotonic() - start
        if stat != Nlm4Stat.DENIED_GRACE_PERIOD:
            raise RuntimeError(f"probe LOCK answered {Nlm4Stat(stat).name}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"server still in grace after {timeout:.0f} s")
        time.sleep(interval)


def check_unlocked(
    conn: RpcConn,
    fh_list: Sequence[bytes],
    *,
    hostname: str = "floatlock-check",
    version: int = 4,
) -> list[bytes]:
    """One exclusive whole-file TEST per file, as another owner; returns the locked handles."""
    locked = []
    for fh in dict.fromkeys(fh_list):
        probe = SlotLock(fh, 999_999, f"999999@{hostname}".encode(), 0, 0)
        if nlm_test(conn, probe, hostname=hostname, version=version) != Nlm4Stat.GRANTED:
            locked.append(fh)
    return locked
