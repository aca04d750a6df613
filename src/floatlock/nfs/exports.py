"""Exports: exports(5) parsing and the per-client access decision (sans-IO).

An :class:`Export` is a directory, an export id (the ``fsid=`` option, else a stable hash of the
path so that every node computes the same one) and a list of client specifications, each with
its options.  The lead's TOML configuration builds the same objects directly.

Client specifications (exports(5) "Machine Name Formats"): a single IP address, an IP network
(``198.18.0.0/15`` or ``198.18.0.0/255.254.0.0``), a host name, a wildcard name
(``*.example.org``), or ``*`` / an empty name for everybody.  Netgroups (``@group``) are
refused.  When several match, exports(5) gives precedence by kind, in this order: single host,
wildcard names, networks, everybody; within a kind the first listed wins.

Options: ``rw``/``ro`` (default ro, as exports(5)), ``root_squash`` (default) /
``no_root_squash`` / ``all_squash`` / ``no_all_squash``, ``anonuid=``/``anongid=`` (default
65534), ``secure`` (default: requests must come from a port below 1024) / ``insecure``,
``fsid=N``.  Options Linux accepts that change nothing here (sync, async, wdelay, no_wdelay,
subtree_check, no_subtree_check, hide, nohide, crossmnt, sec=sys) are accepted and ignored;
anything else is an error, reported with its line number.

Host names are matched through injected functions (``forward``: name to addresses, ``reverse``:
address to names) so the matching itself stays pure and testable.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import shlex
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum

from floatlock.address import canonical_ip
from floatlock.nfs.creds import Squash

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class ExportsError(ValueError):
    """A line of an exports file that cannot be understood."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    rw: bool = False
    squash: Squash = Squash.ROOT
    anonuid: int = 65534
    anongid: int = 65534
    secure: bool = True


