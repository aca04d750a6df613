"""lockd's request handling: decode -> host -> grace -> file -> lock core -> kernel -> effects.

Theory of operation
-------------------
:class:`NlmService` answers every NLM procedure (XNFS NLM v1/v3 and "NLM Version 4") for one
decoded request and the :class:`~floatlock.rpc.dispatch.Call` it came in, at time ``now``.  It
is synchronous and never waits on the network: what must happen outside (a reply, an
NLM_GRANTED callback, a ``*_RES`` call, SM_MON) comes back as an :class:`Outcome`, whose
``reply`` the RPC adapter sends and whose ``effects`` it carries out.  The kernel OFD mirror
(:mod:`floatlock.nlm.kernel`) is the one real side effect done here, as the lock core's
``admit`` veto, so a lock is only granted once the kernel holds it too.

The order inside every handler follows the seed: the *host* is resolved first (keyed by the
server address the request arrived on), and only then is grace checked, against that host's
address (``host.grace_key``), so a grace period on one virtual address never holds requests
that arrive on another.  During grace (XNFS NLM, "Crash Recovery"): LOCK and SHARE without
``reclaim`` and TEST get ``DENIED_GRACE_PERIOD``; reclaims are processed; UNLOCK, CANCEL and
UNSHARE proceed (they can only release).  A reclaim *outside* grace is refused with
``DENIED_GRACE_PERIOD`` too (what Linux lockd does): the lock may have been given away.

Monitoring: a host must be monitored by statd before it may hold anything (see
:mod:`floatlock.nlm.hosts`).  ``needs_monitor(host)`` tells the adapter to get SM_MON done
first (``hosts.start_monitor`` / ``monitor_done``); a LOCK or SHARE for an unmonitored host is
answered ``DENIED_NOLOCKS``.  NM_LOCK (clients without statd) skips monitoring and never blocks.

An NLM owner is ``(host key, svid, oh)`` (XNFS "nlm4_lock"); a share owner ``(host key, oh)``.

Where the procedures live
-------------------------
The lock path -- TEST, LOCK (NM_LOCK, the ``*_MSG`` forms), CANCEL, UNLOCK -- and the plumbing
every procedure shares (tables, the ``admit`` veto, pruning, carrying core effects into the
kernel and GRANTED callbacks) are :class:`~floatlock.nlm.lockprocs.LockProcedures`, which
:class:`NlmService` derives from (the lock path stays plain method calls on one object).  This
module adds the procedures off that path: the client's answer to NLM_GRANTED, retrying queues
that wait on a local holder, SHARE / UNSHARE (XNFS "NLM_SHARE", "NLM_UNSHARE"), expiry of
queued requests, and dropping a client's state (XNFS "NLM_FREE_ALL", statd's reboot callback,
the release of a server address).
"""

from __future__ import annotations

from collections.abc import Hashable

from floatlock.address import ServerAddress, is_loopback
from floatlock.nlm import effects as fx
from floatlock.nlm.files import LockFile, StaleHandle
from floatlock.nlm.hosts import Host, HostLimitError
from floatlock.nlm.lockprocs import STAT_FOR_LIMIT, LockProcedures
from floatlock.nlm.outcomes import Effect, Outcome, SendGranted, SendResult
from floatlock.nlm.proto import Nlm4Stat, Notify, ShareArgs, ShareRes, SmStatus
from floatlock.nlm.records import BlockedLock, Lock
from floatlock.nlm.results import ShareDenied, ShareGranted
from floatlock.nlm.shares import ShareAccess, ShareDeny
from floatlock.rpc.dispatch import Call

__all__ = ["Effect", "NlmService", "Outcome", "SendGranted", "SendResult"]


