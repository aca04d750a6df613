"""A minimal synchronous ONC RPC / MOUNT v3 / NFSv3 client for benchmarks and smoke tests.

Theory of operation: benchmarks need NFSv3 file handles (NLM calls carry them) and a few
simple NFS operations to time, against NFS-Ganesha now and floatlock later.  Everything here
is blocking and single-threaded on purpose: one socket, one call outstanding, a timeout on
every receive, so a dead server can only cost ``timeout * (retries + 1)`` seconds.

* :class:`RpcConn` sends one call at a time over UDP (retransmitted with the same xid on
  timeout; replies with another xid are dropped) or TCP (record marking, no retransmission).
  Messages are built with :func:`floatlock.rpc.message.encode_call` and replies checked with
  :func:`floatlock.rpc.message.parse_reply` (raises ``RpcError`` unless accepted/SUCCESS).
* :func:`pmap_getport` asks a portmapper (program 100000 v2 GETPORT) for a program's port.
* :class:`NfsClient` speaks MOUNT v3 MNT (RFC 1813 appendix I) and NFSv3 NULL, GETATTR,
  LOOKUP, CREATE (UNCHECKED), READ and WRITE (RFC 1813 section 3), encoding with
  :mod:`floatlock.xdr`.  Attributes are skipped, not decoded, except the file size.

Sockets are created in the calling thread's network namespace; to reach a server inside a
test namespace, create the client while inside it (``bench.ganesha.netns_entered``).
"""

from __future__ import annotations

import os
import random
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from floatlock.rpc.message import AuthSys, encode_call, parse_reply, reply_xid
from floatlock.xdr import Decoder, Encoder, XdrError

__all__ = [
    "MOUNT_PROG",
    "NFS_PROG",
    "PMAP_PROG",
    "NfsClient",
    "NfsError",
    "NfsProc",
    "Nfsstat3",
    "RpcConn",
    "StableHow",
    "create_args",
    "default_cred",
    "fh_args",
    "lookup_args",
    "nfs_call",
    "pmap_getport",
    "read_args",
    "write_args",
]

Proto = Literal["udp", "tcp"]

PMAP_PROG, PMAP_VERS, PMAP_GETPORT = 100000, 2, 3
MOUNT_PROG, MOUNT_VERS, MOUNT_MNT, MOUNT_UMNT = 100005, 3, 1, 3
NFS_PROG, NFS_VERS = 100003, 3
IPPROTO = {"tcp": 6, "udp": 17}

FHSIZE3 = 64  # RFC 1813: opaque nfs_fh3<NFS3_FHSIZE>, fhandle3<FHSIZE3>
MNTPATHLEN = 1024
NAME_MAX = 255
FATTR3_SIZE = 84  # type..ctime: 5*4 + 2*8 + 8 (rdev) + 8 (fsid) + 8 (fileid) + 3*8 (times)
MAX_RECORD = 4 << 20

_RM = struct.Struct(">I")


class NfsProc(IntEnum):
    NULL = 0
    GETATTR = 1
    LOOKUP = 3
    ACCESS = 4
    READ = 6
    WRITE = 7
    CREATE = 8


class Nfsstat3(IntEnum):
    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    ACCES = 13
    EXIST = 17
    NOTDIR = 20
    ISDIR = 21
    INVAL = 22
    STALE = 70
    BADHANDLE = 10001
    SERVERFAULT = 10006


class StableHow(IntEnum):
    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class NfsError(Exception):
    """A MOUNT or NFS procedure answered with a non-OK status."""

    def __init__(self, what: str, status: int) -> None:
        name = Nfsstat3(status).name if status in Nfsstat3._value2member_map_ else str(status)
        super().__init__(f"{what}: {name}")
        self.status = status


def default_cred(machinename: str | None = None, uid: int = 0, gid: int = 0) -> AuthSys:
    """An AUTH_SYS credential like the Linux client's: the host name, uid, gid, [gid]."""
    return AuthSys(0, machinename or socket.gethostname(), uid, gid, (gid,))


# -- argument encoders (also used to pre-encode calls for rpcload) ---------------------------


def fh_args(fh: bytes) -> bytes:
    """GETATTR3args (and any argument that is just an nfs_fh3)."""
    enc = Encoder()
    enc.opaque(fh, FHSIZE3)
    return enc.getvalue()


def access_args(fh: bytes, access: int) -> bytes:
    """ACCESS3args: the handle and the ACCESS3 bits asked about."""
    enc = Encoder()
    enc.opaque(fh, FHSIZE3)
    enc.u32(access)
    return enc.getvalue()


def lookup_args(dir_fh: bytes, name: str) -> bytes:
    """LOOKUP3args: diropargs3 (dir handle, file name)."""
    enc = Encoder()
    enc.opaque(dir_fh, FHSIZE3)
    enc.string(name, NAME_MAX)
    return enc.getvalue()


