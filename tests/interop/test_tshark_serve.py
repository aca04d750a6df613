"""Acceptance: captures of ``floatlock serve`` traffic decode in tshark with no malformed packets.

In a private network + mount namespace (conftest.py) ``python -m floatlock serve`` runs with
its defaults (built-in portmapper on 111, NFS 2049, MOUNT 20048, NLM 32803, statd 32765, on
127.0.0.1 and ::1) while tshark captures loopback.  A driver script then plays a realistic
session over UDP and TCP with floatlock's own clients:

* portmapper: PMAP GETPORT (IPv4), RPCBIND v4 GETVERSADDR (the IPv6 lookup), and DUMP through
  ``rpcinfo -p``;
* MOUNT: MNT, EXPORT, UMNT;
* NFSv3: NULL, CREATE, LOOKUP, GETATTR, WRITE, READ, READDIRPLUS, REMOVE;
* NLM v1, v3 and v4: TEST, LOCK, UNLOCK, SHARE, UNSHARE, FREE_ALL; and a blocked lock taken
  with ``python -m floatlock lock --wait`` behind a second holder, granted when the holder
  lets go.  floatlock's own NLM owns the NLM mapping of this host, so the CLI's callback
  service does not register and the client polls; lockd's GRANTED call still goes out (to
  the NLM registered for 127.0.0.1: floatlock itself) and is on the wire;
* NSM: SM_STAT, SM_MON, SM_UNMON, SM_NOTIFY.

tshark must then find no ``_ws.malformed`` and no expert error, every call must have its reply
matched, and each dissector (portmap, mount, nfs, nlm, stat) must show the procedures driven
and a few decoded fields with the values we sent (svids, file names, mon_name).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import Capture, Netns, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.root]

PORTS = {"portmap": 111, "nfs": 2049, "mount": 20048, "nlm": 32803, "statd": 32765}
DECODE = tuple(f"{t}.port=={p},rpc" for p in PORTS.values() for t in ("udp", "tcp"))
SVIDS = {1: 1101, 3: 1303, 4: 1404}  # per NLM version: the lock owner's svid
HOLDER_SVID, WAITER_SVID = 2001, 2002
MON_NAME = "198.18.0.77"  # a peer name statd is asked to monitor (never contacted)
# The control: one NLM v4 TEST call with a corrupted cookie length, sent to a port nothing
# listens on.  tshark must flag exactly it as malformed, which shows the check below can fail.
CONTROL_PORT = 4711
CONTROL = r"""
import socket, struct
from floatlock.nlm.proto import NlmLock, TestArgs
from floatlock.nlm.codec import V4
from floatlock.rpc.message import encode_call
body = bytearray(V4.encode_testargs(TestArgs(b"ck", True, NlmLock("ctl", b"f", b"o", 9, 0, 1))))
body[0:4] = struct.pack(">I", 4096)  # the cookie claims 4096 bytes; a few follow
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(encode_call(0x0C0FFEE, 100021, 4, 1, bytes(body)), ("127.0.0.1", PORT))
""".replace("PORT", str(CONTROL_PORT))

DRIVER = r"""
import asyncio, json, sys
from floatlock.net.client import RpcClient, rpc_call
from floatlock.nfs.client import MountClient, NfsClient
from floatlock.nfs.proto import CreateMode, DirOpArgs
from floatlock.nfs.proto_attr import Sattr3
from floatlock.nfs.proto_args import CreateArgs
from floatlock.nlm.client import NlmClient
from floatlock.nlm.proto import Nlm4Stat
from floatlock.nsm import proto as nsm
from floatlock.portmap.register import getport

EXPORT, SVIDS = sys.argv[1], {int(k): v for k, v in json.loads(sys.argv[2]).items()}
HOLDER, WAITER, MON_NAME = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
L = "127.0.0.1"
out = {}

def check(cond, what):
    if not cond:
        raise SystemExit(f"driver: {what}")

