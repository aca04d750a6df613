"""NFSv3 rates of NFS-Ganesha: GETATTR, LOOKUP, CREATE and sequential 1 MiB READ and WRITE.

Theory of operation: Ganesha runs in its namespace (:func:`bench.ganesha.ganesha`); this
thread enters it.  Metadata calls and 1 MiB READs are pre-encoded NFSv3 calls replayed by
rpcload (sequence mode; each slot its own file), beside the C echo in the same namespace.
rpcload keeps only the head of each TCP reply, so 1 MiB READ replies cost it nothing; READs
run over TCP only (a 1 MiB reply does not fit a UDP datagram).

1 MiB WRITEs go through the blocking Python client (``bench.nfs_client``), one call at a
time, UNSTABLE, over TCP; that figure includes the Python client's own cost (two copies of
each MiB).  (rpcload carries calls of up to 2 MiB over TCP: :mod:`bench.nfs_io` drives 1 MiB
WRITEs with it too.)

CREATE is UNCHECKED on a name that already exists (fixed bytes cannot make new names), so it
measures Ganesha's create-or-open path.  Reads hit the page cache (the file was just
written).

Run: ``python -m bench.nfs_io_ganesha [--seconds 3] [--repeat 1]`` as root.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.ganesha import available, ganesha, median_run
from bench.loadgen import LoadResult, Proto, echo_server, format_table, run_load
from bench.nfs_client import (
    NfsProc,
    StableHow,
    create_args,
    fh_args,
    lookup_args,
    nfs_call,
    read_args,
)

MiB = 1 << 20


def main(argv: Sequence[str] | None = None) -> int:
    """NFSv3 metadata and 1 MiB I/O rates against NFS-Ganesha, beside the C echo."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--file-mib", type=int, default=64, help="size of the READ/WRITE file")
    args = parser.parse_args(argv)
    reason = available()
    if reason is not None:
        print(f"cannot run NFS-Ganesha: {reason}")
        return 2

    slots = 32
    results: dict[str, list[LoadResult]] = {}
    order: list[str] = []
    notes: list[str] = []
    with ExitStack() as stack:
        export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flgan-io-")))
        server = stack.enter_context(ganesha(export))
        stack.enter_context(server.entered())
        nfs = stack.enter_context(server.nfs_client("tcp"))
        root = nfs.mount(server.export_path())
        names = [f"meta{i:03d}" for i in range(slots)]
        fhs = [nfs.create(root, name) for name in names]
        big = nfs.create(root, "big")

        block = b"\xa5" * MiB
        times = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            for i in range(args.file_mib):
                nfs.write(big, i * MiB, block, StableHow.UNSTABLE)
            times.append(time.perf_counter() - t0)
        times.sort()
        wsec = times[len(times) // 2]
        notes.append(
            f"WRITE 1 MiB UNSTABLE, tcp, 1 in flight, Python client: {args.file_mib / wsec:,.0f}"
            f" MiB/s ({args.file_mib} MiB in {wsec:.2f} s, median of {len(times)})"
        )
        assert nfs.getattr(big) == args.file_mib * MiB

        cases: list[tuple[str, list[list[bytes]], tuple[Proto, ...], tuple[int, ...]]] = [
            (
                "GETATTR",
                [[nfs_call(NfsProc.GETATTR, fh_args(fh))] for fh in fhs],
                ("udp", "tcp"),
                (1, 32),
            ),
            (
                "LOOKUP",
                [[nfs_call(NfsProc.LOOKUP, lookup_args(root, n))] for n in names],
                ("udp", "tcp"),
                (1, 32),
            ),
            (
                "CREATE",
                [[nfs_call(NfsProc.CREATE, create_args(root, n))] for n in names],
                ("tcp",),
                (1, 32),
            ),
            (
                "READ 1MiB",
                [
                    [
                        nfs_call(NfsProc.READ, read_args(big, i * MiB, MiB))
                        for i in range(args.file_mib)
                    ]
                ]
                * 4,
                ("tcp",),
                (1, 4),
            ),
        ]
        echo = stack.enter_context(echo_server("127.0.0.1"))
        for _ in range(max(1, args.repeat)):
            for what, seqs, protos, inflights in cases:
                for proto in protos:
                    for n in inflights:
                        label = f"ganesha {what} {proto} n={n}"
                        res = run_load(
                            server.host,
                            server.ports.nfs,
                            proto,
                            n,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            sequences=seqs[:n] if len(seqs) >= n else seqs,
                        )
                        results.setdefault(label, []).append(res)
                        if label not in order:
                            order.append(label)
            echo_protos: tuple[Proto, ...] = ("udp", "tcp")
            for proto in echo_protos:
                for n in (1, 32):
                    label = f"echo {proto} n={n}"
                    port = echo.udp_port if proto == "udp" else echo.tcp_port
                    res = run_load(
                        "127.0.0.1", port, proto, n, seconds=args.seconds, warmup=args.warmup
                    )
                    results.setdefault(label, []).append(res)
                    if label not in order:
                        order.append(label)
    print(format_table((label, median_run(results[label])) for label in order))
    for label in order:
        if "READ" in label:
            notes.append(f"{label}: {median_run(results[label]).calls_per_s:,.0f} MiB/s")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
