"""NFS-Ganesha 4.3 as the comparison peer: started in its own network namespace, measured.

Requirements (this module installs nothing): root, ``ip``, ``unshare``, ``nsenter``,
``rpcbind``, ``rpc.statd`` and ``rpcinfo`` (Debian packages rpcbind, nfs-common), and
NFS-Ganesha with its VFS backend::

    apt-get install -y nfs-ganesha nfs-ganesha-vfs

Theory of operation
-------------------
:func:`ganesha` is a context manager that builds a private little host and tears it down:

1. a network namespace (``ip netns add``; only ``lo``, no route out) so Ganesha, rpcbind and
   statd get their own ports 111, 2049, 20048 and 32803 on 127.0.0.1;
2. a *holder* process in that namespace with a private mount namespace (``unshare -m``): a
   tmpfs on ``/run`` (rpcbind's socket and lock files, nothing shared with the host or other
   namespaces) and a bind mount of a fresh temporary directory on ``/var/lib/nfs`` (statd's
   ``sm``/``sm.bak``, Ganesha's NFSv4 recovery directory);
3. ``rpcbind -w -f``, then ``rpc.statd --no-notify -F`` (Ganesha's NLM needs statd to be
   registered), then ``ganesha.nfsd -F`` with a generated config (NFSv3 + NLM, a VFS export
   of ``export_dir``, logging at WARN, a short NFSv4 grace period, which Ganesha applies to
   NLM too), all started with ``nsenter`` into the holder's namespaces;
4. readiness: ``rpcinfo -p`` inside the namespace until NFS v3, MOUNT v3 and NLM v4 are
   registered on UDP and TCP (the ports are read from there), then a probe NLM LOCK on a file
   of the export, repeated until GRANTED (not DENIED_GRACE_PERIOD), then UNLOCK.  No fixed
   sleeps.

On exit the daemons get SIGTERM (SIGKILL after a few seconds), the namespace is deleted and
the temporary directory removed (kept, with Ganesha's log, when start-up failed).

The yielded :class:`GaneshaServer` gives ``host`` and ``ports``, ``run_in_ns(cmd)``, and
``entered()``, which moves *the calling thread* into the namespace (``setns``): sockets and
subprocesses created there (``bench.loadgen.run_load``, ``echo_server``,
``bench.nfs_client``) live in the namespace.

``python -m bench.ganesha`` runs the NLM benchmark: LOCK+UNLOCK pairs (``bench.nlm_calls``)
driven by rpcload inside the namespace, UDP and TCP, 1 and 32 in flight, next to the C echo
responder in the same namespace and the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, echo_server, format_table, read_line, run_load
from bench.nfs_client import NfsClient, RpcConn
from bench.nlm_calls import (
    SlotLock,
    check_unlocked,
    lock_unlock_sequences,
    verify_sequences,
    wait_until_granted,
)

__all__ = [
    "GaneshaError",
    "GaneshaPorts",
    "GaneshaServer",
    "available",
    "ganesha",
    "netns_entered",
]

NFS_PROG, MOUNT_PROG, NLM_PROG, STATD_PROG = 100003, 100005, 100021, 100024
CLONE_NEWNET = 0x40000000
PROBE_FILE = ".floatlock-probe"
PROBE_HOST = "floatlock-probe"
DAEMON_STOP_TIMEOUT = 5.0

REQUIRED_TOOLS = ("ganesha.nfsd", "rpcbind", "rpc.statd", "rpcinfo", "ip", "unshare", "nsenter")


class GaneshaError(RuntimeError):
    """Ganesha or one of its helpers failed to start."""


def available() -> str | None:
    """None when Ganesha can be run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install -y nfs-ganesha nfs-ganesha-vfs)"
    return None


# -- network namespaces ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def netns_entered(name: str) -> Iterator[None]:
    """Run the calling thread in network namespace ``name`` (``/run/netns/NAME``).

    Only this thread moves; sockets it creates and processes it starts stay in the namespace
    for their lifetime, wherever they are used later.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


# -- the server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GaneshaPorts:
    """Ports registered with the namespace's rpcbind (same number on UDP and TCP)."""

    nfs: int
    mount: int
    nlm: int
    statd: int


