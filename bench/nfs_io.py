"""NFSv3 rates of floatlock beside NFS-Ganesha on the same directory, with the ratios.

Theory of operation
-------------------
One temporary directory is exported by every server at once, each under its own file names
(``ganesha-meta000`` .. ``ganesha-meta031`` and ``ganesha-big``; ``floatlock-meta000`` ..
``floatlock-big``), so none touches another's files.  Each server gets the same work from
the same clients; every row below is one *cell*:

* **sequential 1 MiB WRITE** (UNSTABLE, then one COMMIT) and **sequential 1 MiB READ** of a
  ``--file-mib`` file, one call at a time over TCP, from the blocking Python client
  (``bench.nfs_client``).  The same client runs against both servers, so its own cost
  (copies of each MiB) is in both figures; MiB/s of whole passes over the file, repeated
  for ``--seconds`` after ``--warmup`` seconds of them (WRITE: each pass then COMMITs; a
  single 64 MiB pass took 25-130 ms, at the mercy of one hiccup).  Both are also
  driven by rpcload over TCP, 1 and 4 in flight, as a client's readahead and write-behind
  keep several in flight: READ (small calls; rpcload keeps only the head of each reply) and
  UNSTABLE WRITE (pre-encoded 1 MiB calls: rpcload takes records of up to 2 MiB), READ over
  the file and WRITE over its first 16 MiB, sequentially, wrapping around (with 4 in flight
  the slots walk the same offsets side by side);
* **NULL** per second, one call at a time over TCP and UDP: the server's transport and RPC
  layer alone, the part of every round trip that is not the procedure (it tells the cost
  of a procedure from the cost of a call);
* **GETATTR, LOOKUP, CREATE** per second: pre-encoded calls replayed by rpcload in sequence
  mode (one file per slot), 1 and 32 in flight, over TCP and (GETATTR, LOOKUP) UDP.  CREATE is
  UNCHECKED on a name that exists, so it measures the create-or-open path.

**Two Ganesha configurations** (``--ganesha both``, the default; or ``default`` or
``shared`` alone), two Ganesha processes on the same directory:

* ``ganesha``: its defaults.  Its metadata cache trusts a file's cached attributes for 60 s
  and answers LOOKUP from its cached directory entries, so a GETATTR or LOOKUP costs it no
  system call.  That is right only while Ganesha alone changes the directory;
* ``ganesha-shared``: configured for a directory that others change too (local processes,
  the other nodes of a cluster filesystem) with the least that takes,
  ``Attr_Expiration_Time = 0`` (:func:`bench.ganesha.ganesha_config`): then it sees a size
  written or a name removed beside it, as floatlock does.  This is the semantics floatlock
  has, which never caches a name or an attribute (its exports are the HA cluster's shared
  storage, and its locks are the kernel's, for local processes and other nodes to see):
  every GETATTR and LOOKUP asks the kernel.

**Alternation.**  This machine drifts: measured one whole pass after the other, a server's
figures moved with whatever else ran during its pass (READ 1 MiB at 1 in flight came out
0.55x Ganesha in one run, ~0.9x in another).  So every server stays up for the whole run and
each cell is measured ``--repeat`` times, the servers taking turns and the order swapped each
repetition (Ganesha, floatlock; then floatlock, Ganesha; ...; the same with three servers),
one cell finished before the next begins (the same idea as :func:`bench.rpc_null.measure`'s
peers).  Printed per server: the median of its repetitions; per Ganesha configuration, the
ratio is the median of the per-repetition ratios floatlock/that Ganesha (each from runs
seconds apart, so drift mostly cancels), and "ratio range" their minimum and maximum, a
measure of how far to trust it.  ``--floatlock-only`` measures floatlock alone the same way
and prints its median and range.

**Pinning.**  Every 1-in-flight cell (the Python client's READ and WRITE, rpcload at n=1) runs
with the load generator *and every thread of the server* pinned to one CPU (``--pin``, default
0), for every server alike: Ganesha's process by its pid, floatlock's by its own.  With one
call at a time the rate is one round trip after another, and a round trip between two CPUs
costs ~50 us more on this VM than on one; unpinned, the scheduler's random placement decided
the figure (floatlock's GETATTR at 1 in flight measured 10k calls/s in one run, 26k in
another).  Threads a server starts while pinned inherit the CPU.  The pinning is applied
around each run and undone after it, so the idle server (the one not being measured) stays on
all CPUs.  The cells with several calls in flight run unpinned, on all CPUs (the same as
:mod:`bench.rpc_null`).

**One scheduling group.**  Every server runs in this process's session, as rpcload does
(floatlock in a process group of its own, for stopping it).  With autogroup scheduling
(``/proc/sys/kernel/sched_autogroup_enabled``) a session is a scheduling group, and at one
call in flight on one CPU every round trip switches between the server and rpcload twice:
a server in a session of its own pays more for each switch than one in rpcload's (0.4 us
per round trip for floatlock: ``docs/benchmarks.md``, seventh session).

Each Ganesha runs in its own network namespace (:func:`bench.ganesha.ganesha`) and this
thread enters it for each of that Ganesha's runs (its client sockets and rpcload live
there); floatlock runs on the host's loopback as ``python -m floatlock serve --config CFG``
with ``[portmap] mode = "off"``, fixed ports from :func:`bench.loadgen.free_port`, ``listen
= ["127.0.0.1"]`` and the export ``127.0.0.1(rw,no_root_squash,insecure)`` (Ganesha's
export is not root-squashed either; rpcload's source ports are not privileged).  No two
share a port: each Ganesha's are in its namespace.

Run: ``python -m bench.nfs_io [--seconds 3] [--repeat 3] [--file-mib 64] [--pin 0]`` as root
(about 10 minutes with these defaults and both Ganesha configurations, 7 with ``--seconds 2``;
the elapsed time is printed at the end); ``--ganesha default|shared`` measures one Ganesha
configuration; ``--workers N`` and ``--inline true|false`` set floatlock's ``[nfs]`` table,
``--floatlock-only`` skips Ganesha (for sweeps of those settings).
"""

