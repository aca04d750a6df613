"""CPU of one small call on a TCP connection: read, dispatch (NULL), reply, client read.

Hands a ``TcpConnection`` of :mod:`floatlock.net.tcp` one record-marked NULL call at a time, as its
event loop would (into ``get_buffer``, then ``buffer_updated``; ``data_received`` for an older
plain-Protocol copy), over a real loopback connection and reads the reply back on the client
socket, 20,000 times per figure (``time.process_time``, best of 7).  This is the per-call
transport cost at one call in flight, without the event loop's wake-up.  ``--baseline FILE``
also measures another copy of the module (e.g. ``git show REV:src/floatlock/net/tcp.py >
/tmp/tcp_old.py``).

Usage: python -m bench.tcp_one_call [--baseline FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Callable
from types import ModuleType

from bench import baseline
from floatlock.net import recordmark, tcp
from floatlock.rpc.dispatch import Dispatcher
from floatlock.rpc.message import encode_call

CALLS = 20_000


async def us_per_call(module: ModuleType) -> float:
    dispatcher = Dispatcher()
    dispatcher.register(100003, 3, {})
    server = module.TcpServer(dispatcher, "127.0.0.1", 0)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    accepted.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, conn = await loop.connect_accepted_socket(
        lambda: baseline.connection_class(module)(server), accepted
    )
    record = recordmark.frame(encode_call(1, 100003, 3, 0))
    feed = _feeder(conn)
    best = float("inf")
    for _ in range(7):
        t0 = time.process_time()
        for _ in range(CALLS):
            feed(record)
            client.recv(4096)
        best = min(best, (time.process_time() - t0) / CALLS)
    transport.abort()
    client.close()
    return best * 1e6


def _feeder(conn: asyncio.BaseProtocol) -> Callable[[bytes], None]:
    """Hand ``conn`` bytes as its event loop would: into the buffer a BufferedProtocol offers
    (the copy ``recv_into`` makes), or as the object a plain Protocol is given."""
    if isinstance(conn, asyncio.BufferedProtocol):

        def received_into(data: bytes) -> None:
            buf = memoryview(conn.get_buffer(len(data)))
            buf[: len(data)] = data
            del buf
            conn.buffer_updated(len(data))

        return received_into
    assert isinstance(conn, asyncio.Protocol)
    return conn.data_received


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", metavar="FILE", help="another tcp.py to measure too")
    args = ap.parse_args()
    modules: list[tuple[str, ModuleType]] = [("floatlock", tcp)]
    if args.baseline:
        modules.insert(0, ("baseline", baseline.load(args.baseline)))
    for label, mod in modules:
        print(f"{label:9}: {asyncio.run(us_per_call(mod)):.2f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
