"""floatlock's portmap code against the real rpcbind, rpcinfo and tshark.

Each test builds a private network + mount namespace (see conftest.py), so port 111 and
/run/rpcbind.sock are its own, and runs a small floatlock server in it that serves a test
program over UDP and TCP and calls :func:`start_portmapper`:

* with Debian's rpcbind running, our registrations must show up in ``rpcinfo -p`` (PMAP v2
  DUMP) and ``rpcinfo`` (RPCBIND v4 DUMP), NULL calls through ``rpcinfo -u``/``-t`` (which
  look the port up first) must work, and the entries must be gone after close;
* with no rpcbind, our built-in portmapper on port 111 must satisfy the same rpcinfo
  commands plus ``rpcinfo -s``.

All traffic is captured with tshark, which must decode every packet (no ``_ws.malformed``)
and see the portmap calls: the project's acceptance check for wire formats.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import Capture, Netns, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.root]

PROG = 0x20000F1A  # in the 0x20000000-0x3fffffff range RFC 5531 leaves to local use
PORT = 4711  # the namespace is ours: a fixed port is safe

SERVER = r"""
import asyncio, json, sys
from floatlock.net.tcp import TcpServer
from floatlock.net.udp import UdpServer
from floatlock.portmap.proto import Endpoint
from floatlock.portmap.register import start_portmapper
from floatlock.rpc.dispatch import Dispatcher

PROG, PORT = int(sys.argv[1]), int(sys.argv[2])

