"""Grace periods, one clock per server address (sans-IO).

Theory of operation
-------------------
After a server restarts, XNFS NLM ("Crash Recovery") gives clients a grace period in which
only reclaims (LOCK/SHARE with ``reclaim`` set) are honoured and other LOCK, TEST and SHARE
calls get ``DENIED_GRACE_PERIOD``.  The seed makes grace a property of the *server address a
client talked to*, not of the node: when a virtual address moves to this node only that address
starts grace, and lockd checks grace only after it has resolved the host, so requests arriving
on other addresses are never held.

:class:`GraceClocks` keeps a deadline per :data:`~floatlock.address.ServerAddress`.  Everything
takes ``now`` (a monotonic time in seconds) from the caller:

* ``start(address, seconds, now)`` begins (or restarts) grace for one address;
* ``set_remaining(address, seconds, now)`` records statd's SM_MON2 answer "N seconds of grace
  remain for this my_name".  It may start or *extend* grace, never shorten it: a stale or racing
  answer must not end a grace period early, because ending grace too soon lets a new client
  take a lock a reclaiming client still holds, while ending it late only delays new locks.
  Ending early is an explicit decision (``end``), e.g. once every journaled lock of the address
  was reclaimed (roadmap item 1);
* ``in_grace`` / ``remaining`` ask; ``expire(now)`` removes the clocks that ran out and returns
  their addresses so the caller can log or journal "grace over".

With lockd's ``virtual_server`` option off, the host table keys everything under one node-wide
address (:data:`floatlock.nlm.hosts.ANY_SERVER`) and the daemon starts grace for that key.
"""

from __future__ import annotations

from collections.abc import Iterator

from floatlock.address import ServerAddress

__all__ = ["GraceClocks"]


class GraceClocks:
    """Grace deadlines per server address."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[ServerAddress, float] = {}

    def start(self, address: ServerAddress, seconds: float, now: float) -> None:
        """Begin grace for ``address``, lasting ``seconds`` from ``now`` (replaces any clock)."""
        if seconds <= 0:
            self._until.pop(address, None)
        else:
            self._until[address] = now + seconds

    def set_remaining(self, address: ServerAddress, seconds: float, now: float) -> None:
        """statd says ``seconds`` of grace remain for ``address``: start or extend, never cut."""
        if seconds <= 0:
            return
        until = now + seconds
        if until > self._until.get(address, float("-inf")):
            self._until[address] = until

    def end(self, address: ServerAddress) -> bool:
        """End grace for ``address`` now; True when it was in grace (or had a clock)."""
        return self._until.pop(address, None) is not None

    def in_grace(self, address: ServerAddress, now: float) -> bool:
        until = self._until.get(address)
        return until is not None and now < until

    def remaining(self, address: ServerAddress, now: float) -> float:
        """Seconds of grace left for ``address`` (0.0 when not in grace)."""
        until = self._until.get(address)
        if until is None or now >= until:
            return 0.0
        return until - now

    def expire(self, now: float) -> list[ServerAddress]:
        """Forget the clocks that ran out by ``now``; return their addresses."""
        done = [a for a, until in self._until.items() if now >= until]
        for a in done:
            del self._until[a]
        return done

    def addresses(self, now: float) -> Iterator[tuple[ServerAddress, float]]:
        """(address, seconds remaining) for every address in grace at ``now``."""
        for a, until in list(self._until.items()):
            if now < until:
                yield a, until - now

    def next_deadline(self) -> float | None:
        """The earliest time a clock runs out, for the adapter's timer (None: no clock)."""
        return min(self._until.values(), default=None)
