"""RPC NULL-call benchmark: floatlock's transports beside a trivial C echo responder.

Runs ``floatlock serve`` (NLM program 100021 v4 on a free port, no portmapper) and the C echo
(bench/c/echo.c), and drives both with the same C load generator (bench/c/rpcload.c) over UDP
and TCP with 1 and 32 calls in flight, alternating server by server so that drift of this
shared machine hits both alike.  Prints calls/s and latency percentiles and the ratios the
targets are stated in:

* UDP, 32 in flight: floatlock's calls/s (target >= 100k on 2 cores);
* 1 in flight: floatlock's p50 / the echo's p50 (target <= 2).

At 1 in flight, client and server are pinned to one CPU (``--pin``, default 0): a round trip
between two CPUs costs ~50 us more here and the scheduler places processes at random, so
unpinned p50s measure placement, not the server.  At 32 in flight nothing is pinned.

Usage: python -m bench.rpc_null [--seconds 5] [--repeat 3] [--pin 0]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, Proto, echo_server, format_table, free_port, run_load

NLM_PROG, NLM_VERS = 100021, 4


@dataclass(frozen=True, slots=True)
class Floatlock:
    """A running ``floatlock serve``: its pid, ports and export directory."""

    pid: int
    nlm_port: int
    nfs_port: int
    mount_port: int
    export: str


@contextlib.contextmanager
def floatlock_daemon(
    port: int, cpu: int | None = None, *, log_level: str = "info", src: str | None = None
) -> Iterator[Floatlock]:
    """``floatlock serve`` with lockd on ``port`` (UDP and TCP), NFS and MOUNT on free ports,
    no portmapper, no grace, one export in a temporary directory.

    ``src``: run the floatlock package found in this directory instead (an A/B baseline, e.g.
    ``git archive HEAD src | tar -x -C /tmp/base`` and ``src="/tmp/base/src"``).
    """
    with tempfile.TemporaryDirectory(prefix="floatlock-bench-") as tmp:
        nfs_port, mount_port = free_port("udp"), free_port("udp")
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f"""
[server]
listen = ["127.0.0.1"]
state_dir = "{tmp}/state"
log_level = "{log_level}"
[ports]
nfs = {nfs_port}
mount = {mount_port}
nlm = {port}
statd = {free_port("udp")}
[portmap]
mode = "off"
[[export]]
path = "{tmp}/export"
clients = "127.0.0.0/8(rw,insecure)"
[nlm]
grace_seconds = 0
"""
        )
        cmd = [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        try:
            _wait_ready(proc)
            yield Floatlock(proc.pid, port, nfs_port, mount_port, f"{tmp}/export")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds process ``pid`` has used so far (/proc, clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_us_per_call(pid: int, load: Callable[[], LoadResult]) -> tuple[LoadResult, float, float]:
    """Run ``load`` and return its result with the server's user and system CPU us per call.

    The warm-up and the drain are counted too, so the figures are slightly high: the
    calls/s of the window times its seconds is the denominator, an undercount of calls made.
    """
    u0, s0 = cpu_seconds(pid)
    r = load()
    u1, s1 = cpu_seconds(pid)
    calls = max(r.calls, 1)
    return r, (u1 - u0) * 1e6 / calls, (s1 - s0) * 1e6 / calls


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"floatlock exited with {proc.wait()} before it was ready")
        if "floatlock ready" in line:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return
    raise RuntimeError("floatlock did not become ready in 30 s")


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


@dataclass(frozen=True, slots=True)
class Cell:
    """The median run of one (server, transport, in-flight) case, with the server's CPU."""

    name: str
    result: LoadResult
    user_us: float  # server user CPU per call (median over runs); 0 for the echo
    sys_us: float
    rates: tuple[float, ...] = ()  # calls/s of every run, in the order the runs alternated


@dataclass(frozen=True, slots=True)
class Server:
    """One server of :func:`measure`'s runs.  For a server in another network namespace (e.g.
    NFS-Ganesha), ``enter()`` puts the calling thread in it while rpcload starts; each run
    sends the first ``inflight`` of ``sequences``."""

    label: str
    pid: int
    host: str
    ports: dict[str, int]
    sequences: list[list[bytes]] | None
    enter: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext


def measure(
    seconds: float,
    repeat: int,
    pin: int | None,
    *,
    sequences: Callable[[Floatlock], list[list[bytes]]] | None = None,
    baseline: str | None = None,
    peers: Sequence[Server] = (),
) -> list[Cell]:
    """Every (transport, in-flight) case, the servers alternating run by run.

    One daemon (and one echo) per CPU placement serves all runs of that placement.
    ``sequences``: rpcload's sequence mode (the NLM benchmark), made for each daemon (its
    file handles are its own); ``inflight`` slots use the first ``inflight`` sequences.  The
    echo gets the last daemon's.  ``baseline``: also run the floatlock in that source
    directory (see :func:`floatlock_daemon`), as "baseline".  ``peers``: other servers, run
    in turn with the others (so drift of this shared machine hits all alike); only rpcload is
    pinned for them.
    """
    cells: list[Cell] = []
    for cpu, inflight in ((pin, 1), (None, 32)):
        with contextlib.ExitStack() as stack:
            servers: list[Server] = []
            seqs: list[list[bytes]] | None = None
            for label, src in (("baseline", baseline), ("floatlock", None)):
                if label == "baseline" and baseline is None:
                    continue
                port = free_port("udp")
                fl = stack.enter_context(floatlock_daemon(port, cpu, src=src))
                if sequences is not None:
                    seqs = sequences(fl)[:inflight]
                servers.append(Server(label, fl.pid, "127.0.0.1", {"udp": port, "tcp": port}, seqs))
            echo = stack.enter_context(echo_server("127.0.0.1", 0, 0, cpu=cpu))
            ports = {"udp": echo.udp_port, "tcp": echo.tcp_port}
            servers.append(Server("C echo", echo.pid, "127.0.0.1", ports, seqs))
            for peer in peers:
                pseqs = None if peer.sequences is None else peer.sequences[:inflight]
                servers.append(dataclasses.replace(peer, sequences=pseqs))
            protos: tuple[Proto, ...] = ("udp", "tcp")
            for proto in protos:
                runs: dict[str, list[tuple[LoadResult, float, float]]] = {}
                for _ in range(repeat):
                    for srv in servers:
                        load = functools.partial(
                            run_load, srv.host, srv.ports[proto], proto, inflight,
                            seconds=seconds, warmup=0.5, prog=NLM_PROG, vers=NLM_VERS, cpu=cpu,
                            sequences=srv.sequences,
                        )  # fmt: skip
                        with srv.enter():
                            runs.setdefault(srv.label, []).append(cpu_us_per_call(srv.pid, load))
                for label in (srv.label for srv in servers):
                    rs = runs[label]
                    best = sorted(rs, key=lambda x: x[0].calls_per_s)[len(rs) // 2][0]
                    cells.append(
                        Cell(
                            f"{label:9} {proto} {inflight:2} in flight",
                            best,
                            _median([x[1] for x in rs]),
                            _median([x[2] for x in rs]),
                            tuple(x[0].calls_per_s for x in rs),
                        )
                    )
    return cells


def table(cells: list[Cell]) -> str:
    text = format_table([(c.name, c.result) for c in cells]).rstrip("\n")
    lines = [text, "server CPU per call (median of runs, us): user + sys"]
    for c in cells:
        lines.append(f"  {c.name}: {c.user_us:.2f} + {c.sys_us:.2f} = {c.user_us + c.sys_us:.2f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    ap.add_argument("--pin", type=int, default=0, help="CPU for the 1-in-flight runs (-1: none)")
    ap.add_argument("--baseline", metavar="SRC", help="also run the floatlock package in SRC")
    args = ap.parse_args()
    pin = None if args.pin < 0 else args.pin
    print(f"# rpc_null: {os.cpu_count()} CPUs, {args.seconds}s x {args.repeat} runs per cell")
    cells = measure(args.seconds, args.repeat, pin, baseline=args.baseline)
    print(table(cells))
    by = {c.name: c.result for c in cells}
    for proto in ("udp", "tcp"):
        f32 = by[f"floatlock {proto} 32 in flight"]
        e32 = by[f"C echo    {proto} 32 in flight"]
        f1 = by[f"floatlock {proto}  1 in flight"]
        e1 = by[f"C echo    {proto}  1 in flight"]
        print(
            f"{proto}: floatlock {f32.calls_per_s / 1000:.1f}k calls/s at 32 in flight "
            f"({f32.calls_per_s / e32.calls_per_s:.2f} of echo); "
            f"p50 at 1 in flight {f1.p50_us:.1f} us = {f1.p50_us / e1.p50_us:.2f}x echo's"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
