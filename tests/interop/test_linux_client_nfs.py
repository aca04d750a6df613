"""The Linux kernel NFSv3 client (in a VM) against floatlock's NFS + MOUNT servers.

The server runs on the host inside the VM's network namespace: floatlock's NFS and MOUNT
programs on ports 2049 and 20048 and the built-in portmapper on 111, all from one dispatcher.
The guest mounts with MOUNT over TCP and over UDP (NFS itself over TCP: Debian's 6.1 kernel
is built with CONFIG_NFS_DISABLE_UDP_SUPPORT, so ``proto=udp`` is refused by the client;
NFS over UDP is covered by tests/integration/test_nfs_server.py), ``nolock`` (lockd comes
later), writes a random file,
reads it back with a checksum, makes a directory, renames and removes; the host then checks
what arrived on disk.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vm.guest import ClientVM
from tests.vm.test_vm_smoke import _require_vm

pytestmark = [pytest.mark.vm, pytest.mark.interop, pytest.mark.root]

SERVER = r"""
import asyncio, logging, sys
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.nfs.exports import parse_exports
from floatlock.nfs.service import NfsServer
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import builtin_portmapper
from floatlock.rpc.dispatch import Dispatcher

async def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    key = b"interop-key-0123456789abcdef"
    nfs = NfsServer(parse_exports(sys.argv[1]), key, resolve_names=False)
    d = Dispatcher()
    nfs.register(d)
    eps = [Endpoint(p, 3, t, port) for p, port in ((100003, 2049), (100005, 20048))
           for t in ("udp", "tcp")]
    builtin_portmapper(d, eps)
    servers = []
    for port in (111, 2049, 20048):
        servers.append(UdpServer(d, "0.0.0.0", port))
        servers.append(TcpServer(d, "0.0.0.0", port, max_record=(1 << 20) + 4096))
    for s in servers:
        await s.start()
    print("SERVING", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

SCRIPT = r"""
for proto in tcp mntudp; do
    opts="proto=tcp,nolock"
    [ $proto = mntudp ] && opts="proto=tcp,mountproto=udp,nolock"
    nfsmount "$FLVM_HOST_ADDR:{export}" /mnt/$proto "$opts"
    echo "RESULT mount-$proto $?"
    dd if=/dev/urandom of=/tmp/src-$proto bs=1024 count=3000 2>/dev/null
    cp /tmp/src-$proto /mnt/$proto/data-$proto
    echo "RESULT write-$proto $?"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    a=$(md5sum < /tmp/src-$proto | cut -d' ' -f1)
    b=$(md5sum < /mnt/$proto/data-$proto | cut -d' ' -f1)
    echo "SUM $proto $a $b"
    mkdir /mnt/$proto/dir-$proto && mv /mnt/$proto/data-$proto /mnt/$proto/dir-$proto/moved
    echo "RESULT rename-$proto $?"
    ls /mnt/$proto/dir-$proto > /dev/null
    echo "RESULT ls-$proto $?"
    umount /mnt/$proto
    echo "RESULT umount-$proto $?"
done
"""


@pytest.mark.timeout(300)
def test_linux_client_mounts_writes_and_reads(tmp_path: Path) -> None:
    _require_vm()
    export = tmp_path / "export"
    export.mkdir()
    os.chmod(export, 0o777)
    src = Path(__file__).resolve().parents[2] / "src"
    with ClientVM(workdir=tmp_path / "vm") as vm:
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            vm.netns_exec(
                [sys.executable, "-c", SERVER, f"{export} *(rw,no_root_squash)"],
                env={**os.environ, "PYTHONPATH": str(src)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 30
            while b"SERVING" not in log_path.read_bytes():
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            vm.start(SCRIPT.format(export=export), timeout=240)
            res = vm.wait()
        info = res.describe(40) + "\n--- server log ---\n" + log_path.read_text()[-4000:]
        for proto in ("tcp", "mntudp"):
            for step in ("mount", "write", "rename", "ls", "umount"):
                assert res.result(f"{step}-{proto}").rc == 0, info
            (line,) = res.grep(rf"^SUM {proto} ")
            _, _, want, got = line.split()
            assert want == got, info
            on_disk = (export / f"dir-{proto}" / "moved").read_bytes()
            assert len(on_disk) == 3000 * 1024, info
            assert hashlib.md5(on_disk).hexdigest() == want, info
