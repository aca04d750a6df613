"""NFS-Ganesha's NLM with ``floatlock statd`` as its statd (the only one registered).

Acceptance: "NFS-Ganesha's NLM runs with ``floatlock statd`` as its statd (the only statd
registered), and a lock through Ganesha makes it call our SM_MON."

Two throw-away hosts (conftest.Netns: network + mount namespace, private tmpfs ``/run``)
joined by a veth pair in 198.18.0.0/24, nothing routed out:

* server S = 198.18.0.1: its own rpcbind; a private ``/var/lib/nfs`` (a tmp dir bind-mounted
  in S's mount namespace: Ganesha's recovery data); ``python -m floatlock statd -F -d -P DIR
  --no-resolve -p 32765 -H CALLOUT``; ``ganesha.nfsd -F`` (NFSv3 + NLM, a VFS export of a tmp
  dir, 2 s grace) in its own UTS namespace with the host name ``ganesha-node``.  No nfs-utils
  ``rpc.statd`` runs there: ``rpcinfo -p`` must list program 100024 on our port only.
* client C = 198.18.0.2: its own rpcbind (for the NLM client's GRANTED service) and
  ``python -m floatlock lock|test|unlock 198.18.0.1 --path EXPORT:f --caller flclient``.

What Ganesha 4.3 sends our statd (learned here from tshark on S's loopback, the record file
and the HA callout; all of it asserted below):

* at start-up, SM_UNMON_ALL (proc 4) with ``my_name`` = its host name (``gethostname()``,
  ``ganesha-node``) and callback ``my_prog`` 100021 (NLM), ``my_vers`` 4, ``my_proc`` 16;
* when a client's first lock is taken, SM_MON (proc 2) with ``mon_name`` = the client's
  *address* ``198.18.0.2`` (Ganesha's ``NSM_Use_Caller_Name`` is off by default: the NLM
  ``caller_name`` "flclient" is not used), ``my_name`` = ``ganesha-node``, the same callback
  100021/4/16 and ``priv`` = 16 zero bytes;
* when the client's last lock is gone (its unlock, or the drop after a reboot), SM_UNMON
  (proc 3) with the same ``mon_id``, which removes our record;
* all of it over TCP to 127.0.0.1 (Ganesha's NSM client connects to "localhost"), a new
  connection each time.  Ganesha sends the SM_UNMON of a rebooted client *while* our SM_STATUS
  callback to it is still unanswered, so statd must serve calls while a callback is out.

Then the client "reboots": nfs-utils ``sm-notify`` on C sends SM_NOTIFY to our statd (found
through S's rpcbind).  Our statd matches it to the record by the sender's address (the
notification's mon_name is C's host name), calls Ganesha's callback (100021 v4 proc 16, port
from rpcbind) with ``mon_name`` 198.18.0.2 and C's new state; Ganesha drops the client's
locks, so an owner that was refused before now gets the lock.

Needs root, ganesha.nfsd, rpcbind, rpcinfo, sm-notify, hostname, tshark: skipped when one is
missing, failed under ``CI=true`` (CI installs nfs-ganesha).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import SRC, Capture, Netns, require_root, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.root, pytest.mark.timeout(240)]

SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
CLIENT_CALLER = "flclient"  # NLM caller_name; Ganesha monitors the address instead
GANESHA_NODE = "ganesha-node"  # Ganesha's host name: its my_name
STATD_PORT = 32765
NLM_PORT = 32803  # fixed in the Ganesha config
STATD_PROG = 100024
NLM_PROG, NLM_VERS, NLM_SM_NOTIFY = 100021, 4, 16
SM_MON, SM_UNMON, SM_UNMON_ALL = 2, 3, 4

CONF = """
NFS_CORE_PARAM {{ Protocols = 3; Enable_NLM = true; Enable_RQUOTA = false; NFS_Port = 2049;
                  MNT_Port = 20048; NLM_Port = {nlm_port}; }}
