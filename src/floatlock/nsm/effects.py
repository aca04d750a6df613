"""What statd's sans-IO core asks its adapter to do: the effect values of
:class:`~floatlock.nsm.monitor.Monitor`, and the monitor records (:class:`Record`) they carry.

Each effect is a frozen value naming one action (write a file, send an SM_NOTIFY, fire a
status callback, run the HA callout, look a name up); :class:`~floatlock.nsm.statd.Statd`
carries them out.  Keeping them apart from the core lets the store, the notifier and the
callback firer depend on these types without depending on the monitor logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from floatlock.address import ServerAddress
from floatlock.nsm.proto import Status

__all__ = [
    "Callback",
    "Callout",
    "DeleteBackup",
    "Effect",
    "FireCallback",
    "MoveToBackup",
    "Notify",
    "Record",
    "Resolve",
    "WriteRecords",
    "WriteState",
]


@dataclass(frozen=True, slots=True)
class Callback:
    prog: int
    vers: int
    proc: int


@dataclass(frozen=True, slots=True)
class Record:
    """One monitor request (SM_MON); ``caller`` is the requester's IPv4/6 address text."""

    mon_name: str
    my_name: str
    callback: Callback
    priv: bytes
    caller: str = "127.0.0.1"


# -- effects --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteRecords:
    """Replace ``sm/<mon_name>`` of ``identity`` by these records (none: delete the file)."""

    identity: ServerAddress
    mon_name: str
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class MoveToBackup:
    """Move every ``sm/`` record of ``identity`` to ``sm.bak/`` (before notifying)."""

    identity: ServerAddress


@dataclass(frozen=True, slots=True)
class DeleteBackup:
    identity: ServerAddress
    mon_name: str


@dataclass(frozen=True, slots=True)
class WriteState:
    identity: ServerAddress
    state: int


@dataclass(frozen=True, slots=True)
class Notify:
    """Send SM_NOTIFY(``my_name``, ``state``) to the statd of ``mon_name``, from ``identity``."""

    identity: ServerAddress
    mon_name: str
    my_name: str
    state: int


@dataclass(frozen=True, slots=True)
class FireCallback:
    """Call ``record.callback`` at ``record.caller`` with ``status`` (peer rebooted/released)."""

    record: Record
    status: Status
    reason: str


@dataclass(frozen=True, slots=True)
class Callout:
    """Run the HA callout: ``PROG action mon_name my_name`` (nfs-utils ``-H`` convention)."""

    action: str  # "add-client" | "del-client"
    mon_name: str
    my_name: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """Look up the addresses of a host-named peer (for matching SM_NOTIFY senders); the
    adapter hands them back with :meth:`Monitor.set_aliases`."""

    mon_name: str


Effect = (
    WriteRecords | MoveToBackup | DeleteBackup | WriteState | Notify | FireCallback | Callout
    | Resolve
)  # fmt: skip
