"""Status callbacks: retried, logged, isolated from each other; the in-process route."""

from __future__ import annotations

import asyncio

from floatlock.nsm.callbacks import CallbackFirer
from floatlock.nsm.monitor import Backoff, Callback, Record
from floatlock.nsm.proto import Status

PRIV = b"k" * 16


def rec(name: str, prog: int = 100021) -> Record:
    return Record(name, "198.18.0.10", Callback(prog, 4, 16), PRIV)


class FakeClock:
    """Time that moves only when the firer sleeps: retries never really wait."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_local_callback_retried_until_it_succeeds() -> None:
    attempts: list[str] = []

    def flaky(status: Status, record: Record) -> None:
        attempts.append(status.mon_name)
        if len(attempts) < 3:
            raise RuntimeError("lockd busy")

    async def main() -> bool:
        f = CallbackFirer(Backoff(first=0.0, total=100.0), clock=FakeClock())
        f.add_local(100021, 4, flaky)
        return await f.deliver(rec("c1"), Status("c1", 3, PRIV), "test")

    assert asyncio.run(main()) is True
    assert attempts == ["c1"] * 3


def test_failing_callback_gives_up_and_does_not_stop_others() -> None:
    got: list[tuple[str, int, bytes]] = []

    async def handler(status: Status, record: Record) -> None:
        if status.mon_name == "bad":
            raise ConnectionError("refused")
        got.append((status.mon_name, status.state, status.priv))

    async def main() -> CallbackFirer:
        f = CallbackFirer(Backoff(first=0.0, total=5.0), clock=FakeClock())
        f.add_local(100021, 4, handler)
        for name in ("a", "bad", "b"):
            f.fire(rec(name), Status(name, 7, PRIV), "test")
        await f.drain()
        return f

    f = asyncio.run(main())
    assert sorted(got) == [("a", 7, PRIV), ("b", 7, PRIV)]
    assert (f.fired, f.failed) == (2, 1)


def test_rpc_route_unregistered_program_is_retried_then_given_up() -> None:
    asked: list[tuple[str, int, int]] = []

    async def resolver(host: str, prog: int, vers: int) -> int:
        asked.append((host, prog, vers))
        return 0  # not registered with the portmapper

    async def main() -> bool:
        f = CallbackFirer(Backoff(first=0.0, total=3.0), resolver, clock=FakeClock())
        return await f.deliver(rec("c", prog=100099), Status("c", 1, PRIV), "test")

    assert asyncio.run(main()) is False
    assert asked[0] == ("127.0.0.1", 100099, 4) and len(asked) >= 2
