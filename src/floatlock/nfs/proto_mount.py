"""MOUNT protocol version 3 types and XDR codecs (RFC 1813 section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from floatlock.xdr import Decoder, Encoder

MOUNT_PROGRAM = 100005
MOUNT_V3 = 3

MNTPATHLEN = 1024  # RFC 1813 section 5.1
MNTNAMLEN = 255
FHSIZE3 = 64

AUTH_SYS = 1


class MountProc(IntEnum):
    NULL = 0
    MNT = 1
    DUMP = 2
    UMNT = 3
    UMNTALL = 4
    EXPORT = 5


class Mountstat3(IntEnum):
    """RFC 1813 section 5.1.5 mountstat3."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    ACCES = 13
    NOTDIR = 20
    INVAL = 22
    NAMETOOLONG = 63
    NOTSUPP = 10004
    SERVERFAULT = 10006


def decode_dirpath(dec: Decoder) -> str:
    return dec.string(MNTPATHLEN)


def encode_dirpath(path: str) -> bytes:
    enc = Encoder()
    enc.string(path, MNTPATHLEN)
    return enc.getvalue()


@dataclass(frozen=True, slots=True)
class MountRes:
    """mountres3, RFC 1813 section 5.2.1."""

    status: Mountstat3
    fh: bytes = b""
    flavors: tuple[int, ...] = (AUTH_SYS,)

    def encode(self) -> bytes:
        enc = Encoder()
        enc.u32(self.status)
        if self.status == Mountstat3.OK:
            enc.opaque(self.fh, FHSIZE3)
            enc.uint_array(self.flavors)
        return enc.getvalue()

    @classmethod
    def decode(cls, dec: Decoder) -> MountRes:
        v = dec.u32()
        s = Mountstat3(v) if v in Mountstat3._value2member_map_ else Mountstat3.SERVERFAULT
        if s != Mountstat3.OK:
            return cls(s, b"", ())
        fh = dec.opaque(FHSIZE3)
        return cls(s, fh, tuple(dec.uint_array()))


@dataclass(frozen=True, slots=True)
class MountEntry:
    """mountbody, RFC 1813 section 5.2.2: one (client, path) pair for DUMP."""

    hostname: str
    directory: str


def encode_mountlist(entries: list[MountEntry]) -> bytes:
    enc = Encoder()

    def item(e: Encoder, m: MountEntry) -> None:
        e.string(m.hostname, MNTNAMLEN)
        e.string(m.directory, MNTPATHLEN)

    enc.linked_list(entries, item)
    return enc.getvalue()


def decode_mountlist(dec: Decoder) -> list[MountEntry]:
    return dec.linked_list(lambda d: MountEntry(d.string(MNTNAMLEN), d.string(MNTPATHLEN)))


@dataclass(frozen=True, slots=True)
class ExportNode:
    """exportnode, RFC 1813 section 5.2.5: a directory and the client groups allowed."""

    directory: str
    groups: tuple[str, ...]


def encode_exportlist(nodes: list[ExportNode]) -> bytes:
    enc = Encoder()

    def group(e: Encoder, g: str) -> None:
        e.string(g, MNTNAMLEN)

    def item(e: Encoder, n: ExportNode) -> None:
        e.string(n.directory, MNTPATHLEN)
        e.linked_list(n.groups, group)

    enc.linked_list(nodes, item)
    return enc.getvalue()


def decode_exportlist(dec: Decoder) -> list[ExportNode]:
    def item(d: Decoder) -> ExportNode:
        path = d.string(MNTPATHLEN)
        return ExportNode(path, tuple(d.linked_list(lambda g: g.string(MNTNAMLEN))))

    return dec.linked_list(item)
