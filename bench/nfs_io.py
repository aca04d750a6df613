"""NFSv3 rates of floatlock beside NFS-Ganesha on the same directory, with the ratios.

Theory of operation
-------------------
One temporary directory is exported by each server in turn (Ganesha first, then floatlock,
never both at once: the machine's cores are shared).  Each server gets the same work from the
same clients:

* **sequential 1 MiB WRITE** (UNSTABLE, then one COMMIT) and **sequential 1 MiB READ** of a
  ``--file-mib`` file, one call at a time over TCP, from the blocking Python client
  (``bench.nfs_client``; rpcload cannot send a 1 MiB call, its limit is 65,000 bytes).  The
  same client runs against both servers, so its own cost (copies of each MiB) is in both
  figures; MiB/s, median of ``--repeat`` passes.  READ is also driven by rpcload (its calls
  are small and it keeps only the head of each reply), 1 and 4 in flight;
* **GETATTR, LOOKUP, CREATE** per second: pre-encoded calls replayed by rpcload in sequence
  mode (one file per slot), 1 and 32 in flight, over TCP and (GETATTR, LOOKUP) UDP.  CREATE is
  UNCHECKED on a name that exists, so it measures the create-or-open path.

**Pinning.**  Every 1-in-flight cell (the Python client's READ and WRITE, rpcload at n=1) runs
with the load generator *and every thread of the server* pinned to one CPU (``--pin``, default
0), for both servers alike: Ganesha's process by its pid, floatlock's by its own.  With one
call at a time the rate is one round trip after another, and a round trip between two CPUs
costs ~50 us more on this VM than on one; unpinned, the scheduler's random placement decided
the figure (floatlock's GETATTR at 1 in flight measured 10k calls/s in one run, 26k in
another).  Threads a server starts while pinned inherit the CPU.  The cells with several
calls in flight run unpinned, on all CPUs (the same as :mod:`bench.rpc_null`).

Ganesha runs in its own network namespace (:func:`bench.ganesha.ganesha`) and this thread
enters it; floatlock runs on the host's loopback as ``python -m floatlock serve --config CFG``
with ``[portmap] mode = "off"``, fixed ports from :func:`bench.loadgen.free_port`, ``listen =
["127.0.0.1"]`` and the export ``127.0.0.1(rw,no_root_squash,insecure)`` (Ganesha's export is
not root-squashed either; rpcload's source ports are not privileged).

Run: ``python -m bench.nfs_io [--seconds 3] [--repeat 3] [--file-mib 64] [--pin 0]`` as root;
``--workers N`` and ``--inline true|false`` set floatlock's ``[nfs]`` table,
``--floatlock-only`` skips Ganesha (for sweeps of those settings).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.ganesha import available, ganesha
from bench.loadgen import Proto, free_port, run_load
from bench.nfs_client import (
    NFS_PROG,
    NfsClient,
    NfsProc,
    RpcConn,
    StableHow,
    create_args,
    fh_args,
    lookup_args,
    nfs_call,
    read_args,
)

MiB = 1 << 20
SLOTS = 32
NFSPROC3_COMMIT = 21
SRC = str(Path(__file__).resolve().parents[1] / "src")


@dataclass(frozen=True, slots=True)
class Target:
    """A running server: where to reach it and how to get there."""

    name: str
    host: str
    nfs_port: int
    mount_port: int
    export: str
    enter: Callable[[], AbstractContextManager[object]]
    pid: int  # the server process: its threads are pinned for the 1-in-flight cells


def _tids(pid: int) -> list[int]:
    """The threads of ``pid`` and of its descendants (a server may fork helpers)."""
    out: list[int] = []
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            out.append(int(tid))
            try:
                children = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                children = []
            pids.extend(int(c) for c in children)
    return out


@contextmanager
def pinned(pid: int, cpu: int | None) -> Iterator[int | None]:
    """Pin every thread of server ``pid`` and the calling thread to ``cpu`` (None: leave
    everything where it is); on exit, all CPUs again.  Yields ``cpu`` (for rpcload's -C)."""
    if cpu is None:
        yield None
        return
    every = os.sched_getaffinity(0)
    tids = _tids(pid)
    for tid in [0, *tids]:  # 0: the calling thread (the Python client)
        with suppress(ProcessLookupError):  # a thread that just exited
            os.sched_setaffinity(tid, {cpu})
    try:
        yield cpu
    finally:
        for tid in [0, *_tids(pid)]:
            with suppress(ProcessLookupError):
                os.sched_setaffinity(tid, every)


@contextmanager
def floatlock_serve(
    export: Path, workdir: Path, timeout: float = 30.0, nfs_section: str = ""
) -> Iterator[Target]:
    """``python -m floatlock serve --config CFG`` on 127.0.0.1, ports from free_port;
    ``nfs_section``: the body of an ``[nfs]`` table (workers, inline_metadata) if any."""
    ports = {k: free_port("tcp") for k in ("nfs", "mount", "nlm", "statd")}
    cfg = workdir / "floatlock.toml"
    cfg.write_text(
        "[server]\n"
        'listen = ["127.0.0.1"]\n'
        f'state_dir = "{workdir / "state"}"\n'
        'log_level = "warning"\n'
        "[ports]\n" + "".join(f"{k} = {v}\n" for k, v in ports.items()) + "[portmap]\n"
        'mode = "off"\n' + (f"[nfs]\n{nfs_section}" if nfs_section else "") + "[[export]]\n"
        f'path = "{export}"\n'
        'clients = "127.0.0.1(rw,no_root_squash,insecure)"\n'
    )
    log = (workdir / "floatlock.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:  # ready when NFS answers NULL over TCP
            if proc.poll() is not None:
                raise RuntimeError(f"floatlock serve exited {proc.returncode}: see {log.name}")
            try:
                with RpcConn("127.0.0.1", ports["nfs"], "tcp", timeout=1.0) as conn:
                    conn.call(NFS_PROG, 3, 0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("floatlock serve did not answer in time") from None
                time.sleep(0.1)
        nfs, mnt = ports["nfs"], ports["mount"]
        yield Target("floatlock", "127.0.0.1", nfs, mnt, str(export), nullcontext, proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _mib_per_s(mib: int, seconds: list[float]) -> float:
    return mib / statistics.median(seconds)


def measure(t: Target, args: argparse.Namespace) -> dict[str, float]:
    """Every figure for one server: MiB/s for the I/O rows, calls/s for the others."""
    out: dict[str, float] = {}
    pin = None if args.pin < 0 else args.pin
    with t.enter():
        nfs = NfsClient(t.host, proto="tcp", nfs_port=t.nfs_port, mount_port=t.mount_port)
        with nfs:
            root = nfs.mount(t.export)
            names = [f"meta{i:03d}" for i in range(SLOTS)]
            fhs = [nfs.create(root, n) for n in names]
            big = nfs.create(root, "big")
            block = b"\xa5" * MiB
            wtimes, rtimes = [], []
            with pinned(t.pid, pin):
                _py_io(t, nfs, big, block, args, wtimes, rtimes)
            if nfs.getattr(big) != args.file_mib * MiB:
                raise RuntimeError(f"{t.name}: file has the wrong size")
            out["WRITE 1MiB tcp n=1 py (MiB/s)"] = _mib_per_s(args.file_mib, wtimes)
            out["READ 1MiB tcp n=1 py (MiB/s)"] = _mib_per_s(args.file_mib, rtimes)

        reads = [
            [nfs_call(NfsProc.READ, read_args(big, i * MiB, MiB)) for i in range(args.file_mib)]
        ] * 4
        getattr_ = [[nfs_call(NfsProc.GETATTR, fh_args(fh))] for fh in fhs]
        lookup = [[nfs_call(NfsProc.LOOKUP, lookup_args(root, n))] for n in names]
        create = [[nfs_call(NfsProc.CREATE, create_args(root, n))] for n in names]
        cases: list[tuple[str, list[list[bytes]], tuple[Proto, ...], tuple[int, ...]]] = [
            ("GETATTR", getattr_, ("tcp", "udp"), (1, 32)),
            ("LOOKUP", lookup, ("tcp", "udp"), (1, 32)),
            ("CREATE", create, ("tcp",), (1, 32)),
            ("READ 1MiB", reads, ("tcp",), (1, 4)),
        ]
        for what, seqs, protos, inflights in cases:
            for proto in protos:
                for n in inflights:
                    with pinned(t.pid, pin if n == 1 else None) as cpu:
                        res = run_load(
                            t.host,
                            t.nfs_port,
                            proto,
                            n,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            sequences=seqs[:n],
                            cpu=cpu,
                        )
                    if res.errors:
                        raise RuntimeError(f"{t.name} {what}: {res.errors} errors")
                    unit = "MiB/s" if "READ" in what else "calls/s"
                    out[f"{what} {proto} n={n} rpcload ({unit})"] = res.calls_per_s
    return out


def _py_io(
    t: Target,
    nfs: NfsClient,
    big: bytes,
    block: bytes,
    args: argparse.Namespace,
    wtimes: list[float],
    rtimes: list[float],
) -> None:
    """``--repeat`` passes of sequential 1 MiB WRITEs (then COMMIT) and READs of ``big``."""
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        for i in range(args.file_mib):
            nfs.write(big, i * MiB, block, StableHow.UNSTABLE)
        nfs.nfs.call(NFS_PROG, 3, NFSPROC3_COMMIT, read_args(big, 0, 0))
        wtimes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(args.file_mib):
            r = nfs.read(big, i * MiB, MiB)
            if len(r.data) != MiB:
                raise RuntimeError(f"{t.name}: short READ at {i} MiB")
        rtimes.append(time.perf_counter() - t0)


def table(rows: list[tuple[str, float, float]]) -> str:
    head = ("", "floatlock", "ganesha", "floatlock/ganesha")
    cells = [head] + [(k, f"{f:,.0f}", f"{g:,.0f}", f"{f / g:.2f}") for k, f, g in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    lines = []
    for r in cells:
        lines.append(
            "  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 4)])
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """floatlock vs NFS-Ganesha: 1 MiB READ/WRITE and GETATTR/LOOKUP/CREATE rates."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="passes of the Python I/O")
    parser.add_argument("--file-mib", type=int, default=64, help="size of the READ/WRITE file")
    parser.add_argument(
        "--pin", type=int, default=0, help="CPU for the 1-in-flight cells (-1: no pinning)"
    )
    parser.add_argument("--workers", type=int, help="floatlock's [nfs] workers")
    parser.add_argument(
        "--inline",
        choices=("true", "false"),
        help="floatlock's [nfs] inline_metadata",
    )
    parser.add_argument(
        "--floatlock-only",
        action="store_true",
        help="skip Ganesha (print floatlock's figures only)",
    )
    args = parser.parse_args(argv)
    section = ""
    if args.workers is not None:
        section += f"workers = {args.workers}\n"
    if args.inline is not None:
        section += f"inline_metadata = {args.inline}\n"
    if args.floatlock_only:
        with ExitStack() as stack:
            export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-")))
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-work-")))
            os.chmod(export, 0o755)
            with floatlock_serve(export, work, nfs_section=section) as target:
                f = measure(target, args)
        for k, v in f.items():
            print(f"{k:40s} {v:10,.0f}")
        return 0
    reason = available()
    if reason is not None:
        print(f"cannot run NFS-Ganesha: {reason}")
        return 2
    with ExitStack() as stack:
        export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-")))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-work-")))
        os.chmod(export, 0o755)
        with ganesha(export) as server:
            g = measure(
                Target(
                    "ganesha",
                    server.host,
                    server.ports.nfs,
                    server.ports.mount,
                    server.export_path(),
                    server.entered,
                    server.pids["ganesha"],
                ),
                args,
            )
        with floatlock_serve(export, work, nfs_section=section) as target:
            f = measure(target, args)
    print(table([(k, f[k], g[k]) for k in g]))
    pinning = f"1 in flight pinned to CPU {args.pin}" if args.pin >= 0 else "unpinned"
    print(
        f"file {args.file_mib} MiB, rpcload {args.seconds:g} s per row after {args.warmup:g} s"
        f" warm-up; Python I/O: median of {max(1, args.repeat)} passes; {pinning}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
