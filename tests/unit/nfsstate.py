"""What the NFS operation tests share: a server state over a temporary export (resolver, open
files, export access) and requests and handles for it, without sockets or threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from floatlock.nfs.context import Caller, ExportAccess, Request, ServerState
from floatlock.nfs.exports import parse_exports
from floatlock.nfs.openfiles import OpenFiles
from floatlock.nfs.resolver import Resolver
from floatlock.rpc.message import AuthSys

KEY = b"k" * 32
ROOT = AuthSys(0, "client", 0, 0, ())


@contextmanager
def nfs_state(
    export: Path, options: str = "rw,no_root_squash", *, clients: str | None = None
) -> Iterator[ServerState]:
    """A ServerState exporting ``export`` to everyone with ``options`` (no sweeper threads);
    ``clients``: an exports(5) client list instead (e.g. ``"198.18.0.0/15(rw)"``)."""
    spec = clients if clients is not None else f"*({options})"
    resolver = Resolver(parse_exports(f"{export} {spec}"), KEY, sweeper=False)
    files = OpenFiles(sweeper=False)
    try:
        yield ServerState(resolver, ExportAccess(resolve_names=False), b"v" * 8, files)
    finally:
        files.close()
        resolver.close()


def request(
    st: ServerState,
    auth: AuthSys | None = ROOT,
    transport: str = "tcp",
    *,
    inline: bool = True,
    port: int = 700,
) -> Request:
    """A request from 127.0.0.1:``port``; ``inline``: as on the event loop (cached_only)."""
    return Request(st, Caller(auth, "127.0.0.1", port, transport), cached_only=inline)


def handle_of(st: ServerState, path: Path) -> bytes:
    """The file handle of ``path`` in the (first) export."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        return st.resolver.handle_of(st.resolver.roots[0], fd)
    finally:
        os.close(fd)


def cached(st: ServerState, path: Path) -> bytes:
    """The handle of ``path``, opened once so that it is in the handle cache."""
    fh = handle_of(st, path)
    st.resolver.open_handle(fh).close()
    return fh
