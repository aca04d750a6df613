"""NLM LOCK+UNLOCK pairs against floatlock's lockd, beside the C echo; memory per held lock.

Throughput: bench/c/rpcload in sequence mode replays, per in-flight slot, [LOCK, UNLOCK] of its
own owner on its own file (``bench.nlm_calls.lock_unlock_sequences``: Linux-client-shaped NLM
v4 calls, AUTH_SYS, non-blocking), over UDP and TCP with 1 and 32 pairs in flight.  The same
sequences go to the C echo responder (bench/c/echo.c) in the same run, as the floor a server
cannot beat on this machine.  Printed: pairs/s and per-call p50/p99.

The server is the real daemon, ``python -m floatlock serve --config CFG`` (NFS, MOUNT, statd
and lockd, ``[portmap] mode="off"``, ``[nlm] grace_seconds=0``, see
:func:`bench.rpc_null.floatlock_daemon`); the 32 files are made with MOUNT + CREATE through
the daemon's NFS server (:mod:`bench.nfs_client`), so lockd resolves the NFS layer's own
handles and mirrors every lock as a kernel OFD lock.  Placement, alternation of servers and
the CPU-per-call figures are :func:`bench.rpc_null.measure`'s.

Memory: 100,000 locks held by 1,000 owners (10 per host, 100 hosts, one server address) on 100
files, taken through :class:`~floatlock.nlm.service.NlmService` (host table, resolver, lock
core, waiting table), reported by tracemalloc as bytes per held lock (budget: 1 KiB).  Kernel
mirror off: one lock per owner on every file.  ``--kernel``: mirror on, every lock also an OFD
lock, and each owner holds its 100 locks on one file (10 owners a file), so 1,000 open file
descriptions serve (100,000 would exceed the fd limit of this machine, 20,000, hard).

``--ganesha``: NFS-Ganesha 4.3 too (:mod:`bench.ganesha`: its own network namespace, rpcload
inside it, 32 files made through its NFS server), its runs alternating with floatlock's and the
echo's, and the issue's ratios: calls/s at 32 in flight against Ganesha's (target >= 2x over UDP and
TCP), p50 at 1 in flight against Ganesha's (target: no worse) and the echo's (within 3x).

Usage: python -m bench.nlm_lock [--seconds 3] [--repeat 3] [--pin 0] [--baseline SRC]
       [--skip-load] [--skip-memory] [--kernel] [--ganesha]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import rpc_null
from bench.ganesha import ganesha
from bench.nfs_client import NfsClient
from bench.nlm_calls import lock_unlock_sequences, verify_sequences
from bench.rpc_null import Cell, Floatlock, Server
from floatlock.address import ServerAddress
from floatlock.nlm.files import ExportDirResolver
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.proto import LockArgs, Nlm4Stat, NlmLock
from floatlock.nlm.service import NlmService
from floatlock.rpc.dispatch import Call

NLM_PROG, NLM_VERS = 100021, 4
SLOTS = 32


# -- throughput ----------------------------------------------------------------------------------


def daemon_sequences(fl: Floatlock, slots: int = SLOTS) -> list[list[bytes]]:
    """[LOCK, UNLOCK] per slot on its own file, created through the daemon's MOUNT + CREATE."""
    with NfsClient("127.0.0.1", proto="udp", nfs_port=fl.nfs_port, mount_port=fl.mount_port) as nfs:
        root = nfs.mount(fl.export)
        handles = [nfs.create(root, f"f{n}") for n in range(slots)]
    return lock_unlock_sequences(handles, NLM_VERS, hostname="bench")


def measure(
    seconds: float, repeat: int, pin: int | None, baseline: str | None, peers: Sequence[Server] = ()
) -> list[Cell]:
    return rpc_null.measure(
        seconds, repeat, pin, sequences=daemon_sequences, baseline=baseline, peers=peers
    )


@contextlib.contextmanager
def ganesha_peer() -> Iterator[Server]:
    """NFS-Ganesha 4.3 with 32 files made through its NFS server, as a peer server of
    :func:`measure`."""
    with contextlib.ExitStack() as stack:
        export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flgan-exp-")))
        server = stack.enter_context(ganesha(export))
        with server.entered():
            with server.nfs_client() as nfs:
                root = nfs.mount(server.export_path())
                fhs = [nfs.create(root, f"f{n}") for n in range(SLOTS)]
            seqs = lock_unlock_sequences(fhs, NLM_VERS, hostname="bench")
            if any(verify_sequences(server.host, server.ports.nlm, seqs)):
                raise RuntimeError("Ganesha did not grant every pre-run LOCK/UNLOCK")
        pid = server.pids["ganesha"]
        ports = {"udp": server.ports.nlm, "tcp": server.ports.nlm}
        yield Server("Ganesha", pid, server.host, ports, seqs, server.entered)


