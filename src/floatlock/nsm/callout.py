"""The HA callout: ``PROG add-client MON_NAME MY_NAME`` / ``PROG del-client ...``.

nfs-utils ``rpc.statd -H PROG`` runs the program on every SM_MON / SM_UNMON so that a cluster
manager can keep the list of clients on shared storage.  We run it the same way with one
difference the seed asks for: ``MY_NAME`` is the ``my_name`` the caller sent (the virtual
server address a client reached), never "127.0.0.1".

The program is executed directly (no shell, so a hostile name is one argument, never a
command), with a timeout; failures are logged and survived.  Calls run as tasks and never
block the event loop or the SM_MON reply.  It gets the daemon's own supplementary groups, set
in the child before it executes (``extra_groups``): the event loop thread it is started from
may still hold the groups of the last NFS caller it served (:mod:`floatlock.nfs.fsuid`).
"""

from __future__ import annotations

import asyncio
import logging
import os

from floatlock.nfs.fsuid import DAEMON_GROUPS

__all__ = ["HaCallout"]

log = logging.getLogger("floatlock.nsm.callout")


class HaCallout:
    def __init__(self, program: str, timeout: float = 10.0) -> None:
        self.program = program
        self.timeout = timeout
        self.failures = 0
        self.runs = 0

    async def run(self, action: str, mon_name: str, my_name: str) -> bool:
        """Run the callout once; True when it exited 0."""
        self.runs += 1
        argv = [self.program, action, mon_name, my_name]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                # (only root may set groups; a daemon that is not never switches them)
                extra_groups=list(DAEMON_GROUPS) if os.geteuid() == 0 else None,
            )
        except OSError as e:
            self.failures += 1
            log.error("HA callout %s cannot start: %s", self.program, e)
            return False
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self.failures += 1
            log.error("HA callout %r timed out after %.1fs; killed", argv, self.timeout)
            return False
        if proc.returncode != 0:
            self.failures += 1
            log.error(
                "HA callout %r exited %s: %s",
                argv,
                proc.returncode,
                err.decode(errors="replace").strip()[:500],
            )
            return False
        return True
