"""The real ``floatlock serve`` and the real ``rpcinfo``: every program it serves is listed,
answers NULL over UDP and TCP, and disappears again at shutdown -- against the system's rpcbind
and against floatlock's own portmapper (RFC 1833)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.interop.conftest import SRC, Netns, require_tool

# (program, versions, service name rpcinfo prints, port from the config below)
PROGRAMS = [
    (100003, ("3",), "nfs", 2049),
    (100005, ("3",), "mountd", 20048),
    (100021, ("1", "3", "4"), "nlockmgr", 32803),
    (100024, ("1",), "status", 32765),
]


def start_serve(ns: Netns, tmp: Path) -> subprocess.Popen[str]:
    cfg = tmp / "floatlock.toml"
    cfg.write_text(
        f'[server]\nlisten = ["0.0.0.0"]\nstate_dir = "{tmp}/state"\n'
        f'[[export]]\npath = "{tmp}/export"\n'
    )
    log = (tmp / "serve.log").open("w")
    env = {"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    p = ns.popen(
        [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while "floatlock ready" not in (tmp / "serve.log").read_text():
        assert p.poll() is None, (tmp / "serve.log").read_text()
        assert time.monotonic() < deadline, (tmp / "serve.log").read_text()
        time.sleep(0.1)
    return p


def listing(ns: Netns) -> set[tuple[str, str, str, str]]:
    r = ns.run(["rpcinfo", "-p", "127.0.0.1"])
    assert r.returncode == 0, r.stderr
    return {tuple(line.split()[:4]) for line in r.stdout.splitlines()[1:] if line.strip()}  # type: ignore[misc]


def check_served(ns: Netns) -> None:
    rows = listing(ns)
    for prog, versions, name, port in PROGRAMS:
        for vers in versions:
            for proto in ("udp", "tcp"):
                assert (str(prog), vers, proto, str(port)) in rows, (prog, vers, proto, rows)
            for flag in ("-u", "-t"):
                r = ns.run(["rpcinfo", flag, "127.0.0.1", name, vers])
                assert f"version {vers} ready and waiting" in r.stdout, r.stdout + r.stderr


def stop(p: subprocess.Popen[str], tmp: Path) -> None:
    p.terminate()
    assert p.wait(15) == 0, (tmp / "serve.log").read_text()


def test_serve_registers_with_system_rpcbind(netns: Netns, tmp_path: Path) -> None:
    rpcbind = require_tool("rpcbind")
    require_tool("rpcinfo")
    netns.popen([rpcbind, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    netns.wait_until(["rpcinfo", "-p", "127.0.0.1"], "rpcbind did not come up")
    p = start_serve(netns, tmp_path)
    assert "registering with it" in (tmp_path / "serve.log").read_text()
    check_served(netns)
    stop(p, tmp_path)
    # Unregistered on shutdown; rpcbind itself is still there.
    left = {row[0] for row in listing(netns)}
    assert left == {"100000"}, left


def test_serve_runs_its_own_portmapper(netns: Netns, tmp_path: Path) -> None:
    require_tool("rpcinfo")
    p = start_serve(netns, tmp_path)
    assert "serving the built-in portmapper" in (tmp_path / "serve.log").read_text()
    check_served(netns)
    own = {row for row in listing(netns) if row[0] == "100000"}
    assert own == {("100000", v, t, "111") for v in ("2", "3", "4") for t in ("udp", "tcp")}
    stop(p, tmp_path)
    r = netns.run(["rpcinfo", "-p", "127.0.0.1"])
    assert r.returncode != 0  # nobody answers on 111 any more
