"""Memory per held lock and lock+unlock throughput of the sans-IO lock core.

Holds 100,000 locks taken by 1,000 owners (10 per host, 100 hosts) on 100 files -- every
owner one exclusive range on every file, the layout that costs the most bookkeeping per lock --
and reports tracemalloc's bytes per held lock (budget: 1 KiB).  Then times 100,000 lock+unlock
pairs through :class:`LockManager` on a table that already holds those locks.

Run:  PYTHONPATH=src python bench/lock_memory.py [--locks N]   (not part of the test suite)
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from dataclasses import dataclass

from floatlock.nlm.locks import LockManager
from floatlock.nlm.results import LockGranted

FILES = 100
OWNERS = 1_000
OWNERS_PER_HOST = 10


@dataclass(frozen=True, slots=True)
class Owner:
    """Shaped like lockd's owner: host key, svid, oh bytes."""

    host: str
    svid: int
    oh: bytes


def build(total: int, files: list[str], owners: list[Owner]) -> LockManager:
    m = LockManager(max_locks_per_host=total)
    per_file = total // len(files)
    for i in range(per_file * len(files)):
        owner = owners[i % len(owners)]
        file = files[(i // len(owners)) % len(files)]
        slot = i % len(owners) + len(owners) * (i // (len(owners) * len(files)))
        r = m.lock(file, owner, owner.host, slot * 16, 8, True, block=False, now=0.0)
        assert isinstance(r, LockGranted), r
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--locks", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=100_000)
    args = ap.parse_args()

    # Keys exist before measuring: lockd owns them (file identities, host and owner objects).
    files = [f"file-{n}" for n in range(FILES)]
    owners = [
        Owner(f"10.0.{n // OWNERS_PER_HOST // 256}.{n // OWNERS_PER_HOST % 256}", n, n.to_bytes(8))
        for n in range(OWNERS)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    m = build(args.locks, files, owners)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = len(m.held())
    per_lock = (after - before) / held
    verdict = "OK" if per_lock <= 1024 else "OVER BUDGET"
    print(f"held locks: {held} ({len(owners)} owners, {len(files)} files)")
    print(f"memory: {after - before} bytes, {per_lock:.0f} bytes/lock ({verdict}, budget 1024)")

    # Throughput: lock+unlock pairs on ranges disjoint from the held ones, same owners/files.
    pairs = args.pairs
    start = time.perf_counter()
    for i in range(pairs):
        owner = owners[i % len(owners)]
        file = files[i % len(files)]
        off = (1 << 40) + (i % 4096) * 16
        r = m.lock(file, owner, owner.host, off, 8, True, block=False, now=0.0)
        assert isinstance(r, LockGranted)
        m.unlock(file, owner, off, 8)
    elapsed = time.perf_counter() - start
    print(f"lock+unlock: {pairs} pairs in {elapsed:.2f} s, {2 * pairs / elapsed:,.0f} ops/s")


if __name__ == "__main__":
    main()
