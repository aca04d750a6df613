"""NLM wire types, versions 1, 3 and 4 (program 100021); their XDR codecs are in nlm/codec.py.

Theory of operation
-------------------
NLM v1 and v3 are defined by the classic ``nlm_prot.x`` (XNFS, chapter "Network Lock Manager
Protocol"); v4 by XNFS chapter "NLM Version 4", which widens ``l_offset``/``l_len`` to
``uint64``, the holder's ``svid`` to ``int32`` and adds statuses (``NLM4_DEADLCK`` ...
``NLM4_FAILED``).  The argument and result *shapes* are otherwise identical, so this module
decodes every version into one set of internal classes:

* an extent is two Python ints, ``offset`` and ``length`` (0 = "to the end of the file"), as the
  client sent them.  A v1/v3 lock ``(offset, length)`` and a v4 lock with the same numbers are
  the same lock;  the lock core turns them into ``[start, end)`` (:mod:`floatlock.nlm.ranges`).
* a status is always an :class:`Nlm4Stat` value.  Encoding for v1/v3 maps the v4-only values
  onto the v1 set (:func:`v1_status`).

When an extent wider than 32 bits must go back to a v1/v3 client (a TEST holder that a v4
client took), :func:`narrow_extent` clamps it: an offset past 2**32-1 becomes 2**32-1 and a
length past 2**32-1 becomes 0 ("to the end").  Every byte the holder covers that a 32-bit
client can name stays covered.

"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "LM_MAXNAMELEN",
    "LM_MAXSTRLEN",
    "MAXNETOBJ_SZ",
    "NLM_PROG",
    "NLM_VERSIONS",
    "SM_PRIV_SIZE",
    "CancArgs",
    "FshAccess",
    "FshMode",
    "Holder",
    "LockArgs",
    "Nlm4Stat",
    "NlmLock",
    "NlmProc",
    "Notify",
    "Res",
    "Share",
    "ShareArgs",
    "ShareRes",
    "SmStatus",
    "TestArgs",
    "TestRes",
    "UnlockArgs",
    "narrow_extent",
    "v1_status",
]

NLM_PROG: Final = 100021
NLM_VERSIONS: Final = (1, 3, 4)

# nlm_prot.x / XNFS: "const LM_MAXSTRLEN = 1024; const LM_MAXNAMELEN = LM_MAXSTRLEN + 1;"
# and netobj is "opaque n_bytes<MAXNETOBJ_SZ>" with MAXNETOBJ_SZ = 1024.
LM_MAXSTRLEN: Final = 1024
LM_MAXNAMELEN: Final = LM_MAXSTRLEN + 1
MAXNETOBJ_SZ: Final = 1024
# XNFS NLM, "nlm_sm_status" (the private statd callback): opaque priv[16] (SM_PRIV_SIZE in
# sm_inter.x).
SM_PRIV_SIZE: Final = 16


class NlmProc(IntEnum):
    """Procedure numbers (XNFS NLM v1/v3 "program NLM_PROG", NLM v4 uses the same numbers)."""

    NULL = 0
    TEST = 1
    LOCK = 2
    CANCEL = 3
    UNLOCK = 4
    GRANTED = 5
    TEST_MSG = 6
    LOCK_MSG = 7
    CANCEL_MSG = 8
    UNLOCK_MSG = 9
    GRANTED_MSG = 10
    TEST_RES = 11
    LOCK_RES = 12
    CANCEL_RES = 13
    UNLOCK_RES = 14
    GRANTED_RES = 15
    SM_NOTIFY = 16  # private: statd's callback to lockd (nlm_sm_status), not in XNFS
    SHARE = 20  # v3 and v4 only (XNFS "NLM_VERSX")
    UNSHARE = 21
    NM_LOCK = 22
    FREE_ALL = 23


class Nlm4Stat(IntEnum):
    """XNFS NLM v4 ``nlm4_stats``; values 0-4 are also v1/v3 ``nlm_stats``."""

    GRANTED = 0
    DENIED = 1
    DENIED_NOLOCKS = 2
    BLOCKED = 3
    DENIED_GRACE_PERIOD = 4
    DEADLCK = 5
    ROFS = 6
    STALE_FH = 7
    FBIG = 8
    FAILED = 9


class FshMode(IntEnum):
    """XNFS ``fsh_mode`` (the deny part of a share reservation)."""

    DN = 0
    DR = 1
    DW = 2
    DRW = 3


class FshAccess(IntEnum):
    """XNFS ``fsh_access``."""

    NONE = 0
    R = 1
    W = 2
    RW = 3


def v1_status(stat: int) -> int:
    """An ``nlm4_stats`` value as an ``nlm_stats`` value for a v1/v3 reply.

    v1/v3 know only GRANTED..DENIED_GRACE_PERIOD.  A deadlock is a denial; every other v4-only
    failure (ROFS, STALE_FH, FBIG, FAILED) becomes DENIED_NOLOCKS, the v1 "cannot do it now".
    """
    if stat <= Nlm4Stat.DENIED_GRACE_PERIOD:
        return stat
    if stat == Nlm4Stat.DEADLCK:
        return Nlm4Stat.DENIED
    return Nlm4Stat.DENIED_NOLOCKS


_U32_MAX: Final = 0xFFFFFFFF


def narrow_extent(offset: int, length: int) -> tuple[int, int]:
    """Clamp a 64-bit extent to what a v1/v3 (32-bit) client can express.

    Values that fit in 32 bits pass unchanged (a v1/v3 extent always round-trips).  An offset
    past 2**32-1 is clamped to 2**32-1 with length 0; a length past 2**32-1 becomes 0, "to the
    end of the file", which covers every byte the holder covers.
    """
    if offset > _U32_MAX:
        return _U32_MAX, 0
    if length > _U32_MAX:
        return offset, 0
    return offset, length


# -- internal representation ------------------------------------------------------------------


@dataclass(slots=True)
class NlmLock:
    """``nlm_lock`` / ``nlm4_lock``: who (caller_name, oh, svid) locks what (fh, extent)."""

    caller_name: str
    fh: bytes
    oh: bytes
    svid: int
    offset: int
    length: int  # 0 means "to the end of the file"


@dataclass(slots=True)
class Holder:
    """``nlm_holder`` / ``nlm4_holder``: the conflicting lock a TEST reports."""

    exclusive: bool
    svid: int
    oh: bytes
    offset: int
    length: int


@dataclass(slots=True)
class TestArgs:
    """``nlm_testargs`` (TEST, TEST_MSG, and GRANTED / GRANTED_MSG sent to a client)."""

    __test__ = False  # a protocol type, not a pytest test class

    cookie: bytes
    exclusive: bool
    lock: NlmLock


@dataclass(slots=True)
class LockArgs:
    """``nlm_lockargs`` (LOCK, LOCK_MSG, NM_LOCK)."""

    cookie: bytes
    block: bool
    exclusive: bool
    lock: NlmLock
    reclaim: bool
    state: int  # the client's NSM state number


@dataclass(slots=True)
class CancArgs:
    """``nlm_cancargs`` (CANCEL, CANCEL_MSG)."""

    cookie: bytes
    block: bool
    exclusive: bool
    lock: NlmLock


@dataclass(slots=True)
class UnlockArgs:
    """``nlm_unlockargs`` (UNLOCK, UNLOCK_MSG)."""

    cookie: bytes
    lock: NlmLock


@dataclass(slots=True)
class Res:
    """``nlm_res``: a cookie and a status (LOCK, CANCEL, UNLOCK, GRANTED and their _RES)."""

    cookie: bytes
    stat: int  # an Nlm4Stat value


@dataclass(slots=True)
class TestRes:
    """``nlm_testres``: ``holder`` is set exactly when ``stat`` is DENIED."""

    __test__ = False  # a protocol type, not a pytest test class

    cookie: bytes
    stat: int
    holder: Holder | None = None


@dataclass(slots=True)
class Share:
    """``nlm_share`` / ``nlm4_share``: a DOS share reservation."""

    caller_name: str
    fh: bytes
    oh: bytes
    mode: int  # FshMode
    access: int  # FshAccess


@dataclass(slots=True)
class ShareArgs:
    """``nlm_shareargs`` (SHARE, UNSHARE)."""

    cookie: bytes
    share: Share
    reclaim: bool


@dataclass(slots=True)
class ShareRes:
    """``nlm_shareres``: ``sequence`` is unused by every known implementation (sent as 0)."""

    cookie: bytes
    stat: int
    sequence: int = 0


@dataclass(slots=True)
class Notify:
    """``nlm_notify`` (FREE_ALL): the client ``name`` restarted with NSM ``state``."""

    name: str
    state: int


@dataclass(slots=True)
class SmStatus:
    """``nlm_sm_status``: statd's callback after an SM_NOTIFY for ``mon_name``."""

    mon_name: str
    state: int
    priv: bytes  # the 16 bytes lockd gave statd in SM_MON, returned verbatim
