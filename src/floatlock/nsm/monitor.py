"""The sans-IO heart of statd: monitor records, state numbers and grace per server identity.

Theory of operation
-------------------
An *identity* is one name this statd speaks for: the node itself (:data:`NODE`) and every
virtual server address it currently serves.  Each identity has its own NSM state number, its
own grace clock and its own monitor records, so that a virtual server's records and state can
move to another node with its address (the seed: "the my_name field in SM_MON ... is set to a
textual representation of that destination address").

* A record (XNFS NSM, SM_MON) is keyed by ``(mon_name, my_name)`` and carries the callback
  ``(my_prog, my_vers, my_proc)``, the 16 private bytes and the caller's address (where the
  callback goes).  ``my_name`` picks the identity: a virtual server address we serve, else the
  node.  ``my_name`` is kept exactly as sent; it is never replaced by "127.0.0.1".
* State numbers (XNFS NSM, "the state number is odd while the host is up and even while it is
  down, and increases on every change"): on start and on takeover an identity goes to the next
  odd number (+1 from a clean even stop, +2 from an odd number left by a crash); a clean stop
  or a release writes the next even number.
* Start/takeover moves the identity's records from ``sm/`` to ``sm.bak/`` (nfs-utils
  ``sm-notify`` does the same at boot), empties the in-memory list (the lock holders must
  reclaim and be monitored again) and asks for an SM_NOTIFY to each recorded peer; a peer's
  backup record is deleted once its statd answered, and kept for the next start otherwise.
* A received SM_NOTIFY (XNFS NSM, SM_NOTIFY) is matched by ``mon_name`` or by the sender's
  address, rate-limited per sender, ignored unless we monitor the peer, and deduplicated by the
  peer's state number; each matching record yields one callback (``struct status``).

Every method takes ``now`` and returns :class:`Effect` values; the asyncio adapter carries them
out (files, callbacks, notifications, the HA callout).  Nothing here does I/O.  The effect and
record types live in :mod:`floatlock.nsm.effects`, :class:`Backoff` and :class:`RateLimiter` in
:mod:`floatlock.nsm.retry`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from floatlock.address import ServerAddress, canonical_ip

# Effect types and the retry helpers live in their own modules; they stay importable from here.
from floatlock.nsm.effects import (
    Callback,
    Callout,
    DeleteBackup,
    Effect,
    FireCallback,
    MoveToBackup,
    Notify,
    Record,
    Resolve,
    WriteRecords,
    WriteState,
)
from floatlock.nsm.proto import PRIV_SIZE, SM_MAXSTRLEN, MonId, MyId, Res, Status
from floatlock.nsm.retry import Backoff, RateLimiter

__all__ = [
    "NODE",
    "Backoff",
    "Callback",
    "Callout",
    "DeleteBackup",
    "Effect",
    "FireCallback",
    "Identity",
    "Monitor",
    "MoveToBackup",
    "Notify",
    "RateLimiter",
    "Record",
    "Resolve",
    "WriteRecords",
    "WriteState",
    "down_state",
    "up_state",
]

# The node's own identity.  Virtual servers are named by their canonical address text.
NODE: Final = ServerAddress("")
_STATE_MAX: Final = 0x7FFFFFFF  # sm_stat.state is an XDR int


def up_state(stored: int) -> int:
    """The odd state number to use on start/takeover after ``stored`` (0: none stored)."""
    n = stored + 1 if stored % 2 == 0 else stored + 2
    return 1 if n > _STATE_MAX or n < 1 else n  # wrap, keeping "odd means up"


def down_state(current: int) -> int:
    """The even state number written on a clean stop (XNFS: even while down)."""
    n = current + 1 if current % 2 == 1 else current
    return 2 if n > _STATE_MAX or n < 2 else n


# -- identities -------------------------------------------------------------------------------


@dataclass(slots=True)
class Identity:
    name: ServerAddress
    state: int
    grace_until: float
    records: dict[tuple[str, str], Record] = field(default_factory=dict)

    def by_mon_name(self, mon_name: str) -> tuple[Record, ...]:
        return tuple(r for (m, _), r in sorted(self.records.items()) if m == mon_name)


def _ip_or_none(text: str) -> str | None:
    try:
        return canonical_ip(text)
    except ValueError:
        return None


def valid_name(name: str) -> bool:
    """mon_name/my_name rule: 1..SM_MAXSTRLEN bytes (XNFS ``string<SM_MAXSTRLEN>``)."""
    n = len(name.encode("utf-8", "surrogateescape"))
    return 0 < n <= SM_MAXSTRLEN


class Monitor:
    """All identities' records, state numbers and grace; see the module docstring."""

    def __init__(
        self,
        *,
        grace: float = 90.0,
        notify_limiter: RateLimiter | None = None,
        max_records: int = 100_000,
    ) -> None:
        self.grace = grace
        self.max_records = max_records
        self.limiter = notify_limiter if notify_limiter is not None else RateLimiter()
        self.identities: dict[ServerAddress, Identity] = {}
        # Last state number seen per peer name: a retransmitted SM_NOTIFY for a reboot we
        # already acted on must not drop the locks the peer has reclaimed since.
        self._peer_state: dict[str, int] = {}
        # Resolved addresses of non-IP mon_names, filled in by the adapter (DNS is I/O).
        self._aliases: dict[str, frozenset[str]] = {}

    # -- identities ----------------------------------------------------------------------

    def identity_of(self, my_name: str) -> Identity:
        """The identity a ``my_name`` belongs to: a virtual server we serve, else the node."""
        ip = _ip_or_none(my_name)
        if ip is not None:
            ident = self.identities.get(ServerAddress(ip))
            if ident is not None:
                return ident
        return self.identities[NODE]

    def state_of(self, server: ServerAddress | str) -> int:
        """State number for a request that arrived on ``server`` (SM_STAT, SM_NOTIFY replies)."""
        return self.identity_of(server).state

    def start(
        self,
        name: ServerAddress,
        stored_state: int,
        current: Iterable[Record],
        backup: Iterable[Record],
        now: float,
        *,
        notify: bool = True,
    ) -> list[Effect]:
        """Start (node) or take over (virtual server) an identity with what its store holds.

        With ``notify`` the recorded peers are told of the new state (records move to
        ``sm.bak/``); without it (``rpc.statd -L``) the records stay monitored as they are.
        """
        if name in self.identities:
            raise ValueError(f"identity {name or 'node'} is already held")
        state = up_state(stored_state)
        cur = list(current)
        bak = list(backup)
        # Grace protects locks that clients held before and may reclaim.  lockd grants no
        # lock before statd has recorded the client (SM_MON is answered after the record is
        # on disk), so an identity that starts with no records has no client that could
        # reclaim anything: holding new locks back would protect nothing.
        grace = self.grace if (cur or bak) else 0.0
        ident = Identity(name, state, now + grace)
        self.identities[name] = ident
        effects: list[Effect] = [WriteState(name, state)]
        if not notify:
            for r in cur:
                ident.records[(r.mon_name, r.my_name)] = r
                if _ip_or_none(r.mon_name) is None:
                    effects.append(Resolve(r.mon_name))
            return effects
        effects.append(MoveToBackup(name))
        peers: dict[str, str] = {}
        for r in [*bak, *cur]:
            peers.setdefault(r.mon_name, r.my_name)
        for mon_name, my_name in sorted(peers.items()):
            # The new node speaks as the identity: mon_name in SM_NOTIFY is the address the
            # clients talked to (real-peers.md: a Linux statd matches it with no DNS at all).
            me = name if name != NODE else my_name
            effects.append(Notify(name, mon_name, me, state))
        return effects

    def stop(self, name: ServerAddress) -> list[Effect]:
        """Clean stop of one identity: write the even state number, forget it in memory."""
        ident = self.identities.pop(name, None)
        if ident is None:
            return []
        return [WriteState(name, down_state(ident.state))]

    def release(self, name: ServerAddress, now: float) -> list[Effect]:
        """Give a virtual server up: fire every callback registered under it, as if each of
        its clients had rebooted, so lockd drops exactly those locks; then stop it.

        Its files stay: the node taking the address over loads and notifies them.  The
        identity is removed first, so an SM_UNMON lockd sends in reaction cannot touch them.
        """
        if name == NODE:
            raise ValueError("the node identity cannot be released")
        ident = self.identities.get(name)
        if ident is None:
            return []
        effects: list[Effect] = []
        for r in ident.records.values():
            st = Status(r.mon_name, self._peer_state.get(r.mon_name, 0), r.priv)
            effects.append(FireCallback(r, st, f"release of {name}"))
        return effects + self.stop(name)

    def grace_remaining(self, my_name: str, now: float) -> int:
        """Whole seconds of grace left for the identity of ``my_name`` (rounded up)."""
        left = self.identity_of(my_name).grace_until - now
        return max(0, math.ceil(left))

    def end_grace(self, name: ServerAddress) -> None:
        ident = self.identities.get(name)
        if ident is not None:
            ident.grace_until = 0.0

    def records(self, name: ServerAddress | None = None) -> list[Record]:
        ids = self.identities.values() if name is None else [self.identities[name]]
        return [r for i in ids for r in i.records.values()]

    # -- procedures (XNFS NSM) -------------------------------------------------------------

    def mon(
        self, mon_id: MonId, priv: bytes, caller: str, local: bool, now: float
    ) -> tuple[Res, int, list[Effect]]:
        """SM_MON: (res_stat, state of the identity, effects)."""
        ident = self.identity_of(mon_id.my_id.my_name)
        if not local:
            return Res.STAT_FAIL, ident.state, []
        if not (valid_name(mon_id.mon_name) and valid_name(mon_id.my_id.my_name)):
            return Res.STAT_FAIL, ident.state, []
        if len(priv) != PRIV_SIZE:
            return Res.STAT_FAIL, ident.state, []
        key = (mon_id.mon_name, mon_id.my_id.my_name)
        if key not in ident.records and sum(len(i.records) for i in self.identities.values()) >= (
            self.max_records
        ):
            return Res.STAT_FAIL, ident.state, []
        my = mon_id.my_id
        caller_ip = _ip_or_none(caller) or "127.0.0.1"
        rec = Record(
            mon_id.mon_name, my.my_name, Callback(my.my_prog, my.my_vers, my.my_proc), priv,
            caller_ip,
        )  # fmt: skip
        old = ident.records.get(key)
        ident.records[key] = rec
        effects: list[Effect] = []
        if old != rec:
            effects.append(WriteRecords(ident.name, rec.mon_name, ident.by_mon_name(rec.mon_name)))
        if old is None:
            effects.append(Callout("add-client", rec.mon_name, rec.my_name))
            if _ip_or_none(rec.mon_name) is None and rec.mon_name not in self._aliases:
                effects.append(Resolve(rec.mon_name))
        return Res.STAT_SUCC, ident.state, effects

    def forget(self, rec: Record) -> None:
        """Undo a :meth:`mon` whose record could not be written."""
        ident = self.identity_of(rec.my_name)
        if ident.records.get((rec.mon_name, rec.my_name)) == rec:
            del ident.records[(rec.mon_name, rec.my_name)]

    def unmon(self, mon_id: MonId, local: bool) -> tuple[int, list[Effect]]:
        """SM_UNMON: stop monitoring ``mon_name`` for this requester (name and callback match,
        as nfs-utils does).  Returns the identity's state and effects."""
        ident = self.identity_of(mon_id.my_id.my_name)
        if not local:
            return ident.state, []
        key = (mon_id.mon_name, mon_id.my_id.my_name)
        rec = ident.records.get(key)
        my = mon_id.my_id
        if rec is None or rec.callback != Callback(my.my_prog, my.my_vers, my.my_proc):
            return ident.state, []
        del ident.records[key]
        return ident.state, [
            WriteRecords(ident.name, rec.mon_name, ident.by_mon_name(rec.mon_name)),
            Callout("del-client", rec.mon_name, rec.my_name),
        ]

    def unmon_all(self, my_id: MyId, local: bool) -> tuple[int, list[Effect]]:
        """SM_UNMON_ALL: drop every record of this requester (my_name and callback match)."""
        ident = self.identity_of(my_id.my_name)
        if not local:
            return ident.state, []
        cb = Callback(my_id.my_prog, my_id.my_vers, my_id.my_proc)
        gone = [
            k for k, r in ident.records.items() if r.my_name == my_id.my_name and r.callback == cb
        ]
        effects: list[Effect] = []
        for k in gone:
            rec = ident.records.pop(k)
            effects.append(WriteRecords(ident.name, rec.mon_name, ident.by_mon_name(rec.mon_name)))
            effects.append(Callout("del-client", rec.mon_name, rec.my_name))
        return ident.state, effects

    def simu_crash(self, local: bool, now: float) -> list[Effect]:
        """SM_SIMU_CRASH: as if this host's statd had crashed and restarted: every identity
        gets a new odd state, its records go to ``sm.bak/`` and its peers are notified."""
        if not local:
            return []
        effects: list[Effect] = []
        for name in list(self.identities):
            ident = self.identities.pop(name)
            effects += self.start(name, ident.state, ident.records.values(), (), now)
        return effects

    def set_aliases(self, mon_name: str, addresses: Iterable[str]) -> None:
        """Record the addresses a host name resolved to (for matching SM_NOTIFY senders)."""
        ips = frozenset(a for a in (_ip_or_none(x) for x in addresses) if a is not None)
        if ips:
            self._aliases[mon_name] = ips
        if len(self._aliases) > 2 * self.max_records:
            self._aliases.pop(next(iter(self._aliases)))

    def notified(self, mon_name: str, state: int, sender: str, now: float) -> list[Effect]:
        """SM_NOTIFY received: callbacks for every record of the peer that rebooted.

        The peer is found by ``mon_name`` or by the sender's address (a Linux client's
        sm-notify may send its host name while we recorded its address, or the reverse).
        """
        sender_ip = _ip_or_none(sender) or sender
        if not self.limiter.allow(sender_ip, now):
            return []
        name_ip = _ip_or_none(mon_name)
        matches: list[Record] = []
        for ident in self.identities.values():
            for r in ident.records.values():
                if r.mon_name == mon_name:
                    matches.append(r)
                    continue
                rip = _ip_or_none(r.mon_name)
                addrs = {rip} if rip is not None else self._aliases.get(r.mon_name, frozenset())
                if sender_ip in addrs or (name_ip is not None and name_ip in addrs):
                    matches.append(r)
        if not matches:
            return []
        effects: list[Effect] = []
        for r in matches:
            if self._peer_state.get(r.mon_name) == state:
                continue  # a retransmission of a reboot already acted on
            effects.append(FireCallback(r, Status(r.mon_name, state, r.priv), "peer rebooted"))
        for r in matches:
            self._peer_state[r.mon_name] = state
        return effects

    def notify_done(self, identity: ServerAddress, mon_name: str, ok: bool) -> list[Effect]:
        """An SM_NOTIFY we sent was answered (``ok``) or given up: nfs-utils deletes the
        ``sm.bak`` record once the peer answered and keeps it for the next start otherwise."""
        return [DeleteBackup(identity, mon_name)] if ok else []
