"""The Linux kernel NFS client (kernel lockd + nfs-utils rpc.statd, in a VM) against the real
``floatlock serve``: mount, fcntl and flock locks through NLM, locks visible to the server's
kernel as OFD locks, and a lock blocked behind a process on the server woken through GRANTED.

The daemon runs with its embedded defaults except for the export directory and state (in the
test's tmp dir): its own portmapper on 111, NFS on 2049, lockd and statd on their ports, all
inside the VM's network namespace, where the guest reaches it at 198.18.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop.server_side import ofd_locks_on, wait_for_log
from tests.vm.guest import ClientVM
from tests.vm.test_vm_smoke import _require_vm

pytestmark = [pytest.mark.vm, pytest.mark.interop, pytest.mark.root]

SRC = str(Path(__file__).resolve().parents[2] / "src")

HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)   # a classic POSIX lock held by a process on the server
print("HELD", flush=True)
sys.stdin.readline()             # until the test says so
"""

SCRIPT = r"""
nfsmount "$FLVM_HOST_ADDR:{export}" /mnt "proto=tcp,noac,lookupcache=none"
echo "RESULT mount $?"
echo hello > /mnt/f && echo "RESULT create $?"
# Exclusive whole-file lock, held until the host has looked at its kernel locks.
locktool -n x /mnt/f lock:w:0:0 echo:LOCKED until:/mnt/go:60 close
# Shared locks from two processes at once, and byte ranges that do not overlap.
locktool -n s1 /mnt/f lock:r:0:0 sleep:1 &
locktool -n s2 /mnt/f lock:r:0:0 sleep:1
wait
locktool -n r1 /mnt/f lock:w:0:10 sleep:1 &
locktool -n r2 /mnt/f lock:w:10:10 sleep:1
wait
# A conflicting range is refused while held.
locktool -n c1 /mnt/f lock:w:0:100 sleep:2 &
sleep 1
locktool -n c2 /mnt/f lock:w:50:10
wait
flock -x /mnt/f -c true
echo "RESULT flock $?"
# Blocked behind a process on the server, woken when it lets go (NLM GRANTED).
locktool -T 60 -n b /mnt/held lockw:w:0:0 close
umount /mnt
echo "RESULT umount $?"
"""


@pytest.mark.timeout(300)
def test_linux_client_locks_through_floatlock_serve(tmp_path: Path) -> None:
    _require_vm()
    export = tmp_path / "export"
    export.mkdir()
    os.chmod(export, 0o1777)
    held = export / "held"
    held.write_text("server side\n")
    os.chmod(held, 0o666)
    cfg = tmp_path / "floatlock.toml"
    cfg.write_text(
        f'[server]\nstate_dir = "{tmp_path}/state"\nlog_level = "debug"\n'
        f'[[export]]\npath = "{export}"\nclients = "198.18.0.0/24(rw)"\n'
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    with ClientVM(workdir=tmp_path / "vm") as vm:
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            vm.netns_exec(
                [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                private_dirs=["/run"],
            )
            wait_for_log(log_path, "floatlock ready", "floatlock serve did not start")
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(held)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert holder.stdout is not None and holder.stdin is not None
                assert holder.stdout.readline().strip() == "HELD"
                vm.start(SCRIPT.format(export=export), timeout=240)
                vm.wait_for_output(r"^ECHO x LOCKED", timeout=180)
                # The client's NLM lock is an OFD lock in the server's kernel.
                ofd = ofd_locks_on(export / "f")
                (export / "go").touch()
                vm.wait_for_output(r"^BEGIN b\.1 op=lockw", timeout=120)
                time.sleep(1.0)  # the guest is now blocked behind the holder
                released = time.monotonic()
                holder.stdin.write("\n")
                holder.stdin.flush()
                holder.wait(10)
                res = vm.wait()
                woken = time.monotonic() - released
            finally:
                if holder.poll() is None:
                    holder.kill()
        info = res.describe(60) + "\n--- server log ---\n" + log_path.read_text()[-6000:]
        assert ofd and "WRITE" in ofd[0], f"no OFD lock on the server: {ofd}\n{info}"
        assert res.result("mount").rc == 0, info
        assert res.result("x.1").rc == 0, info  # exclusive granted
        assert res.result("s1.1").rc == 0 and res.result("s2.1").rc == 0, info  # shared
        assert res.result("r1.1").rc == 0 and res.result("r2.1").rc == 0, info  # ranges
        assert res.result("c1.1").rc == 0, info
        assert res.result("c2.1").rc != 0, info  # conflicting range refused
        assert res.result("flock").rc == 0, info
        assert res.result("b.1").rc == 0, info  # woken through GRANTED
        assert res.result("umount").rc == 0, info
        print(f"blocked client woken {woken * 1000:.0f} ms after the server process let go")
