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
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import LoadResult, echo_server, format_table, free_port, run_load

NLM_PROG, NLM_VERS = 100021, 4


@contextlib.contextmanager
def floatlock_server(port: int, cpu: int | None = None) -> Iterator[int]:
    """``floatlock serve`` with every service on ``port`` (UDP and TCP) and no portmapper."""
    with tempfile.TemporaryDirectory(prefix="floatlock-bench-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f"""
[server]
listen = ["127.0.0.1"]
state_dir = "{tmp}/state"
log_level = "warning"
[ports]
nfs = {free_port("udp")}
mount = {free_port("udp")}
nlm = {port}
statd = {free_port("udp")}
[portmap]
mode = "off"
[[export]]
path = "{tmp}/export"
[nlm]
grace_seconds = 0
"""
        )
        cmd = [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            _wait_ready(proc)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"floatlock exited with {proc.wait()} before it was ready")
        if "floatlock ready" in line:
            # Keep draining stderr so the server never blocks on a full pipe.
            import threading

            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return
    raise RuntimeError("floatlock did not become ready in 30 s")


def measure(seconds: float, repeat: int, pin: int | None) -> list[tuple[str, LoadResult]]:
    rows: list[tuple[str, LoadResult]] = []
    for proto in ("udp", "tcp"):
        for inflight in (1, 32):
            cpu = pin if inflight == 1 else None
            port = free_port(proto)
            for server in ("floatlock", "C echo"):
                results = []
                for _ in range(repeat):
                    if server == "floatlock":
                        with floatlock_server(port, cpu):
                            r = run_load(
                                "127.0.0.1", port, proto, inflight, seconds=seconds,
                                warmup=0.5, prog=NLM_PROG, vers=NLM_VERS, cpu=cpu,
                            )  # fmt: skip
                    else:
                        with echo_server(
                            "127.0.0.1", port if proto == "udp" else None,
                            port if proto == "tcp" else None, cpu=cpu,
                        ):  # fmt: skip
                            r = run_load(
                                "127.0.0.1", port, proto, inflight, seconds=seconds,
                                warmup=0.5, prog=NLM_PROG, vers=NLM_VERS, cpu=cpu,
                            )  # fmt: skip
                    results.append(r)
                best = sorted(results, key=lambda r: r.calls_per_s)[len(results) // 2]
                rows.append((f"{server:9} {proto} {inflight:2} in flight", best))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    ap.add_argument("--pin", type=int, default=0, help="CPU for the 1-in-flight runs (-1: none)")
    args = ap.parse_args()
    pin = None if args.pin < 0 else args.pin
    print(f"# rpc_null: {os.cpu_count()} CPUs, {args.seconds}s x {args.repeat} runs per cell")
    rows = measure(args.seconds, args.repeat, pin)
    print(format_table(rows))
    by = {name: r for name, r in rows}
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
