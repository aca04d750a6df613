"""End-to-end check of the client VM as an NFSv3 + NLM client, against NFS-Ganesha.

This validates the VM itself (kernel NFS client, lockd, statd, mount.nfs, locktool) with a
stock server, so that failures in floatlock's own interop tests can be told apart from a
broken VM. It runs only where Debian's nfs-ganesha and nfs-ganesha-vfs are installed (the
VM build does not install them); the VM prerequisites follow the smoke test's rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import ClientVM, host_tool
from .test_vm_smoke import _require_vm

pytestmark = [pytest.mark.vm, pytest.mark.interop]

GANESHA_CONF = """
NFS_CORE_PARAM {{ Protocols = 3; Enable_NLM = true; NFS_Port = 2049; MNT_Port = 20048;
                 NLM_Port = 32803; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {export}; Access_Type = RW;
         Squash = No_Root_Squash; Protocols = 3; Transports = UDP, TCP; SecType = sys;
         FSAL {{ Name = VFS; }} }}
"""


@pytest.fixture
def ganesha_vm(tmp_path: Path) -> Iterator[tuple[ClientVM, Path]]:
    _require_vm()
    ganesha = shutil.which("ganesha.nfsd")
    if ganesha is None or not Path("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists():
        if os.environ.get("CI") == "true":  # CI installs them: a skip there would hide a gap
            pytest.fail("nfs-ganesha / nfs-ganesha-vfs not installed")
        pytest.skip("nfs-ganesha / nfs-ganesha-vfs not installed")
    export = tmp_path / "export"
    export.mkdir()
    conf = tmp_path / "ganesha.conf"
    conf.write_text(GANESHA_CONF.format(export=export))
    rpcbind, statd, rpcinfo = host_tool("rpcbind"), host_tool("rpc.statd"), host_tool("rpcinfo")
    server_sh = (
        f"{rpcbind} -w -f & sleep 0.3; "
        "mkdir -p /var/lib/nfs/sm /var/lib/nfs/sm.bak; "
        f"{statd} --no-notify -F & sleep 0.3; "
        f"exec {ganesha} -F -f {conf} -L {tmp_path / 'ganesha.log'} -p /run/ganesha.pid"
    )
    with ClientVM(workdir=tmp_path / "vm") as vm:
        log = (tmp_path / "servers.log").open("wb")
        vm.netns_exec(
            ["sh", "-c", server_sh],
            private_dirs=["/run", "/var/lib/nfs"],
            mkdirs=["/run/rpcbind"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            out = vm.netns_run([rpcinfo, "-p", vm.netns.host_addr], timeout=10).stdout
            if all(f" {prog} " in out for prog in (100003, 100005, 100021, 100024)):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"Ganesha did not register; see {tmp_path}: {out}")
            time.sleep(0.3)
        yield vm, export
        log.close()


SCRIPT = r"""
nfsmount "$FLVM_HOST_ADDR:{export}" /mnt/e
echo "RESULT mount $?"
locktool -n a -T 60 /mnt/e/f lock:w:0:10 touch:/tmp/held until:/tmp/go:60 lock:u:0:10 sleep:1 &
locktool -n b -T 60 /mnt/e/f until:/tmp/held:30 lock:w:5:1 test:w:0:0 touch:/tmp/go lockw:w:5:1
wait
umount /mnt/e
echo "RESULT umount $?"
"""


@pytest.mark.timeout(240)
def test_kernel_client_locks_through_ganesha(ganesha_vm: tuple[ClientVM, Path]) -> None:
    vm, export = ganesha_vm
    vm.start(SCRIPT.format(export=export), timeout=180)
    vm.wait_for_output(r"^BEGIN b\.5 op=lockw", timeout=150)  # b now waits on a's range
    res = vm.wait().check()
    info = res.describe(30)
    assert res.result("mount").rc == 0, info
    assert res.result("b.2").fields["err"] == "EAGAIN", info
    t = res.result("b.3").fields
    assert (t["conflict"], t["cstart"], t["clen"]) == ("w", "0", "10"), info
    assert res.result("a.4").rc == 0, info  # unlock
    assert res.result("b.5").rc == 0, info  # the blocked lock was granted, not timed out
    assert res.result("umount").rc == 0, info
    assert (export / "f").exists()  # the guest's file went through the server
