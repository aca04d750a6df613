"""Firing the status callbacks registered with SM_MON (XNFS NSM: "the local status monitor
... calls the procedure my_proc of program my_prog, version my_vers, with struct status").

Two routes:

* **in-process**: a handler registered with :meth:`CallbackFirer.add_local` for
  ``(prog, vers)`` (floatlock's own lockd running beside statd) is called directly;
* **RPC**: otherwise the callback goes to the address the SM_MON came from (loopback for a
  local lockd), its port found through that host's portmapper (PMAP GETPORT, UDP), as
  nfs-utils does, so external lockds (the Linux kernel, NFS-Ganesha) work unchanged.

Each callback runs in its own task and is retried with :class:`~floatlock.nsm.retry.Backoff`
until it succeeds or the schedule's total time is spent; a failing callback is logged and never
stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from floatlock.nsm.effects import Record
from floatlock.nsm.notify import getport, rpc_call
from floatlock.nsm.proto import Status, encode_status
from floatlock.nsm.retry import Backoff

__all__ = ["CallbackFirer", "LocalCallback", "PortResolver"]

log = logging.getLogger("floatlock.nsm.callbacks")

LocalCallback = Callable[[Status, Record], Awaitable[None] | None]
# (host, prog, vers) -> port; replaceable for tests and for lockds not on rpcbind.
PortResolver = Callable[[str, int, int], Awaitable[int]]


async def _pmap_resolver(host: str, prog: int, vers: int) -> int:
    return await getport(host, prog, vers, timeout=3.0)


class CallbackFirer:
    def __init__(
        self,
        backoff: Backoff | None = None,
        resolver: PortResolver | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff if backoff is not None else Backoff(first=1.0, total=60.0)
        self.resolver: PortResolver = resolver if resolver is not None else _pmap_resolver
        self.timeout = timeout
        self.clock = clock
        self._local: dict[tuple[int, int], LocalCallback] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.fired = 0
        self.failed = 0

    def add_local(self, prog: int, vers: int, handler: LocalCallback) -> None:
        """Route callbacks for ``(prog, vers)`` to ``handler`` instead of an RPC."""
        self._local[(prog, vers)] = handler

    def fire(self, record: Record, status: Status, reason: str) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(self.deliver(record, status, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _once(self, record: Record, status: Status) -> None:
        cb = record.callback
        local = self._local.get((cb.prog, cb.vers))
        if local is not None:
            res = local(status, record)
            if res is not None:
                await res
            return
        port = await self.resolver(record.caller, cb.prog, cb.vers)
        if port == 0:
            raise ConnectionError(f"program {cb.prog} v{cb.vers} not registered")
        await rpc_call(
            record.caller,
            port,
            cb.prog,
            cb.vers,
            cb.proc,
            encode_status(status),
            timeout=self.timeout,
        )

    async def deliver(self, record: Record, status: Status, reason: str) -> bool:
        """Deliver one callback, retried; True when it was delivered."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._once(record, status)
            except Exception as e:
                nxt = self.backoff.next_time(attempt, started, self.clock())
                if nxt is None:
                    self.failed += 1
                    log.error(
                        "callback %s for %s (my_name %s, %s) failed %d times, giving up: %s",
                        record.callback, record.mon_name, record.my_name, reason, attempt, e,
                    )  # fmt: skip
                    return False
                log.warning(
                    "callback %s for %s (%s) failed (attempt %d): %s; retrying",
                    record.callback, record.mon_name, reason, attempt, e,
                )  # fmt: skip
                await asyncio.sleep(max(0.0, nxt - self.clock()))
                continue
            self.fired += 1
            log.info(
                "status callback %s: mon_name=%s state=%d my_name=%s (%s)",
                record.callback, status.mon_name, status.state, record.my_name, reason,
            )  # fmt: skip
            return True

    async def drain(self) -> None:
        """Wait for every callback in flight (tests, clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        for t in list(self._tasks):
            t.cancel()
