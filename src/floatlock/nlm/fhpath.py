"""Naming a file the way admins do: ``EXPORT_PATH:FILE`` -> an NFSv3 file handle for NLM.

Theory of operation
-------------------
NLM calls carry the NFS file handle of the file (XNFS NLM, "nlm_lock": ``fh`` is the
"file handle of the file to be locked").  An admin knows an export and a path, so the
handle is found as an NFS client does it: MOUNT v3 MNT of the export (RFC 1813 section
5.2.1, ``dirpath`` -> ``mountres3``) gives the export's root handle, then one NFSv3 LOOKUP
(RFC 1813 section 3.3.3, procedure 3, ``diropargs3`` -> ``LOOKUP3res``) per path component.
Both programs are found through the server's portmapper and called with AUTH_SYS.
"""

from __future__ import annotations

import os
import socket
from typing import Final

from floatlock.net.client import RpcClient, Transport
from floatlock.nfs.proto import NFS_PROGRAM, NFS_V3, DirOpArgs, Nfsstat3
from floatlock.nfs.proto_mount import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    MountProc,
    MountRes,
    Mountstat3,
    encode_dirpath,
)
from floatlock.nfs.proto_res import LookupRes
from floatlock.portmap.proto import PMAP_PORT
from floatlock.portmap.register import getport
from floatlock.rpc.message import AuthSys
from floatlock.xdr import Decoder, Encoder

__all__ = ["PathError", "parse_target", "resolve_path"]

NFSPROC3_LOOKUP: Final = 3  # RFC 1813 section 3.3.3


class PathError(Exception):
    """The export or a path component could not be resolved."""


def parse_target(text: str) -> tuple[str, str]:
    """``/export/dir:sub/file`` -> (``/export/dir``, ``sub/file``); split at the first ':'."""
    export, sep, path = text.partition(":")
    if not sep or not export.startswith("/"):
        raise PathError(f"expected EXPORT_PATH:FILE, got {text!r}")
    return export, path


async def _port(host: str, prog: int, vers: int, transport: Transport, pmap_port: int) -> int:
    port = await getport(host, prog, vers, transport, port=pmap_port)
    if not port:
        raise PathError(f"program {prog} v{vers} over {transport} not registered at {host}")
    return port


async def resolve_path(
    host: str,
    export: str,
    path: str,
    *,
    transport: Transport = "udp",
    pmap_port: int = PMAP_PORT,
    cred: AuthSys | None = None,
    timeout: float = 10.0,
) -> bytes:
    """The NFSv3 file handle of ``path`` (relative, '/'-separated) inside ``export``."""
    if cred is None:
        cred = AuthSys(0, socket.gethostname()[:255], os.getuid(), os.getgid(), ())
    # Servers that insist on a reserved port (Linux "secure" exports) get one when we can.
    privileged = os.geteuid() == 0
    mport = await _port(host, MOUNT_PROGRAM, MOUNT_V3, transport, pmap_port)
    async with await RpcClient.connect(
        host, mport, transport, privileged=privileged, timeout=timeout
    ) as mnt:
        body = await mnt.call(
            MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, encode_dirpath(export), cred=cred
        )
    res = MountRes.decode(Decoder(body))
    if res.status != Mountstat3.OK:
        raise PathError(f"MNT {export}: {res.status.name}")
    fh = res.fh
    parts = [p for p in path.split("/") if p]
    if not parts:
        return fh
    nport = await _port(host, NFS_PROGRAM, NFS_V3, transport, pmap_port)
    async with await RpcClient.connect(
        host, nport, transport, privileged=privileged, timeout=timeout
    ) as nfs:
        for name in parts:
            enc = Encoder()
            DirOpArgs(fh, name).encode(enc)
            body = await nfs.call(NFS_PROGRAM, NFS_V3, NFSPROC3_LOOKUP, enc.getvalue(), cred=cred)
            lres = LookupRes.decode(Decoder(body))
            if lres.status != Nfsstat3.OK:
                raise PathError(f"LOOKUP {name!r} in {export}:{path}: NFS3ERR_{lres.status.name}")
            fh = lres.fh
    return fh