class NlmService(LockProcedures):
    """Every NLM procedure: the lock procedures (:class:`LockProcedures`) and those off the
    lock path, over the host table, grace clocks, resolver, lock core and kernel."""

    # -- waiting on local holders ---------------------------------------------------------

    def poll_local(self, now: float) -> list[Effect]:
        """Retry the queues of files whose waiters a local holder may have let go of.

        One F_OFD_GETLK per noted request (see :mod:`floatlock.nlm.localwait`); a file's queue
        is rerun only when one of them is free now.
        """
        out: list[Effect] = []
        for file in self.local_waits.files():
            noted = self.local_waits.take(file)
            queued = {w.lock for w in self.locks.waiting(file=file)}
            live = [lk for lk in noted if lk in queued]
            lf = self.open.get(file)
            if not live or lf is None or self.kernel is None:
                continue
            if any(self._kernel_free(lf, lk) for lk in live):
                self._apply(self.locks.retry_file(file), out)  # re-notes what is still busy
            else:
                for lk in live:
                    self.local_waits.note(lk)
        self._prune_touched(out)
        return out

    def _kernel_free(self, lf: LockFile, lk: Lock) -> bool:
        assert self.kernel is not None
        try:
            return self.kernel.test(lk.owner, lf, lk.start, lk.end, lk.exclusive) is None
        except OSError:
            return True  # let the retry's own veto decide

    def _prune_touched(self, out: list[Effect]) -> None:
        """Prune every file the effects in ``out`` released something on."""
        files: dict[Hashable, None] = {}
        for e in out:
            if isinstance(e, fx.Released):
                files[e.lock.file] = None
            elif isinstance(e, fx.Cancelled):
                files[e.blocked.lock.file] = None
            elif isinstance(e, fx.ShareRemoved):
                files[e.share.file] = None
        for file in files:
            self._prune(file)

    # -- GRANTED answers ------------------------------------------------------------------

    def granted_answered(self, blocked: BlockedLock, stat: int | None, now: float) -> Outcome:
        """The client answered NLM_GRANTED with ``stat`` (None: never answered): anything but
        GRANTED takes the grant back (XNFS NLM, "NLM_GRANTED")."""
        out: list[Effect] = []
        if stat != Nlm4Stat.GRANTED:
            lk = blocked.lock
            if self.kernel is not None:
                self.kernel.unlock(lk.owner, lk.file, lk.start, lk.end)
            self._apply(self.locks.undo_grant(blocked), out)
            self._prune(lk.file)
        return Outcome(None, out)

    # -- SHARE / UNSHARE ------------------------------------------------------------------

    def share(self, a: ShareArgs, call: Call, now: float) -> Outcome:
        s = a.share
        try:
            host = self.host_for(s.caller_name, call, now)
        except HostLimitError:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        if self.grace.in_grace(host.grace_key, now) != a.reclaim:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_GRACE_PERIOD))
        if not host.monitored:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        try:
            lf = self.open.file(s.fh, now)
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        r = self.locks.share(
            lf.key, (host.key, s.oh), host.key, ShareAccess(s.access), ShareDeny(s.mode)
        )
        out: list[Effect] = []
        self._apply(r.effects, out)
        self._prune(lf.key)
        if isinstance(r, ShareGranted):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)
        if isinstance(r, ShareDenied):
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED), out)
        return Outcome(ShareRes(a.cookie, STAT_FOR_LIMIT), out)

    def unshare(self, a: ShareArgs, call: Call, now: float) -> Outcome:
        s = a.share
        try:
            host = self.host_for(s.caller_name, call, now)
            lf = self.open.file(s.fh, now)
        except HostLimitError:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.DENIED_NOLOCKS))
        except StaleHandle:
            return Outcome(ShareRes(a.cookie, Nlm4Stat.STALE_FH))
        out: list[Effect] = []
        self._apply(self.locks.unshare(lf.key, (host.key, s.oh)), out)
        self._prune(lf.key)
        return Outcome(ShareRes(a.cookie, Nlm4Stat.GRANTED), out)

    def expire(self, now: float, max_age: float) -> list[Effect]:
        """Cancel queued requests the client stopped re-sending (see LockManager.expire)."""
        out: list[Effect] = []
        self._apply(self.locks.expire(now, max_age), out)
        self._prune_touched(out)
        return out

    # -- dropping state -------------------------------------------------------------------

    def drop_host(self, host: Host, now: float) -> list[Effect]:
        """Release everything ``host`` holds, in the core and the kernel."""
        out: list[Effect] = []
        if self.kernel is not None:
            self.kernel.drop_host(host.key)  # first: the core's wake-ups run the kernel veto
        self._apply(self.locks.drop_host(host.key), out)
        self._prune_touched(out)
        return out

    def free_all(self, a: Notify, call: Call, now: float) -> Outcome:
        """FREE_ALL: the client ``a.name`` restarted without statd; drop its state here."""
        client = self.hosts.client_id(call.client_ip, a.name)
        out: list[Effect] = []
        for host in self.hosts.hosts_of_client(client, call.server):
            self.hosts.note_state(host, a.state)
            out.extend(self.drop_host(host, now))
        return Outcome(None, out)

    def sm_notify(self, a: SmStatus, call: Call, now: float) -> Outcome:
        """statd's callback (private procedure 16): accepted from loopback only."""
        if not is_loopback(call.client_ip):
            return Outcome(None)
        host = self.hosts.rebooted(a.mon_name, a.priv, a.state)
        if host is None:
            return Outcome(None)
        return Outcome(None, self.drop_host(host, now))

    def drop_server(self, server: ServerAddress, now: float) -> list[Effect]:
        """Release every host of one server address (``floatlock release ADDR``)."""
        out: list[Effect] = []
        for host in self.hosts.hosts_of_server(server):
            out.extend(self.drop_host(host, now))
        self.hosts.drop_server(server)
        return out
