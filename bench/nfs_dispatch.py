"""CPU per NFS metadata call in the daemon's dispatcher, without sockets.

Builds the real daemon (:func:`bench.inproc.inproc_daemon`) on a temporary export with 32 files
and hands the dispatcher the GETATTR, LOOKUP and CREATE (UNCHECKED, of a name that exists)
call messages ``bench.nfs_io`` sends, an ACCESS of every bit, and a 4 KiB UNSTABLE WRITE (a
worker's call), each with a fresh xid, as if they had come over TCP.
Prints, per procedure, the CPU per call (``time.process_time``) of the best of 10 chunks of
5,000 calls: what one call costs before any transport, the part of a 1-in-flight round trip
that is Python's.  A call that leaves the loop thread (a worker) is run as the transports run
it (``asyncio.ensure_future``) and awaited, and its CPU (both threads: process time) is
counted.

Usage: python -m bench.nfs_dispatch [--baseline DIR] [--export-options OPTS]
(``--baseline DIR``: the floatlock package of another revision, as in ``bench.nlm_dispatch``.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

FILES = 32
CHUNK = 5_000
CHUNKS = 10


async def us_per_call(options: str) -> dict[str, float]:
    from bench.inproc import export_files, inproc_daemon
    from bench.nfs_client import (
        NfsProc,
        StableHow,
        access_args,
        create_args,
        default_cred,
        fh_args,
        lookup_args,
        write_args,
    )
    from floatlock.address import ServerAddress
    from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3
    from floatlock.rpc.message import encode_call, parse_reply

    async with inproc_daemon("floatlock-nfsdispatch-", options) as (daemon, export):
        names = [f"f{n}" for n in range(FILES)]
        # 0o666: root is squashed by default, and WRITE as nobody must be allowed.
        root_fh, fhs = export_files(daemon, export, names, 0o666)
        cred = default_cred("bench", os.getuid(), os.getgid())

        def call(proc: int, args: bytes) -> bytes:
            return encode_call(0, NFS_PROGRAM, NFS_V3, proc, args, cred)

        cells = {
            "GETATTR": [call(NfsProc.GETATTR, fh_args(fh)) for fh in fhs],
            "LOOKUP": [call(NfsProc.LOOKUP, lookup_args(root_fh, n)) for n in names],
            # Every ACCESS3 bit: three access checks (read, write, execute) as the caller.
            "ACCESS": [call(NfsProc.ACCESS, access_args(fh, 0x3F)) for fh in fhs],
            "CREATE": [call(NfsProc.CREATE, create_args(root_fh, n)) for n in names],
            # A worker's call: the hop to the pool and back, and the reply cache.
            "WRITE 4KiB": [
                call(NfsProc.WRITE, write_args(fh, 0, b"w" * 4096, StableHow.UNSTABLE))
                for fh in fhs
            ],
        }
        dispatch = daemon.dispatcher.dispatch
        server, client = ServerAddress("127.0.0.1"), ("127.0.0.1", 700)
        out: dict[str, float] = {}
        xid = 1
        for name, msgs in cells.items():
            best = float("inf")
            for c in range(CHUNKS + 1):  # the first chunk warms the caches up, uncounted
                batch = [
                    (xid + i).to_bytes(4, "big") + msgs[i % len(msgs)][4:] for i in range(CHUNK)
                ]
                xid += CHUNK
                t0 = time.process_time()
                for msg in batch:
                    r = dispatch(msg, client, server, "tcp")
                    if not isinstance(r, bytes | tuple | None):
                        r = await asyncio.ensure_future(r)  # as the transports run it
                    if not c:  # the uncounted chunk: every call must succeed (NFS3_OK)
                        reply = b"".join(r) if isinstance(r, tuple) else r
                        assert reply is not None and parse_reply(reply).body[:4] == bytes(4), name
                if c:
                    best = min(best, (time.process_time() - t0) / CHUNK)
            out[name] = best * 1e6
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", metavar="DIR", help="measure DIR/src's floatlock instead")
    ap.add_argument(
        "--export-options",
        default="rw,insecure",
        metavar="OPTS",
        help="the export's exports(5) options (default rw,insecure: root squashed; "
        "bench.nfs_io's export is rw,no_root_squash,insecure)",
    )
    args = ap.parse_args()
    if args.baseline:
        from bench.inproc import run_baseline

        return run_baseline(__file__, args.baseline, ["--export-options", args.export_options])
    res = asyncio.run(us_per_call(args.export_options))
    print(
        f"NFS calls through the dispatcher (tcp, {args.export_options}): "
        + ", ".join(f"{k} {v:.2f} us" for k, v in res.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