def create_args(dir_fh: bytes, name: str, mode: int = 0o644) -> bytes:
    """CREATE3args, UNCHECKED, setting only the mode."""
    enc = Encoder()
    enc.opaque(dir_fh, FHSIZE3)
    enc.string(name, NAME_MAX)
    enc.u32(0)  # createmode3 UNCHECKED
    enc.boolean(True)  # sattr3.mode
    enc.u32(mode)
    for _ in range(3):  # uid, gid, size: don't set
        enc.boolean(False)
    enc.u32(0)  # atime DONT_CHANGE
    enc.u32(0)  # mtime DONT_CHANGE
    return enc.getvalue()


def read_args(fh: bytes, offset: int, count: int) -> bytes:
    enc = Encoder()
    enc.opaque(fh, FHSIZE3)
    enc.u64(offset)
    enc.u32(count)
    return enc.getvalue()


def write_args(fh: bytes, offset: int, data: bytes, stable: int = 0) -> bytes:
    enc = Encoder()
    enc.opaque(fh, FHSIZE3)
    enc.u64(offset)
    enc.u32(len(data))
    enc.u32(stable)
    enc.opaque(data)
    return enc.getvalue()


def nfs_call(proc: int, args: bytes, cred: AuthSys | None = None) -> bytes:
    """A whole NFSv3 call message (xid 0: rpcload overwrites it)."""
    return encode_call(0, NFS_PROG, NFS_VERS, proc, args, cred or default_cred())


