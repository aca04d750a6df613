"""MOUNT v3 (RFC 1813 section 5): hands out export root handles and tracks who mounted what.

MNT takes an export's path, or a directory below it (as Linux mountd allows): the path is
walked one component at a time from the export root without following symlinks, so it cannot
leave the export.  A client the export does not list gets MNT3ERR_ACCES and a log line; so
does one calling from a port >= 1024 when the export is ``secure``.  The auth flavors offered
are [AUTH_SYS] (section 5.2.1).

The mount list (DUMP) is informational only -- NFSv3 is stateless -- and is kept in memory:
(client address, path) pairs, added by MNT, removed by UMNT/UMNTALL.
"""

from __future__ import annotations

import logging
import os

from floatlock.nfs.context import ExportAccess
from floatlock.nfs.exportroot import ExportRoot
from floatlock.nfs.proto_mount import (
    AUTH_SYS,
    MNTPATHLEN,
    ExportNode,
    MountEntry,
    MountRes,
    Mountstat3,
)
from floatlock.nfs.resolver import Resolver

log = logging.getLogger("floatlock.mount")


class MountTable:
    """The export list, the access decisions and the (informational) mount list."""

    def __init__(self, resolver: Resolver, access: ExportAccess) -> None:
        self.resolver = resolver
        self.access = access
        self._mounts: dict[tuple[str, str], None] = {}

    def _find(self, path: str) -> tuple[ExportRoot, list[str]] | None:
        parts = [p for p in path.split("/") if p]
        best: tuple[ExportRoot, list[str]] | None = None
        best_len = -1
        for root in self.resolver.roots:
            rparts = [p for p in root.export.path.split("/") if p]
            if parts[: len(rparts)] == rparts and len(rparts) > best_len:
                best, best_len = (root, parts[len(rparts) :]), len(rparts)
        return best

    def mnt(self, path: str, client_ip: str, client_port: int) -> MountRes:
        """MNT (section 5.2.1); runs as the server (mountd is root too)."""
        if len(path) > MNTPATHLEN:
            return MountRes(Mountstat3.NAMETOOLONG)
        found = self._find(path)
        if found is None:
            log.info("MNT %s from %s: no such export", path, client_ip)
            return MountRes(Mountstat3.NOENT)
        root, rest = found
        opts = self.access.options(root.export, client_ip)
        if opts is None:
            log.warning("MNT %s refused: %s is not in the export's client list", path, client_ip)
            return MountRes(Mountstat3.ACCES)
        if opts.secure and client_port >= 1024:
            log.warning("MNT %s refused: %s used insecure port %d", path, client_ip, client_port)
            return MountRes(Mountstat3.ACCES)
        try:
            fh = self._handle_below(root, rest)
        except OSError as e:
            log.info("MNT %s from %s: %s", path, client_ip, e)
            status = {2: Mountstat3.NOENT, 20: Mountstat3.NOTDIR, 13: Mountstat3.ACCES}
            return MountRes(status.get(e.errno or 0, Mountstat3.NOENT))
        self._mounts[(client_ip, path)] = None
        log.info("MNT %s by %s", path, client_ip)
        return MountRes(Mountstat3.OK, fh, (AUTH_SYS,))

    def _handle_below(self, root: ExportRoot, rest: list[str]) -> bytes:
        if not rest:
            return root.root_fh
        if any(p in (".", "..") for p in rest):
            raise OSError(2, "dot components are not allowed")
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
        fd = os.open(rest[0], flags, dir_fd=root.fd)
        try:
            for part in rest[1:]:
                nxt = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = nxt
            if os.fstat(fd).st_dev != root.dev:
                raise OSError(13, "another filesystem")
            return self.resolver.handle_of(root, fd)
        finally:
            os.close(fd)

    def umnt(self, path: str, client_ip: str) -> None:
        self._mounts.pop((client_ip, path), None)

    def umntall(self, client_ip: str) -> None:
        for key in [k for k in self._mounts if k[0] == client_ip]:
            del self._mounts[key]

    def dump(self) -> list[MountEntry]:
        return [MountEntry(ip, path) for ip, path in self._mounts]

    def exports(self) -> list[ExportNode]:
        return [
            ExportNode(r.export.path, tuple(c.pattern or "*" for c in r.export.clients))
            for r in self.resolver.roots
        ]
