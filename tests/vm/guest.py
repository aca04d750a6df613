"""Boot a real Linux NFSv3 client (kernel NFS client + lockd, nfs-utils rpc.statd) under qemu.

The VM is built by ``tests/vm/build.sh`` (kernel + initramfs under ``tests/vm/cache``). Each
boot gets a per-run script: a tiny cpio archive holding ``/flvm/env`` and ``/flvm/script.sh`` is
appended to the cached initramfs. The guest loads its modules, configures ``eth0``, starts
``rpcbind`` and ``rpc.statd``, prints ``@@FLVM READY@@``, runs the script between
``@@FLVM SCRIPT BEGIN@@`` and ``@@FLVM SCRIPT END rc=N@@`` and powers off. Everything it prints
goes to the serial console, which qemu writes to ``<workdir>/console.log``.

Networking: a network namespace holds a bridge ``flbr0`` carrying the host-side address
(198.18.0.1/24 by default, no default route) and one tap device per VM enslaved to it. Servers
under test run inside that namespace (``netns_exec``) and bind the host-side address.

Typical use::

    with ClientVM() as vm:
        server = vm.netns_exec(["python3", "-m", "floatlock", ...])
        vm.start(script, timeout=120)
        vm.wait_for_output(r"BEGIN a\\.2 ", timeout=60)   # the guest is now blocked
        ...                                               # release the lock on the host side
        res = vm.wait()
        assert res.result("a.2").rc == 0, res.describe()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("FLVM_CACHE", str(HERE / "cache")))
HOST_ADDR = "198.18.0.1"
GUEST_ADDR = "198.18.0.2"
PREFIX = 24
BRIDGE = "flbr0"

READY_RE = re.compile(r"@@FLVM READY ([0-9.]+)@@")
END_RE = re.compile(r"@@FLVM SCRIPT END rc=(-?\d+)@@")
RESULT_RE = re.compile(r"^RESULT (\S+) (-?\d+)(?: (.*))?$")
BEGIN_MARK = "@@FLVM SCRIPT BEGIN@@"

_counter = itertools.count()


class VMError(RuntimeError):
    """The VM or its network could not be set up."""


def missing_prerequisites(cache_dir: Path = DEFAULT_CACHE) -> list[str]:
    """What is missing to boot the VM (empty list: all there)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, tap devices)")
    for tool in ("ip", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (run tests/vm/build.sh)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    for name in ("vmlinuz", "initramfs.cpio", "stamp"):
        if not (cache_dir / name).is_file():
            missing.append(f"{cache_dir / name} (run tests/vm/build.sh)")
    return missing


def host_tool(name: str, cache_dir: Path = DEFAULT_CACHE) -> str:
    """Path of a Debian rpcbind / nfs-common binary for the host side (``rpcbind``,
    ``rpcinfo``, ``rpc.statd``, ``sm-notify``): the host's own, else the copy unpacked by
    build.sh. Raises VMError if neither exists."""
    for d in ("/usr/sbin", "/sbin", "/usr/bin"):
        p = Path(d) / name
        if p.is_file():
            return str(p)
    for pkg in ("rpcbind", "nfs-common"):
        for d in ("sbin", "usr/sbin", "usr/bin"):
            p = cache_dir / "x" / pkg / d / name
            if p.is_file():
                return str(p)
    raise VMError(f"{name} not found on the host nor in {cache_dir}/x")


def _run(cmd: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if res.returncode != 0:
        raise VMError(f"{shlex.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def newc_archive(files: Mapping[str, bytes], modes: Mapping[str, int] | None = None) -> bytes:
    """A cpio (newc) archive holding ``files`` (guest path -> content) and their parent
    directories; ``modes`` gives permission bits per path (default 0o644). The kernel unpacks
    it on top of the initramfs it is appended to."""
    out = bytearray()
    ino = itertools.count(0x7F000000)
    mtime = int(time.time())

    def add(name: str, mode: int, data: bytes) -> None:
        fields = (next(ino), mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out.extend(b"070701" + "".join(f"{v:08x}" for v in fields).encode())
        out.extend(name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    dirs: set[str] = set()
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    for d in sorted(dirs):
        add(d, 0o040755, b"")
    for path, data in files.items():
        perm = (modes or {}).get(path, 0o644)
        add(path.strip("/"), 0o100000 | perm, data)
    add("TRAILER!!!", 0, b"")
    out.extend(b"\0" * (-len(out) % 512))
    return bytes(out)


class Netns:
    """A network namespace with bridge ``flbr0`` carrying ``host_addr/prefix`` and no route
    out. Processes started with :meth:`exec` are killed by :meth:`close`."""

    def __init__(
        self, name: str | None = None, *, host_addr: str = HOST_ADDR, prefix: int = PREFIX
    ) -> None:
        self.name = name or f"flvm-{os.getpid()}-{next(_counter)}"
        self.host_addr = host_addr
        self.prefix = prefix
        self._procs: list[subprocess.Popen[bytes]] = []
        self._taps = itertools.count()
        self._created = False

    def __enter__(self) -> Netns:
        self.create()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        _run(["ip", "netns", "add", self.name])
        self._created = True
        try:
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", BRIDGE, "type", "bridge")
            self.ip("link", "set", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.ip("addr", "add", f"{self.host_addr}/{self.prefix}", "dev", BRIDGE)
            self.ip("link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise

    def ip(self, *args: str) -> str:
        """Run ``ip -n NS ARGS`` and return its output."""
        return _run(["ip", "-n", self.name, *args]).stdout

    def add_tap(self) -> str:
        """Create a tap device on the bridge and return its name."""
        tap = f"fltap{next(self._taps)}"
        self.ip("tuntap", "add", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", BRIDGE)
        self.ip("link", "set", tap, "up")
        return tap

    def wrap(
        self,
        cmd: Sequence[str],
        *,
        private_dirs: Sequence[str] = (),
        mkdirs: Sequence[str] = (),
    ) -> list[str]:
        """The argv that runs ``cmd`` inside the namespace. ``private_dirs`` get a fresh tmpfs
        in a private mount namespace (e.g. ``/run`` for rpcbind, ``/var/lib/nfs`` for statd);
        ``mkdirs`` are created afterwards (e.g. ``/run/rpcbind``)."""
        argv = ["ip", "netns", "exec", self.name]
        if not private_dirs and not mkdirs:
            return [*argv, *cmd]
        setup = [f"mount -t tmpfs flvm {shlex.quote(d)}" for d in private_dirs]
        setup += [f"mkdir -p {shlex.quote(d)}" for d in mkdirs]
        script = "set -e; " + "; ".join(setup) + '; exec "$@"'
        return [*argv, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *cmd]

    def exec(
        self,
        cmd: Sequence[str],
        *,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        private_dirs: Sequence[str] = (),
        mkdirs: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside the namespace, in its own process group; it is terminated by
        :meth:`close` (or :meth:`stop`)."""
        proc = subprocess.Popen(
            self.wrap(cmd, private_dirs=private_dirs, mkdirs=mkdirs),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def run(
        self, cmd: Sequence[str], *, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace to completion (bounded by ``timeout``)."""
        return subprocess.run(
            self.wrap(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = 3.0) -> int | None:
        """SIGTERM the process group of a process started by :meth:`exec`, SIGKILL after
        ``grace`` seconds; returns its exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)
        self._procs.clear()
        if self._created:
            subprocess.run(
                ["ip", "netns", "del", self.name], capture_output=True, timeout=30, check=False
            )
            self._created = False


@dataclass
class ResultLine:
    """One ``RESULT <name> <rc> [k=v | word]...`` line printed in the guest."""

    name: str
    rc: int
    fields: dict[str, str]
    words: list[str]
    raw: str


@dataclass
class GuestResult:
    console: str
    log_path: Path
    script_output: str
    script_rc: int | None
    results: list[ResultLine]
    timed_out: bool
    qemu_rc: int | None
    boot_seconds: float | None  # host clock: qemu started -> guest printed READY
    guest_ready_uptime: float | None  # guest clock (uptime) at READY
    total_seconds: float
    stderr: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.script_rc == 0

    def result(self, name: str) -> ResultLine:
        """The last RESULT line with this name (AssertionError with the log if absent)."""
        for r in reversed(self.results):
            if r.name == name:
                return r
        raise AssertionError(f"no RESULT {name!r} from the guest\n{self.describe()}")

    def grep(self, pattern: str) -> list[str]:
        """Lines of the script's output matching the regex ``pattern``."""
        rx = re.compile(pattern)
        return [ln for ln in self.script_output.splitlines() if rx.search(ln)]

    def describe(self, tail: int = 60) -> str:
        state = "timed out (qemu killed)" if self.timed_out else f"qemu exit {self.qemu_rc}"
        head = (
            f"client VM: {state}, script rc={self.script_rc}, boot={self.boot_seconds}s, "
            f"total={self.total_seconds:.1f}s\nserial log: {self.log_path}\n"
        )
        last = "\n".join(self.console.splitlines()[-tail:])
        err = f"\nqemu stderr:\n{self.stderr.strip()}" if self.stderr.strip() else ""
        return f"{head}--- last {tail} console lines ---\n{last}{err}"

    def check(self) -> GuestResult:
        """Raise AssertionError (with the serial log path) unless the script exited 0."""
        if not self.ok:
            raise AssertionError(self.describe())
        return self


def parse_results(text: str) -> list[ResultLine]:
    out: list[ResultLine] = []
    for line in text.splitlines():
        m = RESULT_RE.match(line.strip())
        if not m:
            continue
        rest = (m.group(3) or "").split()
        fields = dict(w.split("=", 1) for w in rest if "=" in w)
        words = [w for w in rest if "=" not in w]
        out.append(ResultLine(m.group(1), int(m.group(2)), fields, words, line.strip()))
    return out


class ClientVM:
    """A Linux NFSv3 client VM (qemu TCG) on a tap device in a network namespace.

    ``netns``: share an existing :class:`Netns` (several VMs, or servers started by the test);
    by default the VM creates and deletes its own. ``hosts`` lines are appended to the guest's
    /etc/hosts; ``files`` (guest path -> bytes) are added to the guest; ``statd_args`` are
    rpc.statd's arguments (default ``"--no-notify"``; ``"--no-notify -F -d"`` puts statd's log
    on the console; ``dump_syslog`` prints the guest's syslog after the script)."""

    def __init__(
        self,
        netns: Netns | None = None,
        *,
        cache_dir: Path = DEFAULT_CACHE,
        workdir: Path | None = None,
        guest_addr: str = GUEST_ADDR,
        hostname: str = "flvm-client",
        memory_mb: int = 768,
        statd_args: str = "--no-notify",
        hosts: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
        kernel_args: str = "",
        dump_syslog: bool = False,
        mac: str | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self._own_netns = netns is None
        self.netns = netns if netns is not None else Netns()
        self.workdir = workdir
        self.guest_addr = guest_addr
        self.hostname = hostname
        self.memory_mb = memory_mb
        self.statd_args = statd_args
        self.hosts = list(hosts)
        self.files = dict(files or {})
        self.kernel_args = kernel_args
        self.dump_syslog = dump_syslog
        last = int(guest_addr.rsplit(".", 1)[-1]) if "." in guest_addr else 2
        self.mac = mac or f"52:54:00:f1:00:{last:02x}"
        self.tap: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._stderr_path: Path | None = None
        self._initrd: Path | None = None
        self._t0 = 0.0
        self._deadline = 0.0
        self._ready_at: float | None = None
        self._entered = False

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> ClientVM:
        missing = missing_prerequisites(self.cache_dir)
        if missing:
            raise VMError("client VM prerequisites missing: " + "; ".join(missing))
        if self._own_netns:
            self.netns.create()
        self._entered = True
        try:
            self.tap = self.netns.add_tap()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.kill()
        if self._own_netns:
            self.netns.close()
        elif self.tap is not None:
            subprocess.run(
                ["ip", "-n", self.netns.name, "link", "del", self.tap],
                capture_output=True,
                timeout=30,
                check=False,
            )
        self.tap = None

    # -- host side ------------------------------------------------------------------------
    def netns_exec(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a host-side process (e.g. the server under test) inside the namespace; see
        :meth:`Netns.exec` for the keyword arguments."""
        return self.netns.exec(cmd, **kw)

    def netns_run(
        self, cmd: Sequence[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return self.netns.run(cmd, timeout=timeout)

    # -- guest ----------------------------------------------------------------------------
    def _env_file(self) -> bytes:
        env = {
            "FLVM_GUEST_ADDR": self.guest_addr,
            "FLVM_PREFIX": str(self.netns.prefix),
            "FLVM_HOST_ADDR": self.netns.host_addr,
            "FLVM_HOSTNAME": self.hostname,
            "FLVM_STATD_ARGS": self.statd_args,
            "FLVM_HOSTS": "\n".join(self.hosts),
            "FLVM_DUMP_SYSLOG": "1" if self.dump_syslog else "",
        }
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()

    def start(self, script: str, *, timeout: float = 180.0) -> None:
        """Boot the VM with ``script`` (busybox sh, run after rpcbind and rpc.statd are up)
        and return at once; the VM is killed if it has not powered off ``timeout`` seconds
        from now."""
        if not self._entered or self.tap is None:
            raise VMError("use ClientVM as a context manager")
        if self.proc is not None and self.proc.poll() is None:
            raise VMError("the VM is already running")
        wd = self.workdir or Path(tempfile.mkdtemp(prefix=f"flvm-{self.netns.name}-"))
        wd.mkdir(parents=True, exist_ok=True)
        self.workdir = wd
        runno = len(list(wd.glob("console*.log")))
        suffix = "" if runno == 0 else f"-{runno}"
        self.log_path = wd / f"console{suffix}.log"
        self._stderr_path = wd / f"qemu-stderr{suffix}.log"
        (wd / f"script{suffix}.sh").write_text(script)

        extra = {"flvm/env": self._env_file(), "flvm/script.sh": script.encode()}
        modes = {"flvm/script.sh": 0o755}
        for path, data in self.files.items():
            extra[path.lstrip("/")] = data
            modes[path.lstrip("/")] = 0o755
        self._initrd = wd / f"initrd{suffix}.cpio"
        shutil.copyfile(self.cache_dir / "initramfs.cpio", self._initrd)
        with self._initrd.open("ab") as f:
            f.write(newc_archive(extra, modes))

        cmdline = (
            "console=ttyS0,115200 panic=-1 quiet loglevel=4 rdinit=/init "
            f"random.trust_cpu=on mitigations=off {self.kernel_args}"
        ).strip()
        qemu = [
            "qemu-system-x86_64",
            "-accel", "tcg",
            "-cpu", "max",
            "-m", str(self.memory_mb),
            "-smp", "1",
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-serial", "stdio",
            "-kernel", str(self.cache_dir / "vmlinuz"),
            "-initrd", str(self._initrd),
            "-append", cmdline,
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},romfile=",
        ]  # fmt: skip
        self._ready_at = None
        self._t0 = time.monotonic()
        self._deadline = self._t0 + timeout
        with self.log_path.open("wb") as out, self._stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns.name, *qemu],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def output(self) -> str:
        """The console output so far (``\\r`` removed)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes().decode("utf-8", "replace").replace("\r", "")
        if self._ready_at is None and READY_RE.search(text):
            self._ready_at = time.monotonic()
        return text

    def wait_for_output(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Poll the console until the regex ``pattern`` (multiline) matches; AssertionError
        with the log path if qemu exits or ``timeout`` passes first."""
        rx = re.compile(pattern, re.MULTILINE)
        end = min(time.monotonic() + timeout, self._deadline)
        while True:
            m = rx.search(self.output())
            if m:
                return m
            if self.proc is None or self.proc.poll() is not None or time.monotonic() >= end:
                raise AssertionError(
                    f"guest never printed /{pattern}/ (serial log: {self.log_path})\n"
                    + "\n".join(self.output().splitlines()[-40:])
                )
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> GuestResult:
        """Wait until the guest powers off (or the deadline passes: then qemu is killed) and
        return what it printed."""
        if self.proc is None or self.log_path is None:
            raise VMError("start() was not called")
        end = self._deadline if timeout is None else time.monotonic() + timeout
        timed_out = False
        while self.proc.poll() is None:
            self.output()  # notes when READY appears
            if time.monotonic() >= end:
                timed_out = True
                self.kill()
                break
            time.sleep(0.05)
        total = time.monotonic() - self._t0
        console = self.output()
        if self._initrd is not None:
            self._initrd.unlink(missing_ok=True)
        stderr = self._stderr_path.read_text(errors="replace") if self._stderr_path else ""
        script_output = ""
        if BEGIN_MARK in console:
            script_output = console.split(BEGIN_MARK, 1)[1]
            end_m = END_RE.search(script_output)
            if end_m:
                script_output = script_output[: end_m.start()]
        end_m = END_RE.search(console)
        ready = READY_RE.search(console)
        return GuestResult(
            console=console,
            log_path=self.log_path,
            script_output=script_output.lstrip("\n"),
            script_rc=int(end_m.group(1)) if end_m else None,
            results=parse_results(script_output),
            timed_out=timed_out,
            qemu_rc=self.proc.returncode,
            boot_seconds=None if self._ready_at is None else round(self._ready_at - self._t0, 2),
            guest_ready_uptime=float(ready.group(1)) if ready else None,
            total_seconds=total,
            stderr=stderr,
            lines=console.splitlines(),
        )

    def run(self, script: str, timeout: float = 180.0) -> GuestResult:
        """Boot, run ``script`` in the guest, wait for power-off; see :meth:`start`."""
        self.start(script, timeout=timeout)
        return self.wait()

    def kill(self) -> None:
        """Kill qemu now (no-op if it is not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
