"""Shared fixtures for tests against real third-party peers (rpcbind, rpcinfo, tshark, ...).

Tools and root: outside CI a missing tool (or not being root) skips the test; with ``CI=true``
it fails it, because CI installs them and a silently skipped interop test proves nothing.

:class:`Netns` is a throw-away test host: a new network namespace (loopback only, so no packet
can leave the machine) and a new mount namespace with a private tmpfs on ``/run``, so that a
daemon such as rpcbind gets its own port 111, its own ``/run/rpcbind.sock`` and lock file and
never meets the host's.  A holder process keeps both namespaces alive; everything is run in
them with ``nsenter``.  Killing the holder and what was started in it tears the host down,
nothing named is left behind on the machine (unlike ``ip netns add``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI=true: interop prerequisites must be installed)")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """The path of tool ``name``; skip (fail in CI) when it is not installed."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        _missing(f"{name} is not installed")
    assert path is not None
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("needs root (network and mount namespaces)")


class Netns:
    """A private network + mount namespace with loopback up and a tmpfs on /run."""

    def __init__(self) -> None:
        require_root()
        unshare = require_tool("unshare")
        self._nsenter = require_tool("nsenter")
        require_tool("ip")
        setup = (
            "ip link set lo up && mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind "
            "&& echo ready && exec sleep 100000"
        )
        self._holder = subprocess.Popen(
            [unshare, "--net", "--mount", "--propagation", "private", "--", "sh", "-c", setup],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != "ready":
            err = self._holder.stderr.read() if self._holder.stderr else ""
            self._holder.kill()
            pytest.fail(f"could not create test namespaces: {line!r} {err!r}")
        self.pid = self._holder.pid
        self._procs: list[subprocess.Popen[str]] = []

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return [self._nsenter, "-t", str(self.pid), "-n", "-m", "--", *cmd]

    def run(self, cmd: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespaces; output captured as text."""
        return subprocess.run(
            self.argv(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )

    def popen(self, cmd: Sequence[str], **kw: object) -> subprocess.Popen[str]:
        """Start ``cmd`` inside the namespaces; it is killed at teardown if still running."""
        p: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            self.argv(cmd), text=True, **kw
        )
        self._procs.append(p)
        return p

    def python(self, script: str, *args: str, **kw: object) -> subprocess.Popen[str]:
        """Run a Python script (source text) with floatlock importable."""
        env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
        return self.popen([sys.executable, "-c", script, *args], env=env, **kw)

    def wait_until(self, cmd: Sequence[str], what: str, deadline: float = 30) -> None:
        """Poll ``cmd`` until it succeeds (start-up of a daemon); fail after ``deadline``."""
        end = time.monotonic() + deadline
        while True:
            r = self.run(cmd)
            if r.returncode == 0:
                return
            if time.monotonic() > end:
                pytest.fail(f"{what}: {r.stdout} {r.stderr}")
            time.sleep(0.2)

    def close(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._holder.kill()
        self._holder.wait()
        for stream in (self._holder.stdout, self._holder.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


MARKER_PORT = 9  # discard: nothing listens, the datagrams only mark a point in the capture
_MARKER = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    s.sendto(b"floatlock-capture-marker", ("127.0.0.1", {MARKER_PORT}))
    time.sleep(0.1)
"""


class Capture:
    """tshark capturing on the namespace's loopback into a file, until :meth:`stop`."""

    def __init__(self, ns: Netns, path: Path, bpf: str) -> None:
        self._tshark = require_tool("tshark")
        self.path = path
        self.log = ""
        self._ns = ns
        bpf = f"({bpf}) or udp port {MARKER_PORT}"
        self._proc = ns.popen(
            [self._tshark, "-q", "-i", "lo", "-w", str(path), "-f", bpf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        # "Capturing on 'Loopback: lo'" comes before the capture really runs; packets are
        # taken from "Capture started." on (its next line names the file).
        seen = []
        for line in self._proc.stderr:
            seen.append(line)
            if "Capture started" in line:
                break
        else:
            pytest.fail(f"tshark did not start: {''.join(seen)}")

    def stop(self) -> None:
        """Stop once every packet sent so far is in the file.

        dumpcap hands packets over in blocks, and the block being filled when it is told to
        stop is lost.  So a marker datagram (UDP port 9, part of the capture filter) is sent
        until it shows up in the file: everything sent before it is then there too.
        """
        sender = self._ns.python(_MARKER, stdout=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 60
            while not self.read(f"udp.dstport == {MARKER_PORT}"):
                if time.monotonic() > end:
                    pytest.fail("tshark never wrote the marker packet")
                time.sleep(0.2)
        finally:
            sender.kill()
            sender.wait()
        self._proc.send_signal(signal.SIGINT)
        assert self._proc.stderr is not None
        self.log = self._proc.stderr.read()
        self._proc.wait(30)
        self._proc.stderr.close()

    def read(self, display_filter: str, *decode_as: str, fields: Sequence[str] = ()) -> list[str]:
        """Lines of ``tshark -r`` for packets matching ``display_filter``."""
        # Test programs have no Wireshark dissector; decode their RPC headers anyway.
        cmd = [self._tshark, "-r", str(self.path), "-o", "rpc.dissect_unknown_programs:TRUE"]
        cmd += ["-Y", display_filter]
        for d in decode_as:
            cmd += ["-d", d]
        if fields:
            cmd += ["-T", "fields", *(x for f in fields for x in ("-e", f))]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines() if line.strip()]


@pytest.fixture
def capture_factory(netns: Netns, tmp_path: Path) -> Iterator[list[Capture]]:
    """A list to append :class:`Capture` objects to; the ones still running are stopped."""
    started: list[Capture] = []
    yield started
    for c in started:
        if c._proc.poll() is None:
            c.stop()
