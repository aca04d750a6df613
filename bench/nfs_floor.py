"""The least a GETATTR and a LOOKUP cost floatlock, piece by piece.

At one call in flight a server's rate is one round trip after another, and a round trip is
the transport (``bench.nfs_io``'s NULL cells) plus the procedure.  NFS-Ganesha with its
default metadata cache answers GETATTR and LOOKUP without a system call (1.0-1.2 and
1.5-1.8 us over its NULL in ``bench.nfs_io``); floatlock asks the kernel every time,
because its exports are shared storage that others change (``docs/architecture.md``, "No
cache of names or attributes").  This prints what each step of a coherent answer costs
here, in the real daemon's process (:func:`bench.inproc.inproc_daemon`), each timed alone
in a loop (best of 5 runs of ``--calls`` iterations, wall time):

* GETATTR of a file: the RPC header with an AUTH_SYS credential (``parse_call``), the
  file's cache entry re-validated (``Resolver.cached``: an ``fstat`` and the checks, entry
  released), its attributes packed (``Fattr3.from_stat``, memoized), the reply
  (``success_header`` + ``getattr3resok``);
* LOOKUP of that file's name: the header, the directory's entry re-validated and its
  attributes, the name found as the caller (``os.stat(name, dir_fd=...)``: ``fstatat``), the
  file's cache entry (``acquire_inode``, released), its attributes, the LOOKUP reply;

then their sums beside the whole call through the dispatcher (the shortcuts of
``nfs/shortcuts.py``: the sum of the pieces plus the glue between them).  The export is
``rw,no_root_squash,insecure``, as ``bench.nfs_io``'s, so no identity is switched.

Usage: python -m bench.nfs_floor [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any


def _best(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call of ``fn``, the best of 5 runs of ``calls`` calls."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


async def pieces(calls: int) -> dict[str, float]:
    from bench.inproc import export_files, inproc_daemon
    from bench.nfs_client import NfsProc, default_cred, fh_args, lookup_args
    from floatlock.address import ServerAddress
    from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3
    from floatlock.nfs.proto_attr import Fattr3
    from floatlock.nfs.proto_res import getattr3resok, lookup3resok
    from floatlock.rpc.message import encode_call, parse_call, success_header

    async with inproc_daemon("floatlock-nfsfloor-", "rw,no_root_squash,insecure") as (
        daemon,
        export,
    ):
        resolver = daemon.components["nfs"].resolver
        cache = resolver.cache
        root = resolver.roots[0]
        root_fh, (fh,) = export_files(daemon, export, ["f0"])
        cred = default_cred("bench", 0, 0)
        getattr_msg = encode_call(7, NFS_PROGRAM, NFS_V3, NfsProc.GETATTR, fh_args(fh), cred)
        lookup_msg = encode_call(
            7, NFS_PROGRAM, NFS_V3, NfsProc.LOOKUP, lookup_args(root_fh, "f0"), cred
        )
        dispatch = daemon.dispatcher.dispatch
        server, client = ServerAddress("127.0.0.1"), ("127.0.0.1", 700)
        for msg in (lookup_msg, getattr_msg):  # the first LOOKUP caches both handles
            reply: Any = dispatch(msg, client, server, "tcp")
            if not isinstance(reply, bytes):
                await reply
            # Answered on the loop from then on, as the timed calls below must be (an
            # awaitable left unawaited would time nothing).
            assert isinstance(dispatch(msg, client, server, "tcp"), bytes)

        hit = resolver.cached(root_fh)
        assert hit is not None, "the export root is not cached"
        dir_entry, dir_st = hit
        st = os.stat(b"f0", dir_fd=dir_entry.fd, follow_symlinks=False)
        child = cache.acquire_inode(root, st.st_dev, st.st_ino)
        assert child is not None, "f0 is not cached"
        cache.release(child)
        fsid = root.export.export_id
        attr = Fattr3.from_stat(st, fsid)

        file_hit = resolver.cached(fh)
        assert file_hit is not None, "f0 is not cached"
        cache.release(file_hit[0])
        file_st = file_hit[1]

        def validated(handle: bytes) -> Callable[[], None]:
            def one() -> None:
                got = resolver.cached(handle)
                assert got is not None
                cache.release(got[0])

            return one

        def child_entry() -> None:
            entry = cache.acquire_inode(root, st.st_dev, st.st_ino)
            assert entry is not None
            cache.release(entry)

        out = {
            "parse_call (AUTH_SYS)": _best(lambda: parse_call(lookup_msg), calls),
            # GETATTR's: the file's handle; LOOKUP's: the directory's (the export root here).
            "Resolver.cached + release": _best(validated(fh), calls),
            "Fattr3.from_stat": _best(lambda: Fattr3.from_stat(file_st, fsid), calls),
            "Resolver.cached (directory)": _best(validated(root_fh), calls),
            "Fattr3.from_stat (directory)": _best(lambda: Fattr3.from_stat(dir_st, fsid), calls),
            "GETATTR reply": _best(lambda: success_header(7) + getattr3resok(attr), calls),
            "fstatat(name)": _best(
                lambda: os.stat(b"f0", dir_fd=dir_entry.fd, follow_symlinks=False), calls
            ),
            "acquire_inode + release": _best(child_entry, calls),
            "LOOKUP reply": _best(
                lambda: success_header(7) + lookup3resok(child.fh, attr, attr), calls
            ),
            "GETATTR through the dispatcher": _best(
                lambda: dispatch(getattr_msg, client, server, "tcp"), calls
            ),
            "LOOKUP through the dispatcher": _best(
                lambda: dispatch(lookup_msg, client, server, "tcp"), calls
            ),
        }
        cache.release(dir_entry)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000, help="iterations per timed run")
    args = ap.parse_args()
    p = asyncio.run(pieces(args.calls))
    for name, us in p.items():
        print(f"{name:32s} {us:6.2f} us")
    parse = p["parse_call (AUTH_SYS)"]
    getattr_sum = parse + p["Resolver.cached + release"] + p["Fattr3.from_stat"]
    getattr_sum += p["GETATTR reply"]
    lookup_sum = (
        parse
        + p["Resolver.cached (directory)"]
        + p["Fattr3.from_stat (directory)"]
        + p["Fattr3.from_stat"]
        + p["fstatat(name)"]
        + p["acquire_inode + release"]
        + p["LOOKUP reply"]
    )
    print(f"{'sum of the GETATTR pieces':32s} {getattr_sum:6.2f} us")
    print(f"{'sum of the LOOKUP pieces':32s} {lookup_sum:6.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
