"""SM_MON calls/s against floatlock's statd over UDP, 1 and 32 calls in flight, beside the C echo.

statd answers SM_MON only once the new or changed monitor record is durable (write to a
temporary file, fsync, rename, fsync of the directory; :mod:`floatlock.nsm.store`): lockd
grants no lock before the record is on disk.  The writes are done by statd's writer thread
(:mod:`floatlock.nsm.writer`), off the event loop, in batches: every request that arrives while
a batch is being made durable joins the next one, which costs one fsync per file and ONE fsync
of the directory for all of them (group commit).  This measures what durability costs with 1
call in flight (no batching possible: two fsyncs per call) and with 32 (batches of up to 32).
The statd reports, on exit, how many batches it wrote and their average size.

bench/c/rpcload in sequence mode replays, per in-flight slot, two SM_MON calls for the slot's
own peer (``mon_name`` 198.18.<slot>, ``my_name`` 127.0.0.1) that differ in their private
bytes, so *every* call changes the record and is written (an SM_MON repeating the record on
file is answered without a write).  The statd runs as a subprocess of this script
(``--serve``): :class:`~floatlock.nsm.statd.Statd` on a :class:`~floatlock.net.udp.UdpServer`
on 127.0.0.1, ``-L`` (no notification at start), no name resolution, no HA callout.  Its state
directory is on the file system given by ``--dir`` (default: a temporary directory under
/var/tmp, i.e. a real disk; pass ``--dir /dev/shm`` to see the cost without a durable fsync).
The same sequences go to the C echo responder in the same run, as the floor.

Usage: python -m bench.sm_mon_rate [--seconds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import (
    LoadResult,
    echo_server,
    format_table,
    free_port,
    null_call,
    read_line,
    run_load,
)
from floatlock.nsm import proto
from floatlock.nsm.proto import Mon, MonId, MyId, Proc

SM_PROG, SM_VERS = 100024, 1
SLOTS = 32


def sm_mon_sequences(slots: int) -> list[list[bytes]]:
    """Per slot: two SM_MON of its own peer with different private bytes (each one a write)."""
    seqs: list[list[bytes]] = []
    for i in range(slots):
        mon_id = MonId(f"198.18.{i // 250}.{i % 250 + 1}", MyId("127.0.0.1", 100021, 4, 16))
        seqs.append(
            [
                null_call(0, SM_PROG, SM_VERS, Proc.SM_MON, proto.encode_mon(Mon(mon_id, priv)))
                for priv in (bytes(16), bytes([1]) * 16)
            ]
        )
    return seqs


# -- the statd (subprocess) ----------------------------------------------------------------------


async def _serve(port: int, state_dir: Path) -> None:
    from floatlock.net.udp import UdpServer
    from floatlock.nsm.statd import Statd, StatdConfig
    from floatlock.rpc.dispatch import Dispatcher

    d = Dispatcher()
    statd = Statd(StatdConfig(state_dir=state_dir, notify=False, resolve_names=False), d)
    udp = UdpServer(d, "127.0.0.1", port)
    await udp.start()
    await statd.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await statd.stop()
    udp.close()
    written = sum(1 for _ in (state_dir / "node" / "sm").iterdir())
    w = statd.writer
    per_batch = w.jobs / w.batches if w.batches else 0.0
    print(
        f"records on file: {written}; writer: {w.jobs} jobs in {w.batches} batches "
        f"({per_batch:.1f} per batch), {w.files} files, {w.dir_syncs} directory fsyncs",
        file=sys.stderr,
        flush=True,
    )


@contextlib.contextmanager
def statd_server(port: int, base: str | None) -> Iterator[None]:
    """This script's ``--serve`` on 127.0.0.1:``port`` (UDP), state under ``base``."""
    with tempfile.TemporaryDirectory(prefix="floatlock-smmon-", dir=base) as tmp:
        cmd = [sys.executable, "-m", "bench.sm_mon_rate", "--serve", str(port), tmp]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            words = read_line(proc.stdout.fileno(), 30).split()
            if words != ["ready"]:
                raise RuntimeError(f"statd did not start: {words}")
            yield
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(seconds: float, base: str | None) -> list[tuple[str, LoadResult]]:
    rows: list[tuple[str, LoadResult]] = []
    for inflight in (1, SLOTS):
        seqs = sm_mon_sequences(inflight)
        port = free_port("udp")
        with statd_server(port, base):
            r = run_load(
                "127.0.0.1", port, "udp", inflight, seconds=seconds, warmup=0.5,
                prog=SM_PROG, vers=SM_VERS, sequences=seqs, timeout_ms=5000,
            )  # fmt: skip
            rows.append((f"floatlock statd udp {inflight:2} in flight", r))
        with echo_server("127.0.0.1", port, None):
            r = run_load(
                "127.0.0.1", port, "udp", inflight, seconds=seconds, warmup=0.5,
                prog=SM_PROG, vers=SM_VERS, sequences=seqs,
            )  # fmt: skip
            rows.append((f"C echo         udp {inflight:2} in flight", r))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--dir", default="/var/tmp", help="where the state directory is made")
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(int(args.serve[0]), Path(args.serve[1])))
        return 0
    fs = subprocess.run(
        ["df", "--output=fstype", args.dir], capture_output=True, text=True, check=False
    ).stdout.split()[-1:]
    print(f"SM_MON, every call a record write; state directory under {args.dir} {fs}")
    rows = measure(args.seconds, args.dir)
    print(format_table(rows))
    for name, r in rows:
        if name.startswith("floatlock"):
            print(
                f"{name}: {r.calls_per_s:,.0f} SM_MON/s (timeouts {r.timeouts}, errors {r.errors})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
