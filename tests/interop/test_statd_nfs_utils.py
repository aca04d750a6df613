"""floatlock statd against nfs-utils (Debian's rpc.statd and sm-notify), across two hosts.

Two throw-away hosts (network + mount namespaces, conftest.Netns) on a veth pair:
server S = 198.18.1.1 (runs ``floatlock statd``) and client C = 198.18.1.2, each with its own
rpcbind.  Nothing can leave the machine: the only links are loopback and the veth pair.

1. nfs-utils ``sm-notify`` on C tells our statd that C rebooted: the status callback
   registered with our statd (a test lockd, program 100021 v4, found through rpcbind) fires
   with the record's mon_name, C's new state and the private bytes.
2. Our statd takes the virtual server 198.18.1.1 over and notifies C from 198.18.1.1: C's
   ``rpc.statd`` fires the callback registered with it.
3. ``sm-notify -P`` on S reads the records our statd wrote (nfs-utils layout) and notifies C.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from floatlock.nsm.monitor import Callback, Record
from floatlock.nsm.store import IdentityStore, format_record, parse_record
from tests.interop.conftest import Netns, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.root]

S_ADDR, C_ADDR = "198.18.1.1", "198.18.1.2"
PRIV_S = bytes(range(16))
PRIV_C = bytes(range(100, 116))

STATD = r"""
import argparse, asyncio, sys
from floatlock.nsm import statd
p = argparse.ArgumentParser(); statd.add_arguments(p)
sys.exit(asyncio.run(statd.run(p.parse_args(sys.argv[1:]))))
"""

# A stand-in lockd: program 100021 v4, procedure 16 takes sm_inter.x ``struct status``.
CALLBACK_SERVER = r"""
import asyncio, json, sys
from floatlock.net.udp import UdpServer
from floatlock.nsm import proto
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import register_with_rpcbind
from floatlock.rpc.dispatch import Dispatcher, Procedure

def status(st, call):
    print(json.dumps({"mon_name": st.mon_name, "state": st.state, "priv": st.priv.hex(),
                      "from": str(call.client[0])}), flush=True)

async def main():
    d = Dispatcher()
    d.register(100021, 4, {16: Procedure("SM_STATUS", status, proto.decode_status)})
    udp = UdpServer(d, "127.0.0.1", 0)
    await udp.start()
    await register_with_rpcbind([Endpoint(100021, 4, "udp", udp.port)])
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

SM_MON = r"""
import asyncio, json, sys
from floatlock.nsm.notify import getport, monitor

async def main():
    mon_name, my_name, priv = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    port = await getport("127.0.0.1", 100024, 1)
    r = await monitor(("127.0.0.1", port), mon_name, my_name, (100021, 4, 16), priv)
    print(json.dumps({"ok": r.ok, "state": r.state, "grace": r.grace_remaining}))

asyncio.run(main())
"""


def ns_python_run(ns: Netns, script: str, *args: str) -> dict[str, object]:
    from tests.interop.conftest import SRC

    env_cmd = ["env", f"PYTHONPATH={SRC}", sys.executable, "-c", script, *args]
    r = ns.run(env_cmd)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def read_json_line(p: subprocess.Popen[str]) -> dict[str, object]:
    assert p.stdout is not None
    line = p.stdout.readline()  # the test's timeout (pytest-timeout) bounds this
    assert line, "callback server ended"
    return dict(json.loads(line))


@pytest.fixture
def hosts() -> Iterator[tuple[Netns, Netns]]:
    for tool in ("rpcbind", "rpc.statd", "sm-notify", "rpcinfo"):
        require_tool(tool)
    s, c = Netns(), Netns()
    try:
        r = s.run(["ip", "link", "add", "fl-s", "type", "veth", "peer", "name", "fl-c",
                   "netns", str(c.pid)])  # fmt: skip
        assert r.returncode == 0, r.stderr
        for ns, dev, addr in ((s, "fl-s", S_ADDR), (c, "fl-c", C_ADDR)):
            assert ns.run(["ip", "addr", "add", f"{addr}/24", "dev", dev]).returncode == 0
            assert ns.run(["ip", "link", "set", dev, "up"]).returncode == 0
            ns.popen(["rpcbind", "-w", "-f"])
            ns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not start")
        yield s, c
    finally:
        s.close()
        c.close()


