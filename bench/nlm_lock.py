"""NLM LOCK+UNLOCK pairs against floatlock's lockd, beside the C echo; memory per held lock.

Throughput: bench/c/rpcload in sequence mode replays, per in-flight slot, [LOCK, UNLOCK] of its
own owner on its own file (``bench.nlm_calls.lock_unlock_sequences``: Linux-client-shaped NLM
v4 calls, AUTH_SYS, non-blocking), over UDP and TCP with 1 and 32 pairs in flight.  The same
sequences go to the C echo responder (bench/c/echo.c) in the same run, as the floor a server
cannot beat on this machine.  Printed: pairs/s and per-call p50/p99.

lockd is not wired into ``floatlock serve`` yet (src/floatlock/server.py builds no NLM), so
the server here is a minimal one started as a subprocess of this script (``--serve``):
NlmProgram + UdpServer/TcpServer on one port, ExportDirResolver over a temporary directory,
kernel OFD mirror on, grace off, SM_MON answered at once.  Once the lead wires NLM, replace
:func:`lockd_server` by ``python -m floatlock serve --config CFG`` with ``[portmap]
mode="off"`` and ``[nlm] grace_seconds=0`` (see bench/rpc_null.py).

Memory: 100,000 locks held by 1,000 owners (10 per host, 100 hosts, one server address) on 100
files, taken through :class:`~floatlock.nlm.service.NlmService` (host table, resolver, lock
core, waiting table; kernel mirror off unless ``--kernel``: 100,000 OFDs need a raised fd
limit), reported by tracemalloc as bytes per held lock (budget: 1 KiB).

Usage: python -m bench.nlm_lock [--seconds 3] [--skip-load] [--skip-memory] [--kernel]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from bench.loadgen import LoadResult, echo_server, format_table, free_port, read_line, run_load
from bench.nlm_calls import lock_unlock_sequences
from floatlock.address import ServerAddress
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.program import NlmProgram
from floatlock.nlm.proto import LockArgs, Nlm4Stat, NlmLock
from floatlock.nlm.service import NlmService
from floatlock.rpc.dispatch import Call, Dispatcher

NLM_PROG, NLM_VERS = 100021, 4
SLOTS = 32


# -- the server (subprocess) -------------------------------------------------------------------


async def _serve(port: int, root: Path, files: int) -> None:
    from floatlock.net.tcp import TcpServer
    from floatlock.net.udp import UdpServer

    for n in range(files):
        (root / f"f{n}").write_bytes(b"")
    resolver = ExportDirResolver(root)
    handles = [resolver.handle(f"f{n}") for n in range(files)]
    service = NlmService(HostTable(), GraceClocks(), resolver, KernelMirror())

    async def monitor(_: MonitorHost) -> bool:
        return True

    program = NlmProgram(service, NlmCallbacks(), monitor)
    d = Dispatcher()
    program.register(d)
    udp = UdpServer(d, "127.0.0.1", port)
    await udp.start()
    tcp = TcpServer(d, "127.0.0.1", port)
    await tcp.start()
    print("ready", ",".join(h.hex() for h in handles), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


@contextlib.contextmanager
def lockd_server(port: int, files: int) -> Iterator[list[bytes]]:
    """This script's ``--serve`` on ``port`` (UDP and TCP); yields the files' handles."""
    with tempfile.TemporaryDirectory(prefix="floatlock-nlm-bench-") as tmp:
        cmd = [sys.executable, "-m", "bench.nlm_lock", "--serve", str(port), tmp, str(files)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            words = read_line(proc.stdout.fileno(), 30).split()
            if not words or words[0] != "ready":
                raise RuntimeError(f"lockd did not start: {words}")
            yield [bytes.fromhex(h) for h in words[1].split(",")]
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- throughput ----------------------------------------------------------------------------------


def measure(seconds: float) -> list[tuple[str, LoadResult]]:
    rows: list[tuple[str, LoadResult]] = []
    protos: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    for proto in protos:
        for inflight in (1, SLOTS):
            port = free_port(proto)
            with lockd_server(port, SLOTS) as handles:
                seqs = lock_unlock_sequences(handles[:inflight], NLM_VERS, hostname="bench")
                r = run_load(
                    "127.0.0.1", port, proto, inflight, seconds=seconds, warmup=0.5,
                    prog=NLM_PROG, vers=NLM_VERS, sequences=seqs,
                )  # fmt: skip
                rows.append((f"floatlock {proto} {inflight:2} in flight", r))
            with echo_server(
                "127.0.0.1", port if proto == "udp" else None, port if proto == "tcp" else None
            ):
                r = run_load(
                    "127.0.0.1", port, proto, inflight, seconds=seconds, warmup=0.5,
                    prog=NLM_PROG, vers=NLM_VERS, sequences=seqs,
                )  # fmt: skip
                rows.append((f"C echo    {proto} {inflight:2} in flight", r))
    return rows


# -- memory --------------------------------------------------------------------------------------


def memory(kernel: bool, files: int = 100, owners: int = 1000, per_host: int = 10) -> None:
    total = 100_000
    if kernel:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = owners * files + 1000
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"--kernel needs {need} descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    with tempfile.TemporaryDirectory(prefix="floatlock-nlm-mem-") as tmp:
        root = Path(tmp)
        for n in range(files):
            (root / f"f{n}").write_bytes(b"")
        resolver = ExportDirResolver(root)
        handles = [resolver.handle(f"f{n}") for n in range(files)]
        hosts = HostTable(max_hosts=owners)
        km = KernelMirror() if kernel else None
        svc = NlmService(hosts, GraceClocks(), resolver, km, max_locks_per_host=total)
        server = ServerAddress("198.18.0.10")
        calls = [
            Call(
                1,
                NLM_PROG,
                4,
                2,
                0,
                b"",
                0,
                client=(f"198.18.{h // 256}.{h % 256}", 800),
                server=server,
            )
            for h in range(owners // per_host)
        ]
        args = [
            LockArgs(b"c", False, True, NlmLock("", handles[0], b"%d@bench" % o, o, 0, 0), False, 3)
            for o in range(owners)
        ]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        per_file = total // (owners * files)
        for n in range(total):
            o = n % owners
            f = (n // owners) % files
            slot = n // (owners * files)
            call = calls[o // per_host]
            host = svc.host_for("", call, 0.0)
            if not host.monitored and hosts.start_monitor(host) is not None:
                hosts.monitor_done(host, True)
            a = args[o]
            lk = NlmLock("", handles[f], a.lock.oh, a.lock.svid, (slot * owners + o) * 16, 8)
            r = svc.lock(LockArgs(a.cookie, False, True, lk, False, 3), call, 0.0)
            assert r.reply.stat == Nlm4Stat.GRANTED, r.reply
        elapsed = time.perf_counter() - t0
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        held = len(svc.locks.held())
        per_lock = (after - before) / held
        verdict = "OK" if per_lock <= 1024 else "OVER BUDGET"
        print(
            f"NlmService: {held} locks held ({owners} owners, {files} files, "
            f"{per_file or 1} per owner and file, kernel mirror {'on' if kernel else 'off'}): "
            f"{per_lock:.0f} bytes/lock ({verdict}, budget 1024); {held / elapsed:,.0f} LOCK/s"
        )
        if km is not None:
            km.close_all()
        resolver.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--kernel", action="store_true", help="memory run with the kernel mirror")
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "ROOT", "FILES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        port, root, files = args.serve
        asyncio.run(_serve(int(port), Path(root), int(files)))
        return 0
    print(f"# nlm_lock: {os.cpu_count()} CPUs; one call = LOCK or UNLOCK, a pair = both")
    if not args.skip_load:
        rows = measure(args.seconds)
        print(format_table(rows))
        for name, r in rows:
            lat = f"p50 {r.p50_us:.0f} us, p99 {r.p99_us:.0f} us per call"
            print(f"{name}: {r.sequences_per_s:,.0f} pairs/s ({lat})")
    if not args.skip_memory:
        memory(args.kernel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
