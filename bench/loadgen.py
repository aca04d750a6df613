"""Drive the C RPC load generator (bench/c/rpcload.c) and the C echo responder (bench/c/echo.c).

Theory of operation: the tools are compiled with gcc into ``bench/build/`` on first use (and
again whenever a source is newer than its binary).  :func:`run_load` runs ``rpcload`` once and
parses the one JSON line it prints into a :class:`LoadResult`.  :func:`echo_server` starts the
trivial C responder that every benchmark reports beside floatlock, so the same load generator
measures both in the same run.

Run ``python -m bench.loadgen`` from the repository root for the load generator's self-check:
the C echo over UDP and TCP at 1 and 32 calls in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BUILD_DIR",
    "EchoServer",
    "LoadError",
    "LoadResult",
    "Proto",
    "build",
    "echo_server",
    "encode_sequences",
    "format_table",
    "free_port",
    "null_call",
    "run_load",
]

Proto = Literal["udp", "tcp"]

BENCH_DIR = Path(__file__).resolve().parent
SRC_DIR = BENCH_DIR / "c"
BUILD_DIR = BENCH_DIR / "build"
TOOLS = ("rpcload", "echo")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")

MAX_SECONDS = 60.0  # the C tool's own hard limit for warm-up and for measurement
DRAIN_SECONDS = 5.0
MAX_INFLIGHT = 1024
MAX_MSG_UDP = 65000  # rpcload's limits on one call message (bench/c/rpcload.c): a datagram
MAX_MSG_TCP = 2 << 20  # ... and a record: a 1 MiB NFS WRITE with its headers


class LoadError(RuntimeError):
    """A tool failed to build, start or run."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run of rpcload: the fields of its JSON line (latencies in microseconds)."""

    calls: int
    seconds: float
    calls_per_s: float
    sequences: int
    sequences_per_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    timeouts: int
    errors: int
    stale: int
    inflight: int

    @classmethod
    def from_json(cls, line: str) -> LoadResult:
        """Parse rpcload's output line; raises LoadError when a field is missing."""
        try:
            data = json.loads(line)
            kwargs: dict[str, Any] = {f.name: type_of(f.type)(data[f.name]) for f in fields(cls)}
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadError(f"unparsable rpcload output {line!r}: {exc}") from exc
        return cls(**kwargs)


def type_of(annotation: object) -> type[int] | type[float]:
    """The converter for a LoadResult field annotation (a string under postponed evaluation)."""
    return int if annotation in (int, "int") else float


