"""The duplicate request cache: a retransmitted non-idempotent call is answered, not redone.

RPC over UDP is at-least-once: a client whose reply was lost sends the same call again with the
same xid (RFC 5531 section 9: "the server ... may use the xid ... to detect retransmissions").
Executing LOCK, UNLOCK, SM_MON, CREATE or REMOVE twice can change the answer (a second REMOVE
fails with NOENT, a second non-blocking LOCK after an UNLOCK in between succeeds when it should
not), so for procedures marked non-idempotent the dispatcher asks this cache first:

* the call is new: it is marked *in progress* and executed;
* the same call is still in progress: the retransmission is dropped (the reply is coming);
* the same call finished recently: its reply is sent again, byte for byte.

A call is "the same" when client address, xid and a checksum of the whole call message
(program, version, procedure, credential, arguments) match: clients reuse xids after a reboot,
and the checksum keeps a new call that happens to reuse an xid from getting an old reply
(Linux nfsd checksums the arguments too).  The checksum is Python's hash of the message bytes
(of its first 512 bytes and its length, for longer ones: a WRITE's data is not hashed whole).

Sans-IO: time is an argument.  Bounded: at most ``max_entries``, oldest evicted first, and
entries older than ``ttl`` seconds are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

IN_PROGRESS: Final = b""  # sentinel reply value: an empty reply is never a valid RPC reply

DrcKey = tuple[Hashable, int, int]
_WHOLE = 512  # messages up to this size are hashed whole (bytes cache their hash)


class ReplyCache:
    __slots__ = ("_entries", "hits", "in_progress_drops", "max_entries", "ttl")

    def __init__(self, max_entries: int = 8192, ttl: float = 120.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[DrcKey, tuple[float, bytes | None]] = OrderedDict()
        self.hits = 0
        self.in_progress_drops = 0

    @staticmethod
    def key(client: Hashable, xid: int, message: bytes) -> DrcKey:
        """The cache key of call ``message`` (xid ``xid``) from ``client``."""
        if len(message) <= _WHOLE:
            return (client, xid, hash(message))
        return (client, xid, hash(message[:_WHOLE]) ^ len(message))

    def begin(self, key: DrcKey, now: float) -> bytes | None:
        """None: a new call (now marked in progress).  IN_PROGRESS: drop it.  Else: resend."""
        entry = self._entries.get(key)
        if entry is not None:
            when, reply = entry
            if now - when <= self.ttl:
                if reply is None:
                    self.in_progress_drops += 1
                    return IN_PROGRESS
                self.hits += 1
                return reply
            del self._entries[key]
        self._entries[key] = (now, None)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return None

    def finish(self, key: DrcKey, reply: bytes | None, now: float) -> None:
        """Record the reply sent for ``key`` (None: the call was answered with no reply)."""
        if reply is None:
            # Nothing to resend (a *_MSG call, or a dropped one): forget it, so a
            # retransmission is executed again rather than dropped forever.
            self._entries.pop(key, None)
            return
        self._entries[key] = (now, reply)
        self._entries.move_to_end(key)

    def finish_last(self, key: DrcKey, reply: bytes, now: float) -> None:
        """:meth:`finish` for the call :meth:`begin` marked last, with no other call begun
        since (the synchronous path): its entry is the newest already, no move needed."""
        self._entries[key] = (now, reply)

    def __len__(self) -> int:
        return len(self._entries)
