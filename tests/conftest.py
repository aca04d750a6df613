"""Fixtures shared by the unit and integration suites."""

from __future__ import annotations

import pytest

from floatlock.net import receiver


@pytest.fixture
def fresh_buffers(monkeypatch: pytest.MonkeyPatch) -> list[bytes | bytearray]:
    """Every buffer :mod:`floatlock.net.receiver` makes for a large fragment, in order (to
    check that a record handed on *is* the buffer it was received into)."""
    made: list[bytes | bytearray] = []
    fresh = receiver.fresh_buffer

    def spy(n: int) -> tuple[bytes | bytearray, memoryview]:
        obj, view = fresh(n)
        made.append(obj)
        return obj, view

    monkeypatch.setattr(receiver, "fresh_buffer", spy)
    return made