class ClientKind(IntEnum):
    """Precedence order of exports(5): lower wins."""

    HOST = 0
    WILDCARD = 1
    NETWORK = 2
    ANYONE = 3


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One ``client(options)`` item of an export line."""

    pattern: str
    options: ExportOptions = ExportOptions()
    kind: ClientKind = field(init=False)
    network: IpNet | None = field(init=False)

    def __post_init__(self) -> None:
        p = self.pattern
        kind, net = ClientKind.HOST, None
        if p in ("", "*"):
            kind = ClientKind.ANYONE
        elif p.startswith("@"):
            raise ExportsError(f"netgroups are not supported: {p!r}")
        elif "/" in p:
            try:
                net = ipaddress.ip_network(p, strict=False)
            except ValueError as e:
                raise ExportsError(f"bad network {p!r}: {e}") from None
            kind = ClientKind.NETWORK
        elif any(c in p for c in "*?["):
            kind = ClientKind.WILDCARD
        else:
            try:
                net = ipaddress.ip_network(canonical_ip(p))
            except ValueError:
                net = None  # a host name
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "network", net)

    def matches(
        self, ip: str, forward: Callable[[str], Iterable[str]], reverse: Callable[[str], list[str]]
    ) -> bool:
        if self.kind is ClientKind.ANYONE:
            return True
        if self.network is not None:
            return ipaddress.ip_address(ip) in self.network
        if self.kind is ClientKind.WILDCARD:
            pat = self.pattern.lower()
            return any(fnmatch.fnmatchcase(n.lower(), pat) for n in reverse(ip))
        try:
            return ip in {canonical_ip(a) for a in forward(self.pattern)}
        except (OSError, ValueError):
            return False


def default_export_id(path: str) -> int:
    """A stable 31-bit id for an export path (the same on every node): CRC-32 of the path."""
    return (zlib.crc32(path.encode()) & 0x7FFFFFFF) or 1


@dataclass(frozen=True, slots=True)
class Export:
    path: str
    clients: tuple[ClientSpec, ...]
    export_id: int = 0

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ExportsError(f"export path must be absolute: {self.path!r}")
        norm = posixpath.normpath(self.path)
        norm = "/" + norm.lstrip("/")  # normpath keeps a leading "//"
        object.__setattr__(self, "path", norm)
        if self.export_id == 0:
            object.__setattr__(self, "export_id", default_export_id(norm))

    def options_for(
        self,
        ip: str,
        forward: Callable[[str], Iterable[str]] = lambda _n: (),
        reverse: Callable[[str], list[str]] = lambda _a: [],
    ) -> ExportOptions | None:
        """The options of the best-matching client spec for ``ip``, None when none matches."""
        ip = canonical_ip(ip)
        for kind in ClientKind:
            for spec in self.clients:
                if spec.kind is kind and spec.matches(ip, forward, reverse):
                    return spec.options
        return None


_IGNORED = {
    "sync",
    "async",
    "wdelay",
    "no_wdelay",
    "subtree_check",
    "no_subtree_check",
    "hide",
    "nohide",
    "crossmnt",
    "sec=sys",
    "no_acl",
    "acl",
}


def parse_options(text: str, base: ExportOptions = ExportOptions()) -> tuple[ExportOptions, int]:
    """Apply a comma-separated option list to ``base``; returns (options, fsid or 0)."""
    opts, fsid = base, 0
    for raw in text.split(","):
        o = raw.strip()
        if not o or o in _IGNORED:
            continue
        name, _, value = o.partition("=")
        if o == "rw":
            opts = replace(opts, rw=True)
        elif o == "ro":
            opts = replace(opts, rw=False)
        elif o == "root_squash":
            opts = replace(opts, squash=Squash.ROOT)
        elif o == "no_root_squash":
            opts = replace(opts, squash=Squash.NONE)
        elif o == "all_squash":
            opts = replace(opts, squash=Squash.ALL)
        elif o == "no_all_squash":
            if opts.squash is Squash.ALL:
                opts = replace(opts, squash=Squash.ROOT)
        elif o == "secure":
            opts = replace(opts, secure=True)
        elif o == "insecure":
            opts = replace(opts, secure=False)
        elif name in ("anonuid", "anongid", "fsid") and value:
            try:
                n = int(value)
            except ValueError:
                raise ExportsError(f"{name} needs a number, got {value!r}") from None
            if not 0 <= n <= 0xFFFFFFFF:
                raise ExportsError(f"{name}={n} out of range")
            if name == "anonuid":
                opts = replace(opts, anonuid=n)
            elif name == "anongid":
                opts = replace(opts, anongid=n)
            else:
                if n == 0 or n > 0x7FFFFFFF:
                    raise ExportsError("fsid must be 1..2147483647 (0 is the NFSv4 root)")
                fsid = n
        else:
            raise ExportsError(f"unknown export option {o!r}")
    return opts, fsid


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    buf, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        yield start, buf
        buf = ""
    if buf:
        yield start, buf


def parse_exports(text: str) -> list[Export]:
    """Parse exports(5) text: ``/path [-defaults] client(opts) client2(opts) ...`` per line."""
    out: list[Export] = []
    seen: dict[int, str] = {}
    for lineno, line in _logical_lines(text):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise ExportsError(f"line {lineno}: {e}") from None
        if not words:
            continue
        try:
            out.append(_parse_line(words, seen))
        except ExportsError as e:
            raise ExportsError(f"line {lineno}: {e}") from None
    return out


def _parse_line(words: list[str], seen: dict[int, str]) -> Export:
    path, rest = words[0], words[1:]
    defaults, fsid = ExportOptions(), 0
    if rest and rest[0].startswith("-"):
        defaults, fsid = parse_options(rest[0][1:])
        rest = rest[1:]
    clients: list[ClientSpec] = []
    for w in rest or ["*"]:
        host, paren, tail = w.partition("(")
        if paren:
            if not tail.endswith(")"):
                raise ExportsError(f"unbalanced parenthesis in {w!r}")
            opts, f = parse_options(tail[:-1], defaults)
            fsid = f or fsid
        else:
            opts = defaults
        clients.append(ClientSpec(host, opts))
    export = Export(path, tuple(clients), fsid)
    other = seen.get(export.export_id)
    if other is not None and other != export.path:
        raise ExportsError(f"export id {export.export_id} of {path} already used by {other}")
    seen[export.export_id] = export.path
    return export
