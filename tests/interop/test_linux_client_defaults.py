"""``floatlock serve`` with no arguments and no configuration, used by a Linux client.

Issue line: "``floatlock serve`` with no arguments exports its default directory and a Linux
client can mount it and lock a file in it".  The daemon starts in an empty working directory
inside the VM's network namespace (with a private ``/run``, so no rpcbind runs there and its
own portmapper takes port 111) and creates ``./var/export`` (mode 1777) and ``./var/state``.
The default export is ``*(rw)``: root_squash and secure, so the guest's root works as 65534,
which may create files in the 1777 directory.  The guest (kernel lockd, nfs-utils statd)
mounts the export over TCP, writes a file, takes an fcntl lock and a flock on it; while each is
held the server's kernel shows it as an OFD lock and a process on the server cannot lock the
file, and once the guest lets go the server process can.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.server_side import ofd_locks_on, wait_for_log
from tests.vm.guest import ClientVM
from tests.vm.test_vm_smoke import _require_vm

pytestmark = [pytest.mark.vm, pytest.mark.interop, pytest.mark.root]

SRC = str(Path(__file__).resolve().parents[2] / "src")

SCRIPT = r"""
nfsmount "$FLVM_HOST_ADDR:{export}" /mnt
echo "RESULT mount $?"
echo hello > /mnt/f
echo "RESULT create $?"
echo "OWNER $(stat -c %u /mnt/f)"
locktool -n p /mnt/f lock:w:0:0 echo:LOCKED until:/mnt/go1:60 close
locktool -n f /mnt/f flock:ex echo:FLOCKED until:/mnt/go2:60 flock:un
flock -x /mnt/f -c true
echo "RESULT flock-cmd $?"
umount /mnt
echo "RESULT umount $?"
"""


def _server_can_lock(path: Path) -> bool:
    """Whether a process on the server gets a write lock on ``path`` right now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was granted
    return True


@pytest.mark.timeout(300)
def test_serve_without_arguments_mount_and_lock(tmp_path: Path) -> None:
    _require_vm()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    export = cwd / "var" / "export"
    env = {**os.environ, "PYTHONPATH": SRC}
    serve = f"cd {cwd} && exec {sys.executable} -m floatlock serve"
    with ClientVM(workdir=tmp_path / "vm") as vm:
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            vm.netns_exec(
                ["sh", "-c", serve],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                private_dirs=["/run"],
            )
            wait_for_log(log_path, "floatlock ready", "floatlock serve did not start")
            assert export.is_dir() and (cwd / "var" / "state").is_dir()
            assert stat.S_IMODE(export.stat().st_mode) == 0o1777
            vm.start(SCRIPT.format(export=export), timeout=240)
            vm.wait_for_output(r"^ECHO p LOCKED", timeout=180)
            fcntl_ofd = ofd_locks_on(export / "f")
            fcntl_blocks = not _server_can_lock(export / "f")
            (export / "go1").touch()
            vm.wait_for_output(r"^ECHO f FLOCKED", timeout=60)
            flock_ofd = ofd_locks_on(export / "f")
            flock_blocks = not _server_can_lock(export / "f")
            (export / "go2").touch()
            res = vm.wait()
        info = res.describe(60) + "\n--- server log ---\n" + log_path.read_text()[-6000:]
        assert res.result("mount").rc == 0, info
        assert res.result("create").rc == 0, info
        assert (export / "f").read_text() == "hello\n", info
        # root_squash: the guest's root created the file as the anonymous user.
        assert (export / "f").stat().st_uid == 65534, info
        assert res.grep(r"^OWNER ") == ["OWNER 65534"], info
        assert res.result("p.1").rc == 0, info
        assert fcntl_ofd and "WRITE" in fcntl_ofd[0], f"fcntl lock not on the server\n{info}"
        assert fcntl_blocks, f"a server process could lock past the client's fcntl lock\n{info}"
        assert res.result("f.1").rc == 0, info
        assert flock_ofd and "WRITE" in flock_ofd[0], f"flock not on the server\n{info}"
        assert flock_blocks, f"a server process could lock past the client's flock\n{info}"
        assert res.result("f.4").rc == 0, info  # flock:un
        assert res.result("flock-cmd").rc == 0, info
        assert res.result("umount").rc == 0, info
        assert _server_can_lock(export / "f"), f"a lock was left behind\n{info}"