def build(force: bool = False) -> Path:
    """Compile rpcload and echo into bench/build/ when missing or older than their sources.

    Returns the build directory.  The binary is written under a temporary name and renamed,
    so concurrent callers never run a half-written file.
    """
    BUILD_DIR.mkdir(exist_ok=True)
    for tool in TOOLS:
        src = SRC_DIR / f"{tool}.c"
        out = BUILD_DIR / tool
        if not force and out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        tmp = BUILD_DIR / f".{tool}.{os.getpid()}.tmp"
        cmd = ["gcc", *CFLAGS, "-o", str(tmp), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise LoadError("gcc not found") from exc
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise LoadError(f"gcc failed for {src.name}:\n{proc.stderr}")
        tmp.replace(out)
    return BUILD_DIR


def free_port(proto: Proto, host: str = "127.0.0.1") -> int:
    """A port the kernel reports free for proto on host (it may be taken again before use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def null_call(xid: int, prog: int, vers: int, proc: int = 0, body: bytes = b"") -> bytes:
    """An RPC call message with AUTH_NULL credentials and verifier, followed by body."""
    return struct.pack(">10I", xid & 0xFFFFFFFF, 0, 2, prog, vers, proc, 0, 0, 0, 0) + body


def encode_sequences(sequences: Sequence[Sequence[bytes]], max_msg: int = MAX_MSG_TCP) -> bytes:
    """Encode call-message sequences in rpcload's -f file format (each message at most
    ``max_msg`` bytes: rpcload's limit for the transport it will use).

    Format (unsigned 32-bit big-endian integers): K, then per sequence M, then per message
    its length and bytes.  Each message is a whole RPC call message (no record mark); its
    first 4 bytes (the xid) are overwritten by rpcload.
    """
    if not sequences:
        raise ValueError("at least one sequence is needed")
    parts = [struct.pack(">I", len(sequences))]
    for seq in sequences:
        if not seq:
            raise ValueError("a sequence needs at least one message")
        parts.append(struct.pack(">I", len(seq)))
        for msg in seq:
            if not 8 <= len(msg) <= max_msg:
                raise ValueError(f"a call message must be 8..{max_msg} bytes, not {len(msg)}")
            parts.append(struct.pack(">I", len(msg)))
            parts.append(bytes(msg))
    return b"".join(parts)


def run_load(
    host: str,
    port: int,
    proto: Proto,
    inflight: int,
    seconds: float | None = None,
    warmup: float | None = None,
    prog: int = 100003,
    vers: int = 3,
    proc: int = 0,
    sequences: Sequence[Sequence[bytes]] | None = None,
    *,
    calls: int | None = None,
    warmup_calls: int | None = None,
    auth_sys: bool = False,
    timeout_ms: int = 1000,
    cpu: int | None = None,
) -> LoadResult:
    """Run rpcload once against host:port and return its parsed result.

    Args:
        host: numeric IPv4/IPv6 address of the server (loopback or a test namespace).
        port: the server's port for proto.
        proto: "udp" (one socket, replies matched by xid, retransmission after timeout_ms)
            or "tcp" (one connection, record-marked, pipelined).
        inflight: calls kept outstanding, 1..1024; each is a "slot".
        seconds: measured duration (at most 60 s).  Default 2 s unless calls is given.
        warmup: seconds of warm-up before measuring (at most 60 s); excludes warmup_calls.
        prog, vers, proc: target of the default NULL call (ignored with sequences).
        sequences: K sequences of whole RPC call messages; slot i sends the messages of
            sequence i mod K one after another, waiting for each reply, and wraps around.
        calls: measure exactly this many calls instead of a duration (bounded by 60 s).
        warmup_calls: replies received before measuring starts; excludes warmup.
        auth_sys: use AUTH_SYS credentials in the default NULL call.
        timeout_ms: UDP retransmission timeout; on TCP late calls are only counted.
        cpu: pin rpcload to this CPU.
    """
    if seconds is not None and calls is not None:
        raise ValueError("give seconds or calls, not both")
    if warmup is not None and warmup_calls is not None:
        raise ValueError("give warmup or warmup_calls, not both")
    if not 1 <= inflight <= MAX_INFLIGHT:
        raise ValueError(f"inflight must be in 1..{MAX_INFLIGHT}")
    for name, value in (("seconds", seconds), ("warmup", warmup)):
        if value is not None and not 0 <= value <= MAX_SECONDS:
            raise ValueError(f"{name} must be in [0, {MAX_SECONDS}]")
    if proto not in ("udp", "tcp"):
        raise ValueError(f"proto must be udp or tcp, not {proto!r}")

    binary = build() / "rpcload"
    cmd = [str(binary), "-h", host, "-p", str(port), "-P", proto, "-n", str(inflight)]
    cmd += ["-r", str(prog), "-v", str(vers), "-x", str(proc), "-T", str(timeout_ms)]
    if calls is not None:
        cmd += ["-c", str(calls)]
    else:
        cmd += ["-d", repr(float(2.0 if seconds is None else seconds))]
    if warmup_calls is not None:
        cmd += ["-W", str(warmup_calls)]
    elif warmup is not None:
        cmd += ["-w", repr(float(warmup))]
    if auth_sys:
        cmd.append("-a")
    if cpu is not None:
        cmd += ["-C", str(cpu)]

    # The C tool bounds itself; this is only a backstop against a hung process.
    limit = 2 * MAX_SECONDS + DRAIN_SECONDS + 10.0
    with tempfile.TemporaryDirectory(prefix="rpcload-") as tmp:
        if sequences is not None:
            seqfile = Path(tmp) / "sequences.bin"
            max_msg = MAX_MSG_UDP if proto == "udp" else MAX_MSG_TCP
            seqfile.write_bytes(encode_sequences(sequences, max_msg))
            cmd += ["-f", str(seqfile)]
        try:
            proc_ = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"rpcload did not finish within {limit:.0f} s") from exc
    if proc_.returncode != 0:
        raise LoadError(f"rpcload exited {proc_.returncode}: {proc_.stderr.strip()}")
    lines = proc_.stdout.strip().splitlines()
    if not lines:
        raise LoadError("rpcload printed nothing")
    return LoadResult.from_json(lines[-1])


@dataclass(frozen=True, slots=True)
class EchoServer:
    """A running C echo responder; a port is 0 when that transport is not served."""

    host: str
    udp_port: int
    tcp_port: int
    pid: int


@contextmanager
def echo_server(
    host: str = "127.0.0.1",
    udp_port: int | None = 0,
    tcp_port: int | None = 0,
    *,
    cpu: int | None = None,
    ready_timeout: float = 10.0,
) -> Iterator[EchoServer]:
    """Start bench/build/echo on host; port 0 picks a free port, None disables a transport.

    Yields an EchoServer with the ports actually bound; stops it with SIGTERM on exit.
    """
    if udp_port is None and tcp_port is None:
        raise ValueError("serve at least one of UDP and TCP")
    cmd = [str(build() / "echo"), "-a", host]
    if udp_port is not None:
        cmd += ["-u", str(udp_port)]
    if tcp_port is not None:
        cmd += ["-t", str(tcp_port)]
    if cpu is not None:
        cmd += ["-C", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = read_line(proc.stdout.fileno(), ready_timeout)
        words = line.split()
        if not words or words[0] != "ready":
            err = ""
            if proc.poll() is not None and proc.stderr is not None:
                err = proc.stderr.read().decode(errors="replace")
            raise LoadError(f"echo did not get ready: {line!r} {err.strip()}")
        ports = dict(word.split("=", 1) for word in words[1:])
        yield EchoServer(host, int(ports["udp"]), int(ports["tcp"]), proc.pid)
    finally:
        stop(proc)


def read_line(fd: int, timeout: float) -> str:
    """Read one line from a pipe, giving up after timeout seconds or at end of file."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").split("\n", 1)[0]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers; reaps the process and closes its pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls/s", "calls_per_s"),
    ("seq/s", "sequences_per_s"),
    ("p50 us", "p50_us"),
    ("p90 us", "p90_us"),
    ("p99 us", "p99_us"),
    ("p99.9 us", "p999_us"),
    ("max us", "max_us"),
    ("calls", "calls"),
    ("timeouts", "timeouts"),
    ("errors", "errors"),
)