async def main() -> None:
    d = Dispatcher()
    for vers in (1, 2):
        d.register(PROG, vers, {}, name="floatlock-test")
    servers = [UdpServer(d, "0.0.0.0", PORT), TcpServer(d, "0.0.0.0", PORT)]
    eps = [Endpoint(PROG, v, t, PORT) for v in (1, 2) for t in ("udp", "tcp")]
    handle = await start_portmapper(d, eps, probe_timeout=1.0)
    if handle.mode == "builtin":
        servers += [UdpServer(d, "0.0.0.0", 111), TcpServer(d, "0.0.0.0", 111)]
    for s in servers:
        await s.start()
    print(json.dumps({"mode": handle.mode}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "close" or not line:
            await handle.close()
            print("closed", flush=True)
        if not line:
            break
    for s in servers:
        r = s.close()
        if r is not None:
            await r

asyncio.run(main())
"""


def start_server(ns: Netns) -> tuple[subprocess.Popen[str], str]:
    p = ns.python(SERVER, str(PROG), str(PORT), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line, "test server exited before it was ready"
    return p, str(json.loads(line)["mode"])


def close_server(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("close\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "closed"


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:] if line.strip()]


def ours(ns: Netns, *args: str) -> list[list[str]]:
    r = ns.run(["rpcinfo", *args, "127.0.0.1"])
    assert r.returncode == 0, r.stderr
    return [row for row in rows(r.stdout) if row and row[0] == str(PROG)]


def check_listings(ns: Netns, owner: str) -> None:
    # rpcinfo -p: program vers proto port [service]
    assert sorted(tuple(r[:4]) for r in ours(ns, "-p")) == sorted(
        (str(PROG), v, t, str(PORT)) for v in ("1", "2") for t in ("udp", "tcp")
    )
    # rpcinfo (v4 DUMP): program version netid address service owner
    p1, p2 = PORT >> 8, PORT & 0xFF
    assert sorted((r[1], r[2], r[3], r[-1]) for r in ours(ns)) == sorted(
        (v, t, f"0.0.0.0.{p1}.{p2}", owner) for v in ("1", "2") for t in ("udp", "tcp")
    )
    for flag in ("-u", "-t"):
        for vers in ("1", "2"):
            r = ns.run(["rpcinfo", flag, "127.0.0.1", str(PROG), vers])
            assert r.returncode == 0, r.stdout + r.stderr
            assert f"program {PROG} version {vers} ready and waiting" in r.stdout


def check_capture(cap: Capture, *, rpcbind_calls: bool = True) -> None:
    decode = (f"udp.port=={PORT},rpc", f"tcp.port=={PORT},rpc")
    assert cap.read("_ws.malformed", *decode) == []
    assert cap.read("_ws.expert.severity >= error", *decode) == []
    assert cap.read("portmap && rpc.msgtyp == 0", *decode), cap.log
    # Every call got a reply that tshark matched to it.
    procs = cap.read(
        "portmap && rpc.msgtyp == 1", *decode, fields=("rpc.programversion", "rpc.procedure")
    )
    # A reply carries the program version twice (its own and the matched call's): "2,2".
    seen = {tuple(f.split(",")[0] for f in line.split("\t")) for line in procs}
    assert ("2", "4") in seen, cap.log  # PMAP v2 DUMP (rpcinfo -p)
    assert ("4", "4") in seen or ("3", "4") in seen, seen  # RPCBIND DUMP (rpcinfo)
    if rpcbind_calls:
        assert ("4", "1") in seen and ("4", "2") in seen, seen  # our RPCBIND v4 SET/UNSET
    # The NULL calls of rpcinfo -u/-t reached our test program and were answered.
    nulls = cap.read(f"rpc.program == {PROG} && rpc.msgtyp == 1", *decode)
    assert len(nulls) >= 4


def test_registration_with_system_rpcbind(
    netns: Netns, capture_factory: list[Capture], tmp_path: Path
) -> None:
    rpcbind = require_tool("rpcbind")
    require_tool("rpcinfo")
    cap = Capture(netns, tmp_path / "rpcbind.pcapng", f"port 111 or port {PORT}")
    capture_factory.append(cap)
    # -f: stay in the foreground, so the test owns the process.  No -w: a warm start would
    # reload the state file of an earlier rpcbind, and this /run is a fresh tmpfs anyway.
    netns.popen([rpcbind, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    netns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not come up")

    server, mode = start_server(netns)
    assert mode == "rpcbind"
    # Registered from a reserved port as root: rpcbind records the owner as "superuser".
    check_listings(netns, owner="superuser")

    close_server(server)
    assert ours(netns, "-p") == []
    assert ours(netns) == []
    r = netns.run(["rpcinfo", "-u", "127.0.0.1", str(PROG), "1"])
    assert r.returncode != 0 and "not registered" in (r.stdout + r.stderr)
    cap.stop()
    check_capture(cap)


def test_builtin_portmapper_answers_rpcinfo(
    netns: Netns, capture_factory: list[Capture], tmp_path: Path
) -> None:
    require_tool("rpcinfo")
    cap = Capture(netns, tmp_path / "builtin.pcapng", f"port 111 or port {PORT}")
    capture_factory.append(cap)

    server, mode = start_server(netns)
    assert mode == "builtin"
    check_listings(netns, owner="superuser")
    # The portmapper lists itself, versions 2-4 over UDP and TCP, as rpcbind does.
    r = netns.run(["rpcinfo", "-p", "127.0.0.1"])
    own = {tuple(row[:4]) for row in rows(r.stdout) if row[0] == "100000"}
    assert own == {("100000", v, t, "111") for v in ("2", "3", "4") for t in ("udp", "tcp")}
    # rpcinfo -s: program version(s) netid(s) service owner
    r = netns.run(["rpcinfo", "-s", "127.0.0.1"])
    assert r.returncode == 0, r.stderr
    short = {row[0]: row for row in rows(r.stdout)}
    assert set(short[str(PROG)][1].split(",")) == {"1", "2"}
    assert set(short[str(PROG)][2].split(",")) == {"udp", "tcp"}
    assert set(short["100000"][1].split(",")) == {"2", "3", "4"}
    for vers in ("2", "3", "4"):
        r = netns.run(["rpcinfo", "-T", "udp", "127.0.0.1", "100000", vers])
        assert r.returncode == 0, r.stdout + r.stderr

    close_server(server)  # our mappings leave the registry; the portmapper still answers
    assert ours(netns, "-p") == []
    assert ours(netns) == []
    cap.stop()
    check_capture(cap, rpcbind_calls=False)