async def main():
    # portmapper: GETPORT (v2) for IPv4, GETVERSADDR (v4) for IPv6
    for prog, vers, port in ((100003, 3, 2049), (100005, 3, 20048), (100021, 4, 32803)):
        for t in ("udp", "tcp"):
            check(await getport(L, prog, vers, t) == port, f"GETPORT {prog}")
    check(await getport("::1", 100024, 1, "udp") == 32765, "GETVERSADDR statd")

    files = {}
    for t in ("udp", "tcp"):
        async with await RpcClient.connect(L, 20048, t) as mr, \
                await RpcClient.connect(L, 2049, t) as nr:
            mount, nfs = MountClient(mr), NfsClient(nr)
            m = await mount.mnt(EXPORT)
            check(m.status == 0, f"MNT {m}")
            check(any(e.directory == EXPORT for e in await mount.exports()), "EXPORT")
            root = m.fh
            await nfs.null()
            name = f"tshark-{t}.txt"
            attrs = Sattr3(mode=0o666)
            c = await nfs.create(CreateArgs(DirOpArgs(root, name), CreateMode.GUARDED, attrs))
            check(c.status == 0 and c.fh, f"CREATE {c}")
            lk = await nfs.lookup(root, name)
            check(lk.status == 0 and lk.fh == c.fh, f"LOOKUP {lk}")
            check((await nfs.write(c.fh, 0, b"hello tshark\n")).status == 0, "WRITE")
            r = await nfs.read(c.fh, 0, 100)
            check(r.status == 0 and r.data == b"hello tshark\n", f"READ {r}")
            check((await nfs.getattr(c.fh)).attr.size == 13, "GETATTR")
            d = await nfs.readdirplus(root)
            check(name in {e.name for e in d.entries}, "READDIRPLUS")
            keep = f"locked-{t}.txt"
            k = await nfs.create(CreateArgs(DirOpArgs(root, keep), CreateMode.UNCHECKED, attrs))
            files[t] = k.fh
            check((await nfs.remove(root, name)).status == 0, "REMOVE")
            await mount.umnt(EXPORT)

    # NLM v1, v3, v4 over UDP and TCP
    for t in ("udp", "tcp"):
        fh = files[t]
        for v in (1, 3, 4):
            async with await NlmClient.connect(L, version=v, transport=t,
                                               caller_name="tshark-client", svid=SVIDS[v]) as c:
                await c.null()
                check((await c.test(fh, 0, 10)).stat == Nlm4Stat.GRANTED, "TEST")
                check(await c.lock(fh, 0, 10) == Nlm4Stat.GRANTED, "LOCK")
                check(await c.unlock(fh, 0, 10) == Nlm4Stat.GRANTED, "UNLOCK")
                if v != 1:
                    check(await c.share(fh) == Nlm4Stat.GRANTED, "SHARE")
                    check(await c.unshare(fh) == Nlm4Stat.GRANTED, "UNSHARE")
                    await c.free_all()
    async with await NlmClient.connect("::1", caller_name="tshark-v6", svid=SVIDS[4]) as c:
        check((await c.test(files["udp"], 0, 10)).stat == Nlm4Stat.GRANTED, "TEST over ::1")

    # a blocked lock, woken when the holder unlocks
    fh = files["udp"]
    async with await NlmClient.connect(L, caller_name="tshark-holder", svid=HOLDER) as holder:
        check(await holder.lock(fh, 0, 0) == Nlm4Stat.GRANTED, "holder LOCK")
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "floatlock", "lock", L, fh.hex(), "--wait", "--hold", "0",
            "--poll-interval", "0.5", "--svid", str(WAITER), "--caller", "tshark-waiter",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(waiter.stderr.readline(), 30)
        check(b"waiting for GRANTED" in line, f"waiter: {line!r}")
        check(await holder.unlock(fh, 0, 0) == Nlm4Stat.GRANTED, "holder UNLOCK")
        stdout, stderr = await asyncio.wait_for(waiter.communicate(), 60)
        check(waiter.returncode == 0, f"waiter: {stdout!r} {stderr!r}")
        out["waiter"] = stdout.decode()

    # NSM
    my_id = nsm.MyId(L, 100021, 4, 16)
    mon = nsm.Mon(nsm.MonId(MON_NAME, my_id), bytes(range(16)))
    for t in ("udp", "tcp"):
        async def sm(proc, args):
            return await rpc_call(L, 32765, t, nsm.SM_PROG, 1, proc, args)
        out[f"sm_stat_{t}"] = (await sm(nsm.Proc.SM_STAT, nsm.encode_sm_name(MON_NAME))).hex()
        await sm(nsm.Proc.SM_MON, nsm.encode_mon(mon))
        await sm(nsm.Proc.SM_UNMON, nsm.encode_mon_id(mon.mon_id))
        await sm(nsm.Proc.SM_NOTIFY, nsm.encode_stat_chge(nsm.StatChge(MON_NAME, 3)))
    out["fh"] = {t: fh.hex() for t, fh in files.items()}
    print(json.dumps(out), flush=True)