from __future__ import annotations

import argparse
import functools
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
    write_args,
)

MiB = 1 << 20
SLOTS = 32
WRITE_MIB = 16  # the span rpcload's WRITE cells rewrite, sequentially, wrapping around
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
        # A process group of its own (stopped with killpg below) in this session, as
        # Ganesha's processes and rpcload are: a session of its own would make it a
        # scheduling group of its own (autogroup), which Ganesha is not (module docstring).
        process_group=0,
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


# (what, transports, calls in flight) of the rpcload cells, in the order they are run
CASES: tuple[tuple[str, tuple[Proto, ...], tuple[int, ...]], ...] = (
    # NULL: the transport and RPC layer alone, what every call costs before its procedure.
    ("NULL", ("tcp", "udp"), (1,)),
    ("GETATTR", ("tcp", "udp"), (1, 32)),
    ("LOOKUP", ("tcp", "udp"), (1, 32)),
    ("CREATE", ("tcp",), (1, 32)),
    ("WRITE 1MiB", ("tcp",), (1, 4)),
    ("READ 1MiB", ("tcp",), (1, 4)),
)


@dataclass(frozen=True, slots=True)
class Session:
    """A server's own files in the shared directory (names prefixed ``NAME-``), the client
    that made them, and the rpcload sequences for them (keyed by the names in CASES)."""

    target: Target
    nfs: NfsClient
    big: bytes
    sequences: dict[str, list[list[bytes]]]


def open_session(t: Target, file_mib: int, stack: ExitStack) -> Session:
    """Mount ``t``'s export and create its files; the client is closed by ``stack``."""
    with t.enter():  # the client's sockets are made (and stay) in the server's namespace
        nfs = NfsClient(t.host, proto="tcp", nfs_port=t.nfs_port, mount_port=t.mount_port)
        stack.enter_context(nfs)
        root = nfs.mount(t.export)
        names = [f"{t.name}-meta{i:03d}" for i in range(SLOTS)]
        fhs = [nfs.create(root, n) for n in names]
        big = nfs.create(root, f"{t.name}-big")
        block = b"\xa5" * MiB
        for i in range(file_mib):  # the READ cells read it whichever cells run first
            nfs.write(big, i * MiB, block, StableHow.UNSTABLE)
    reads = [nfs_call(NfsProc.READ, read_args(big, i * MiB, MiB)) for i in range(file_mib)]
    # The first WRITE_MIB MiB of the file, over and over: each slot's sequence is held in
    # memory by rpcload (and written to its sequence file) once per slot.
    writes = [
        nfs_call(NfsProc.WRITE, write_args(big, i * MiB, block, StableHow.UNSTABLE))
        for i in range(min(file_mib, WRITE_MIB))
    ]
    sequences = {
        "NULL": [[nfs_call(NfsProc.NULL, b"")]],
        "GETATTR": [[nfs_call(NfsProc.GETATTR, fh_args(fh))] for fh in fhs],
        "LOOKUP": [[nfs_call(NfsProc.LOOKUP, lookup_args(root, n))] for n in names],
        "CREATE": [[nfs_call(NfsProc.CREATE, create_args(root, n))] for n in names],
        "WRITE 1MiB": [writes] * 4,
        "READ 1MiB": [reads] * 4,
    }
    return Session(t, nfs, big, sequences)


