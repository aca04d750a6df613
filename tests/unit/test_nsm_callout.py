"""The HA callout: argv without a shell, real my_name, timeout, failures survived."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from floatlock.nfs import fsuid
from floatlock.nfs.creds import Identity
from floatlock.nsm.callout import HaCallout


def script(tmp: Path, body: str, name: str = "callout.sh") -> str:
    p = tmp / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_callout_gets_action_mon_name_and_real_my_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prog = script(tmp_path, f'for a in "$@"; do printf "%s\\n" "$a" >> {out}; done\n')
    c = HaCallout(prog)
    # a hostile name stays one argument: no shell ever sees it
    ok = asyncio.run(c.run("add-client", "c1; rm -rf /", "198.18.0.10"))
    assert ok is True
    assert out.read_text().splitlines() == ["add-client", "c1; rm -rf /", "198.18.0.10"]


def test_callout_failures_are_survived(tmp_path: Path) -> None:
    async def main() -> list[bool]:
        failing = HaCallout(script(tmp_path, "echo nope >&2; exit 3\n", "fail.sh"))
        missing = HaCallout(str(tmp_path / "does-not-exist"))
        slow = HaCallout(script(tmp_path, "exec sleep 30\n", "slow.sh"), timeout=0.2)
        return [
            await failing.run("add-client", "a", "b"),
            await missing.run("del-client", "a", "b"),
            await slow.run("add-client", "a", "b"),
        ]

    assert asyncio.run(main()) == [False, False, False]


def test_callout_gets_the_daemons_groups_not_a_callers(tmp_path: Path) -> None:
    """The loop thread may still hold the groups of the last NFS caller (nfs/fsuid lazy
    groups); the callout started from it must not inherit them."""
    if os.geteuid() != 0:
        pytest.skip("needs root (setfsuid)")
    out = tmp_path / "groups"
    prog = script(tmp_path, f"id -G > {out}\n")

    async def main() -> bool:
        with fsuid.acting_as(Identity(1000, 1000, (4242, 27))):
            pass  # the thread now holds (4242, 27) when LAZY_GROUPS
        return await HaCallout(prog).run("add-client", "c", "198.18.0.10")

    assert asyncio.run(main()) is True
    # `id -G` prints the effective gid first, then the supplementary groups
    groups = {int(g) for g in out.read_text().split()[1:]}
    assert not groups & {4242, 27}
    assert groups <= set(fsuid.DAEMON_GROUPS) | {os.getegid()}
