"""What a reply is made of: one message, or pieces the TCP transport writes with one writev.

Apart from the dispatcher (:mod:`floatlock.rpc.dispatch`), which builds replies, because the
transports (:mod:`floatlock.net.tcpconn`, :mod:`floatlock.net.gather`) and the NFS READ path
(:mod:`floatlock.nfs.filemap`, :mod:`floatlock.nfs.proto_res_io`) only need to know their
shape.  A codec-level module: no socket, no event loop.
"""

from __future__ import annotations

__all__ = ["Buffer", "EncodedParts", "MappedData", "Part", "Reply", "joined"]

#: A contiguous buffer; a reply may be sent as several (scatter/gather).
Buffer = bytes | bytearray | memoryview


class MappedData:
    """Reply data only the kernel may read (a file mapping, :mod:`floatlock.nfs.filemap`):
    a user-space read of it could be SIGBUS.  The TCP transport gives :attr:`view` to
    ``writev`` and nothing else; what the socket did not take it gets from
    :meth:`copy_tail`, a copy the kernel made.  Everything else that needs the bytes calls
    ``copy_tail(0)``."""

    __slots__ = ()
    view: memoryview

    def __len__(self) -> int:
        raise NotImplementedError

    def copy_tail(self, skip: int) -> bytes:
        """The data from byte ``skip`` on (raises OSError when it is gone)."""
        raise NotImplementedError


#: One piece of a reply sent in pieces.
Part = Buffer | MappedData


def joined(parts: tuple[Part, ...]) -> bytes:
    """The pieces as one message (mapped data copied by the kernel, never read here)."""
    return b"".join(p.copy_tail(0) if isinstance(p, MappedData) else p for p in parts)


class EncodedParts(tuple[Part, ...]):
    """A handler's result already encoded (the procedure's ``encode`` is not called), as
    buffers sent back to back: a 1 MiB NFS READ reply is its head, then the buffer the data
    was read into, never joined into one string.  Only the TCP transport sends a reply in
    pieces, so a handler returns one only for a call that came over TCP.  The transport has
    written the pieces, or copied what the socket did not take, before it dispatches the
    connection's next call; until then they must not change."""

    __slots__ = ()


#: A reply: one message, or (an idempotent procedure's :class:`EncodedParts` result to a call
#: that came over TCP) the RPC header followed by the parts, for the transport to write with
#: one writev.  The datagram transports only ever get bytes (``_reply`` joins the parts).
Reply = bytes | tuple[Part, ...]
