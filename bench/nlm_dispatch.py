"""CPU per NLM call in the daemon's dispatcher, without sockets: LOCK/UNLOCK records fed directly.

Builds the real daemon (``floatlock.server.build_daemon``: NFS resolver, statd, lockd with the
kernel OFD mirror) on a temporary export, makes 32 files, and hands the dispatcher the same
LOCK and UNLOCK call messages ``bench.nlm_lock`` sends (each slot its own owner and file, NLM
v4, AUTH_SYS), with a fresh xid each, as if they had come over ``--transport`` (``tcp``: no
duplicate request cache for LOCK/UNLOCK, see ``Procedure.cache_on_streams``; ``udp``: with
it).  Prints the CPU per call (``time.process_time``) of the best of 10 chunks of 20,000 calls:
what the lock path costs before any transport, the figure the TCP 32-in-flight rate is bound by.

Usage: python -m bench.nlm_dispatch [--transport tcp|udp] [--baseline DIR]
(``--baseline DIR``: measure the floatlock package of another revision instead, with this
harness, e.g. ``mkdir /tmp/base && git archive REV src | tar -x -C /tmp/base`` and
``--baseline /tmp/base``: :func:`bench.inproc.run_baseline`.)
"""

from __future__ import annotations

import argparse
import asyncio
import time

SLOTS = 32
CHUNK = 20_000
CHUNKS = 10


async def us_per_call(transport: str) -> float:
    from bench.inproc import export_files, inproc_daemon
    from bench.nlm_calls import lock_unlock_sequences
    from floatlock.address import ServerAddress

    async with inproc_daemon("floatlock-dispatch-") as (daemon, export):
        _, handles = export_files(daemon, export, [f"f{n}" for n in range(SLOTS)])
        seqs = lock_unlock_sequences(handles, 4, hostname="bench")
        dispatch = daemon.dispatcher.dispatch
        server, client = ServerAddress("127.0.0.1"), ("127.0.0.1", 700)
        for xid, (lock, unlock) in enumerate(seqs):  # the first LOCK waits for statd
            for msg in (lock, unlock):
                r = dispatch(xid.to_bytes(4, "big") + msg[4:], client, server, transport)
                if not isinstance(r, bytes | tuple | None):
                    await r
        msgs = [m for pair in seqs for m in pair]
        calls = [
            (x.to_bytes(4, "big") + msgs[x % len(msgs)][4:])
            for x in range(1000, 1000 + CHUNK * CHUNKS)
        ]
        best = float("inf")
        for c in range(CHUNKS):
            chunk = calls[c * CHUNK : (c + 1) * CHUNK]
            t0 = time.process_time()
            for msg in chunk:
                dispatch(msg, client, server, transport)
            best = min(best, (time.process_time() - t0) / CHUNK)
        return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    ap.add_argument("--baseline", metavar="DIR", help="measure DIR/src's floatlock instead")
    args = ap.parse_args()
    if args.baseline:
        from bench.inproc import run_baseline

        return run_baseline(__file__, args.baseline, ["--transport", args.transport])
    us = asyncio.run(us_per_call(args.transport))
    print(f"NLM LOCK/UNLOCK through the dispatcher ({args.transport}): {us:.2f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