def ratios(cells: list[Cell]) -> list[str]:
    """The issue's targets, each as a line with the figures it compares."""
    res = {c.name: c.result for c in cells}
    rates = {c.name: c.rates for c in cells}
    lines = []
    for proto in ("udp", "tcp"):
        for inflight in (1, SLOTS):
            fl, echo, g = (
                res[f"{label:9} {proto} {inflight:2} in flight"]
                for label in ("floatlock", "C echo", "Ganesha")
            )
            if inflight == SLOTS:
                r = fl.calls_per_s / g.calls_per_s
                # Each run of floatlock against Ganesha's run of the same repetition (they
                # alternate): how far the ratio of medians can be trusted on a noisy machine.
                pairs = [
                    a / b
                    for a, b in zip(
                        rates[f"floatlock {proto} {inflight:2} in flight"],
                        rates[f"Ganesha   {proto} {inflight:2} in flight"],
                        strict=True,
                    )
                ]
                spread = f"; run by run {min(pairs):.2f}-{max(pairs):.2f}x" if pairs else ""
                lines.append(
                    f"{proto} {inflight} in flight: floatlock {fl.calls_per_s:,.0f} / Ganesha "
                    f"{g.calls_per_s:,.0f} calls/s = {r:.2f}x{spread} (target >= 2x: "
                    f"{'met' if r >= 2 else 'NOT met'})"
                )
            else:
                met = fl.p50_us <= g.p50_us and fl.p50_us <= 3 * echo.p50_us
                lines.append(
                    f"{proto} 1 in flight p50: floatlock {fl.p50_us:.0f} us, Ganesha "
                    f"{g.p50_us:.0f} us, C echo {echo.p50_us:.0f} us = "
                    f"{fl.p50_us / echo.p50_us:.2f}x echo (target <= Ganesha and <= 3x echo: "
                    f"{'met' if met else 'NOT met'})"
                )
    return lines


# -- memory --------------------------------------------------------------------------------------


def memory(kernel: bool, files: int = 100, owners: int = 1000, per_host: int = 10) -> None:
    total = 100_000
    if kernel:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = owners + 1000  # one description per owner (see the loop below)
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
            if kernel:
                # One file per owner (10 owners a file), 100 locks each: 1,000 kernel open
                # file descriptions instead of 100,000, under this machine's fd limit.
                f, slot = o % files, n // owners
            else:
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
            f"{total // owners if kernel else per_file or 1} per owner and file, "
            f"kernel mirror {'on' if kernel else 'off'}): "
            f"{per_lock:.0f} bytes/lock ({verdict}, budget 1024); {held / elapsed:,.0f} LOCK/s"
        )
        if km is not None:
            km.close_all()
        resolver.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    ap.add_argument("--pin", type=int, default=0, help="CPU for the 1-in-flight runs (-1: none)")
    ap.add_argument("--baseline", metavar="SRC", help="also run the floatlock package in SRC")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--kernel", action="store_true", help="memory run with the kernel mirror")
    ap.add_argument("--ganesha", action="store_true", help="also run NFS-Ganesha, print ratios")
    args = ap.parse_args()
    pin = None if args.pin < 0 else args.pin
    print(f"# nlm_lock: {os.cpu_count()} CPUs; one call = LOCK or UNLOCK, a pair = both")
    if not args.skip_load:
        with contextlib.ExitStack() as stack:
            peers = [stack.enter_context(ganesha_peer())] if args.ganesha else []
            cells = measure(args.seconds, args.repeat, pin, args.baseline, peers)
        print(rpc_null.table(cells))
        for c in cells:
            r = c.result
            lat = f"p50 {r.p50_us:.0f} us, p99 {r.p99_us:.0f} us per call"
            print(f"{c.name}: {r.sequences_per_s:,.0f} pairs/s ({lat})")
        if args.ganesha:
            for line in ratios(cells):
                print(line)
    if not args.skip_memory:
        memory(args.kernel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
