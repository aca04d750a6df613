"""The NFS worker pool (floatlock.nfs.workers) and the malloc tuning of large replies."""

from __future__ import annotations

import asyncio
import threading

import pytest

from floatlock.nfs.malloc import tune_for_large_buffers
from floatlock.nfs.proto import Nfsstat3
from floatlock.nfs.proto_res_io import ReadRes
from floatlock.nfs.workers import Workers
from floatlock.xdr import Decoder


def test_results_and_exceptions_reach_the_caller() -> None:
    pool = Workers(3, "t")

    def boom() -> None:
        raise OSError("no")

    async def main() -> None:
        got = await asyncio.gather(*(pool.submit(pow, i, 2) for i in range(200)))
        assert got == [i * i for i in range(200)]
        with pytest.raises(OSError, match="no"):
            await pool.submit(boom)
        names = await asyncio.gather(
            *(pool.submit(lambda: threading.current_thread().name) for _ in range(20))
        )
        assert all(n.startswith("t_") for n in names)

    try:
        asyncio.run(main())
        asyncio.run(main())  # a second loop with the same pool
    finally:
        pool.close()
    with pytest.raises(RuntimeError):
        asyncio.run(_submit_after_close(pool))


async def _submit_after_close(pool: Workers) -> None:
    await pool.submit(int)


def test_cancelled_call_is_skipped() -> None:
    pool = Workers(1, "t")
    gate = threading.Event()

    async def main() -> None:
        slow = pool.submit(gate.wait, 5)
        slow.cancel()
        gate.set()
        assert await pool.submit(int, "7") == 7
        assert slow.cancelled()

    try:
        asyncio.run(main())
    finally:
        pool.close()


def test_read_reply_encoding_is_unchanged() -> None:
    for data in (b"", b"a", b"abcd", b"x" * 1001):
        res = ReadRes(Nfsstat3.OK, None, True, data)
        back = ReadRes.decode(Decoder(res.encode()))
        assert back == res
        assert len(res.encode()) % 4 == 0
    assert ReadRes.decode(Decoder(ReadRes(Nfsstat3.IO).encode())).status == Nfsstat3.IO


def test_malloc_tuning_is_idempotent() -> None:
    first = tune_for_large_buffers()
    assert tune_for_large_buffers() == first
