"""The floatlock server: which components run, on which ports, and how they are connected.

:mod:`floatlock.daemon` knows transports and the portmapper; this module knows floatlock's own
components (statd, lockd, NFS and MOUNT) and turns a :class:`~floatlock.config.Config` into a
:class:`~floatlock.daemon.Daemon` serving them.
"""

from __future__ import annotations

from floatlock.config import Config
from floatlock.daemon import Daemon


def build_daemon(cfg: Config) -> Daemon:
    daemon = Daemon(cfg)
    return daemon
