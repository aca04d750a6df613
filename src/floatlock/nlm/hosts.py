"""lockd's host table: one record per (client, server address) pair (sans-IO).

Theory of operation
-------------------
XNFS NLM ("Crash Recovery") ties every lock to the client host that holds it, and the
server's status monitor (NSM, statd) tells lockd when that host restarts so its locks can be
dropped.  The seed's ``virtual_server`` option makes the *server address the request arrived
on* part of the host's identity:

* ``virtual_server=True`` (default): a host is keyed by ``HostKey(client, server)``.  The same
  client talking to two virtual addresses is two hosts, with separate monitor records
  (``my_name`` = that address), separate grace (the address's clock) and separately droppable
  state, so an address can be released or taken over alone.
* ``virtual_server=False``: keyed by the client alone (``server`` is :data:`ANY_SERVER`), and
  ``my_name`` is the node name, as stock lockd does.

The client is identified by the request's source IP by default, as Linux lockd does; the
``caller_name`` in the arguments is only used with ``use_caller_name=True`` (it is unverified
text and often an unresolvable short name).

Monitoring (NSM SM_MON / SM_UNMON) follows this rule:

* **monitor before the first lock.** ``start_monitor(host)`` returns a :class:`MonitorHost`
  effect the first time a host needs one (monitor state UNMONITORED -> PENDING); the adapter
  sends SM_MON (``mon_name`` = the client identity text, ``my_name`` = the server address text,
  ``priv`` = the server address packed in 16 bytes) and reports back with ``monitor_done``.
  lockd grants nothing to an unmonitored host: a lock held by a host statd does not watch
  would survive the host's reboot forever.
* **unmonitor when the host is collected,** not when its last lock goes: an application that
  locks and unlocks in a loop would otherwise cost two statd round trips (and statd disk
  writes) per lock.  ``collect(now, busy)`` forgets hosts that hold nothing (``busy(key)``,
  asked of the lock core at collection time, so no operation pays for keeping a flag
  current) and were not seen for ``idle_timeout`` seconds, and returns :class:`UnmonitorHost`
  effects for those statd watches.  This is what Linux lockd does too (its host GC).
* a statd reboot callback (``rebooted``) updates the NSM state but keeps the monitor state:
  statd keeps its record until SM_UNMON, so collection still unmonitors it later.

``priv`` makes statd's callbacks exact: the SM_MON ``priv`` (16 opaque bytes that statd returns
verbatim in ``nlm_sm_status``) carries the server address (IPv4 as IPv4-mapped IPv6), so a
callback names (mon_name, my_name) even though ``nlm_sm_status`` has no my_name field.

Per-address operations (``hosts_of_server``, ``drop_server``) serve the roadmap's release and
takeover of one address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final, NamedTuple

from floatlock.address import ServerAddress, canonical_ip

__all__ = [
    "ANY_SERVER",
    "Host",
    "HostKey",
    "HostLimitError",
    "HostTable",
    "MonitorHost",
    "MonitorState",
    "UnmonitorHost",
    "priv_for",
    "server_from_priv",
]

#: The server part of every host key when ``virtual_server`` is off (one node-wide identity).
ANY_SERVER: Final = ServerAddress("*")

_PRIV_NONE: Final = bytes(16)


def priv_for(server: ServerAddress) -> bytes:
    """The 16-byte SM_MON ``priv`` naming ``server`` (zeros for :data:`ANY_SERVER`)."""
    try:
        ip = ipaddress.ip_address(server)
    except ValueError:
        return _PRIV_NONE
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed
    return ip.packed


def server_from_priv(priv: bytes) -> ServerAddress | None:
    """Inverse of :func:`priv_for`: None for all-zero (or malformed) ``priv``."""
    if len(priv) != 16 or priv == _PRIV_NONE:
        return None
    return ServerAddress(canonical_ip(str(ipaddress.IPv6Address(priv))))


class HostKey(NamedTuple):
    client: str  # source IP text, or caller_name with use_caller_name
    server: ServerAddress  # the address the client talked to, or ANY_SERVER


class MonitorState(Enum):
    UNMONITORED = 0
    PENDING = 1  # SM_MON sent, no answer yet
    MONITORED = 2


@dataclass(frozen=True, slots=True)
class MonitorHost:
    """Effect: ask statd to SM_MON ``mon_name`` for ``my_name`` with ``priv``."""

    key: HostKey
    mon_name: str
    my_name: str
    priv: bytes


@dataclass(frozen=True, slots=True)
class UnmonitorHost:
    """Effect: ask statd to SM_UNMON ``mon_name`` for ``my_name``."""

    key: HostKey
    mon_name: str
    my_name: str


class HostLimitError(Exception):
    """The table is full (``max_hosts``); lockd answers DENIED_NOLOCKS."""


class Host:
    """One client host as seen through one server address."""

    __slots__ = (
        "_monitor",
        "addr",
        "caller_name",
        "grace_key",
        "key",
        "last_seen",
        "monitored",
        "my_name",
        "nsm_state",
        "server",
    )

    def __init__(self, key: HostKey, addr: str, caller_name: str, server: ServerAddress) -> None:
        self.key = key
        self.addr = addr  # latest source IP: where GRANTED and _RES callbacks go
        self.caller_name = caller_name  # latest caller_name the client sent
        self.server = server  # the address callbacks are sent from (first one seen)
        self.my_name = str(server)
        self.nsm_state: int | None = None  # the client's NSM state number, when learnt
        #: The address whose grace clock applies to this host (ANY_SERVER when not virtual).
        self.grace_key = key.server
        # Plain attributes, not properties: every LOCK reads them.
        self._monitor = MonitorState.UNMONITORED
        self.monitored = False  # monitor is MONITORED
        self.last_seen = 0.0

    @property
    def client(self) -> str:
        return self.key.client

    @property
    def monitor(self) -> MonitorState:
        return self._monitor

    @monitor.setter
    def monitor(self, state: MonitorState) -> None:
        self._monitor = state
        self.monitored = state is MonitorState.MONITORED

    def __repr__(self) -> str:
        return (
            f"Host({self.key.client!r} via {self.key.server}, addr={self.addr}, "
            f"state={self.nsm_state}, {self.monitor.name})"
        )


class HostTable:
    """Hosts by key, with indexes by client identity and by server address."""

    def __init__(
        self,
        *,
        virtual_server: bool = True,
        use_caller_name: bool = False,
        node_name: str = "127.0.0.1",
        idle_timeout: float = 300.0,
        max_hosts: int = 65536,
    ) -> None:
        self.virtual_server = virtual_server
        self.use_caller_name = use_caller_name
        self.node_name = node_name
        self.idle_timeout = idle_timeout
        self.max_hosts = max_hosts
        self._hosts: dict[tuple[str, ServerAddress], Host] = {}  # by HostKey (a tuple)
        self._by_client: dict[str, dict[HostKey, None]] = {}
        self._by_server: dict[ServerAddress, dict[HostKey, None]] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(list(self._hosts.values()))

    # -- identity -------------------------------------------------------------------------

    def client_id(self, client_ip: str, caller_name: str) -> str:
        """The text that identifies a client: its source IP, or caller_name when configured."""
        if self.use_caller_name and caller_name:
            return caller_name
        return canonical_ip(client_ip) if ":" in client_ip else client_ip

    def key_for(self, client_ip: str, caller_name: str, server: ServerAddress) -> HostKey:
        return HostKey(
            self.client_id(client_ip, caller_name),
            server if self.virtual_server else ANY_SERVER,
        )

    # -- lookup ---------------------------------------------------------------------------

    def get(self, key: HostKey) -> Host | None:
        return self._hosts.get(key)

    def lookup(self, client_ip: str, caller_name: str, server: ServerAddress, now: float) -> Host:
        """The host a request belongs to, created on first sight; marks it seen at ``now``.

        Raises :class:`HostLimitError` when a new host would exceed ``max_hosts``.
        """
        addr = canonical_ip(client_ip) if ":" in client_ip else client_ip
        # A plain tuple finds the HostKey (a named tuple hashes and compares as one): the
        # HostKey itself is built only for a new host, not once per request.
        client = caller_name if self.use_caller_name and caller_name else addr
        host = self._hosts.get((client, server if self.virtual_server else ANY_SERVER))
        if host is None:
            if len(self._hosts) >= self.max_hosts:
                raise HostLimitError(f"host table full ({self.max_hosts} hosts)")
            key = HostKey(client, server if self.virtual_server else ANY_SERVER)
            host = Host(key, addr, caller_name, server)
            if not self.virtual_server:
                host.my_name = self.node_name
            self._hosts[key] = host
            self._by_client.setdefault(key.client, {})[key] = None
            self._by_server.setdefault(key.server, {})[key] = None
        else:
            host.addr = addr
            if caller_name:
                host.caller_name = caller_name
        host.last_seen = now
        return host

    def find_monitored(self, mon_name: str, priv: bytes) -> Host | None:
        """The host a statd callback (``nlm_sm_status``) names, by mon_name and ``priv``."""
        server = server_from_priv(priv) if self.virtual_server else ANY_SERVER
        if server is None:
            return None
        return self._hosts.get(HostKey(mon_name, server))

    def hosts_of_client(self, client: str, server: ServerAddress | None = None) -> list[Host]:
        """Hosts of one client identity (FREE_ALL), optionally through one server address."""
        keys = self._by_client.get(client, {})
        hosts = self._hosts
        if server is None or not self.virtual_server:
            return [hosts[k] for k in keys]
        return [hosts[k] for k in keys if k.server == server]

    def hosts_of_server(self, server: ServerAddress) -> list[Host]:
        """Every host that talked to ``server`` (ANY_SERVER lists all when not virtual)."""
        return [self._hosts[k] for k in self._by_server.get(server, {})]

    def servers(self) -> list[ServerAddress]:
        return list(self._by_server)

    # -- NSM ------------------------------------------------------------------------------

    def start_monitor(self, host: Host) -> MonitorHost | None:
        """The SM_MON to send before ``host`` may hold anything, once; None if not needed."""
        if host.monitor is not MonitorState.UNMONITORED:
            return None
        host.monitor = MonitorState.PENDING
        return MonitorHost(host.key, host.key.client, host.my_name, priv_for(host.key.server))

    def monitor_done(self, host: Host, ok: bool) -> None:
        """statd answered the SM_MON (``ok``) or it failed: a later lock will retry."""
        if host.monitor is MonitorState.PENDING:
            host.monitor = MonitorState.MONITORED if ok else MonitorState.UNMONITORED

    def note_state(self, host: Host, state: int) -> None:
        """Record the client's NSM state number (from LOCK arguments)."""
        host.nsm_state = state

    def rebooted(self, mon_name: str, priv: bytes, state: int) -> Host | None:
        """statd reports that ``mon_name`` restarted with ``state``: the host whose locks the
        caller must now drop, or None."""
        host = self.find_monitored(mon_name, priv)
        if host is not None:
            host.nsm_state = state
        return host

    # -- lifetime -------------------------------------------------------------------------

    def collect(self, now: float, busy: Callable[[HostKey], bool]) -> list[UnmonitorHost]:
        """Forget idle hosts (``busy(key)`` false: no lock, share or blocked request; unseen
        for ``idle_timeout``); SM_UNMON them."""
        cutoff = now - self.idle_timeout
        out: list[UnmonitorHost] = []
        for host in list(self._hosts.values()):
            if host.last_seen > cutoff or host.monitor is MonitorState.PENDING or busy(host.key):
                continue
            self._remove(host)
            if host.monitor is MonitorState.MONITORED:
                out.append(UnmonitorHost(host.key, host.key.client, host.my_name))
        return out

    def drop(self, host: Host) -> None:
        """Forget ``host`` without unmonitoring it (its statd record stays)."""
        if self._hosts.get(host.key) is host:
            self._remove(host)

    def drop_server(self, server: ServerAddress) -> list[Host]:
        """Forget every host of ``server`` (release of a virtual address); their statd records
        stay, so the node taking the address over can notify the clients."""
        hosts = self.hosts_of_server(server)
        for host in hosts:
            self._remove(host)
        return hosts

    def _remove(self, host: Host) -> None:
        key = host.key
        del self._hosts[key]
        clients = self._by_client[key.client]
        del clients[key]
        if not clients:
            del self._by_client[key.client]
        servers = self._by_server[key.server]
        del servers[key]
        if not servers:
            del self._by_server[key.server]
