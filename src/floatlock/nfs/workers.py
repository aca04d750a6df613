"""The NFS worker threads: one job queue, results handed back to the event loop in batches.

Why not ``loop.run_in_executor``: for a call that costs tens of microseconds (GETATTR, ACCESS,
LOOKUP) the executor's own machinery is as expensive as the work.  Each call there creates a
``concurrent.futures.Future`` chained to an asyncio future (two futures, two callback hops)
and wakes the loop once per result through its self-pipe (a ``write(2)`` and a loop
iteration each).

Here a call is one asyncio future plus one tuple on a :class:`queue.SimpleQueue`.  A worker
that finishes appends the outcome to a deque and wakes the loop only if no wake-up is already
pending; the loop then settles every finished call in one callback.  Under load (many calls
in flight) one wake-up delivers many results.

Correctness of the single wake-up: the loop clears ``_wake_pending`` *before* it drains the
deque, and a worker appends *before* it tests the flag.  So a result appended after the drain
began either is drained by it, or finds the flag clear and schedules another drain; none is
left behind.  (Both steps are single bytecode-level operations under the GIL.)

Exceptions travel to the awaiting coroutine unchanged, :class:`~floatlock.nfs.fsuid.
IdentityError` included.  A future cancelled while its job runs is skipped on delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Workers"]

R = TypeVar("R")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Any, BaseException | None]


class Workers:
    """``count`` daemon threads running submitted functions; see the module docstring."""

    def __init__(self, count: int, name: str = "nfs") -> None:
        if count < 1:
            raise ValueError("at least one worker thread is needed")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: deque[_Outcome] = deque()
        self._wake_pending = False
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}_{i}", daemon=True)
            for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Run ``fn(*args)`` in a worker; the future (of the running loop) gets its outcome."""
        if self._closed:
            raise RuntimeError("worker pool is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def close(self) -> None:
        """Let the queued jobs finish, then stop the threads (waits for them)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    # -- worker side -----------------------------------------------------------------------

    def _run(self) -> None:
        get = self._jobs.get
        done = self._done
        while True:
            job = get()
            if job is None:
                return
            loop, fut, fn, args = job
            try:
                outcome: _Outcome = (loop, fut, fn(*args), None)
            except BaseException as e:  # delivered to the caller, not swallowed
                outcome = (loop, fut, None, e)
            del job, fn, args
            done.append(outcome)
            del outcome
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    self._wake_pending = False

    # -- loop side -------------------------------------------------------------------------

    def _deliver(self) -> None:
        self._wake_pending = False
        done = self._done
        try:
            this: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            this = None
        while done:
            loop, fut, result, exc = done.popleft()
            if loop is not this:
                # A future of another loop (only when loops are swapped, as in tests).
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, result, exc)
                continue
            _settle(fut, result, exc)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)
