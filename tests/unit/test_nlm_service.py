"""lockd's service layer over real files and the real kernel mirror (no network, no sleep)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.address import ServerAddress
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost, priv_for
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.proto import (
    CancArgs,
    LockArgs,
    Nlm4Stat,
    NlmLock,
    Notify,
    Res,
    Share,
    ShareArgs,
    SmStatus,
    UnlockArgs,
)
from floatlock.nlm.proto import TestArgs as NlmTestArgs
from floatlock.nlm.service import NlmService, SendGranted
from floatlock.rpc.dispatch import Call
from tests.unit.test_nlm_kernel import LocalHolder

VIP1 = ServerAddress("198.18.0.10")
VIP2 = ServerAddress("198.18.0.11")
C1 = "198.18.1.1"
C2 = "198.18.1.2"


def call(client: str, server: ServerAddress, vers: int = 4) -> Call:
    return Call(1, 100021, vers, 2, 0, b"", 0, client=(client, 800), server=server)


class Env:
    def __init__(self, root: Path) -> None:
        self.path = root / "f"
        self.path.write_bytes(b"x" * 100)
        self.resolver = ExportDirResolver(root)
        self.fh = self.resolver.handle("f")
        self.hosts = HostTable()
        self.grace = GraceClocks()
        self.kernel = KernelMirror()
        self.svc = NlmService(self.hosts, self.grace, self.resolver, self.kernel)

    def monitor(self, client: str, server: ServerAddress) -> None:
        host = self.svc.host_for("", call(client, server), 0.0)
        mon = self.hosts.start_monitor(host)
        if mon is not None:
            assert mon == MonitorHost(host.key, client, str(server), priv_for(server))
            self.hosts.monitor_done(host, True)

    def nlock(self, svid: int, off: int, length: int, fh: bytes | None = None) -> NlmLock:
        return NlmLock(
            "name", self.fh if fh is None else fh, f"oh{svid}".encode(), svid, off, length
        )

    def lock(
        self,
        client: str,
        server: ServerAddress,
        svid: int,
        off: int,
        length: int,
        *,
        excl: bool = True,
        block: bool = False,
        reclaim: bool = False,
        vers: int = 4,
        now: float = 1.0,
    ) -> tuple[int, list[object]]:
        a = LockArgs(b"ck%d" % svid, block, excl, self.nlock(svid, off, length), reclaim, 3)
        out = self.svc.lock(a, call(client, server, vers), now)
        assert isinstance(out.reply, Res) and out.reply.cookie == a.cookie
        return out.reply.stat, list(out.effects)

    def unlock(self, client: str, server: ServerAddress, svid: int, off: int, length: int) -> None:
        out = self.svc.unlock(
            UnlockArgs(b"u", self.nlock(svid, off, length)), call(client, server), 2.0
        )
        assert out.reply.stat == Nlm4Stat.GRANTED


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.kernel.close_all()
    e.resolver.close()


def test_lock_needs_monitoring_then_is_mirrored_in_kernel(env: Env) -> None:
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.DENIED_NOLOCKS
    env.monitor(C1, VIP1)
    stat, effects = env.lock(C1, VIP1, 1, 0, 10)
    assert stat == Nlm4Stat.GRANTED and effects
    assert env.hosts.get(env.svc.host_for("", call(C1, VIP1), 1.0).key) is not None
    local = LocalHolder(env.path, 5, 1)
    local.release()
    assert not local.locked  # the kernel holds the NLM lock
    env.unlock(C1, VIP1, 1, 0, 0)
    # Nothing held: the owner's description holds no lock and is kept idle for its next lock.
    assert env.kernel.in_use() == 0 and env.kernel.idle() == 1
    local = LocalHolder(env.path, 5, 1)
    local.release()
    assert local.locked


def test_test_reports_nlm_holder_and_local_holder(env: Env) -> None:
    env.monitor(C1, VIP1)
    assert env.lock(C1, VIP1, 7, 0, 10)[0] == Nlm4Stat.GRANTED
    r = env.svc.test(NlmTestArgs(b"t", True, env.nlock(8, 5, 1)), call(C2, VIP1), 1.0)
    assert r.stat == Nlm4Stat.DENIED and r.holder is not None
    assert (r.holder.svid, r.holder.oh, r.holder.offset, r.holder.length) == (7, b"oh7", 0, 10)
    child = LocalHolder(env.path, 50, 10)
    try:
        r = env.svc.test(NlmTestArgs(b"t", False, env.nlock(8, 55, 0)), call(C2, VIP1), 1.0)
        assert r.holder is not None and r.holder.svid == child.proc.pid
        env.monitor(C2, VIP1)
        assert env.lock(C2, VIP1, 8, 55, 1)[0] == Nlm4Stat.DENIED  # kernel veto
    finally:
        child.release()
    assert env.lock(C2, VIP1, 8, 55, 1)[0] == Nlm4Stat.GRANTED


def test_grace_is_checked_per_server_address_after_host(env: Env) -> None:
    for vip in (VIP1, VIP2):
        env.monitor(C1, vip)
    env.grace.start(VIP1, 30, now=0.0)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.DENIED_GRACE_PERIOD
    r = env.svc.test(NlmTestArgs(b"", True, env.nlock(1, 0, 1)), call(C1, VIP1), 1.0)
    assert r.stat == Nlm4Stat.DENIED_GRACE_PERIOD
    assert env.lock(C1, VIP1, 1, 0, 10, reclaim=True)[0] == Nlm4Stat.GRANTED
    assert env.lock(C1, VIP2, 2, 20, 10)[0] == Nlm4Stat.GRANTED  # other address: not held
    assert env.lock(C1, VIP2, 3, 40, 10, reclaim=True)[0] == Nlm4Stat.DENIED_GRACE_PERIOD
    assert env.lock(C1, VIP1, 1, 60, 1, now=31.0)[0] == Nlm4Stat.GRANTED


def test_blocked_lock_is_granted_by_callback_and_can_be_refused(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    assert env.lock(C2, VIP1, 2, 5, 10, block=True, vers=1)[0] == Nlm4Stat.BLOCKED
    out = env.svc.unlock(UnlockArgs(b"", env.nlock(1, 0, 10)), call(C1, VIP1), 2.0)
    sends = [e for e in out.effects if isinstance(e, SendGranted)]
    assert len(sends) == 1
    g = sends[0]
    assert g.vers == 1 and g.host.addr == C2 and g.host.server == VIP1
    assert g.args.cookie == b"ck2" and g.args.lock.svid == 2 and g.args.exclusive
    local = LocalHolder(env.path, 6, 1)
    local.release()
    assert not local.locked  # granted from the queue: mirrored in the kernel as well
    env.svc.granted_answered(g.blocked, Nlm4Stat.DENIED, 3.0)  # client refused: taken back
    assert env.svc.locks.held() == []
    local = LocalHolder(env.path, 6, 1)
    local.release()
    assert local.locked


def test_cancel_v1_and_v4_describe_the_same_lock(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10, vers=1)[0] == Nlm4Stat.GRANTED
    assert env.lock(C2, VIP1, 2, 0, 10, vers=4, block=True)[0] == Nlm4Stat.BLOCKED
    out = env.svc.cancel(CancArgs(b"", True, True, env.nlock(2, 0, 10)), call(C2, VIP1, 1), 2.0)
    assert out.reply.stat == Nlm4Stat.GRANTED
    assert env.svc.locks.waiting() == []


def test_stale_handle_and_fbig(env: Env) -> None:
    env.monitor(C1, VIP1)
    a = LockArgs(b"", False, True, env.nlock(1, 0, 1, fh=b"nope"), False, 0)
    assert env.svc.lock(a, call(C1, VIP1), 1.0).reply.stat == Nlm4Stat.STALE_FH
    assert env.lock(C1, VIP1, 1, (1 << 64) - 1, 2)[0] == Nlm4Stat.FBIG


def test_unlock_and_cancel_refusals(env: Env) -> None:
    # CANCEL and UNLOCK answer a stale handle and a range past 2**64 as LOCK does, and leave
    # nothing resolved behind for the range that did not fit.
    env.monitor(C1, VIP1)
    c = call(C1, VIP1)
    stale = env.nlock(1, 0, 1, fh=b"nope")
    too_far = env.nlock(1, (1 << 64) - 1, 2)
    assert env.svc.unlock(UnlockArgs(b"", stale), c, 1.0).reply.stat == Nlm4Stat.STALE_FH
    assert env.svc.cancel(CancArgs(b"", False, True, stale), c, 1.0).reply.stat == (
        Nlm4Stat.STALE_FH
    )
    assert env.svc.unlock(UnlockArgs(b"", too_far), c, 1.0).reply.stat == Nlm4Stat.FBIG
    assert env.svc.cancel(CancArgs(b"", False, True, too_far), c, 1.0).reply.stat == (Nlm4Stat.FBIG)
    assert env.svc.open_files() == 0


def test_statd_callback_and_free_all_drop_one_address(env: Env) -> None:
    for vip in (VIP1, VIP2):
        env.monitor(C1, vip)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    assert env.lock(C1, VIP2, 2, 20, 10)[0] == Nlm4Stat.GRANTED
    sm = SmStatus(C1, 5, priv_for(VIP1))
    env.svc.sm_notify(sm, call("198.18.5.5", VIP1), 3.0)  # not from loopback: ignored
    assert len(env.svc.locks.held()) == 2
    env.svc.sm_notify(sm, call("127.0.0.1", ServerAddress("127.0.0.1")), 3.0)
    assert [lk.start for lk in env.svc.locks.held()] == [20]
    env.svc.free_all(Notify("whatever", 9), call(C1, VIP2), 4.0)
    assert env.svc.locks.held() == [] and len(env.kernel) == 0


def test_share_and_drop_server(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP2)
    s1 = ShareArgs(b"", Share("a", env.fh, b"o1", 3, 3), False)  # deny RW, access RW
    s2 = ShareArgs(b"", Share("b", env.fh, b"o2", 0, 1), False)
    assert env.svc.share(s1, call(C1, VIP1), 1.0).reply.stat == Nlm4Stat.GRANTED
    assert env.svc.share(s2, call(C2, VIP2), 1.0).reply.stat == Nlm4Stat.DENIED
    assert env.lock(C2, VIP2, 5, 0, 1)[0] == Nlm4Stat.GRANTED
    env.svc.drop_server(VIP1, 2.0)
    assert env.svc.share(s2, call(C2, VIP2), 2.0).reply.stat == Nlm4Stat.GRANTED
    assert [h.key.server for h in env.hosts] == [VIP2]
    assert len(env.svc.locks.held()) == 1


def test_local_holder_release_wakes_the_waiter_on_the_next_poll(env: Env) -> None:
    env.monitor(C1, VIP1)
    local = LocalHolder(env.path, 0, 10)
    try:
        assert local.locked
        assert env.lock(C1, VIP1, 1, 5, 10, block=True)[0] == Nlm4Stat.BLOCKED
        assert len(env.svc.local_waits) == 1  # vetoed by the kernel only
        assert env.svc.poll_local(2.0) == []  # still held: nothing to do
        assert len(env.svc.local_waits) == 1
    finally:
        local.release()
    effects = env.svc.poll_local(3.0)
    sends = [e for e in effects if isinstance(e, SendGranted)]
    assert len(sends) == 1 and sends[0].args.lock.svid == 1 and sends[0].host.server == VIP1
    assert not sends[0].msg and sends[0].args.cookie == b"ck1"
    assert len(env.svc.local_waits) == 0
    assert [(lk.start, lk.end) for lk in env.svc.locks.held()] == [(5, 15)]
    probe = LocalHolder(env.path, 6, 1)  # granted in the kernel too
    probe.release()
    assert not probe.locked


def test_nlm_holder_is_not_polled_and_cancel_forgets_the_note(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    assert env.lock(C2, VIP1, 2, 0, 10, block=True)[0] == Nlm4Stat.BLOCKED
    assert len(env.svc.local_waits) == 0  # blocked by an NLM lock: woken by its UNLOCK
    local = LocalHolder(env.path, 50, 10)
    try:
        assert env.lock(C2, VIP1, 3, 50, 5, block=True)[0] == Nlm4Stat.BLOCKED
        assert len(env.svc.local_waits) == 1
        out = env.svc.cancel(CancArgs(b"", True, True, env.nlock(3, 50, 5)), call(C2, VIP1), 2.0)
        assert out.reply.stat == Nlm4Stat.GRANTED
        assert env.svc.poll_local(2.5) == []
        assert len(env.svc.local_waits) == 0  # the note went with the request
    finally:
        local.release()


def test_non_blocking_veto_leaves_no_note_behind(env: Env) -> None:
    env.monitor(C1, VIP1)
    local = LocalHolder(env.path, 0, 10)
    try:
        assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.DENIED
    finally:
        local.release()
    env.svc.poll_local(2.0)
    assert len(env.svc.local_waits) == 0 and env.svc.open_files() == 0


def test_open_file_cache_is_pruned_when_the_file_is_unused(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    r = env.svc.test(NlmTestArgs(b"t", True, env.nlock(1, 0, 1)), call(C1, VIP1), 1.0)
    assert r.stat == Nlm4Stat.GRANTED and env.svc.open_files() == 0
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    assert env.svc.open_files() == 1
    assert env.lock(C2, VIP1, 2, 0, 10, block=True)[0] == Nlm4Stat.BLOCKED
    env.unlock(C1, VIP1, 1, 0, 10)  # C2 is granted from the queue: still in use
    assert env.svc.open_files() == 1
    assert env.svc.locks.owner_holds(env.svc.locks.held()[0].file, env.svc.locks.held()[0].owner)
    env.unlock(C2, VIP1, 2, 0, 10)
    assert env.svc.open_files() == 0 and env.kernel.in_use() == 0
    assert env.svc.sweep_idle() == 0 and env.svc.sweep_idle() == 2  # idle a whole interval
    assert len(env.kernel) == 0
    s1 = ShareArgs(b"", Share("a", env.fh, b"o1", 0, 1), False)
    assert env.svc.share(s1, call(C1, VIP1), 1.0).reply.stat == Nlm4Stat.GRANTED
    assert env.svc.open_files() == 1
    assert env.svc.unshare(s1, call(C1, VIP1), 1.0).reply.stat == Nlm4Stat.GRANTED
    assert env.svc.open_files() == 0
    assert env.lock(C1, VIP1, 1, (1 << 64) - 1, 2)[0] == Nlm4Stat.FBIG
    assert env.svc.open_files() == 0
    assert env.lock(C1, VIP1, 3, 0, 1)[0] == Nlm4Stat.GRANTED
    env.svc.drop_server(VIP1, 5.0)
    assert env.svc.open_files() == 0


def test_lock_msg_waiter_is_granted_with_granted_msg_and_own_cookie(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    a = LockArgs(b"same", True, True, env.nlock(2, 0, 10), False, 3)
    assert env.svc.lock(a, call(C2, VIP1), 1.0, msg=True).reply.stat == Nlm4Stat.BLOCKED
    a = LockArgs(b"same", True, True, env.nlock(3, 0, 10), False, 3)
    assert env.svc.lock(a, call(C2, VIP1), 1.0, msg=True).reply.stat == Nlm4Stat.BLOCKED
    out = env.svc.unlock(UnlockArgs(b"", env.nlock(1, 0, 10)), call(C1, VIP1), 2.0)
    (g,) = [e for e in out.effects if isinstance(e, SendGranted)]
    assert g.msg and g.args.lock.svid == 2 and g.args.cookie != b"same"
    out = env.svc.granted_answered(g.blocked, Nlm4Stat.DENIED, 3.0)
    (g2,) = [e for e in out.effects if isinstance(e, SendGranted)]
    assert g2.msg and g2.args.lock.svid == 3 and g2.args.cookie not in (b"same", g.args.cookie)


def test_idle_description_is_reused_and_holds_nothing(env: Env) -> None:
    env.monitor(C1, VIP1)
    env.monitor(C2, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    env.unlock(C1, VIP1, 1, 0, 10)
    assert env.kernel.idle() == 1
    # The idle description holds nothing: another owner and a local process may lock.
    assert env.lock(C2, VIP1, 2, 0, 10)[0] == Nlm4Stat.GRANTED
    env.unlock(C2, VIP1, 2, 0, 10)
    local = LocalHolder(env.path, 0, 10)
    local.release()
    assert local.locked
    # The first owner's next lock takes its idle description again.
    assert env.lock(C1, VIP1, 1, 0, 10)[0] == Nlm4Stat.GRANTED
    assert len(env.kernel) == 2 and env.kernel.in_use() == 1 and env.kernel.idle() == 1
    local = LocalHolder(env.path, 5, 1)
    local.release()
    assert not local.locked
    # Dropping the host closes its descriptions, idle or not.
    host = env.svc.host_for("", call(C1, VIP1), 3.0)
    env.svc.drop_host(host, 3.0)
    assert len(env.kernel) == 1 and env.kernel.idle() == 1


def test_resolved_handles_are_trusted_for_handle_ttl(env: Env) -> None:
    env.monitor(C1, VIP1)
    assert env.lock(C1, VIP1, 1, 0, 10, now=1.0)[0] == Nlm4Stat.GRANTED
    env.svc.unlock(UnlockArgs(b"u", env.nlock(1, 0, 10)), call(C1, VIP1), 1.0)
    env.path.unlink()
    env.path.write_bytes(b"new file, new inode")
    within = 1.0 + env.svc.open.ttl / 2
    assert env.lock(C1, VIP1, 1, 0, 10, now=within)[0] == Nlm4Stat.GRANTED  # cached
    env.svc.unlock(UnlockArgs(b"u", env.nlock(1, 0, 10)), call(C1, VIP1), within)
    later = 1.0 + env.svc.open.ttl
    assert env.lock(C1, VIP1, 1, 0, 10, now=later)[0] == Nlm4Stat.STALE_FH  # resolved again
    assert env.lock(C1, VIP1, 1, 0, 10, now=later)[0] == Nlm4Stat.STALE_FH  # not cached


def test_resolved_handle_cache_is_bounded(tmp_path: Path) -> None:
    e = Env(tmp_path)
    try:
        e.svc.open.max_handles = 3
        e.monitor(C1, VIP1)
        for n in range(5):
            (tmp_path / f"g{n}").write_bytes(b"")
            fh = e.resolver.handle(f"g{n}")
            r = e.svc.test(NlmTestArgs(b"t", True, e.nlock(1, 0, 1, fh=fh)), call(C1, VIP1), 1.0)
            assert r.stat == Nlm4Stat.GRANTED
        assert e.svc.open.cached_handles() == 3
        e.svc.forget_handles()
        assert e.svc.open.cached_handles() == 0
    finally:
        e.kernel.close_all()
        e.resolver.close()