class RpcConn:
    """One blocking RPC connection (UDP socket or TCP stream) to host:port."""

    def __init__(
        self,
        host: str,
        port: int,
        proto: Proto = "udp",
        *,
        timeout: float = 1.0,
        retries: int = 3,
        cred: AuthSys | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        self.proto: Proto = proto
        self.timeout = timeout
        self.retries = retries if proto == "udp" else 0
        self.cred = cred
        self._xid = random.getrandbits(32)
        self._sock = socket.socket(family, kind)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect((host, port))
        except OSError:
            self._sock.close()
            raise
        self._buf = b""

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RpcConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"") -> bytes:
        """Send one call and return the procedure's result bytes (after the reply header).

        Raises TimeoutError when no reply came, ``RpcError`` when the reply was not
        accepted with SUCCESS, ``XdrError`` when it was malformed.
        """
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        xid = self._xid
        msg = encode_call(xid, prog, vers, proc, args, self.cred)
        if self.proto == "tcp":
            self._sock.sendall(_RM.pack(0x80000000 | len(msg)) + msg)
            while True:
                data = self._read_record()
                if reply_xid(data) == xid:
                    return parse_reply(data).body
        for _ in range(self.retries + 1):
            self._sock.send(msg)
            try:
                while True:
                    data = self._sock.recv(MAX_RECORD)
                    if reply_xid(data) == xid:
                        return parse_reply(data).body
            except TimeoutError:
                continue
        raise TimeoutError(f"no reply to program {prog} v{vers} procedure {proc}")

    def _read_exact(self, n: int) -> bytes:
        have = len(self._buf)
        if n - have > 65536:
            # A big reply (1 MiB READ): read the rest straight into one buffer of its size,
            # not by re-joining the buffer per chunk (quadratic copying, which would count
            # against whichever server is measured).
            out = bytearray(n)
            out[:have] = self._buf
            self._buf = b""
            view = memoryview(out)
            while have < n:
                got = self._sock.recv_into(view[have:])
                if not got:
                    raise ConnectionError("connection closed by the server")
                have += got
            return bytes(out)
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._buf += chunk
        out_, self._buf = self._buf[:n], self._buf[n:]
        return out_

    def _read_record(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            (mark,) = _RM.unpack(self._read_exact(4))
            size = mark & 0x7FFFFFFF
            total += size
            if total > MAX_RECORD:
                raise XdrError(f"record of more than {MAX_RECORD} bytes")
            parts.append(self._read_exact(size))
            if mark & 0x80000000:
                return b"".join(parts)


def pmap_getport(
    host: str, prog: int, vers: int, proto: Proto = "udp", *, timeout: float = 1.0
) -> int:
    """The port a portmapper on host:111 has for (prog, vers, proto); 0 if none."""
    enc = Encoder()
    for v in (prog, vers, IPPROTO[proto], 0):
        enc.u32(v)
    with RpcConn(host, 111, "udp", timeout=timeout) as conn:
        return Decoder(conn.call(PMAP_PROG, PMAP_VERS, PMAP_GETPORT, enc.getvalue())).u32()


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: bytes
    eof: bool


def _skip_post_op_attr(dec: Decoder) -> int | None:
    """Skip a post_op_attr; returns the file size when attributes were present."""
    if not dec.boolean():
        return None
    body = dec.opaque_fixed(FATTR3_SIZE)
    return int.from_bytes(body[20:28], "big")


def _skip_wcc_data(dec: Decoder) -> None:
    if dec.boolean():  # pre_op_attr: size uint64, mtime, ctime (nfstime3 each 8 bytes)
        dec.opaque_fixed(24)
    _skip_post_op_attr(dec)


class NfsClient:
    """MOUNT v3 and a handful of NFSv3 procedures over one :class:`RpcConn` each.

    ``mount_port``/``nfs_port`` default to what the portmapper on host reports.
    """

    def __init__(
        self,
        host: str,
        *,
        proto: Proto = "tcp",
        nfs_port: int | None = None,
        mount_port: int | None = None,
        timeout: float = 2.0,
        cred: AuthSys | None = None,
    ) -> None:
        self.host = host
        self.proto: Proto = proto
        self.cred = cred or default_cred()
        self.timeout = timeout
        if nfs_port is None:
            nfs_port = pmap_getport(host, NFS_PROG, NFS_VERS, proto, timeout=timeout)
        if mount_port is None:
            mount_port = pmap_getport(host, MOUNT_PROG, MOUNT_VERS, proto, timeout=timeout)
        if not nfs_port or not mount_port:
            raise ConnectionError(f"NFSv3/MOUNTv3 over {proto} not registered on {host}")
        self.nfs_port = nfs_port
        self.mount_port = mount_port
        self.nfs = RpcConn(host, nfs_port, proto, timeout=timeout, cred=self.cred)

    def close(self) -> None:
        self.nfs.close()

    def __enter__(self) -> NfsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- MOUNT --------------------------------------------------------------------------

    def mount(self, dirpath: str) -> bytes:
        """MOUNT v3 MNT: the root file handle of the export at dirpath."""
        enc = Encoder()
        enc.string(dirpath, MNTPATHLEN)
        with RpcConn(
            self.host, self.mount_port, self.proto, timeout=self.timeout, cred=self.cred
        ) as conn:
            dec = Decoder(conn.call(MOUNT_PROG, MOUNT_VERS, MOUNT_MNT, enc.getvalue()))
        status = dec.u32()
        if status != 0:
            raise NfsError(f"MNT {dirpath}", status)
        fh = dec.opaque(FHSIZE3)
        dec.uint_array()  # auth_flavors
        return fh

    # -- NFSv3 --------------------------------------------------------------------------

    def null(self) -> None:
        self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.NULL)

    def getattr(self, fh: bytes) -> int:
        """GETATTR; returns the file size."""
        dec = Decoder(self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.GETATTR, fh_args(fh)))
        status = dec.u32()
        if status != 0:
            raise NfsError("GETATTR", status)
        return int.from_bytes(dec.opaque_fixed(FATTR3_SIZE)[20:28], "big")

    def lookup(self, dir_fh: bytes, name: str) -> bytes:
        """LOOKUP name in dir_fh; raises NfsError (status NOENT when absent)."""
        args = lookup_args(dir_fh, name)
        dec = Decoder(self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.LOOKUP, args))
        status = dec.u32()
        if status != 0:
            raise NfsError(f"LOOKUP {name}", status)
        fh = dec.opaque(FHSIZE3)
        return fh

    def create(self, dir_fh: bytes, name: str, mode: int = 0o644) -> bytes:
        """CREATE name (UNCHECKED: an existing file is opened, not truncated); its handle."""
        args = create_args(dir_fh, name, mode)
        dec = Decoder(self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.CREATE, args))
        status = dec.u32()
        if status != 0:
            raise NfsError(f"CREATE {name}", status)
        if dec.boolean():  # post_op_fh3
            return dec.opaque(FHSIZE3)
        return self.lookup(dir_fh, name)

    def read(self, fh: bytes, offset: int, count: int) -> ReadResult:
        args = read_args(fh, offset, count)
        dec = Decoder(self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.READ, args))
        status = dec.u32()
        _skip_post_op_attr(dec)
        if status != 0:
            raise NfsError("READ", status)
        dec.u32()  # count
        eof = dec.boolean()
        return ReadResult(dec.opaque(), eof)

    def write(
        self, fh: bytes, offset: int, data: bytes, stable: StableHow = StableHow.UNSTABLE
    ) -> int:
        """WRITE; returns the count the server wrote."""
        args = write_args(fh, offset, data, stable)
        dec = Decoder(self.nfs.call(NFS_PROG, NFS_VERS, NfsProc.WRITE, args))
        status = dec.u32()
        _skip_wcc_data(dec)
        if status != 0:
            raise NfsError("WRITE", status)
        return dec.u32()


def random_name(prefix: str = "bench") -> str:
    """A file name unlikely to clash with another run's."""
    return f"{prefix}-{os.getpid()}-{random.getrandbits(32):08x}"
