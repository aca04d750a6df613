"""The floatlock server: which components run, on which ports, and how they are connected.

:mod:`floatlock.daemon` knows transports, timers and the portmapper; this module knows
floatlock's own components and turns a :class:`~floatlock.config.Config` into a
:class:`~floatlock.daemon.Daemon` serving them:

* **statd** (NSM 100024) with one state directory per identity under ``state_dir/statd``;
* **lockd** (NLM 100021 v1/v3/v4) whose host table is keyed by (client, server address);
* **NFS** (100003 v3) and **MOUNT** (100005 v3) over the configured exports, whose handle
  resolver is also lockd's: a lock names a file by the same handle the client got from NFS.

lockd reaches statd only through the effects its adapter carries out; the two callables
below are where the daemon points them at the in-process statd: SM_MON2 without a network
round trip, and statd's status callbacks delivered straight to lockd.  An external lockd
(Ganesha, the kernel) still gets real SM_MON and real callbacks over RPC.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path

from floatlock.config import Config
from floatlock.daemon import Daemon, Service, StartupError
from floatlock.nfs.exports import Export, ExportsError, parse_exports
from floatlock.nfs.fhandle import load_handle_key
from floatlock.nfs.fsuid import IdentityError
from floatlock.nfs.service import NameEncodingError, NfsServer
from floatlock.nlm.callbacks import NlmCallbacks
from floatlock.nlm.grace import GraceClocks
from floatlock.nlm.hosts import HostTable, MonitorHost, UnmonitorHost
from floatlock.nlm.kernel import KernelMirror
from floatlock.nlm.program import NlmProgram
from floatlock.nlm.proto import NLM_PROG, NlmProc
from floatlock.nlm.service import NlmService
from floatlock.nsm.monitor import Record
from floatlock.nsm.proto import Status
from floatlock.nsm.statd import Statd, StatdConfig

log = logging.getLogger("floatlock.server")

MOUNT_PROG = 100005
#: statd calls lockd back on this (prog, vers, proc): NLM's private SM_NOTIFY procedure.
NLM_CALLBACK = (NLM_PROG, 4, int(NlmProc.SM_NOTIFY))
HOUSEKEEPING_SECONDS = 5.0


def exports_of(cfg: Config) -> list[Export]:
    """The configured exports as exports(5) lines, paths made absolute."""
    lines = []
    for e in cfg.exports:
        path = e.path if e.path.is_absolute() else Path.cwd() / e.path
        lines.append(f"{shlex.quote(str(path))} {e.clients}")
    try:
        return parse_exports("\n".join(lines))
    except ExportsError as err:
        raise StartupError(f"{cfg.source}: [[export]]: {err}") from None


def _prepare_dirs(cfg: Config, exports: list[Export]) -> Path:
    state = cfg.server.state_dir.absolute()
    try:
        state.mkdir(parents=True, exist_ok=True)
        for e in exports:
            p = Path(e.path)
            if not p.exists():
                p.mkdir(parents=True)
                # A new export directory is writable by every user: with root_squash (the
                # default) a client's root is "nobody" here, and must still create files.
                os.chmod(p, 0o1777)
    except OSError as err:
        raise StartupError(f"cannot create {err.filename}: {err.strerror}") from None
    return state


def build_daemon(cfg: Config) -> Daemon:
    daemon = Daemon(cfg)
    exports = exports_of(cfg)
    state = _prepare_dirs(cfg, exports)

    # statd: the node identity and, later, the virtual servers taken over.
    statd = Statd(
        StatdConfig(
            state_dir=state / "statd",
            grace=cfg.nlm.grace_seconds,
            notify=cfg.statd.notify,
            ha_callout=cfg.statd.ha_callout or None,
        )
    )
    daemon.add_service(Service("statd", cfg.ports.statd, statd.service.register))
    daemon.on_start(lambda: statd.start())
    daemon.on_close(statd.stop)

    # NFS and MOUNT; the handle key sits with the state so that every node sharing the
    # state directory hands out and accepts the same handles.
    try:
        nfs = NfsServer(
            exports,
            load_handle_key(str(state / "fh.key")),
            workers=cfg.nfs.workers,
            inline_metadata=cfg.nfs.inline_metadata,
        )
    except (OSError, IdentityError, NameEncodingError) as err:
        raise StartupError(f"cannot serve the exports: {err}") from None
    nfs_service = Service("nfs", cfg.ports.nfs, nfs.register)
    daemon.add_service(nfs_service)
    mount_programs = [pv for pv in nfs_service.programs if pv[0] == MOUNT_PROG]
    nfs_service.programs = [pv for pv in nfs_service.programs if pv[0] != MOUNT_PROG]
    daemon.add_service(Service("mountd", cfg.ports.mount, lambda d: None), mount_programs)

    async def close_nfs() -> None:
        nfs.close()

    daemon.on_close(close_nfs)

    # lockd.
    grace = GraceClocks()
    hosts = HostTable(
        virtual_server=cfg.server.virtual_server,
        use_caller_name=cfg.nlm.identify_by_caller_name,
    )
    kernel = KernelMirror()
    service = NlmService(
        hosts,
        grace,
        nfs.resolver,
        kernel,
        max_locks_per_host=cfg.nlm.max_locks_per_host,
        max_blocked_per_host=cfg.nlm.max_blocked_per_host,
        max_blocked_total=cfg.nlm.max_blocked,
    )

    async def monitor(m: MonitorHost) -> bool:
        r = await statd.monitor_local(m.mon_name, m.my_name, NLM_CALLBACK, m.priv)
        if r.ok and r.grace_remaining:
            # The seed: statd knows each virtual server's grace and tells lockd on SM_MON.
            grace.set_remaining(m.key.server, r.grace_remaining, time.monotonic())
        return r.ok

    async def unmonitor(u: UnmonitorHost) -> None:
        await statd.unmonitor_local(u.mon_name, u.my_name, NLM_CALLBACK)

    program = NlmProgram(service, NlmCallbacks(), monitor, unmonitor)

    def status_callback(status: Status, record: Record) -> None:
        dropped = program.peer_status(status.mon_name, status.state, status.priv)
        log.info(
            "statd: %s (state %d) under %s: %d host(s) dropped",
            status.mon_name, status.state, record.my_name, dropped,
        )  # fmt: skip

    statd.add_local_callback(NLM_PROG, 4, status_callback)
    daemon.add_service(Service("nlockmgr", cfg.ports.nlm, program.register))
    daemon.add_timer(HOUSEKEEPING_SECONDS, program.housekeeping)

    async def close_lockd() -> None:
        program.close()
        await program.drain()
        kernel.close_all()

    daemon.on_close(close_lockd)
    daemon.components.update(statd=statd, nfs=nfs, nlm=program, grace=grace)
    log.debug("virtual_server=%s", cfg.server.virtual_server)
    return daemon
