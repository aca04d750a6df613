"""The real daemon inside the benchmark's own process, for the ``*_dispatch`` benchmarks.

``bench.nlm_dispatch`` and ``bench.nfs_dispatch`` hand call messages straight to the daemon's
dispatcher, with no socket, to measure what the Python path of a call costs.  Both build the
same daemon (``floatlock.server.build_daemon``: NFS resolver, statd, lockd with the kernel OFD
mirror) on a temporary export, here; and both measure another revision's floatlock package with
the same harness (:func:`run_baseline`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

__all__ = ["export_files", "inproc_daemon", "run_baseline"]


@contextlib.asynccontextmanager
async def inproc_daemon(
    prefix: str, options: str = "rw,insecure"
) -> AsyncIterator[tuple[Any, str]]:
    """The started daemon and its export directory (no portmapper, no grace, every port 0,
    the export open to 127.0.0.0/8 with ``options``: read-write from any port, root
    squashed, by default); stopped on exit."""
    from floatlock.config import parse_config
    from floatlock.server import build_daemon

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.makedirs(f"{tmp}/export")
        cfg = parse_config(
            f"""
[server]
listen = ["127.0.0.1"]
state_dir = "{tmp}/state"
log_level = "warning"
[ports]
nfs = 0
mount = 0
nlm = 0
statd = 0
[portmap]
mode = "off"
[nlm]
grace_seconds = 0
[[export]]
path = "{tmp}/export"
clients = "127.0.0.0/8({options})"
"""
        )
        daemon = build_daemon(cfg)
        await daemon.start()
        try:
            yield daemon, f"{tmp}/export"
        finally:
            await daemon.stop()


def export_files(
    daemon: Any, export: str, names: Sequence[str], mode: int | None = None
) -> tuple[bytes, list[bytes]]:
    """Create the empty files ``names`` in ``export`` (with ``mode``, if given) and return
    the export root's handle and theirs, as the daemon's NFS server hands them out."""
    resolver = daemon.components["nfs"].resolver
    root = resolver.roots[0]
    dir_fd = os.open(export, os.O_PATH)
    try:
        fhs = []
        for name in names:
            open(f"{export}/{name}", "w").close()
            if mode is not None:
                os.chmod(f"{export}/{name}", mode)
            fhs.append(resolver.handle_of(root, dir_fd, name))
        return resolver.handle_of(root, dir_fd), fhs
    finally:
        os.close(dir_fd)


def run_baseline(script: str, src_dir: str, args: Sequence[str] = ()) -> int:
    """Run ``script`` (a benchmark of this directory) on the floatlock package of another
    revision, ``src_dir``/src (e.g. ``mkdir /tmp/base && git archive REV src | tar -x -C
    /tmp/base``), with this revision's harness: only the package measured differs."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([os.path.join(src_dir, "src"), here])
    cmd = [sys.executable, os.path.abspath(script), *args]
    return subprocess.call(cmd, env=dict(os.environ, PYTHONPATH=path))
