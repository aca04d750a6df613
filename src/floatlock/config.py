"""The daemon's configuration: TOML in, frozen dataclasses out, one-line errors.

Every setting has an embedded default, so ``floatlock serve`` with no file at all exports a
directory under the working tree and keeps its state next to it.  A config file only names what
differs.  Mistakes (an unknown key, a wrong type, a port out of range) raise :class:`ConfigError`
whose message is one line naming the file, the table and the key, because an admin reads it in
a journal, not in a traceback.

Example::

    [server]
    listen = ["0.0.0.0", "::"]   # wildcard: virtual addresses are learnt per request
    state_dir = "/srv/nfs-ha/state"
    virtual_server = true

    [ports]
    nfs = 2049
    mount = 20048
    nlm = 32803
    statd = 32765

    [portmap]
    mode = "auto"                # auto | system | builtin | off

    [[export]]
    path = "/srv/nfs-ha/export"
    clients = "198.18.0.0/15(rw,no_root_squash) *(ro)"

    [nfs]
    workers = 2                  # threads doing the NFS file system calls
    inline_metadata = true       # GETATTR/ACCESS/FSINFO/PATHCONF of cached handles on the
                                 # event loop; false for exports whose stat() can block
                                 # (see floatlock.nfs.service)

    [nlm]
    grace_seconds = 90

    [statd]
    ha_callout = "/usr/local/sbin/ha-callout"
    notify = true
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from floatlock.address import canonical_ip

__all__ = ["Config", "ConfigError", "load_config"]


class ConfigError(Exception):
    """A configuration mistake, explained in one line."""


@dataclass(frozen=True, slots=True)
class ServerSection:
    listen: tuple[str, ...] = ("0.0.0.0", "::")
    state_dir: Path = Path("var/state")
    virtual_server: bool = True
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class PortsSection:
    nfs: int = 2049
    mount: int = 20048
    nlm: int = 32803
    statd: int = 32765
    portmap: int = 111


@dataclass(frozen=True, slots=True)
class PortmapSection:
    mode: str = "auto"  # auto: use the system's rpcbind when one runs, else serve our own


@dataclass(frozen=True, slots=True)
class ExportSection:
    path: Path
    clients: str = "*(rw)"


@dataclass(frozen=True, slots=True)
class NfsSection:
    workers: int = 2
    inline_metadata: bool = True


@dataclass(frozen=True, slots=True)
class NlmSection:
    grace_seconds: float = 90.0
    identify_by_caller_name: bool = False
    max_locks_per_host: int = 100_000
    max_blocked_per_host: int = 1_000
    max_blocked: int = 100_000


@dataclass(frozen=True, slots=True)
class StatdSection:
    ha_callout: str = ""
    notify: bool = True
    notify_seconds: float = 900.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    ports: PortsSection = field(default_factory=PortsSection)
    portmap: PortmapSection = field(default_factory=PortmapSection)
    exports: tuple[ExportSection, ...] = (ExportSection(Path("var/export")),)
    nfs: NfsSection = field(default_factory=NfsSection)
    nlm: NlmSection = field(default_factory=NlmSection)
    statd: StatdSection = field(default_factory=StatdSection)
    source: str = "<defaults>"


_PORTMAP_MODES = ("auto", "system", "builtin", "off")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _section(cls: type[Any], table: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking names and types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        values[key] = _coerce(value, str(f.type), f"{where}.{key}")
    try:
        return cls(**values)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{where}: {e}") from None


def _coerce(value: Any, type_name: str, where: str) -> Any:
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if type_name == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if type_name == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if type_name == "Path":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if type_name == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(f"no coercion for {type_name}")  # pragma: no cover


def _validate(cfg: Config) -> None:
    where = cfg.source
    for addr in cfg.server.listen:
        try:
            canonical_ip(addr)
        except ValueError:
            raise ConfigError(f"{where}: [server] listen: {addr!r} is not an IP address") from None
    if not cfg.server.listen:
        raise ConfigError(f"{where}: [server] listen: needs at least one address")
    if cfg.server.log_level not in _LOG_LEVELS:
        raise ConfigError(f"{where}: [server] log_level must be one of {', '.join(_LOG_LEVELS)}")
    for f in fields(PortsSection):
        port = getattr(cfg.ports, f.name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where}: [ports] {f.name} = {port} is not a port number")
    if cfg.portmap.mode not in _PORTMAP_MODES:
        raise ConfigError(f"{where}: [portmap] mode must be one of {', '.join(_PORTMAP_MODES)}")
    if not 1 <= cfg.nfs.workers <= 256:
        raise ConfigError(f"{where}: [nfs] workers must be between 1 and 256")
    if cfg.nlm.grace_seconds < 0:
        raise ConfigError(f"{where}: [nlm] grace_seconds must not be negative")


def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    sections: dict[str, Any] = {}
    simple = {
        "server": ServerSection,
        "ports": PortsSection,
        "portmap": PortmapSection,
        "nfs": NfsSection,
        "nlm": NlmSection,
        "statd": StatdSection,
    }
    for key, value in doc.items():
        if key in simple:
            sections[key] = _section(simple[key], value, f"{source}: [{key}]")
        elif key == "export":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: export must be an array of tables ([[export]])")
            sections["exports"] = tuple(
                _section(ExportSection, t, f"{source}: [[export]] #{i + 1}")
                for i, t in enumerate(value)
            )
        else:
            raise ConfigError(
                f"{source}: unknown table [{key}] (known: {', '.join([*simple, 'export'])})"
            )
    cfg = Config(**sections, source=source)
    _validate(cfg)
    return cfg


def load_config(path: Path | None) -> Config:
    """The configuration from ``path``, or the embedded defaults when it is None."""
    if path is None:
        cfg = Config()
        _validate(cfg)
        return cfg
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_config(text, str(path))