def format_table(rows: Iterable[tuple[str, LoadResult]]) -> str:
    """An aligned text table: one row per (label, result), one column per figure."""
    header = ["run", *(title for title, _ in COLUMNS)]
    body: list[list[str]] = []
    for label, result in rows:
        cells = [label]
        for _, name in COLUMNS:
            value = getattr(result, name)
            cells.append(f"{value:,.0f}" if name.endswith("_per_s") else fmt(value))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out)


def fmt(value: float) -> str:
    """Integers as they are; floats with one decimal."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Self-check: the C echo over UDP and TCP at 1 and 32 in flight, each repeated."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median reported")
    parser.add_argument(
        "--same-cpu", action="store_true", help="pin echo and rpcload both to CPU 0"
    )
    args = parser.parse_args(argv)
    cpu = 0 if args.same_cpu else None
    rows: list[tuple[str, LoadResult]] = []
    with echo_server(args.host, cpu=cpu) as echo:
        for proto in ("udp", "tcp"):
            port = echo.udp_port if proto == "udp" else echo.tcp_port
            for inflight in (1, 32):
                runs = sorted(
                    (
                        run_load(
                            args.host,
                            port,
                            proto,
                            inflight,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            cpu=cpu,
                        )
                        for _ in range(max(1, args.repeat))
                    ),
                    key=lambda r: r.calls_per_s,
                )
                rows.append((f"echo {proto} n={inflight}", runs[len(runs) // 2]))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