NFSV4 {{ Grace_Period = 2; Lease_Lifetime = 2; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{ Export_Id = 1; Path = "{export}"; Pseudo = "{export}"; Access_Type = RW;
          Squash = No_Root_Squash; Protocols = 3; Transports = UDP, TCP; SecType = sys;
          FSAL {{ Name = VFS; }} }}
"""

CALLOUT = """#!/bin/sh
echo "$*" >> "{out}"
"""

# One line of an nfs-utils statd record (docs/protocol-extensions.md): caller in_addr in host
# byte order (127.0.0.1 on x86: 0100007f), prog, vers, proc, priv, mon_name, my_name.
LOOPBACK_IN_ADDR = f"{int.from_bytes(bytes([127, 0, 0, 1]), sys.byteorder):08x}"


def wait_for(what: str, probe: Callable[[], bool], timeout: float, diag: Callable[[], str]) -> None:
    """Poll ``probe`` every 0.1 s until it is true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {timeout} s\n{diag()}")
        time.sleep(0.1)


def rpcinfo_table(ns: Netns) -> list[tuple[int, int, str, int]]:
    """``rpcinfo -p 127.0.0.1`` in ``ns``: (program, version, proto, port) rows."""
    r = ns.run(["rpcinfo", "-p", "127.0.0.1"], timeout=10)
    assert r.returncode == 0, r.stderr
    rows = []
    for line in r.stdout.splitlines():
        w = line.split()
        if len(w) >= 4 and w[0].isdigit():
            rows.append((int(w[0]), int(w[1]), w[2], int(w[3])))
    return rows


def rpcbind_statd_ports(ns: Netns) -> set[tuple[str, int]]:
    """(netid, port) of every program 100024 entry in ``rpcinfo 127.0.0.1`` (rpcbind v3/v4
    dump: all netids, IPv6 too); the port comes from the universal address's last octets."""
    r = ns.run(["rpcinfo", "127.0.0.1"], timeout=10)
    assert r.returncode == 0, r.stderr
    out = set()
    for line in r.stdout.splitlines():
        w = line.split()
        if len(w) >= 4 and w[0] == str(STATD_PROG):
            hi, lo = w[3].rsplit(".", 2)[1:]
            out.add((w[2], int(hi) * 256 + int(lo)))
    return out


def floatlock_nlm(
    ns: Netns, cmd: str, export: Path, svid: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m floatlock CMD SERVER --path EXPORT:f`` as owner ``svid`` of the client."""
    argv = ["env", f"PYTHONPATH={SRC}", sys.executable, "-m", "floatlock", cmd, SERVER_IP]
    argv += ["--path", f"{export}:f", "--caller", CLIENT_CALLER, "--svid", str(svid), *extra]
    return ns.run(argv, timeout=60)


def link(s: Netns, c: Netns) -> None:
    """A veth pair created inside S (its names never appear in the host's namespace)."""
    r = s.run(["ip", "link", "add", "flg-s", "type", "veth", "peer", "name", "flg-c",
               "netns", str(c.pid)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    for ns, dev, addr in ((s, "flg-s", SERVER_IP), (c, "flg-c", CLIENT_IP)):
        for cmd in (["addr", "add", f"{addr}/24", "dev", dev], ["link", "set", dev, "up"]):
            r = ns.run(["ip", *cmd])
            assert r.returncode == 0, r.stderr


@pytest.fixture
def hosts() -> Iterator[tuple[Netns, Netns]]:
    require_root()
    for tool in ("ganesha.nfsd", "rpcbind", "rpcinfo", "sm-notify", "hostname", "ip", "tshark"):
        require_tool(tool)
    s, c = Netns(), Netns()
    try:
        link(s, c)
        for ns in (s, c):
            ns.popen(["rpcbind", "-w", "-f"])
            ns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not start")
        yield s, c
    finally:
        c.close()
        s.close()


def nsm_calls(cap: Capture) -> list[tuple[int, str, str, int, int, int, str]]:
    """NSM calls to our statd, in order: (proc, mon_name, my_name, prog, vers, proc, transport)."""
    fields = ["stat.procedure_v1", "stat.mon_id.name", "stat.my_id.hostname",
              "stat.my_id.prog", "stat.my_id.vers", "stat.my_id.proc", "tcp.srcport"]  # fmt: skip
    rows = cap.read(
        f"stat && rpc.msgtyp == 0 && (udp.dstport == {STATD_PORT} || tcp.dstport == {STATD_PORT})",
        f"udp.port=={STATD_PORT},rpc",
        f"tcp.port=={STATD_PORT},rpc",
        fields=fields,
    )
    out = []
    for row in rows:
        f = (row.split("\t") + [""] * len(fields))[: len(fields)]
        nums = [int(x) if x else -1 for x in f[3:6]]
        out.append((int(f[0]), f[1], f[2], nums[0], nums[1], nums[2], "tcp" if f[6] else "udp"))
    return out


def test_ganesha_nlm_monitors_through_floatlock_statd(
    hosts: tuple[Netns, Netns], tmp_path: Path
) -> None:
    s, c = hosts
    ganesha = require_tool("ganesha.nfsd")
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_text("data")
    varlib = tmp_path / "var-lib-nfs"  # S's private /var/lib/nfs
    (varlib / "ganesha").mkdir(parents=True)
    r = s.run(["mount", "--bind", str(varlib), "/var/lib/nfs"])
    assert r.returncode == 0, r.stderr
    statd_dir = tmp_path / "statd"
    record = statd_dir / "node" / "sm" / CLIENT_IP
    callout_out = tmp_path / "callout.txt"
    callout = tmp_path / "callout.sh"
    callout.write_text(CALLOUT.format(out=callout_out))
    callout.chmod(0o755)
    conf = tmp_path / "ganesha.conf"
    conf.write_text(CONF.format(export=export, nlm_port=NLM_PORT))
    ganesha_log = tmp_path / "ganesha.log"
    statd_log = tmp_path / "statd.log"

    def diag() -> str:
        logs = [("statd", statd_log), ("ganesha", ganesha_log), ("callout", callout_out)]
        return "\n".join(
            f"--- {n}:\n{p.read_text()[-3000:] if p.exists() else '(none)'}" for n, p in logs
        )

    def callouts() -> list[str]:
        return callout_out.read_text().splitlines() if callout_out.exists() else []

    # What Ganesha says to our statd, and our statd's callback to Ganesha's NLM.
    cap = Capture(s, tmp_path / "nsm.pcapng", f"port {STATD_PORT} or port {NLM_PORT}")

    # -- floatlock statd, the namespace's only statd ----------------------------------------
    with open(statd_log, "w") as err:
        statd = s.popen(
            ["env", f"PYTHONPATH={SRC}", sys.executable, "-m", "floatlock", "statd",
             "-F", "-d", "-P", str(statd_dir), "--no-resolve", "-p", str(STATD_PORT),
             "-H", str(callout)],
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert statd.stdout is not None
    line = statd.stdout.readline()  # bounded by the test's timeout
    assert line.startswith("floatlock statd listening on "), diag()
    assert line.strip().endswith(f" port {STATD_PORT}"), line

    # -- Ganesha, in its own UTS namespace so that its node name (my_name) is distinctive ---
    s.popen(
        ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', GANESHA_NODE,
         ganesha, "-F", "-f", str(conf), "-L", str(ganesha_log), "-p", str(tmp_path / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(
        "Ganesha registers NLM v4",
        lambda: any(p == NLM_PROG and v == 4 for p, v, _, _ in rpcinfo_table(s)),
        60,
        diag,
    )
    # Exactly one status monitor is registered, and it is ours (by its port), on every
    # transport: PMAP's list and rpcbind's own (which also has the IPv6 netids).
    statd_rows = sorted(row for row in rpcinfo_table(s) if row[0] == STATD_PROG)
    assert statd_rows == [(STATD_PROG, 1, "tcp", STATD_PORT), (STATD_PROG, 1, "udp", STATD_PORT)]
    netids = rpcbind_statd_ports(s)
    assert {("udp", STATD_PORT), ("tcp", STATD_PORT)} <= netids, netids
    assert {port for _, port in netids} == {STATD_PORT}, netids
    assert statd.poll() is None, diag()

    # -- owner 101 locks f through Ganesha (retried while Ganesha is in grace) ---------------
    end = time.monotonic() + 60
    while True:
        r = floatlock_nlm(c, "lock", export, 101, "--keep")
        if "GRACE" not in r.stdout or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert r.returncode == 0, (r.stdout, r.stderr, diag())
    assert r.stdout.startswith("NLM4_GRANTED: exclusive lock"), r.stdout

    # -- Ganesha called our SM_MON: the record, the log line, the HA callout ---------------
    wait_for("our statd writes the record of Ganesha's SM_MON", record.exists, 10, diag)
    assert sorted(p.name for p in record.parent.iterdir()) == [CLIENT_IP]
    assert record.read_text() == (
        f"{LOOPBACK_IN_ADDR} {NLM_PROG:08x} {NLM_VERS:08x} {NLM_SM_NOTIFY:08x} {'0' * 32}"
        f" {CLIENT_IP} {GANESHA_NODE}\n"
    ), record.read_text()
    assert f"monitoring {CLIENT_IP} for {GANESHA_NODE}" in statd_log.read_text(), diag()
    wait_for("the HA callout runs", lambda: bool(callouts()), 10, diag)
    assert callouts() == [f"add-client {CLIENT_IP} {GANESHA_NODE}"], diag()

    # -- another owner is refused while 101 holds it; 101 unlocks: Ganesha unmonitors -----
    r = floatlock_nlm(c, "test", export, 202)
    assert r.returncode == 1 and "held by svid=101" in r.stdout, (r.stdout, r.stderr)
    r = floatlock_nlm(c, "unlock", export, 101)
    assert r.returncode == 0 and r.stdout.startswith("NLM4_GRANTED: unlock"), r
    wait_for("Ganesha's SM_UNMON removes the record", lambda: not record.exists(), 10, diag)
    wait_for("the del-client callout", lambda: len(callouts()) == 2, 10, diag)
    assert callouts()[1] == f"del-client {CLIENT_IP} {GANESHA_NODE}"

    # -- 101 locks again (monitored again); 202 is refused ----------------------------------
    r = floatlock_nlm(c, "lock", export, 101, "--keep")
    assert r.returncode == 0, (r.stdout, r.stderr)
    wait_for("a new record", record.exists, 10, diag)
    r = floatlock_nlm(c, "lock", export, 202)  # no --wait: one LOCK, denied
    assert r.returncode == 1 and r.stdout.startswith("NLM4_DENIED"), (r.stdout, r.stderr)

    # -- the client reboots: sm-notify on C -> our statd -> Ganesha's callback -------------
    cdir = tmp_path / "client-notify"  # an nfs-utils statd dir on C naming S as a peer
    for sub in ("sm", "sm.bak"):
        (cdir / sub).mkdir(parents=True)
    (cdir / "state").write_bytes(struct.pack("=i", 8))
    (cdir / "sm" / SERVER_IP).write_text(
        f"{LOOPBACK_IN_ADDR} {NLM_PROG:08x} 00000004 00000010 {'0' * 32}"
        f" {SERVER_IP} {CLIENT_CALLER}\n"
    )
    r = c.run(["sm-notify", "-f", "-d", "-P", str(cdir)])
    assert r.returncode == 0, r.stderr
    (new_state,) = struct.unpack("=i", (cdir / "state").read_bytes())
    assert new_state % 2 == 1 and new_state > 8
    wait_for(
        "our statd delivers the status callback to Ganesha",
        lambda: "status callback" in statd_log.read_text(),
        30,
        diag,
    )
    # Logged once Ganesha's NLM has answered the SM_STATUS call.
    [delivered] = [x for x in statd_log.read_text().splitlines() if "status callback" in x]
    assert f"prog={NLM_PROG}, vers={NLM_VERS}, proc={NLM_SM_NOTIFY}" in delivered, delivered
    assert f"mon_name={CLIENT_IP} state={new_state} my_name={GANESHA_NODE}" in delivered

    # Ganesha dropped the rebooted client's locks (and unmonitored it): 202 gets the lock.
    wait_for("Ganesha's SM_UNMON after the reboot", lambda: not record.exists(), 10, diag)
    r = floatlock_nlm(c, "lock", export, 202, "--keep")
    assert r.returncode == 0, (r.stdout, r.stderr, diag())
    assert r.stdout.startswith("NLM4_GRANTED: exclusive lock"), r.stdout
    r = floatlock_nlm(c, "unlock", export, 202)
    assert r.returncode == 0, r
    wait_for("the last SM_UNMON", lambda: not record.exists(), 10, diag)
    assert statd.poll() is None, diag()
    cap.stop()

    # -- the wire, as Wireshark decodes it ---------------------------------------------------
    decode = (f"udp.port=={STATD_PORT},rpc", f"tcp.port=={STATD_PORT},rpc")
    assert cap.read("_ws.malformed", *decode) == []
    calls = nsm_calls(cap)
    mine = (GANESHA_NODE, NLM_PROG, NLM_VERS, NLM_SM_NOTIFY, "tcp")
    mon = (CLIENT_IP, *mine)
    assert calls == [
        (SM_UNMON_ALL, "", *mine),
        (SM_MON, *mon),  # first lock of 101
        (SM_UNMON, *mon),  # its unlock
        (SM_MON, *mon),  # 101 again
        (SM_UNMON, *mon),  # the reboot dropped it
        (SM_MON, *mon),  # 202
        (SM_UNMON, *mon),  # its unlock
    ], calls
    # Our SM_STATUS callback to Ganesha's NLM port, and Ganesha's successful reply.
    status = cap.read(
        f"rpc.program == {NLM_PROG} && rpc.procedure == {NLM_SM_NOTIFY}"
        f" && udp.dstport == {NLM_PORT}"
    )
    assert len(status) == 1, status
    replies = cap.read(f"udp.srcport == {NLM_PORT} && rpc.msgtyp == 1 && rpc.state_accept == 0")
    assert len(replies) == 1, replies
