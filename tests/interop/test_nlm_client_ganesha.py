"""``floatlock lock | test | unlock`` against NFS-Ganesha's NLM v4 (a real peer server).

Two hosts, each a private network + mount namespace (conftest.Netns) joined by a veth pair
in 198.18.0.0/24: the server runs rpcbind, rpc.statd and Ganesha (as shared/notes/real-peers.md
describes), the client runs its own rpcbind and the floatlock commands.  The file is named with
``--path`` (MOUNT MNT + NFSv3 LOOKUP through Ganesha).  The blocking case is the real proof of
the callback service: the second owner's ``lock --wait`` (which never re-sends) is granted only
when Ganesha finds the client's NLM through the *client's* rpcbind and calls it back after the
first owner unlocks.  (Client and server cannot share one namespace: the server's NLM already
holds the nlockmgr mapping there, see floatlock.nlm.granted.)

Skipped when Ganesha is not installed, also in CI (it is an optional peer).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop.conftest import SRC, Netns, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.root, pytest.mark.timeout(240)]

SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"

CONF = """
NFS_CORE_PARAM {{ Protocols = 3; Enable_NLM = true; NFS_Port = 2049; MNT_Port = 20048;
                  NLM_Port = 32803; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {state}; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {export}; Access_Type = RW;
          Squash = No_Root_Squash; Protocols = 3; Transports = UDP, TCP; SecType = sys;
          FSAL {{ Name = VFS; }} }}
"""


def floatlock(ns: Netns, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = ["env", f"PYTHONPATH={SRC}", sys.executable, "-m", "floatlock.nlm.cli", *args]
    return subprocess.run(
        ns.argv(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lock_cmd(export: Path, caller: str, svid: int, *extra: str) -> list[str]:
    return [SERVER_IP, "--path", f"{export}:f", "--caller", caller, "--svid", str(svid), *extra]


def link(server: Netns, client: Netns) -> None:
    """A veth pair between the two namespaces: server 198.18.0.1, client 198.18.0.2."""
    ip = require_tool("ip")
    name = f"fl{os.getpid() % 100000}"
    subprocess.run(
        [ip, "link", "add", f"{name}s", "type", "veth", "peer", "name", f"{name}c"], check=True
    )
    for ns, end, addr in ((server, "s", SERVER_IP), (client, "c", CLIENT_IP)):
        subprocess.run([ip, "link", "set", f"{name}{end}", "netns", str(ns.pid)], check=True)
        for cmd in (
            ["addr", "add", f"{addr}/24", "dev", f"{name}{end}"],
            ["link", "set", f"{name}{end}", "up"],
        ):
            r = ns.run([ip, *cmd])
            assert r.returncode == 0, r.stderr


def test_lock_test_unlock_and_blocking_lock_through_ganesha(tmp_path: Path) -> None:
    ganesha = require_tool("ganesha.nfsd")  # CI installs nfs-ganesha: a skip there hides a gap
    rpcbind = require_tool("rpcbind")
    statd = require_tool("rpc.statd")
    rpcinfo = require_tool("rpcinfo")
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_text("data")
    state = tmp_path / "state"
    for d in (state / "statd" / "sm", state / "statd" / "sm.bak", state / "ganesha"):
        d.mkdir(parents=True)
    conf = tmp_path / "ganesha.conf"
    conf.write_text(CONF.format(export=export, state=state / "ganesha"))

    netns, client = Netns(), Netns()
    try:
        run_scenario(netns, client, tmp_path, ganesha, rpcbind, statd, rpcinfo, export, state, conf)
    finally:
        client.close()
        netns.close()


def run_scenario(
    netns: Netns,
    client: Netns,
    tmp_path: Path,
    ganesha: str,
    rpcbind: str,
    statd: str,
    rpcinfo: str,
    export: Path,
    state: Path,
    conf: Path,
) -> None:
    link(netns, client)
    client.popen([rpcbind, "-w", "-f"])  # the client's port 111, for its GRANTED service
    client.wait_until([rpcinfo, "-p", "127.0.0.1"], "client rpcbind did not start")
    netns.popen([rpcbind, "-w", "-f"])
    netns.wait_until([rpcinfo, "-p", "127.0.0.1"], "rpcbind did not start")
    netns.popen([statd, "--no-notify", "-F", "-P", str(state / "statd")], stderr=subprocess.DEVNULL)
    netns.wait_until([rpcinfo, "-u", "127.0.0.1", "status"], "rpc.statd did not start")
    log = tmp_path / "ganesha.log"
    netns.popen([ganesha, "-F", "-f", str(conf), "-L", str(log), "-p", str(tmp_path / "pid")])
    netns.wait_until([rpcinfo, "-u", "127.0.0.1", "nlockmgr", "4"], "no NLM v4 from Ganesha", 60)

    # Owner A takes the whole file; Ganesha may still be in its grace period at first.
    end = time.monotonic() + 120
    while True:
        r = floatlock(client, "lock", *lock_cmd(export, CLIENT_IP, 101, "--keep"))
        if "GRACE" not in r.stdout or time.monotonic() > end:
            break
        time.sleep(1)
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text()[-2000:])
    assert r.stdout.startswith("NLM4_GRANTED: exclusive lock on ")

    # Owner B sees A as the holder.
    r = floatlock(client, "test", *lock_cmd(export, CLIENT_IP, 202))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.startswith("NLM4_DENIED:") and "held by svid=101" in r.stdout

    # Owner B blocks; A's unlock makes Ganesha call B's NLM back.
    b = client.popen(
        [
            "env",
            f"PYTHONPATH={SRC}",
            sys.executable,
            "-m",
            "floatlock.nlm.cli",
            "lock",
            *lock_cmd(
                export,
                CLIENT_IP,
                202,
                "--wait",
                "--wait-timeout",
                "60",
                "--keep",
                "--poll-interval",
                "3600",
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Unlock A only once Ganesha has answered B's LOCK with BLOCKED.  B never re-sends
    # (--poll-interval 3600), so only Ganesha's GRANTED callback can complete it.
    assert b.stderr is not None
    line = b.stderr.readline()
    assert line.startswith("NLM4_BLOCKED: waiting for GRANTED"), (line, b.stderr.read())
    r = floatlock(client, "unlock", *lock_cmd(export, CLIENT_IP, 101))
    assert r.returncode == 0 and r.stdout.startswith("NLM4_GRANTED: unlock"), r
    out, err = b.communicate(timeout=90)
    assert "GRANTED" in out, (out, err)
    assert b.returncode == 0, (out, err, log.read_text()[-2000:])
    assert out.startswith("NLM4_GRANTED: exclusive lock") and "kept by" in out

    r = floatlock(client, "test", *lock_cmd(export, CLIENT_IP, 101))
    assert r.returncode == 1 and "held by svid=202" in r.stdout, r
    r = floatlock(client, "unlock", *lock_cmd(export, CLIENT_IP, 202))
    assert r.returncode == 0, r
    r = floatlock(client, "test", *lock_cmd(export, CLIENT_IP, 101))
    assert r.returncode == 0 and "would be granted" in r.stdout, r