def start_statd(s: Netns, sdir: Path, *extra: str) -> subprocess.Popen[str]:
    from tests.interop.conftest import SRC

    p = s.popen(
        ["env", f"PYTHONPATH={SRC}", sys.executable, "-c", STATD, "-P", str(sdir), "-F", "-d",
         "--grace", "5", "--no-resolve", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.stdout is not None
    assert "listening" in p.stdout.readline()
    return p


def start_callback_server(ns: Netns) -> subprocess.Popen[str]:
    from tests.interop.conftest import SRC

    p = ns.popen(
        ["env", f"PYTHONPATH={SRC}", sys.executable, "-c", CALLBACK_SERVER],
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


def test_nfs_utils_interop(hosts: tuple[Netns, Netns], tmp_path: Path) -> None:
    s, c = hosts
    sdir = tmp_path / "server-state"
    vs_dir = sdir / "vs" / S_ADDR

    # -- 1. sm-notify (client reboot) -> our statd -> our registered callback -------------
    statd = start_statd(s, sdir, "--virtual-server", S_ADDR)
    s_cb = start_callback_server(s)
    r = ns_python_run(s, SM_MON, C_ADDR, S_ADDR, PRIV_S.hex())
    assert r["ok"] is True and r["state"] == 1 and r["grace"] is not None
    assert (vs_dir / "sm" / C_ADDR).read_text().endswith(f" {C_ADDR} {S_ADDR}\n")

    cdir = tmp_path / "client-notify"
    cstore = IdentityStore(cdir)
    cstore.ensure()
    cstore.write_state(8)
    cstore.write_records(S_ADDR, (Record(S_ADDR, "client", Callback(100021, 4, 16), PRIV_C),))
    r2 = c.run(["sm-notify", "-f", "-d", "-P", str(cdir)])
    assert r2.returncode == 0, r2.stderr
    got = read_json_line(s_cb)
    new_c_state = cstore.read_state()
    assert new_c_state % 2 == 1 and new_c_state > 8
    assert got == {"mon_name": C_ADDR, "state": new_c_state, "priv": PRIV_S.hex(),
                   "from": "127.0.0.1"}  # fmt: skip

    # -- 2. our statd takes 198.18.1.1 over -> nfs-utils rpc.statd on C -> its callback ---
    c_sd = tmp_path / "client-statd"
    (c_sd / "sm").mkdir(parents=True)
    (c_sd / "sm.bak").mkdir()
    c.popen(["rpc.statd", "--no-notify", "-F", "-d", "-P", str(c_sd)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    c.wait_until(["rpcinfo", "-T", "udp", "127.0.0.1", "100024", "1"], "rpc.statd not up")
    c_cb = start_callback_server(c)
    r = ns_python_run(c, SM_MON, S_ADDR, "client-node", PRIV_C.hex())
    assert r["ok"] is True and r["grace"] is None  # a standard statd: plain SM_MON fallback
    # The record rpc.statd wrote is byte for byte what our store writes for the same SM_MON.
    theirs = (c_sd / "sm" / S_ADDR).read_text()
    ours = Record(S_ADDR, "client-node", Callback(100021, 4, 16), PRIV_C, "127.0.0.1")
    assert theirs == format_record(ours) and parse_record(theirs) == ours

    statd.terminate()
    assert statd.wait(30) == 0
    assert IdentityStore(vs_dir).read_state() == 2  # clean stop of the virtual server
    statd = start_statd(s, sdir, "--virtual-server", S_ADDR)  # takeover: state 3, notify
    got = read_json_line(c_cb)
    assert got == {"mon_name": S_ADDR, "state": 3, "priv": PRIV_C.hex(), "from": "127.0.0.1"}

    # -- 3. sm-notify on S reads the records our statd wrote --------------------------------
    r = ns_python_run(s, SM_MON, C_ADDR, S_ADDR, PRIV_S.hex())
    assert r["ok"] is True
    statd.terminate()
    assert statd.wait(30) == 0
    assert os.listdir(vs_dir / "sm") == [C_ADDR]
    r3 = s.run(["sm-notify", "-f", "-d", "-P", str(vs_dir)])
    assert r3.returncode == 0, r3.stderr
    got = read_json_line(c_cb)
    new_s_state = IdentityStore(vs_dir).read_state()  # sm-notify's own bump of our "state"
    assert new_s_state % 2 == 1 and new_s_state > 4 and got["state"] == new_s_state
    assert got["mon_name"] == S_ADDR and got["priv"] == PRIV_C.hex()
    assert os.listdir(vs_dir / "sm") == [] and os.listdir(vs_dir / "sm.bak") == []


WIRE_CLIENT = r"""
import asyncio, sys
from floatlock.net.client import RpcClient
from floatlock.nsm import proto
from floatlock.nsm.proto import Mon, MonId, MyId, Proc, StatChge

async def main():
    port = int(sys.argv[1])
    my = MyId("127.0.0.1", 100021, 4, 16)
    mon = proto.encode_mon(Mon(MonId("127.0.0.7", my), bytes(16)))
    async with await RpcClient.connect("127.0.0.1", port, "udp") as c:
        await c.call(100024, 1, Proc.SM_STAT, proto.encode_sm_name("x"))
        await c.call(100024, 1, Proc.SM_MON, mon)
        await c.call(100024, 1, Proc.SM_MON2, mon)
    async with await RpcClient.connect("127.0.0.1", port, "udp", source="127.0.0.7") as c:
        await c.call(100024, 1, Proc.SM_NOTIFY, proto.encode_stat_chge(StatChge("127.0.0.7", 9)))
    async with await RpcClient.connect("127.0.0.1", port, "tcp") as c:
        await c.call(100024, 1, Proc.SM_UNMON, proto.encode_mon_id(MonId("127.0.0.7", my)))
        await c.call(100024, 1, Proc.SM_UNMON_ALL, proto.encode_my_id(my))
        await c.call(100024, 1, Proc.SM_SIMU_CRASH)

asyncio.run(main())
"""


def test_statd_wire_format_decodes_in_tshark(netns: Netns, tmp_path: Path) -> None:
    """Every NSM message our statd sends or answers is decoded by Wireshark's own dissector
    (no ``_ws.malformed``), including the SM_STATUS callback it makes to lockd."""
    from tests.interop.conftest import SRC, Capture

    for tool in ("rpcbind", "rpcinfo"):
        require_tool(tool)
    netns.popen(["rpcbind", "-w", "-f"])
    netns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not start")
    cap = Capture(netns, tmp_path / "nsm.pcapng", "udp or tcp")
    statd = start_statd(netns, tmp_path / "state", "-p", "4000", "-L")
    cb = start_callback_server(netns)
    r = netns.run(["env", f"PYTHONPATH={SRC}", sys.executable, "-c", WIRE_CLIENT, "4000"])
    assert r.returncode == 0, r.stderr
    got = read_json_line(cb)
    assert (got["mon_name"], got["state"]) == ("127.0.0.7", 9)
    statd.terminate()
    assert statd.wait(30) == 0
    cap.stop()
    decode = ("udp.port==4000,rpc", "tcp.port==4000,rpc")
    assert cap.read("_ws.malformed", *decode) == []
    procs = set(cap.read("stat", *decode, fields=["stat.procedure_v1"]))
    assert {"1", "2", "3", "4", "5", "6"} <= procs, procs
    assert cap.read("stat && rpc.msgtyp == 1", *decode)  # replies decoded too
    assert cap.read("rpc.program == 100021 && rpc.procedure == 16")  # the SM_STATUS callback


def test_statd_listens_on_both_families_and_registers_them(netns: Netns, tmp_path: Path) -> None:
    """Default ``--listen``: 0.0.0.0 and ::, one port, udp/tcp/udp6/tcp6 with rpcbind; in a
    namespace without IPv6 the :: listener is skipped and only udp/tcp are registered."""
    for tool in ("rpcbind", "rpcinfo", "sysctl"):
        require_tool(tool)

    def statd_netids(ns: Netns) -> set[str]:
        r = ns.run(["rpcinfo", "-T", "tcp", "127.0.0.1"])  # v4 DUMP: every netid
        assert r.returncode == 0, r.stderr
        return {
            w[2] for w in (ln.split() for ln in r.stdout.splitlines()) if w[:2] == ["100024", "1"]
        }

    netns.popen(["rpcbind", "-w", "-f"])
    netns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not start")
    statd = start_statd(netns, tmp_path / "state", "-L")
    assert statd_netids(netns) == {"udp", "tcp", "udp6", "tcp6"}
    for netid, host in (("udp", "127.0.0.1"), ("tcp", "127.0.0.1"), ("udp6", "::1"),
                        ("tcp6", "::1")):  # fmt: skip
        r = netns.run(["rpcinfo", "-T", netid, host, "100024", "1"])
        assert r.returncode == 0 and "ready and waiting" in r.stdout, (netid, r.stdout, r.stderr)
    statd.terminate()
    assert statd.wait(30) == 0
    assert statd_netids(netns) == set()  # unregistered on a clean stop

    nov6 = Netns()
    try:
        r = nov6.run(["sysctl", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                      "net.ipv6.conf.lo.disable_ipv6=1"])  # fmt: skip
        assert r.returncode == 0, r.stderr
        nov6.popen(["rpcbind", "-w", "-f"])
        nov6.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not start")
        statd = start_statd(nov6, tmp_path / "state2", "-L")
        assert statd_netids(nov6) == {"udp", "tcp"}
        statd.terminate()
        assert statd.wait(30) == 0
    finally:
        nov6.close()