@dataclass(frozen=True, slots=True)
class Row:
    """One cell: ``run(session, cpu)`` measures it once and returns the figure (``cpu``:
    rpcload's -C, None when unpinned)."""

    label: str
    inflight: int
    run: Callable[[Session, int | None], float]


def _passes(one_pass: Callable[[], None], mib: int, args: argparse.Namespace) -> float:
    """MiB/s of whole passes of ``mib`` MiB each: passes for ``args.warmup`` seconds
    uncounted, then for at least ``args.seconds`` (one 64 MiB pass takes 25-130 ms, too short
    for one hiccup of this VM not to decide the figure)."""
    end = time.perf_counter() + args.warmup
    while time.perf_counter() < end:
        one_pass()
    t0 = time.perf_counter()
    passes = 0
    while not passes or time.perf_counter() - t0 < args.seconds:
        one_pass()
        passes += 1
    return passes * mib / (time.perf_counter() - t0)


def _write_pass(args: argparse.Namespace, s: Session, cpu: int | None) -> float:
    """MiB/s of passes of sequential 1 MiB UNSTABLE WRITEs over the file, each pass followed
    by one COMMIT."""
    block = b"\xa5" * MiB

    def one_pass() -> None:
        for i in range(args.file_mib):
            if s.nfs.write(s.big, i * MiB, block, StableHow.UNSTABLE) != MiB:
                raise RuntimeError(f"{s.target.name}: short WRITE at {i} MiB")
        s.nfs.nfs.call(NFS_PROG, 3, NFSPROC3_COMMIT, read_args(s.big, 0, 0))

    rate = _passes(one_pass, args.file_mib, args)
    if s.nfs.getattr(s.big) != args.file_mib * MiB:
        raise RuntimeError(f"{s.target.name}: file has the wrong size")
    return rate


def _read_pass(args: argparse.Namespace, s: Session, cpu: int | None) -> float:
    """MiB/s of passes of sequential 1 MiB READs of the file."""

    def one_pass() -> None:
        for i in range(args.file_mib):
            if len(s.nfs.read(s.big, i * MiB, MiB).data) != MiB:
                raise RuntimeError(f"{s.target.name}: short READ at {i} MiB")

    return _passes(one_pass, args.file_mib, args)


def _rpcload(
    what: str, proto: Proto, n: int, args: argparse.Namespace, s: Session, cpu: int | None
) -> float:
    """One rpcload run of the first ``n`` sequences of ``what``: calls/s (MiB/s for 1 MiB calls)."""
    t = s.target
    res = run_load(
        t.host,
        t.nfs_port,
        proto,
        n,
        seconds=args.seconds,
        warmup=args.warmup,
        sequences=s.sequences[what][:n],
        cpu=cpu,
    )
    if res.errors:
        raise RuntimeError(f"{t.name} {what}: {res.errors} errors")
    return res.calls_per_s


def rows(args: argparse.Namespace) -> list[Row]:
    """Every cell, in the order they are measured."""
    out = [
        Row("WRITE 1MiB tcp n=1 py (MiB/s)", 1, functools.partial(_write_pass, args)),
        Row("READ 1MiB tcp n=1 py (MiB/s)", 1, functools.partial(_read_pass, args)),
    ]
    for what, protos, inflights in CASES:
        unit = "MiB/s" if "1MiB" in what else "calls/s"
        for proto in protos:
            for n in inflights:
                run = functools.partial(_rpcload, what, proto, n, args)
                out.append(Row(f"{what} {proto} n={n} rpcload ({unit})", n, run))
    return out


def alternate(
    sessions: Sequence[Session], row: Row, repeat: int, pin: int | None
) -> list[dict[str, float]]:
    """``repeat`` repetitions of one cell, each a run per server, the order of the servers
    reversed every other repetition; per repetition, {server name: figure}."""
    reps: list[dict[str, float]] = []
    for i in range(repeat):
        rep: dict[str, float] = {}
        for s in sessions if i % 2 == 0 else sessions[::-1]:
            t = s.target
            # Each run starts with no dirty pages: writeback of the runs before it (either
            # server's) would otherwise land in whichever run comes next.
            os.sync()
            with t.enter(), pinned(t.pid, pin if row.inflight == 1 else None) as cpu:
                rep[t.name] = row.run(s, cpu)
        reps.append(rep)
    return reps


