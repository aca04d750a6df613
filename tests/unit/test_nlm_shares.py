"""Unit tests for DOS share reservations (NLM SHARE / UNSHARE)."""

from __future__ import annotations

import pytest

from floatlock.nlm.effects import ShareAdded, ShareRemoved
from floatlock.nlm.locks import LockManager
from floatlock.nlm.results import LimitExceeded, ShareDenied, ShareGranted
from floatlock.nlm.shares import ShareAccess, ShareDeny, ShareReservation, ShareTable

F, G = "file-1", "file-2"
HA, HB = "host-a", "host-b"
A, A2, B = (HA, "oh1"), (HA, "oh2"), (HB, "oh1")
R, W, RW, N = ShareAccess.READ, ShareAccess.WRITE, ShareAccess.READ_WRITE, ShareAccess.NONE
DN, DR, DW, DRW = ShareDeny.NONE, ShareDeny.READ, ShareDeny.WRITE, ShareDeny.READ_WRITE


@pytest.mark.parametrize(
    ("held", "new", "ok"),
    [
        ((R, DN), (R, DN), True),
        ((RW, DN), (RW, DN), True),
        ((R, DW), (R, DN), True),  # they deny writers, we only read
        ((R, DW), (W, DN), False),  # we would write what they deny
        ((R, DN), (R, DR), False),  # we would deny the reading they already do
        ((W, DN), (R, DR), True),
        ((R, DRW), (N, DN), True),  # no access, no deny: never conflicts
        ((N, DRW), (R, DN), False),  # deny-all without access of one's own still denies
        ((RW, DRW), (N, DN), True),
    ],
)
def test_share_conflict_rules(
    held: tuple[ShareAccess, ShareDeny], new: tuple[ShareAccess, ShareDeny], ok: bool
) -> None:
    m = LockManager()
    first = m.share(F, A, HA, *held)
    assert isinstance(first, ShareGranted)
    r = m.share(F, B, HB, *new)
    assert isinstance(r, ShareGranted) == ok
    if not ok:
        assert isinstance(r, ShareDenied) and r.holder == first.share


def test_share_table_reports_the_conflicting_holder() -> None:
    t = ShareTable()
    held = ShareReservation(F, A, HA, N, DRW)
    t.put(held)
    assert t.conflict(ShareReservation(F, B, HB, R, DN)) == held


def test_same_owner_reshare_replaces_and_never_conflicts() -> None:
    m = LockManager()
    m.share(F, A, HA, RW, DRW)
    r = m.share(F, A, HA, R, DN)
    assert isinstance(r, ShareGranted) and r.effects == (ShareAdded(r.share),)
    assert m.shares() == [r.share]
    assert isinstance(m.share(F, B, HB, RW, DN), ShareGranted)  # the old deny-all is gone


def test_other_file_is_independent() -> None:
    m = LockManager()
    m.share(F, A, HA, RW, DRW)
    assert isinstance(m.share(G, B, HB, RW, DRW), ShareGranted)


def test_unshare_and_unshare_of_nothing() -> None:
    m = LockManager()
    s = m.share(F, A, HA, RW, DRW)
    assert isinstance(s, ShareGranted)
    assert m.unshare(F, A) == (ShareRemoved(s.share),)
    assert m.unshare(F, A) == ()
    assert isinstance(m.share(F, B, HB, RW, DRW), ShareGranted)


def test_drop_host_and_drop_owner_remove_shares() -> None:
    m = LockManager()
    m.share(F, A, HA, R, DN)
    m.share(G, A2, HA, R, DN)
    b = m.share(F, B, HB, R, DW)
    assert isinstance(b, ShareGranted)
    effects = m.drop_owner(A2)
    assert [type(e) for e in effects] == [ShareRemoved]
    effects = m.drop_host(HA)
    assert [e.share.owner for e in effects if isinstance(e, ShareRemoved)] == [A]
    assert m.shares() == [b.share]
    assert m.shares(host=HA) == [] and m.shares(file=F) == [b.share]


def test_share_limit_per_host() -> None:
    m = LockManager(max_shares_per_host=1)
    m.share(F, A, HA, R, DN)
    assert m.share(G, A2, HA, R, DN) == LimitExceeded(HA, "shares_per_host", 1)
    assert isinstance(m.share(F, A, HA, RW, DN), ShareGranted)  # replacing is not growth
    assert isinstance(m.share(G, B, HB, R, DN), ShareGranted)


def test_share_table_indexes_stay_consistent() -> None:
    t = ShareTable()
    s1 = ShareReservation(F, A, HA, R, DN)
    s2 = ShareReservation(G, A, HA, W, DN)
    assert t.put(s1) is None
    assert t.put(s2) is None
    assert len(t) == 2 and t.count(HA) == 2
    assert t.of_owner(A) == [s1, s2] and t.of_file(G) == [s2]
    s3 = ShareReservation(F, A, HA, RW, DW)
    assert t.put(s3) == s1
    assert t.remove(F, A) == s3 and t.remove(F, A) is None
    assert t.remove(G, A) == s2
    assert len(t) == 0 and t.count(HA) == 0 and t.of_host(HA) == [] and t.all() == []
