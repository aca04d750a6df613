"""Per-request identity: the AUTH_SYS caller after the export's squashing (exports(5)).

Sans-IO.  :func:`squash` turns the RPC credential into the uid, gid and supplementary groups
the kernel will check every access against (see :mod:`floatlock.nfs.fsuid`):

* ``all_squash``: everyone is the anonymous user (``anonuid``/``anongid``);
* ``root_squash`` (the default): uid 0 becomes ``anonuid`` and gid 0 ``anongid`` (also in the
  supplementary list, as Linux nfsd does);
* ``no_root_squash``: the credential as sent.

In every mode an id of (uint32)-1 becomes the anonymous one: no account has it, and
``setfsuid``/``setfsgid`` take it as "change nothing".

AUTH_NONE callers are anonymous: Linux nfsd maps AUTH_NULL to the anonymous user rather than
refusing it, and clients use AUTH_NONE only for NULL pings and the odd MOUNT call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from floatlock.rpc.message import AuthSys


class Squash(Enum):
    ROOT = "root_squash"
    NONE = "no_root_squash"
    ALL = "all_squash"


@dataclass(frozen=True, slots=True)
class Identity:
    """The filesystem identity a request runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


ROOT = Identity(0, 0, ())


#: squash's answers: (id(auth), id(mode), anonuid, anongid) -> (auth, mode, identity).  The
#: dispatcher hands every call with the same credential bytes the same AuthSys object, so a
#: client's calls find their identity here instead of building it again (a frozen
#: dataclass and its checks: about half a microsecond of every LOOKUP, ACCESS or CREATE).
#: Keyed by identity, not equality (hashing an AuthSys would cost what is saved): an entry
#: holds its objects, so no other object can have their ids while it exists (the ``is``
#: test is a second guard).  Any AuthSys will do (it is frozen); the bound (give or take a
#: thread racing another past the check) makes old ones go.
_SQUASHED: dict[tuple[int, int, int, int], tuple[AuthSys | None, Squash, Identity]] = {}
_SQUASHED_MAX = 4096


def squash(
    auth: AuthSys | None, mode: Squash, anonuid: int = 65534, anongid: int = 65534
) -> Identity:
    """The identity for ``auth`` under the export's squash ``mode``."""
    key = (id(auth), id(mode), anonuid, anongid)
    hit = _SQUASHED.get(key)
    if hit is not None and hit[0] is auth and hit[1] is mode:
        return hit[2]
    ident = _squashed(auth, mode, anonuid, anongid)
    if len(_SQUASHED) >= _SQUASHED_MAX:
        _SQUASHED.clear()  # (worker threads too: each step is one dict operation)
    _SQUASHED[key] = (auth, mode, ident)
    return ident


def _squashed(auth: AuthSys | None, mode: Squash, anonuid: int, anongid: int) -> Identity:
    if auth is None or mode is Squash.ALL:
        return Identity(anonuid, anongid, ())
    if mode is Squash.NONE:
        return _valid(Identity(auth.uid, auth.gid, auth.gids), anonuid, anongid)
    uid = anonuid if auth.uid == 0 else auth.uid
    gid = anongid if auth.gid == 0 else auth.gid
    gids = auth.gids
    groups = tuple(anongid if g == 0 else g for g in gids) if 0 in gids else gids
    return _valid(Identity(uid, gid, groups), anonuid, anongid)


#: (uint32)-1: no user or group can have it; ``setfsuid(-1)`` is a query that changes nothing.
INVALID_ID = 0xFFFFFFFF


def _valid(ident: Identity, anonuid: int, anongid: int) -> Identity:
    """``ident`` with (uint32)-1 ids made anonymous (a credential may carry any 32-bit value,
    and the thread could not take that one)."""
    if ident.uid != INVALID_ID and ident.gid != INVALID_ID and INVALID_ID not in ident.groups:
        return ident
    return Identity(
        anonuid if ident.uid == INVALID_ID else ident.uid,
        anongid if ident.gid == INVALID_ID else ident.gid,
        tuple(anongid if g == INVALID_ID else g for g in ident.groups),
    )
