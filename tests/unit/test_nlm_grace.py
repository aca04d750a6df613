"""Per-address grace clocks: no sleeping, time is passed in."""

from __future__ import annotations

from floatlock.address import ServerAddress
from floatlock.nlm.grace import GraceClocks

A = ServerAddress("198.18.0.10")
B = ServerAddress("198.18.0.11")


def test_grace_is_per_address() -> None:
    g = GraceClocks()
    g.start(A, 10, now=100.0)
    assert g.in_grace(A, 100.0)
    assert g.in_grace(A, 109.999)
    assert not g.in_grace(A, 110.0)
    assert not g.in_grace(B, 100.0)
    assert g.remaining(A, 104.0) == 6.0
    assert g.remaining(B, 104.0) == 0.0
    assert g.remaining(A, 200.0) == 0.0


def test_end_and_restart() -> None:
    g = GraceClocks()
    g.start(A, 10, 0.0)
    g.start(B, 10, 0.0)
    assert g.end(A) is True
    assert not g.in_grace(A, 1.0)
    assert g.in_grace(B, 1.0)
    assert g.end(A) is False
    g.start(B, 2, 5.0)  # a restart replaces the clock, even when shorter
    assert g.remaining(B, 5.0) == 2.0
    g.start(B, 0, 5.0)
    assert not g.in_grace(B, 5.0)


def test_statd_answer_starts_or_extends_never_shortens() -> None:
    g = GraceClocks()
    g.set_remaining(A, 30, now=0.0)
    assert g.remaining(A, 0.0) == 30.0
    g.set_remaining(A, 5, now=1.0)  # stale/racing answer: ignored
    assert g.remaining(A, 1.0) == 29.0
    g.set_remaining(A, 60, now=1.0)
    assert g.remaining(A, 1.0) == 60.0
    g.set_remaining(B, 0, now=1.0)
    assert not g.in_grace(B, 1.0)


def test_expire_lists_and_next_deadline() -> None:
    g = GraceClocks()
    assert g.next_deadline() is None
    g.start(A, 5, 0.0)
    g.start(B, 20, 0.0)
    assert g.next_deadline() == 5.0
    assert dict(g.addresses(1.0)) == {A: 4.0, B: 19.0}
    assert g.expire(4.0) == []
    assert g.expire(5.0) == [A]
    assert dict(g.addresses(5.0)) == {B: 15.0}
    assert g.next_deadline() == 20.0
