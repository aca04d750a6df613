"""CPU to reassemble one 1 MiB RPC record from TCP reads of several sizes (net/recordmark.py).

A 1 MiB NFS WRITE arrives in several reads; :class:`floatlock.net.recordmark.RecordReader`
joins them.  This feeds one record-marked 1 MiB record, cut into reads of 256, 64 and 16 KiB,
to a reader 50 times per figure and prints the CPU per record (``time.process_time``, best of
7).  ``--baseline FILE`` also measures the ``RecordReader`` of another copy of the module, e.g.
an earlier revision: ``git show REV:src/floatlock/net/recordmark.py > /tmp/rm_old.py``.

Usage: python -m bench.record_reassembly [--baseline FILE]
"""

from __future__ import annotations

import argparse
import struct
import time
from types import ModuleType

from bench import baseline
from floatlock.net import recordmark

RECORD = 1 << 20
READS = (256 << 10, 64 << 10, 16 << 10)


def us_per_record(module: ModuleType, read_size: int, rounds: int = 50) -> float:
    stream = struct.pack(">I", 0x80000000 | RECORD) + bytes(RECORD)
    pieces = [stream[i : i + read_size] for i in range(0, len(stream), read_size)]
    best = float("inf")
    for _ in range(7):
        reader = module.RecordReader(max_record=2 * RECORD)
        t0 = time.process_time()
        for _ in range(rounds):
            for piece in pieces:
                records = reader.feed(piece)
            assert len(records) == 1 and len(records[0]) == RECORD
        best = min(best, (time.process_time() - t0) / rounds)
    return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", metavar="FILE", help="another recordmark.py to measure too")
    args = ap.parse_args()
    modules = [("floatlock", recordmark)]
    if args.baseline:
        modules.insert(0, ("baseline", baseline.load(args.baseline)))
    for size in READS:
        for label, mod in modules:
            us = us_per_record(mod, size)
            print(f"1 MiB record in {size >> 10:3} KiB reads, {label:9}: {us:6.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