def table(results: Sequence[tuple[str, list[dict[str, float]]]]) -> str:
    """Medians per server; for each Ganesha configuration measured, the median and range of
    the per-repetition ratios floatlock/that configuration; floatlock alone, its range."""
    peers = [name for name in results[0][1][0] if name != "floatlock"]
    head = ["", "floatlock"]
    for peer in peers:
        head += [peer, f"floatlock/{peer}", "ratio range"]
    if not peers:
        head.append("range")
    cells = [head]
    for label, reps in results:
        fl = [r["floatlock"] for r in reps]
        line = [label, f"{statistics.median(fl):,.0f}"]
        for peer in peers:
            ga = [r[peer] for r in reps]
            ratios = [f / g for f, g in zip(fl, ga, strict=True)]
            line += [f"{statistics.median(ga):,.0f}", f"{statistics.median(ratios):.2f}"]
            line.append(f"{min(ratios):.2f}-{max(ratios):.2f}")
        if not peers:
            line.append(f"{min(fl):,.0f}-{max(fl):,.0f}")
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        )
        for r in cells
    )


def main(argv: Sequence[str] | None = None) -> int:
    """floatlock vs NFS-Ganesha: 1 MiB READ/WRITE, GETATTR/LOOKUP/CREATE and NULL rates."""
    start = time.monotonic()
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="per run of a cell (rpcload, or the Python client's passes)",
    )
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per cell and server (servers alternating)"
    )
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
        "--cells",
        nargs="+",
        metavar="TEXT",
        help="measure only the cells whose label contains one of these (e.g. WRITE 'tcp n=1')",
    )
    parser.add_argument(
        "--ganesha",
        choices=("both", "default", "shared"),
        default="both",
        help="which Ganesha configurations to measure beside floatlock: its default "
        "metadata cache ('ganesha'), the one for a directory others change too "
        "('ganesha-shared': cached attributes never trusted, Attr_Expiration_Time = 0), or both",
    )
    parser.add_argument(
        "--floatlock-only",
        action="store_true",
        help="skip Ganesha (print floatlock's figures only)",
    )
    args = parser.parse_args(argv)
    cells = [r for r in rows(args) if not args.cells or any(c in r.label for c in args.cells)]
    if not cells:
        print(f"no cell's label contains any of {args.cells}", file=sys.stderr)
        return 2
    section = ""
    if args.workers is not None:
        section += f"workers = {args.workers}\n"
    if args.inline is not None:
        section += f"inline_metadata = {args.inline}\n"
    if not args.floatlock_only:
        reason = available()
        if reason is not None:
            print(f"cannot run NFS-Ganesha: {reason}")
            return 2
    repeat = max(1, args.repeat)
    pin = None if args.pin < 0 else args.pin
    with ExitStack() as stack:
        export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-")))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flio-work-")))
        os.chmod(export, 0o755)
        targets: list[Target] = []
        configs = {"both": (False, True), "default": (False,), "shared": (True,)}[args.ganesha]
        for shared in () if args.floatlock_only else configs:
            name = "ganesha-shared" if shared else "ganesha"
            server = stack.enter_context(
                ganesha(export, shared=shared, netns=f"fl{name}-{os.getpid()}")
            )
            targets.append(
                Target(
                    name,
                    server.host,
                    server.ports.nfs,
                    server.ports.mount,
                    server.export_path(),
                    server.entered,
                    server.pids["ganesha"],
                )
            )
        targets.append(stack.enter_context(floatlock_serve(export, work, nfs_section=section)))
        sessions = [open_session(t, args.file_mib, stack) for t in targets]
        results: list[tuple[str, list[dict[str, float]]]] = []
        for k, row in enumerate(cells, 1):
            results.append((row.label, alternate(sessions, row, repeat, pin)))
            print(f"[{k}/{len(cells)}] {row.label}", file=sys.stderr, flush=True)
    print(table(results))
    pinning = f"1 in flight pinned to CPU {args.pin}" if pin is not None else "unpinned"
    order = "servers alternating, order swapped each time" if len(targets) > 1 else "floatlock"
    print(
        f"file {args.file_mib} MiB, {args.seconds:g} s per run after {args.warmup:g} s"
        f" warm-up; {repeat} runs per cell and server, {order}; medians; {pinning}"
    )
    print(f"elapsed {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
