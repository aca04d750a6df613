"""statd's writer: the file effects made durable off the event loop, with group commit.

Theory of operation
-------------------
statd acknowledges an SM_MON only once its record is on disk, and sends an SM_NOTIFY only once
the state number it carries is.  Each durable file costs an fsync of the file and one of its
directory; done on the event loop (as statd once did) they froze the whole daemon, NFS and NLM
included, for every SM_MON, and capped statd at about one SM_MON per two fsyncs.

:class:`StoreWriter` hands the file effects (:class:`WriteRecords`, :class:`WriteState`,
:class:`MoveToBackup`, :class:`DeleteBackup`) to one dedicated thread.  The event loop only
enqueues a *job* (the file effects of one request) and gets an :class:`asyncio.Future`; it
never calls fsync.  The thread takes every job queued when it gets to them as one *batch*:

1. the batch's effects are applied in submission order, except that writes of the same file
   collapse to the last one (an SM_MON and the SM_UNMON after it write ``sm/<mon_name>``
   once, with the final content).  A :class:`MoveToBackup`, which reads ``sm/``, first
   writes what is pending, so the order between the effects of one identity holds;
2. each file is written to a temporary name, fsynced and renamed over the old one
   (:func:`floatlock.nsm.store.atomic_write`), but its directory is not fsynced yet.  With
   ``parallel`` > 1 the distinct files pending at that point are written by that many helper
   threads at once, so that concurrent fsyncs may share journal commits; measured on a
   2-CPU VM over ext4 it gained nothing (the GIL and the CPUs), hence off by default;
3. then ONE fsync per directory the batch touched makes every rename and removal durable;
4. then every job of the batch is completed, with one ``loop.call_soon_threadsafe``.

While a batch is being made durable, new requests queue up and form the next batch, so the
fsync cost is shared by as many requests as arrive meanwhile (group commit).  Jobs run in
submission order (a single thread, FIFO), which is stronger than "in order per identity".

A job fails with the exception of the first of its files that could not be written or
whose directory could not be synced (an OSError, as the synchronous store raised); a failed
write of a collapsed file fails every job that wrote it.

The thread is started by the first job and stopped by :meth:`StoreWriter.close`; a later job
starts a new one.  It is a daemon thread: at interpreter exit, jobs not yet completed were
never acknowledged, and a temporary file left behind is removed when the directory is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from floatlock.address import ServerAddress
from floatlock.nsm.effects import DeleteBackup, Effect, MoveToBackup, WriteRecords, WriteState
from floatlock.nsm.store import StateDir, fsync_dir

__all__ = ["FILE_EFFECTS", "FileEffect", "StoreWriter", "file_effects"]

log = logging.getLogger("floatlock.nsm.writer")

FileEffect = WriteRecords | WriteState | MoveToBackup | DeleteBackup
FILE_EFFECTS: Final = (WriteRecords, WriteState, MoveToBackup, DeleteBackup)


def file_effects(effects: Sequence[Effect]) -> list[FileEffect]:
    return [e for e in effects if isinstance(e, FILE_EFFECTS)]


class _Job:
    __slots__ = ("effects", "future")

    def __init__(self, effects: list[FileEffect], future: asyncio.Future[None]) -> None:
        self.effects = effects
        self.future = future


class _Stop:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


_Op = Callable[[set[Path]], None]


class StoreWriter:
    """The single writer of one :class:`StateDir`; see the module docstring.

    ``sync_dir`` is the directory fsync (tests slow it down to hold a batch in flight).
    """

    def __init__(
        self,
        state_dir: StateDir,
        *,
        sync_dir: Callable[[Path], None] = fsync_dir,
        max_batch: int = 4096,
        parallel: int = 1,
    ) -> None:
        self.state_dir = state_dir
        self.sync_dir = sync_dir
        self.max_batch = max_batch
        self.parallel = parallel  # files of a batch written (and fsynced) at once
        self._files_pool: ThreadPoolExecutor | None = None
        self._queue: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Latest unfinished job writing sm/<mon_name> of an identity (event loop side only):
        # an SM_MON that finds its record already in memory waits for it to be durable.
        self._records: dict[tuple[ServerAddress, str], asyncio.Future[None]] = {}
        self._last: asyncio.Future[None] | None = None
        # Statistics (written by the thread, read anywhere).
        self.jobs = 0
        self.batches = 0
        self.files = 0
        self.dir_syncs = 0
        self.submitted = 0  # jobs handed over (event loop side)

    # -- event loop side ------------------------------------------------------------------

    def submit(self, effects: Sequence[Effect]) -> asyncio.Future[None]:
        """Queue the file effects among ``effects``; the future is done when they are
        durable, or fails with the OSError that prevented it.  Callers that may be
        cancelled should await it through :func:`asyncio.shield`: others may share it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        files = file_effects(effects)
        if not files:
            fut.set_result(None)
            return fut
        self._ensure_thread(loop)
        for e in files:
            if isinstance(e, WriteRecords):
                self._records[(e.identity, e.mon_name)] = fut
        self._last = fut
        self.submitted += 1
        self._queue.put(_Job(files, fut))
        return fut

    def pending_records(
        self, identity: ServerAddress, mon_name: str
    ) -> asyncio.Future[None] | None:
        """The unfinished job that last wrote ``sm/<mon_name>`` of ``identity``, if any."""
        fut = self._records.get((identity, mon_name))
        return None if fut is None or fut.done() else fut

    def last(self) -> asyncio.Future[None] | None:
        """The unfinished job submitted last, if any: when it is done, all jobs before it are
        (they run in order)."""
        return None if self._last is None or self._last.done() else self._last

    def busy(self) -> bool:
        return self.last() is not None

    async def close(self) -> None:
        """Finish every queued job, then stop the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._thread = None
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put(_Stop(fut))
        self._thread = None
        await fut

    def _ensure_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None and self._thread.is_alive() and self._loop is loop:
            return
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="statd-writer", daemon=True
        )
        self._thread.start()

    def _complete(self, results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
        for fut, exc in results:
            if fut.done():
                continue  # cancelled by its waiter
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        for key in [k for k, f in self._records.items() if f.done()]:
            del self._records[key]

    # -- the writer thread ----------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            first = self._queue.get()
            batch: list[_Job] = []
            stop: _Stop | None = None
            item: _Job | _Stop = first
            while True:
                if isinstance(item, _Stop):
                    stop = item
                    break
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                errors = self.write_batch([job.effects for job in batch])
                results = [(job.future, err) for job, err in zip(batch, errors, strict=True)]
                self._call(loop, self._complete, results)
            if stop is not None:
                if self._files_pool is not None:
                    self._files_pool.shutdown()
                    self._files_pool = None
                self._call(loop, _finish, stop.future)
                return

    def _pool(self) -> ThreadPoolExecutor:
        if self._files_pool is None:
            self._files_pool = ThreadPoolExecutor(self.parallel, "statd-writer-file")
        return self._files_pool

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(fn, *args)

    def write_batch(self, jobs: Sequence[Sequence[FileEffect]]) -> list[Exception | None]:
        """Make the effects of ``jobs`` durable (steps 1-3 of the module docstring); the
        error of each job, None for those that succeeded.  Runs in the writer thread (and
        directly in unit tests)."""
        errors: list[Exception | None] = [None] * len(jobs)
        pending: dict[Path, tuple[_Op, list[int]]] = {}  # file -> (last write, its jobs)
        dirs: dict[Path, set[int]] = {}  # directory to fsync -> the jobs that need it

        def fail(idx: Sequence[int] | set[int], e: Exception) -> None:
            for i in idx:
                if errors[i] is None:
                    errors[i] = e

        def run(op: _Op, idx: Sequence[int]) -> None:
            done(idx, *_attempt(op))

        def done(idx: Sequence[int], touched: set[Path], e: Exception | None) -> None:
            if e is not None:
                log.error("statd: cannot write: %s", e)
                fail(idx, e)
            self.files += 1
            for d in touched:
                dirs.setdefault(d, set()).update(idx)

        def flush() -> None:
            # Distinct files, no order among them: written (tmp, fsync, rename) in parallel,
            # so that the file system can share its journal commits among their fsyncs.
            ops = list(pending.values())
            pending.clear()
            if len(ops) == 1 or self.parallel <= 1:
                for op, idx in ops:
                    run(op, idx)
                return
            for (_, idx), (touched, e) in zip(
                ops, self._pool().map(_attempt, [op for op, _ in ops]), strict=True
            ):
                done(idx, touched, e)

        def later(path: Path, op: _Op, i: int) -> None:
            prev = pending.pop(path, None)  # re-inserted last: the last write wins
            pending[path] = (op, [*prev[1], i] if prev else [i])

        for i, effects in enumerate(jobs):
            for e in effects:
                try:
                    store = self.state_dir.identity(e.identity)
                    if isinstance(e, WriteRecords):
                        op = _write_records(store.write_records, e)
                        later(store.records_path(e.mon_name), op, i)
                    elif isinstance(e, WriteState):
                        later(store.state_file, _write_state(store.write_state, e.state), i)
                    elif isinstance(e, DeleteBackup):
                        op = _delete_backup(store.delete_backup, e.mon_name)
                        later(store.backup_path(e.mon_name), op, i)
                    else:  # MoveToBackup reads sm/: what is pending goes first
                        flush()
                        run(store.move_to_backup, [i])
                except Exception as exc:  # a name that cannot be encoded...
                    fail([i], exc)
        flush()
        for d, idx in dirs.items():
            try:
                self.sync_dir(d)
            except Exception as e:
                log.error("statd: cannot sync %s: %s", d, e)
                fail(idx, e)
            self.dir_syncs += 1
        self.batches += 1
        self.jobs += len(jobs)
        return errors


# Bound methods with their arguments, as one-argument operations taking the ``dirs`` set
# (closures in a loop would capture the loop variable).


def _write_records(fn: Callable[..., None], e: WriteRecords) -> _Op:
    return lambda dirs: fn(e.mon_name, e.records, dirs)


def _write_state(fn: Callable[..., None], state: int) -> _Op:
    return lambda dirs: fn(state, dirs)


def _delete_backup(fn: Callable[..., None], mon_name: str) -> _Op:
    return lambda dirs: fn(mon_name, dirs)


def _attempt(op: _Op) -> tuple[set[Path], Exception | None]:
    touched: set[Path] = set()
    try:
        op(touched)
    except Exception as e:  # reported to the waiting requests
        return touched, e
    return touched, None


def _finish(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