@dataclass(slots=True)
class GaneshaServer:
    netns: str
    host: str
    ports: GaneshaPorts
    export_dir: Path
    workdir: Path
    holder_pid: int
    grace_waited: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.workdir / "ganesha.log"

    def ns_prefix(self) -> list[str]:
        """A command prefix that runs in the server's network and mount namespaces."""
        return ["nsenter", "-t", str(self.holder_pid), "-n", "-m"]

    def run_in_ns(
        self, cmd: Sequence[str], *, timeout: float = 30.0, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd inside the namespaces (bounded by timeout), capturing text output."""
        return subprocess.run(
            [*self.ns_prefix(), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            **kw,
        )

    def entered(self) -> Any:
        """Context manager: the calling thread in the server's network namespace."""
        return netns_entered(self.netns)

    def nfs_client(self, proto: str = "tcp") -> NfsClient:
        """An NfsClient of this server; call it (and its mount()) inside entered()."""
        return NfsClient(
            self.host,
            proto="tcp" if proto == "tcp" else "udp",
            nfs_port=self.ports.nfs,
            mount_port=self.ports.mount,
        )

    def export_path(self) -> str:
        return str(self.export_dir)


def ganesha_config(export_dir: Path, *, grace: int, log_level: str, shared: bool = False) -> str:
    """The ganesha.conf: NFSv3 + NLM on fixed ports, one VFS export, short grace, quiet log.

    ``shared``: Ganesha's metadata cache configured for a directory that others change too
    (local processes, other nodes of a cluster filesystem): cached attributes are never
    trusted (``Attr_Expiration_Time = 0`` in the export; ganesha-export-config(8): how long
    attributes, and the directory entries that lead to them, are trusted, 60 s by default).
    That one setting is enough for Ganesha to see a size written, a name removed or created
    beside it (``tests/integration/test_bench_ganesha.py``), and it is the
    least it takes: the directory-entry cache stays on (ganesha-cache-config(8): "Dir_Chunk
    should always be enabled"; ceph-ansible's configuration for a CephFS gateway turns it
    off as well, which the test shows is not needed).  floatlock never caches a name or an
    attribute: the kernel is asked every time.
    """
    path = str(export_dir)
    if '"' in path:
        raise ValueError("export path may not contain a double quote")
    attr_expiry = "    Attr_Expiration_Time = 0;\n" if shared else ""
    return f"""\
NFS_CORE_PARAM {{
    Protocols = 3;
    Enable_NLM = true;
    Enable_RQUOTA = false;
    NFS_Port = 2049;
    MNT_Port = 20048;
    NLM_Port = 32803;
}}
NFSV4 {{
    Grace_Period = {grace};
    Lease_Lifetime = {grace};
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
LOG {{
    Default_Log_Level = {log_level};
}}
EXPORT {{
    Export_Id = 1;
    Path = "{path}";
    Pseudo = "{path}";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = UDP, TCP;
    SecType = sys;
{attr_expiry}    FSAL {{
        Name = VFS;
    }}
}}
"""


HOLDER_SCRIPT = """\
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 floatlock-run /run
mkdir -p /run/rpcbind /run/ganesha
mkdir -p /var/lib/nfs
mount --bind "$1" /var/lib/nfs
echo ready
exec sleep 86400
"""


def _parse_rpcinfo(text: str) -> dict[tuple[int, int, str], int]:
    """``rpcinfo -p`` lines "program vers proto port [service]" -> {(prog, vers, proto): port}."""
    out: dict[tuple[int, int, str], int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0].isdigit():
            out[(int(words[0]), int(words[1]), words[2])] = int(words[3])
    return out


def _stop(proc: subprocess.Popen[bytes], timeout: float = DAEMON_STOP_TIMEOUT) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextmanager
def ganesha(
    export_dir: Path,
    *,
    netns: str | None = None,
    grace: int = 3,
    log_level: str = "WARN",
    start_timeout: float = 60.0,
    shared: bool = False,
) -> Iterator[GaneshaServer]:
    """Run NFS-Ganesha (NFSv3 + NLM v4) exporting export_dir, in a fresh network namespace.

    Args:
        export_dir: an existing directory to export read-write (no root squash).
        netns: the namespace's name (default ``flgan-<pid>``); it must not exist yet.
        grace: Ganesha's NFSv4 Grace_Period and Lease_Lifetime in seconds (NLM honours it).
        log_level: Ganesha's Default_Log_Level (WARN keeps logging off the hot path).
        start_timeout: bound on start-up, including the wait for the end of grace.
        shared: configure Ganesha's metadata cache for a shared directory
            (:func:`ganesha_config`).

    Yields a :class:`GaneshaServer` once a probe LOCK has been granted.
    """
    reason = available()
    if reason is not None:
        raise GaneshaError(reason)
    export_dir = Path(export_dir).resolve()
    if not export_dir.is_dir():
        raise GaneshaError(f"{export_dir} is not a directory")
    name = netns or f"flgan-{os.getpid()}"
    deadline = time.monotonic() + start_timeout
    workdir = Path(tempfile.mkdtemp(prefix="floatlock-ganesha-"))
    state = workdir / "var-lib-nfs"
    for sub in ("sm", "sm.bak", "ganesha"):
        (state / sub).mkdir(parents=True)
    conf = workdir / "ganesha.conf"
    conf.write_text(ganesha_config(export_dir, grace=grace, log_level=log_level, shared=shared))

    procs: list[subprocess.Popen[bytes]] = []
    ns_created = False
    ok = False
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
        ns_created = True
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        holder = subprocess.Popen(
            [
                *("ip", "netns", "exec", name, "unshare", "-m"),
                *("sh", "-c", HOLDER_SCRIPT, "sh", str(state)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(holder)
        assert holder.stdout is not None
        line = read_line(holder.stdout.fileno(), 10.0)
        if line != "ready":
            err = (
                holder.stderr.read().decode() if holder.poll() is not None and holder.stderr else ""
            )
            raise GaneshaError(f"namespace holder failed: {line!r} {err}")
        server = GaneshaServer(
            name, "127.0.0.1", GaneshaPorts(0, 0, 0, 0), export_dir, workdir, holder.pid
        )

        def start(tag: str, cmd: list[str]) -> subprocess.Popen[bytes]:
            with open(workdir / f"{tag}.out", "wb") as out:
                proc = subprocess.Popen(
                    [*server.ns_prefix(), *cmd], stdout=out, stderr=subprocess.STDOUT
                )
            procs.append(proc)
            server.pids[tag] = proc.pid
            return proc

        def registered(need: Sequence[tuple[int, int, str]], what: str) -> dict[Any, int]:
            while True:
                for tag, proc in zip(server.pids, procs[1:], strict=True):
                    if proc.poll() is not None:
                        raise GaneshaError(f"{tag} exited with {proc.returncode}")
                res = server.run_in_ns(["rpcinfo", "-p", "127.0.0.1"], check=False, timeout=10)
                table = _parse_rpcinfo(res.stdout) if res.returncode == 0 else {}
                if all(k in table for k in need):
                    return table
                if time.monotonic() > deadline:
                    raise GaneshaError(f"{what} not registered with rpcbind in time")
                time.sleep(0.05)

        start("rpcbind", ["rpcbind", "-w", "-f"])
        registered([(100000, 2, "udp")], "rpcbind")
        start("statd", ["rpc.statd", "--no-notify", "-F"])
        registered([(STATD_PROG, 1, "udp")], "rpc.statd")
        start(
            "ganesha",
            [
                *("ganesha.nfsd", "-F", "-f", str(conf)),
                *("-L", str(server.log_path), "-p", str(workdir / "ganesha.pid")),
            ],
        )
        need = [
            (p, v, t)
            for p, v in ((NFS_PROG, 3), (MOUNT_PROG, 3), (NLM_PROG, 4))
            for t in ("udp", "tcp")
        ]
        table = registered(need, "ganesha.nfsd")
        server.ports = GaneshaPorts(
            nfs=table[(NFS_PROG, 3, "tcp")],
            mount=table[(MOUNT_PROG, 3, "tcp")],
            nlm=table[(NLM_PROG, 4, "tcp")],
            statd=table[(STATD_PROG, 1, "udp")],
        )
        with server.entered():
            with server.nfs_client() as nfs:
                fh = nfs.create(nfs.mount(server.export_path()), PROBE_FILE)
            with RpcConn(server.host, server.ports.nlm, "udp", timeout=1.0) as conn:
                probe = SlotLock(fh, 1, f"1@{PROBE_HOST}".encode(), 0, 0)
                server.grace_waited = wait_until_granted(
                    conn, probe, hostname=PROBE_HOST, timeout=max(1.0, deadline - time.monotonic())
                )
        ok = True
        yield server
    finally:
        for proc in reversed(procs):
            _stop(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if ns_created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            sys.stderr.write(f"bench.ganesha: start-up failed; config and logs kept in {workdir}\n")


# -- the benchmark -------------------------------------------------------------------------


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The run with the median calls/s."""
    return sorted(runs, key=lambda r: r.calls_per_s)[len(runs) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    """NLM LOCK+UNLOCK pairs against NFS-Ganesha, beside the C echo, inside one namespace."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; median shown")
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--proto", nargs="+", default=["udp", "tcp"], choices=["udp", "tcp"])
    parser.add_argument("--export", type=Path, help="directory to export (default: a temp dir)")
    parser.add_argument("--version", type=int, default=4, choices=[1, 3, 4], help="NLM version")
    parser.add_argument(
        "--null", action="store_true", help="also time NLM NULL calls (Ganesha's RPC layer alone)"
    )
    args = parser.parse_args(argv)

    reason = available()
    if reason is not None:
        print(f"cannot run NFS-Ganesha: {reason}")
        return 2
    hostname = socket.gethostname()
    nslots = max(args.inflight)
    rows: list[tuple[str, LoadResult]] = []
    notes: list[str] = []
    with ExitStack() as stack:
        export = args.export
        if export is None:
            export = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flgan-exp-")))
        t0 = time.monotonic()
        server = stack.enter_context(ganesha(export))
        notes.append(
            f"ganesha up in {time.monotonic() - t0:.1f} s (grace wait {server.grace_waited:.1f} s)"
            f", ports {server.ports}"
        )
        stack.enter_context(server.entered())
        with server.nfs_client() as nfs:
            root = nfs.mount(server.export_path())
            fhs = [nfs.create(root, f"lock{i:03d}") for i in range(nslots)]
        # The exact bytes rpcload will send, once each: every LOCK and UNLOCK must be GRANTED.
        seqs_all = lock_unlock_sequences(fhs, args.version, hostname=hostname)
        stats = verify_sequences(server.host, server.ports.nlm, seqs_all)
        if any(stats):
            raise GaneshaError(f"pre-run check: NLM statuses {stats} (0 = GRANTED)")
        notes.append(f"pre-run check: {len(stats)} LOCK/UNLOCK calls all GRANTED")
        echo = stack.enter_context(echo_server("127.0.0.1"))
        results: dict[str, list[LoadResult]] = {}
        order: list[str] = []
        for _ in range(max(1, args.repeat)):
            for proto in args.proto:
                for n in args.inflight:
                    seqs = lock_unlock_sequences(fhs[:n], args.version, hostname=hostname)
                    label = f"ganesha nlm{args.version} {proto} n={n}"
                    res = run_load(
                        server.host,
                        server.ports.nlm,
                        proto,
                        n,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        sequences=seqs,
                    )
                    results.setdefault(label, []).append(res)
                    with RpcConn(server.host, server.ports.nlm, "udp") as conn:
                        left = check_unlocked(conn, fhs[:n], version=args.version)
                    notes.append(
                        f"{label}: errors {res.errors}, timeouts {res.timeouts}; TEST after the"
                        f" run: {len(left)} of {n} file(s) still locked"
                    )
                    if args.null:
                        nlabel = f"ganesha nlm{args.version} NULL {proto} n={n}"
                        nres = run_load(
                            server.host,
                            server.ports.nlm,
                            proto,
                            n,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            prog=100021,
                            vers=args.version,
                        )
                        results.setdefault(nlabel, []).append(nres)
                        if nlabel not in order:
                            order.append(nlabel)
                    elabel = f"echo {proto} n={n}"
                    eport = echo.udp_port if proto == "udp" else echo.tcp_port
                    eres = run_load(
                        "127.0.0.1", eport, proto, n, seconds=args.seconds, warmup=args.warmup
                    )
                    results.setdefault(elabel, []).append(eres)
                    for lbl in (label, elabel):
                        if lbl not in order:
                            order.append(lbl)
        for lbl in order:
            rows.append((lbl, median_run(results[lbl])))
    print(format_table(rows))
    for lbl in order:
        if lbl.startswith("ganesha") and "NULL" not in lbl:
            cps = [r.calls_per_s for r in results[lbl]]
            echo_lbl = "echo " + lbl.split(" ", 2)[2]
            ratio = median_run(results[lbl]).calls_per_s / median_run(results[echo_lbl]).calls_per_s
            print(
                f"{lbl}: pairs/s {median_run(results[lbl]).sequences_per_s:,.0f}; calls/s runs "
                f"{', '.join(f'{c:,.0f}' for c in cps)} (median {statistics.median(cps):,.0f});"
                f" {ratio:.3f} x echo"
            )
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
