"""A 1 MiB NFS WRITE over TCP however the stream is cut: the record is reassembled from its
pieces (``net.recordmark``), its data written from a view of the record
(``WriteArgs.decode_at``), and the calls pipelined behind it in the same reads are answered
too.  Needs root, like the other NFS server tests."""

from __future__ import annotations

import asyncio
import os

import pytest

from floatlock.net.recordmark import RecordReader, frame
from floatlock.nfs.client import ROOT_CRED
from floatlock.nfs.proto import CreateMode, DirOpArgs, Nfsstat3, StableHow
from floatlock.nfs.proto_args import CreateArgs, FhArgs, WriteArgs
from floatlock.nfs.proto_attr import Sattr3
from floatlock.nfs.proto_res_io import WriteRes
from floatlock.rpc.message import encode_call, parse_reply
from floatlock.xdr import Decoder, Encoder

from .test_nfs_server import run, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (open_by_handle_at)")

MiB = 1 << 20


def _call(xid: int, proc: int, args: WriteArgs | FhArgs) -> bytes:
    e = Encoder()
    args.encode(e)
    return encode_call(xid, 100003, 3, proc, e.getvalue(), ROOT_CRED)


@pytest.mark.parametrize(
    ("fragment", "chunk"),
    [(1 << 30, 1 << 30), (1 << 30, 1000), (3000, 65536), (100_000, 7919)],
    ids=["one-send", "small-sends", "small-fragments", "big-fragments-odd-sends"],
)
def test_1mib_write_in_any_cut_then_pipelined_calls(fragment: int, chunk: int) -> None:
    async def main() -> None:
        async with serving() as env:
            rpc, nfs = await env.client("tcp")
            try:
                cr = await nfs.create(
                    CreateArgs(DirOpArgs(env.root_fh, "w.bin"), CreateMode.UNCHECKED, Sattr3())
                )
                assert cr.status == Nfsstat3.OK and cr.fh is not None
                fh = cr.fh
            finally:
                await rpc.close()
            data = os.urandom(MiB)
            stream = frame(_call(1, 7, WriteArgs(fh, 0, MiB, StableHow.UNSTABLE, data)), fragment)
            # Small calls pipelined in the same stream behind the big one.
            stream += b"".join(frame(_call(2 + i, 1, FhArgs(fh))) for i in range(3))
            reader, writer = await asyncio.open_connection("127.0.0.1", env.tcp_port)
            try:
                for i in range(0, len(stream), chunk):
                    writer.write(stream[i : i + chunk])
                    await writer.drain()
                replies: list[bytes] = []
                rm = RecordReader()
                while len(replies) < 4:
                    got = await reader.read(65536)
                    assert got
                    replies += rm.feed(got)
            finally:
                writer.close()
            # WRITE runs on a worker, GETATTR on the loop: replies may overtake (by xid).
            by_xid = {parse_reply(r).xid: parse_reply(r).body for r in replies}
            assert sorted(by_xid) == [1, 2, 3, 4]
            w = WriteRes.decode(Decoder(by_xid[1]))
            assert w.status == Nfsstat3.OK and w.count == MiB
            assert (env.root / "w.bin").read_bytes() == data

    run(main)
