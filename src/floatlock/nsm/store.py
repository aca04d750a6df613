"""statd's on-disk state: the nfs-utils layout, one directory per server identity.

Layout (docs/protocol-extensions.md, "State directory")::

    STATE_DIR/node/              the node itself (what rpc.statd -P STATE_DIR/node would use)
    STATE_DIR/vs/<address>/      one per virtual server address, movable between nodes
        state                    NSM state number: 4 bytes, native byte order (as nfs-utils)
        sm/<mon_name>            monitor records of hosts being monitored
        sm.bak/<mon_name>        records of peers still to be notified of our restart

A record file holds one line per (my_name, callback) for that ``mon_name``, in the format
nfs-utils 2.6 ``rpc.statd`` writes (learned by running it; see tests/interop)::

    0100007f 000186b5 00000004 00000010 <32 hex digits of priv> <mon_name> <my_name>\\n

the fields being the caller's IPv4 address as nfs-utils prints an ``in_addr`` (host byte
order), my_prog, my_vers, my_proc in hex, the private bytes, and the names
(:mod:`floatlock.nsm.names` encoding; host names and addresses are written unchanged), so
``sm-notify -P DIR`` reads what we write and we read what ``rpc.statd`` writes.

Crash safety: every file is replaced by write-to-temp, fsync, rename, fsync of the directory,
so a reader sees the old or the new file, never a mix.  Every writing method takes an optional
``dirs`` set: given one, it fsyncs the file but leaves the directory fsync to the caller, and
adds the directories to sync to the set, so that statd's writer
(:mod:`floatlock.nsm.writer`) makes a whole batch durable with one fsync per directory.

A file or line that does not parse (torn by a foreign writer, or not ours) is logged and
skipped, never fatal.  Temporary files (names starting with ``.``, which :func:`names.encode`
never produces) left by a crash are removed when the directory is loaded.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from floatlock.address import ServerAddress
from floatlock.nsm import names
from floatlock.nsm.effects import Callback, Record
from floatlock.nsm.monitor import NODE

__all__ = [
    "IdentityStore",
    "LoadResult",
    "StateDir",
    "atomic_write",
    "format_record",
    "fsync_dir",
    "parse_record",
]

log = logging.getLogger("floatlock.nsm.store")

_STATE = struct.Struct("=i")  # nfs-utils writes the int in host byte order


def _addr_field(caller: str) -> str:
    try:
        packed = socket.inet_aton(caller)
    except OSError:
        packed = socket.inet_aton("127.0.0.1")  # nfs-utils records IPv4 only
    return f"{int.from_bytes(packed, sys.byteorder):08x}"


def format_record(r: Record) -> str:
    return (
        f"{_addr_field(r.caller)} {r.callback.prog & 0xFFFFFFFF:08x} "
        f"{r.callback.vers & 0xFFFFFFFF:08x} {r.callback.proc & 0xFFFFFFFF:08x} "
        f"{r.priv.hex()} {names.encode(r.mon_name)} {names.encode(r.my_name)}\n"
    )


def _s32(x: int) -> int:
    return x - (1 << 32) if x & 0x80000000 else x


def parse_record(line: str) -> Record:
    """One record line; ValueError when it is not one."""
    f = line.split()
    if len(f) != 7 or any(len(x) != 8 for x in f[:4]) or len(f[4]) != 32:
        raise ValueError(f"bad record line {line!r}")
    addr, prog, vers, proc = (int(x, 16) for x in f[:4])
    caller = socket.inet_ntoa(addr.to_bytes(4, sys.byteorder))
    return Record(
        names.decode(f[5]),
        names.decode(f[6]),
        Callback(_s32(prog), _s32(vers), _s32(proc)),
        bytes.fromhex(f[4]),
        caller,
    )


@dataclass(slots=True)
class LoadResult:
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what was reported and skipped


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _synced(path: Path, dirs: set[Path] | None) -> None:
    """Directory ``path`` changed: fsync it now, or note it in ``dirs`` for the caller."""
    if dirs is None:
        fsync_dir(path)
    else:
        dirs.add(path)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, dirs: set[Path] | None = None) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old or the new file.

    The file is durable on return; its directory entry too, unless ``dirs`` is given: then
    the directory is added to it and the caller fsyncs it (before relying on the new name).
    """
    tmp = path.with_name(f".tmp.{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _synced(path.parent, dirs)


class IdentityStore:
    """``state``, ``sm/`` and ``sm.bak/`` of one identity."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sm = path / "sm"
        self.bak = path / "sm.bak"
        self.state_file = path / "state"

    def ensure(self) -> None:
        for d in (self.sm, self.bak):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- state number ----------------------------------------------------------------------

    def read_state(self) -> int:
        """The stored state number, 0 when there is none (or it is torn: reported)."""
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.error("cannot read %s: %s", self.state_file, e)
            return 0
        if len(data) != _STATE.size:
            log.error(
                "%s is torn or foreign (%d bytes); starting from 0", self.state_file, len(data)
            )
            return 0
        return max(0, int(_STATE.unpack(data)[0]))

    def write_state(self, state: int, dirs: set[Path] | None = None) -> None:
        atomic_write(self.state_file, _STATE.pack(state), 0o644, dirs)

    # -- records ---------------------------------------------------------------------------

    def _load_dir(self, d: Path) -> LoadResult:
        out = LoadResult()
        try:
            entries = sorted(os.listdir(d))
        except FileNotFoundError:
            return out
        for entry in entries:
            p = d / entry
            if entry.startswith("."):
                if entry.startswith(".tmp."):
                    p.unlink(missing_ok=True)  # a write cut short by a crash
                continue
            try:
                text = p.read_text("ascii")
            except (OSError, UnicodeDecodeError) as e:
                log.warning("skipping unreadable record file %s: %s", p, e)
                out.skipped.append(str(p))
                continue
            for line in text.splitlines(keepends=True):
                try:
                    if not line.endswith("\n"):
                        raise ValueError("torn line (no newline)")
                    out.records.append(parse_record(line))
                except ValueError as e:
                    log.warning("skipping bad record in %s: %s", p, e)
                    out.skipped.append(f"{p}: {line!r}")
        return out

    def load(self) -> LoadResult:
        return self._load_dir(self.sm)

    def load_backup(self) -> LoadResult:
        return self._load_dir(self.bak)

    def records_path(self, mon_name: str) -> Path:
        return self.sm / names.encode(mon_name)

    def backup_path(self, mon_name: str) -> Path:
        return self.bak / names.encode(mon_name)

    def write_records(
        self, mon_name: str, records: tuple[Record, ...], dirs: set[Path] | None = None
    ) -> None:
        path = self.records_path(mon_name)
        if not records:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _synced(self.sm, dirs)
            return
        atomic_write(path, "".join(format_record(r) for r in records).encode("ascii"), 0o600, dirs)

    def move_to_backup(self, dirs: set[Path] | None = None) -> None:
        """Every ``sm/`` file into ``sm.bak/``, merged with what is already there.

        A merged ``sm.bak/`` file is made durable (directory included) before its ``sm/``
        source is removed, so no crash loses the records of both.
        """
        try:
            entries = sorted(os.listdir(self.sm))
        except FileNotFoundError:
            return
        merged: list[Path] = []
        for entry in entries:
            if entry.startswith("."):
                continue
            src, dst = self.sm / entry, self.bak / entry
            if dst.exists():
                try:
                    lines = dst.read_text("ascii").splitlines(keepends=True)
                    for line in src.read_text("ascii").splitlines(keepends=True):
                        if line not in lines:
                            lines.append(line)
                    atomic_write(dst, "".join(lines).encode("ascii"), 0o600, set())
                    merged.append(src)
                except (OSError, UnicodeDecodeError) as e:
                    log.warning("cannot merge %s into %s: %s", src, dst, e)
                    continue
            else:
                os.replace(src, dst)
        if merged:
            fsync_dir(self.bak)  # the merged copies are durable before their sources go
            for src in merged:
                src.unlink(missing_ok=True)
        _synced(self.bak, dirs)
        _synced(self.sm, dirs)

    def delete_backup(self, mon_name: str, dirs: set[Path] | None = None) -> None:
        try:
            self.backup_path(mon_name).unlink()
        except FileNotFoundError:
            return
        _synced(self.bak, dirs)


class StateDir:
    """The root: ``node/`` and ``vs/<address>/`` identities (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def identity(self, name: ServerAddress) -> IdentityStore:
        if name == NODE:
            return IdentityStore(self.root / "node")
        return IdentityStore(self.root / "vs" / names.encode(name))

    def virtual_servers(self) -> list[ServerAddress]:
        """Addresses that have a directory under ``vs/`` (for listing and takeover)."""
        try:
            entries = os.listdir(self.root / "vs")
        except FileNotFoundError:
            return []
        out: list[ServerAddress] = []
        for e in sorted(entries):
            try:
                out.append(ServerAddress(names.decode(e)))
            except names.NameError_:
                log.warning("skipping foreign entry %s", self.root / "vs" / e)
        return out
