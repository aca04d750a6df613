"""Retry schedule and rate limit used by statd: :class:`Backoff` bounds how long SM_NOTIFY and
status callbacks are retried; :class:`RateLimiter` caps the SM_NOTIFY a sender can make us act
on (a token bucket per sender).  Pure values: callers pass ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Backoff", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff bounded by a total time: used for SM_NOTIFY and callbacks."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    total: float = 300.0  # give up this long after the first attempt

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.cap, self.first * self.factor ** max(0, attempt - 1))

    def next_time(self, attempt: int, started: float, now: float) -> float | None:
        """When to try again after failed ``attempt``; None once the total time is spent."""
        t = now + self.delay(attempt)
        return None if t > started + self.total else t


class RateLimiter:
    """A token bucket per sender, with a bounded table (oldest senders forgotten)."""

    def __init__(self, rate: float = 1.0, burst: float = 20.0, max_senders: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_senders = max_senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, sender: str, now: float) -> bool:
        tokens, last = self._buckets.pop(sender, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[sender] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        return ok
