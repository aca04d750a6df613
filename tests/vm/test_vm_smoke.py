"""Smoke test of the client VM: boots it and talks to a real rpcbind in the namespace.

Needs root and the artifacts of tests/vm/build.sh. Outside CI a missing prerequisite skips
these tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import (
    DEFAULT_CACHE,
    ClientVM,
    Netns,
    VMError,
    host_tool,
    missing_prerequisites,
    newc_archive,
    parse_results,
)

pytestmark = [pytest.mark.vm, pytest.mark.interop]

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require_vm() -> None:
    missing = missing_prerequisites(DEFAULT_CACHE)
    if missing:
        msg = "client VM unavailable: " + "; ".join(missing)
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def _rpc_lines(text: str, prefix: str) -> set[tuple[int, int, str, int]]:
    """(program, version, proto, port) from `rpcinfo -p` lines tagged with ``prefix``."""
    out: set[tuple[int, int, str, int]] = set()
    for line in text.splitlines():
        m = re.match(rf"^{prefix}\s+(\d+)\s+(\d+)\s+(tcp|udp)\s+(\d+)", line)
        if m:
            out.add((int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))))
    return out


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[ClientVM]:
    _require_vm()
    with ClientVM(workdir=tmp_path / "vm") as client:
        yield client


@pytest.fixture
def host_rpcbind(vm: ClientVM, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's rpcbind serving port 111 of the VM's namespace, with a private /run so it
    never touches the host's /run/rpcbind or /run/rpcbind.sock."""
    try:
        rpcbind = host_tool("rpcbind")
        rpcinfo = host_tool("rpcinfo")
    except VMError as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))
    log = (tmp_path / "rpcbind.log").open("wb")
    proc = vm.netns_exec(
        [rpcbind, "-w", "-f"],
        stdout=log,
        stderr=subprocess.STDOUT,
        private_dirs=["/run"],
        mkdirs=["/run/rpcbind"],
    )
    deadline = time.monotonic() + 15
    while True:
        probe = vm.netns_run([rpcinfo, "-p", vm.netns.host_addr], timeout=10)
        if probe.returncode == 0 and " 100000 " in probe.stdout:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail(
                f"host rpcbind did not come up (exit {proc.poll()}): "
                f"{(tmp_path / 'rpcbind.log').read_text()} {probe.stderr}"
            )
        time.sleep(0.1)
    yield proc
    Netns.stop(proc)
    log.close()


SMOKE_SCRIPT = r"""
rpcinfo -p "$FLVM_HOST_ADDR" > /tmp/host.txt 2>&1
echo "RESULT host_rpcinfo $?"
sed 's/^/HOSTRPC /' /tmp/host.txt
rpcinfo -p 127.0.0.1 > /tmp/local.txt 2>&1
echo "RESULT local_rpcinfo $?"
sed 's/^/LOCALRPC /' /tmp/local.txt
result nfs_fs grep -qw nfs /proc/filesystems
result lockd_mod test -d /sys/module/lockd
echo "HOSTNAME $(hostname)"
# Two processes contend for a POSIX lock on a local file (exercises the static lock tool).
locktool -n a /tmp/f lock:w:0:10 touch:/tmp/held until:/tmp/done:30 &
locktool -n b /tmp/f until:/tmp/held:30 lock:w:5:1 test:w:0:0 flock:ex touch:/tmp/done
wait
"""


@pytest.mark.timeout(240)
def test_guest_reaches_host_rpcbind_and_runs_statd(
    vm: ClientVM, host_rpcbind: subprocess.Popen[bytes]
) -> None:
    t0 = time.monotonic()
    res = vm.run(SMOKE_SCRIPT, timeout=180)
    elapsed = time.monotonic() - t0
    res.check()
    info = res.describe(20)

    # The guest reached the test's rpcbind at 198.18.0.1 over the tap.
    assert res.result("host_rpcinfo").rc == 0, info
    host = _rpc_lines(res.script_output, "HOSTRPC")
    assert (100000, 2, "udp", 111) in host, info
    assert (100000, 4, "tcp", 111) in host, info
    assert host_rpcbind.poll() is None, "host rpcbind died during the test"

    # The guest's own rpcbind lists its rpc.statd (NSM, 100024) on both transports.
    assert res.result("local_rpcinfo").rc == 0, info
    local = _rpc_lines(res.script_output, "LOCALRPC")
    assert {(p, proto) for p, _, proto, _ in local} >= {(100024, "udp"), (100024, "tcp")}, info
    # What the guest sees of the host is not the guest's own table (no statd there).
    assert all(p != 100024 for p, *_ in host), info

    assert res.result("nfs_fs").rc == 0, info
    assert res.result("lockd_mod").rc == 0, info
    assert f"HOSTNAME {vm.hostname}" in res.script_output, info

    # locktool: b is refused the range a holds and sees a as the holder.
    assert res.result("a.1").rc == 0, info
    denied = res.result("b.2")
    assert denied.fields["err"] in ("EAGAIN", "EACCES"), info
    conflict = res.result("b.3")
    assert conflict.fields["conflict"] == "w", info
    assert (conflict.fields["cstart"], conflict.fields["clen"]) == ("0", "10"), info
    assert res.result("b.4").rc == 0, info  # flock() is independent of POSIX locks locally
    assert res.result("a.3").rc == 0, info

    assert res.boot_seconds is not None and res.boot_seconds < 60, info
    print(
        f"\nVM boot-to-script {res.boot_seconds:.2f}s (guest uptime {res.guest_ready_uptime}s),"
        f" run {res.total_seconds:.2f}s, test body {elapsed:.2f}s"
    )


@pytest.mark.timeout(120)
def test_start_wait_and_timeout_kill(vm: ClientVM) -> None:
    """start()/wait_for_output() see the guest mid-script; a hung guest is killed."""
    vm.start(
        'mark waiting; locktool -n s /tmp/x until:/never; echo "RESULT unreachable 0"', timeout=60
    )
    vm.wait_for_output(r"^BEGIN s\.1 op=until", timeout=50)
    res = vm.wait(timeout=0.5)
    assert res.timed_out, res.describe()
    assert res.script_rc is None
    assert "MARK waiting" in res.script_output
    assert [r.name for r in res.results] == [], res.describe()
    assert res.log_path.is_file()
    assert str(res.log_path) in res.describe()


def test_newc_archive_and_result_parsing() -> None:
    """Pure-Python parts: the appended cpio and the RESULT parser (no VM needed)."""
    data = newc_archive({"flvm/script.sh": b"echo hi\n"}, {"flvm/script.sh": 0o755})
    assert len(data) % 512 == 0
    assert data.startswith(b"070701")
    # directory entry first, then the file, then the trailer
    names = re.findall(rb"070701[0-9a-f]{104}([^\0]+)\0", data)
    assert names == [b"flvm", b"flvm/script.sh", b"TRAILER!!!"]
    mode = int(data[6 + 8 : 6 + 16], 16)
    assert mode == 0o040755
    parsed = parse_results("noise\nRESULT a.1 11 op=lock err=EAGAIN extra\r\nRESULT x\n")
    assert len(parsed) == 1
    assert parsed[0].name == "a.1" and parsed[0].rc == 11
    assert parsed[0].fields == {"op": "lock", "err": "EAGAIN"}
    assert parsed[0].words == ["extra"]