asyncio.run(asyncio.wait_for(main(), 180))
"""


def _wait_ready(log: Path, proc: subprocess.Popen[str]) -> None:
    import time

    end = time.monotonic() + 30
    while "floatlock ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > end:
            pytest.fail(f"floatlock serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _calls(cap: Capture, proto: str, version_field: str) -> set[tuple[str, str]]:
    """(program version, procedure) of every call tshark decoded as ``proto``."""
    rows = cap.read(
        f"{proto} && rpc.msgtyp == 0", *DECODE, fields=("rpc.programversion", version_field)
    )
    # A field can occur twice in one packet ("2,2": a GETPORT names a program version too).
    return {(v.split(",")[0], p.split(",")[0]) for v, p, *_ in (r.split("\t") for r in rows)}


def test_serve_traffic_decodes_in_tshark(
    netns: Netns, capture_factory: list[Capture], tmp_path: Path
) -> None:
    require_tool("rpcinfo")
    export = tmp_path / "export"
    cfg = tmp_path / "floatlock.toml"
    cfg.write_text(
        f'[server]\nlisten = ["127.0.0.1", "::1"]\nstate_dir = "{tmp_path}/state"\n'
        'log_level = "debug"\n[nlm]\ngrace_seconds = 0\n[statd]\nnotify = false\n'
        f'[[export]]\npath = "{export}"\nclients = "*(rw,insecure)"\n'
    )
    bpf = " or ".join(f"port {p}" for p in (*PORTS.values(), CONTROL_PORT))
    cap = Capture(netns, tmp_path / "serve.pcapng", bpf)
    capture_factory.append(cap)
    log = tmp_path / "serve.log"
    with log.open("w") as f:
        server = netns.python(
            "import sys; from floatlock.cli import main; sys.exit(main())",
            "serve",
            "--config",
            str(cfg),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    _wait_ready(log, server)

    r = netns.run(["rpcinfo", "-p", "127.0.0.1"])  # PMAP v2 DUMP
    assert r.returncode == 0 and "nlockmgr" in r.stdout, r.stdout + r.stderr
    driver = netns.python(
        DRIVER,
        str(export),
        json.dumps(SVIDS),
        str(HOLDER_SVID),
        str(WAITER_SVID),
        MON_NAME,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, f"{out}\n{err}\n--- server log ---\n{log.read_text()[-4000:]}"
    result = json.loads(out.splitlines()[-1])
    assert "GRANTED" in result["waiter"], result
    control = netns.python(CONTROL)
    assert control.wait(30) == 0
    cap.stop()

    # No packet tshark could not decode, no decoding error; but the control packet is caught.
    ctl = f"udp.port=={CONTROL_PORT},rpc"
    bad = cap.read("_ws.malformed", *DECODE, ctl, fields=("udp.dstport", "rpc.xid"))
    assert bad == [f"{CONTROL_PORT}\t0x00c0ffee"], bad
    assert cap.read(f"_ws.malformed && !udp.port == {CONTROL_PORT}", *DECODE) == []
    assert cap.read(f"_ws.expert.severity >= error && !udp.port == {CONTROL_PORT}", *DECODE) == []
    # Every call was answered.  (NLM GRANTED sent to floatlock's own NLM, which does not
    # serve it, is answered PROC_UNAVAIL: still a reply.)  Not counted: the portmap NULL
    # probes floatlock sends at start-up to see whether an rpcbind runs (none does here).
    not_counted = f"(portmap && rpc.procedure == 0) || udp.port == {CONTROL_PORT}"
    calls = set(cap.read(f"rpc.msgtyp == 0 && !({not_counted})", *DECODE, fields=("rpc.xid",)))
    replies = set(cap.read("rpc.msgtyp == 1", *DECODE, fields=("rpc.xid",)))
    assert len(calls) > 80 and calls <= replies, sorted(calls - replies)

    pmap = _calls(cap, "portmap", "rpc.procedure")
    assert {("2", "3"), ("2", "4"), ("4", "9")} <= pmap, pmap  # GETPORT, DUMP, GETVERSADDR

    mount = _calls(cap, "mount", "mount.procedure_v3")
    assert {("3", "1"), ("3", "3"), ("3", "5")} <= mount, mount  # MNT, UMNT, EXPORT
    paths = set(cap.read("mount.path", *DECODE, fields=("mount.path",)))
    assert str(export) in paths, paths

    nfs = {p for _, p in _calls(cap, "nfs", "nfs.procedure_v3")}
    assert {"0", "1", "3", "6", "7", "8", "12", "17"} <= nfs, nfs
    names = set(cap.read("nfs.name", *DECODE, fields=("nfs.name",)))
    assert {"tshark-udp.txt", "tshark-tcp.txt", "locked-udp.txt"} <= names, names

    nlm = set()
    for v in ("1", "3", "4"):
        nlm |= {(vv, p) for vv, p in _calls(cap, "nlm", f"nlm.procedure_v{v}") if vv == v}
    for v in ("1", "3", "4"):
        assert {(v, "1"), (v, "2"), (v, "4")} <= nlm, (v, nlm)  # TEST, LOCK, UNLOCK
    for v in ("3", "4"):
        assert {(v, "20"), (v, "21"), (v, "23")} <= nlm, (v, nlm)  # SHARE, UNSHARE, FREE_ALL
    assert ("4", "5") in nlm, nlm  # lockd's GRANTED for the blocked lock
    svids = {
        int(s)
        for line in cap.read("nlm.lock.svid", *DECODE, fields=("nlm.lock.svid",))
        for s in line.split(",")
    }
    assert {*SVIDS.values(), HOLDER_SVID, WAITER_SVID} <= svids, svids
    callers = set(cap.read("nlm.lock.caller_name", *DECODE, fields=("nlm.lock.caller_name",)))
    assert {"tshark-client", "tshark-holder", "tshark-waiter"} <= callers, callers
    # The blocked LOCK went out with block=TRUE and was answered BLOCKED (3) at least once.
    blocked = cap.read(f"nlm.lock.svid == {WAITER_SVID} && nlm.block == 1", *DECODE)
    assert blocked, "no blocking LOCK from the waiter"
    assert cap.read("nlm.stat == 3", *DECODE), "no NLM4_BLOCKED reply"

    stat = _calls(cap, "stat", "stat.procedure_v1")
    assert {("1", "1"), ("1", "2"), ("1", "3"), ("1", "6")} <= stat, stat
    mon_names = set(cap.read("stat.mon_id.name", *DECODE, fields=("stat.mon_id.name",)))
    assert MON_NAME in mon_names, mon_names
    assert cap.read(f'stat.name == "{MON_NAME}"', *DECODE), "SM_STAT/SM_NOTIFY name"
