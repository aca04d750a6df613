"""CPU to reassemble RPC records from TCP reads, both ways of reading (net/recordmark.py,
net/receiver.py).

* ``feed``: :class:`floatlock.net.recordmark.RecordReader` fed a fresh ``bytes`` per read, as
  ``asyncio.Protocol.data_received`` gets them;
* ``receive``: :class:`floatlock.net.receiver.RecordReceiver` (``asyncio.BufferedProtocol``):
  each read lands in the buffer it offers.

Three ways of delivering the reads:

* ``copy``: each read is a copy out of the stream, of a chosen size (for ``feed`` a slice:
  the new object ``recv`` makes; for ``receive`` a copy into the offered buffer, as
  ``recv_into`` does).  Isolates the reassembly.
* ``socket``: the stream goes through a real ``socketpair`` and is read as asyncio's selector
  loop reads it (``recv(256 KiB)``, or ``recv_into(get_buffer())``); the sending is in the
  figure too, the same for both.
* ``asyncio``: the stream goes over a loopback TCP connection into the server's
  ``net/tcp.py`` connection (``TcpConnection``, its event loop's own read path, a dispatcher
  that answers nothing); the sending coroutine is in the figure too, the same for both.
  ``--tcp-baseline FILE`` measures another ``tcp.py`` beside the current one.

Cases: one record-marked 1 MiB record (an NFS WRITE), CPU per record; 32 pipelined 200-byte
records per read (NLM LOCK/UNLOCK), CPU per read; (asyncio only) one 200-byte call per
read.  ``time.process_time``: the ways of reading alternate in batches, best batch of 15
each (the machine is shared: clock speed drifts).  glibc's malloc is tuned as the NFS
server tunes it (``nfs/malloc.py``) unless ``--no-malloc-tuning``.

``--baseline FILE`` also measures the ``RecordReader`` of another copy of the module, e.g.
an earlier revision: ``git show REV:src/floatlock/net/recordmark.py > /tmp/rm_old.py``.

Usage: python -m bench.record_reassembly [--baseline FILE] [--tcp-baseline FILE]
                                         [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from types import ModuleType

from bench import baseline
from floatlock.net import receiver, recordmark, tcp

RECORD = 1 << 20
READS = (256 << 10, 64 << 10, 16 << 10)
SMALL, PIPELINED = 200, 32
MAX_SIZE = 256 << 10  # asyncio's selector transports: recv(max_size)

Run = Callable[[], int]  # one pass of the stream; returns the records it gave


def _mark(n: int) -> bytes:
    return struct.pack(">I", 0x80000000 | n)


def feed_copy(module: ModuleType, stream: bytes, read: int) -> Run:
    reader = module.RecordReader(max_record=2 * RECORD)
    feed = reader.feed
    cuts = range(0, len(stream), read)

    def run() -> int:
        n = 0
        for i in cuts:
            n += len(feed(stream[i : i + read]))  # the slice: recv's new object
        return n

    return run


def receive_copy(module: ModuleType, stream: bytes, read: int) -> Run:
    receiver = module.RecordReceiver(max_record=2 * RECORD)
    get_buffer, updated = receiver.get_buffer, receiver.buffer_updated
    src = memoryview(stream)
    total = len(stream)

    def run() -> int:
        n = pos = 0
        while pos < total:
            buf = get_buffer()
            k = min(len(buf), read, total - pos)
            buf[:k] = src[pos : pos + k]  # recv_into's copy
            del buf
            n += len(updated(k))
            pos += k
        return n

    return run


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _through_socket(stream: bytes, read_one: Callable[[socket.socket], int]) -> Run:
    """Send ``stream`` through a socket pair as fast as the reader takes it."""
    rx, tx = _pair()
    src = memoryview(stream)
    total = len(stream)

    def run() -> int:
        n = sent = 0
        while sent < total or n == 0:
            if sent < total:
                with suppress(BlockingIOError):
                    sent += tx.send(src[sent:])
            with suppress(BlockingIOError):
                n += read_one(rx)
        return n

    return run


def feed_socket(module: ModuleType, stream: bytes) -> Run:
    feed = module.RecordReader(max_record=2 * RECORD).feed
    return _through_socket(stream, lambda s: len(feed(s.recv(MAX_SIZE))))


def receive_socket(module: ModuleType, stream: bytes) -> Run:
    receiver = module.RecordReceiver(max_record=2 * RECORD)
    get_buffer, updated = receiver.get_buffer, receiver.buffer_updated
    return _through_socket(stream, lambda s: len(updated(s.recv_into(get_buffer()))))


class _Counting:
    """A dispatcher that answers nothing and resolves ``done`` at the ``left``-th call."""

    def __init__(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def dispatch(self, data: bytes, *_: object) -> None:
        self.left -= 1
        if not self.left and self.done is not None:
            self.done.set_result(None)


def asyncio_us(
    modules: dict[str, ModuleType], stream: bytes, records: int, rounds: int
) -> dict[str, float]:
    """CPU per pass of ``stream`` sent over loopback TCP to each ``tcp`` module's server
    connection; batches alternate, best of 15 each."""

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        conns = {}
        for label, module in modules.items():
            disp = _Counting()
            server = module.TcpServer(disp, "127.0.0.1", 0, max_record=2 * RECORD, idle_timeout=0)
            with socket.create_server(("127.0.0.1", 0)) as listener:
                tx = socket.create_connection(listener.getsockname())
                rx, _ = listener.accept()
            tx.setblocking(False)
            await loop.connect_accepted_socket(
                partial(baseline.connection_class(module), server), rx
            )
            conns[label] = (disp, tx)
        best = dict.fromkeys(modules, float("inf"))
        for _ in range(15):
            for label, (disp, tx) in conns.items():
                t0 = time.process_time()
                for _ in range(rounds):
                    disp.left = records
                    disp.done = loop.create_future()
                    await loop.sock_sendall(tx, stream)
                    await disp.done
                best[label] = min(best[label], (time.process_time() - t0) / rounds)
        for _, tx in conns.values():
            tx.close()
        return {label: t * 1e6 for label, t in best.items()}

    return asyncio.run(main())


def best_us(runs: dict[str, Run], records: int, rounds: int) -> dict[str, float]:
    """CPU per call of each run, in microseconds: batches of ``rounds`` alternating between
    the runs, the best of 15 batches each."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(15):
        for label, run in runs.items():
            t0 = time.process_time()
            for _ in range(rounds):
                got = run()
            best[label] = min(best[label], (time.process_time() - t0) / rounds)
            assert got == records, (label, got, records)
    return {label: t * 1e6 for label, t in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", metavar="FILE", help="another recordmark.py to measure too")
    ap.add_argument("--tcp-baseline", metavar="FILE", help="another tcp.py to measure too")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc malloc as is")
    args = ap.parse_args()
    if not args.no_malloc_tuning:
        from floatlock.nfs.malloc import tune_for_large_buffers

        tune_for_large_buffers()
    feeders = {"feed": recordmark}
    if args.baseline:
        feeders = {"feed, baseline": baseline.load(args.baseline), **feeders}

    servers = {"tcp": tcp}
    if args.tcp_baseline:
        servers = {"tcp, baseline": baseline.load(args.tcp_baseline), **servers}

    big = _mark(RECORD) + bytes(RECORD)
    for size in READS:
        runs = {label: feed_copy(mod, big, size) for label, mod in feeders.items()}
        runs["receive"] = receive_copy(receiver, big, size)
        for label, us in best_us(runs, 1, 20).items():
            print(f"1 MiB record, {size >> 10:3} KiB copies,  {label:15}: {us:7.1f} us")
    runs = {label: feed_socket(mod, big) for label, mod in feeders.items()}
    runs["receive"] = receive_socket(receiver, big)
    for label, us in best_us(runs, 1, 20).items():
        print(f"1 MiB record, socketpair,      {label:15}: {us:7.1f} us")
    for label, us in asyncio_us(servers, big, 1, 20).items():
        print(f"1 MiB record, asyncio,         {label:15}: {us:7.1f} us")

    burst = (_mark(SMALL) + bytes(range(SMALL))) * PIPELINED
    runs = {label: feed_copy(mod, burst, len(burst)) for label, mod in feeders.items()}
    runs["receive"] = receive_copy(receiver, burst, len(burst))
    for label, us in best_us(runs, PIPELINED, 500).items():
        print(f"{PIPELINED} x {SMALL} B per read, copies,     {label:15}: {us:7.2f} us/read")
    runs = {label: feed_socket(mod, burst) for label, mod in feeders.items()}
    runs["receive"] = receive_socket(receiver, burst)
    for label, us in best_us(runs, PIPELINED, 500).items():
        print(f"{PIPELINED} x {SMALL} B per read, socketpair, {label:15}: {us:7.2f} us/read")
    for label, us in asyncio_us(servers, burst, PIPELINED, 500).items():
        print(f"{PIPELINED} x {SMALL} B per read, asyncio,    {label:15}: {us:7.2f} us/read")
    one = _mark(SMALL) + bytes(range(SMALL))
    for label, us in asyncio_us(servers, one, 1, 2000).items():
        print(f" 1 x {SMALL} B per read, asyncio,    {label:15}: {us:7.2f} us/read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
